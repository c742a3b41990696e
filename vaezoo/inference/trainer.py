"""The SVI trainer: a plain PyTorch loop around an objective, with progress, metrics, atomic
checkpoints every epoch and exact resume.

Datasets that fit in memory are moved to the device once and batched by indexing: no DataLoader,
no per-batch host-to-device copies (on a GPU those and Python overhead dominate small models).

Under ``torchrun`` (a process group initialized, see :mod:`vaezoo.inference.distributed`) the same
loop runs data-parallel: each process takes its share of every global batch of ``batch_size``, the
gradients are averaged before each step, rank 0 writes the checkpoint and the metrics.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import pyro
import torch
from tqdm.auto import tqdm

from vaezoo.fileio import atomic_write_text
from vaezoo.errors import CheckpointError, ConfigError, NonFiniteLossError
from vaezoo.inference import checkpoint as ckpt
from vaezoo.inference import distributed
from vaezoo.inference.objectives import Objective

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; expected auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    return dev


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _unpack(data):
    """A tensor, or a dataset with ``.data`` (and optionally ``.binarize``): -> (tensor, dynamic)."""
    if data is None:
        return None, False
    if isinstance(data, torch.Tensor):
        return data, False
    return data.data, getattr(data, "binarize", None) == "dynamic"


def _rng_state(device: torch.device) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Trainer:
    """Trains ``objective`` (an :class:`~vaezoo.inference.objectives.Objective`) by stochastic
    gradient descent on its loss.

    Args:
        objective: the loss module; its parameters, and any ``pyro.param``/``pyro.module``
            parameters the model and guide register, are optimized.
        optimizer: a name in :data:`OPTIMIZERS`, or a callable ``params -> torch.optim.Optimizer``.
        epochs, batch_size, lr, seed, clip_norm: as usual; ``clip_norm`` clips the gradient norm.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:N]"``; dtype likewise.
        out: run directory for ``checkpoint.pt`` and ``metrics.jsonl`` (nothing is written if None).
        metadata: stored in the checkpoint (e.g. the zoo name and config) for checks on resume.
        on_epoch_end: called as ``on_epoch_end(trainer, record)`` after each checkpoint (by rank 0
            alone in a process group).
    """

    def __init__(
        self,
        objective: Objective,
        *,
        optimizer: Union[str, Callable] = "adam",
        lr: float = 1e-3,
        epochs: int = 10,
        batch_size: int = 128,
        device: Union[str, torch.device] = "auto",
        dtype=torch.float32,
        seed: int = 0,
        clip_norm: Optional[float] = None,
        out: Optional[Union[str, Path]] = None,
        progress: bool = True,
        metadata: Optional[Dict[str, Any]] = None,
        on_epoch_end: Optional[Callable] = None,
    ):
        if int(epochs) < 0:
            raise ConfigError(f"epochs must be >= 0, got {epochs}")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not lr > 0:
            raise ConfigError(f"lr must be positive, got {lr}")
        if isinstance(optimizer, str) and optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {optimizer!r}; expected one of {sorted(OPTIMIZERS)}")
        self.objective = objective
        self.optimizer_spec = optimizer
        self.lr = float(lr)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.seed = int(seed)
        self.clip_norm = clip_norm
        self.out = Path(out) if out is not None else None
        self.progress = progress
        self.metadata = dict(metadata or {})
        self.on_epoch_end = on_epoch_end
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.epoch = 0  # epochs completed
        self.history: List[Dict[str, Any]] = []

    # ----------------------------------------------------------------------------- set-up
    @property
    def checkpoint_path(self) -> Optional[Path]:
        return self.out / "checkpoint.pt" if self.out is not None else None

    def _parameters(self, probe: torch.Tensor) -> List[torch.nn.Parameter]:
        """The objective's parameters plus those in Pyro's param store after one probing run
        (a user's plain-function model may register its networks with ``pyro.module``)."""
        self.objective(probe)  # also validates the pair on its first call
        params = {id(p): p for p in self.objective.parameters()}
        store = pyro.get_param_store()
        for name in store.get_all_param_names():
            p = store.get_param(name).unconstrained()
            params.setdefault(id(p), p)
        return [p for p in params.values() if p.requires_grad]

    def _build_optimizer(self, params) -> torch.optim.Optimizer:
        if callable(self.optimizer_spec):
            return self.optimizer_spec(params)
        return OPTIMIZERS[self.optimizer_spec](params, lr=self.lr)

    def state_dict(self) -> Dict[str, Any]:
        """The checkpoint. In a process group, every process must call it (it gathers the random
        number states of all processes, for an exact resume with the same number of processes)."""
        rng = distributed.gather_objects(_rng_state(self.device))
        state = {
            "objective": self.objective.state_dict(),
            "param_store": pyro.get_param_store().get_state(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "rng": rng[0],
            "metadata": self.metadata,
        }
        if len(rng) > 1:
            state["rng_ranks"] = rng
        return state

    def load_state_dict(self, state: Dict[str, Any], path="checkpoint") -> None:
        meta = state.get("metadata", {})
        for key in ("model",):
            if key in self.metadata and key in meta and meta[key] != self.metadata[key]:
                raise CheckpointError(
                    f"{path} is a checkpoint of {key} {meta[key]!r}, not {self.metadata[key]!r}; "
                    "expected a checkpoint of the same model"
                )
        try:
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{path} does not fit this model ({first}); expected a checkpoint of the same model and config") from None
        pyro.get_param_store().set_state(state["param_store"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        ranks = state.get("rng_ranks", [state["rng"]])
        if len(ranks) == distributed.world_size():
            _set_rng_state(ranks[distributed.rank()], self.device)
        else:  # another number of processes than the run had: fresh streams, no longer exact
            pyro.set_rng_seed(self._rank_seed(self.seed * 1_000_003 + self.epoch))

    @staticmethod
    def _rank_seed(seed: int) -> int:
        """This process's seed: ``seed`` itself on rank 0 (a single process), distinct elsewhere."""
        return (seed + 7_919 * distributed.rank()) % 2**32

    def _save(self) -> None:
        if self.out is None:
            return
        state = self.state_dict()  # a collective: every process takes part
        if distributed.rank() == 0:
            ckpt.save(self.checkpoint_path, state)
            lines = "".join(json.dumps(r) + "\n" for r in self.history)
            atomic_write_text(self.out / "metrics.jsonl", lines)
        distributed.barrier()  # nobody reads the run directory before it is complete

    # ----------------------------------------------------------------------------- loops
    @torch.no_grad()
    def evaluate(self, data, batch_size: Optional[int] = None) -> Dict[str, float]:
        """Mean of the objective's terms over a dataset (e.g. the test ELBO), per datapoint. In a
        process group, each process evaluates its share and the sums are combined."""
        x_all, dynamic = _unpack(data)
        x_all = x_all.to(self.device, self.dtype)
        n_all = x_all.shape[0]
        shared = distributed.is_distributed() and n_all >= distributed.world_size()
        if shared:
            x_all = x_all[distributed.rank() :: distributed.world_size()]
        bs = batch_size or max(self.batch_size, 500)
        sums: Dict[str, torch.Tensor] = {}
        self.objective.eval()
        try:
            for i in range(0, x_all.shape[0], bs):
                xb = x_all[i : i + bs]
                if dynamic:
                    xb = torch.bernoulli(xb)
                loss, terms = self.objective(xb)
                for k, v in dict(terms, loss=loss.detach()).items():
                    sums[k] = sums.get(k, 0.0) + v * xb.shape[0]
        finally:
            self.objective.train()
        if not sums:  # no data
            return {}
        keys = sorted(sums)
        totals = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=self.device) for k in keys])
        if shared:
            distributed.all_reduce_sum(totals)
        return {k: float(v) / n_all for k, v in zip(keys, totals.tolist())}

    def fit(self, train, test=None, resume: bool = False) -> List[Dict[str, Any]]:
        """Trains for the epochs that remain (all of them unless ``resume``); returns the history
        (one dict per epoch, as in ``metrics.jsonl``)."""
        x_train, dynamic = _unpack(train)
        if x_train.shape[0] == 0:
            raise ConfigError("the training set is empty")
        self.objective.to(self.device, self.dtype)
        x_train = x_train.to(self.device, self.dtype)  # once: batches are views by indexing
        pyro.set_rng_seed(self.seed)
        probe = x_train[: min(2, x_train.shape[0])]
        self.optimizer = self._build_optimizer(self._parameters(torch.bernoulli(probe) if dynamic else probe))
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        distributed.broadcast_parameters(self.params)
        if resume:
            self.load_state_dict(ckpt.load(self.checkpoint_path, map_location=self.device), self.checkpoint_path)
        else:
            pyro.set_rng_seed(self._rank_seed(self.seed))  # the probe above must not shift the stream
        n = x_train.shape[0]
        world = distributed.world_size()
        # every process needs a share of each global batch: a last batch smaller than the number
        # of processes is dropped (by all of them alike)
        steps = math.ceil(n / self.batch_size)
        if 0 < n % self.batch_size < world:
            steps -= 1
        if steps == 0:
            raise ConfigError(f"{n} training images cannot be shared by {world} processes; expected at least {world}")
        lead = distributed.rank() == 0
        while self.epoch < self.epochs:
            epoch = self.epoch + 1
            start = time.perf_counter()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
            order = order.to(self.device)
            running = torch.zeros((), device=self.device, dtype=self.dtype)
            bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", disable=not (self.progress and lead), leave=False)
            for step in range(steps):
                batch = order[step * self.batch_size : (step + 1) * self.batch_size]
                mine = distributed.shard(batch)
                xb = x_train[mine]
                if dynamic:
                    xb = torch.bernoulli(xb)
                loss, _ = self.objective(xb)
                if world > 1:  # averaged over processes, the gradient is the global batch's
                    loss = loss * (mine.numel() * world / batch.numel())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(self.params)
                if self.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
                self.optimizer.step()
                running += loss.detach()
                if (step + 1) % 50 == 0 or step + 1 == steps:
                    # one device sync per 50 steps; all processes see the same mean (and stop together)
                    mean = float(distributed.all_reduce_sum(running.clone())) / world / (step + 1)
                    if not math.isfinite(mean):
                        bar.close()
                        self._stop_non_finite(epoch, step + 1)
                    bar.set_postfix(loss=f"{mean:.3f}", refresh=False)
                    bar.update((step + 1) - bar.n)
            bar.close()
            record = {"epoch": epoch, "train_loss": mean, "seconds": time.perf_counter() - start}
            if test is not None:
                terms = self.evaluate(test)
                record.update({f"test_{k}": v for k, v in terms.items() if k != "loss"})
                record["test_loss"] = terms["loss"]
            self.epoch = epoch
            self.history.append(record)
            self._save()
            if self.on_epoch_end is not None and lead:
                self.on_epoch_end(self, record)
        return self.history

    def _stop_non_finite(self, epoch: int, step: int):
        kept = (
            f"the last good checkpoint (epoch {self.epoch}) is kept at {self.checkpoint_path}"
            if self.out is not None and self.epoch > 0
            else "no checkpoint was written"
        )
        raise NonFiniteLossError(
            f"the loss became non-finite in epoch {epoch} by step {step}; training stopped and {kept} "
            "(try a lower --lr or --set clip_norm=...)"
        )
