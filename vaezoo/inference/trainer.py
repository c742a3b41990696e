"""The SVI trainer: a plain PyTorch loop around an objective, with progress, metrics, atomic
checkpoints every epoch and exact resume.

Datasets that fit in memory are moved to the device once and batched by indexing: no DataLoader,
no per-batch host-to-device copies (on a GPU those and Python overhead dominate small models).

Under ``torchrun`` (a process group initialized, see :mod:`vaezoo.inference.distributed`) the same
loop runs data-parallel: each process takes its share of every global batch of ``batch_size``, the
gradients are averaged before each step, rank 0 writes the checkpoint and the metrics.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import pyro
import torch
from tqdm.auto import tqdm

from vaezoo import traces
from vaezoo.errors import ConfigError, NonFiniteLossError, RunError, ShapeError
from vaezoo.inference import checkpoint as ckpt
from vaezoo.inference import compiled
from vaezoo.inference import distributed
from vaezoo.inference import schedules
from vaezoo.inference.early_stopping import KEEP, EarlyStopping
from vaezoo.inference.trainer_state import TrainerState
from vaezoo.inference.objectives import Objective
from vaezoo.inference.data_checks import as_data, check_support  # noqa: F401
from vaezoo.inference.params import _RegisterParams
from vaezoo.inference.settings import DTYPES, FUSED, OPTIMIZERS, check_int, check_optimizer, check_positive_float  # noqa: F401
from vaezoo.inference.settings import check_positive_int, check_seed, resolve_device, resolve_dtype  # noqa: F401
from vaezoo.randomness import rng_scope, seed_device


#: seconds between two refreshes of a progress bar (each reads the loss: one device sync)
PROGRESS_SECONDS = 0.5


class Trainer(TrainerState):
    """Trains ``objective`` (an :class:`~vaezoo.inference.objectives.Objective`) by stochastic
    gradient descent on its loss.

    Args:
        objective: the loss module; its parameters, and any ``pyro.param``/``pyro.module``
            parameters the model and guide register, are optimized.
        optimizer: a name in :data:`OPTIMIZERS`, or a callable ``params -> torch.optim.Optimizer``.
            For an objective that compiles (``compile=True``), a step with Adam or AdamW in one
            process runs as one compiled program (forward, backward, clipping and the update:
            :class:`~vaezoo.inference.compiled.TrainingStep`); elsewhere they run fused.
        lr: learning rate (finite, > 0); epochs: int >= 0; batch_size: int >= 1;
        seed: int in [0, 2^32); clip_norm: None, or the maximal gradient norm (finite, > 0).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:N]"``.
        dtype: ``"float32"``/``"float64"`` (or the torch dtypes): data, objective and every
            parameter the pair registers with Pyro are moved to it.
        out: run directory for ``checkpoint.pt`` and ``metrics.jsonl`` (nothing is written if None).
        metadata: stored in the checkpoint (e.g. the zoo name and config) for checks on resume.
        on_epoch_end: called as ``on_epoch_end(trainer, record)`` after each checkpoint (by rank 0
            alone in a process group).
        schedule: the learning rate's schedule over the epochs, ``constant``, ``burda`` or ``cosine``,
            with ``warmup_epochs`` of linear warm-up; kl_warmup: epochs of a KL weight rising
            linearly from 0 to 1 (an :class:`~vaezoo.inference.ELBO` objective). See
            :mod:`vaezoo.inference.schedules`; the schedule's state is in the checkpoint.
        keep: ``"last"`` (the default: ``checkpoint.pt`` only) or ``"best"``: also ``best.pt``, the
            checkpoint of the epoch with the highest test ELBO so far (needs ``out`` and test data).
        patience: None, or stop when the test ELBO has not improved for this many epochs
            (``stop_reason`` then says so; the best value and the epochs since it are in the
            checkpoint, so a resumed run stops where the uninterrupted one would). Objectives
            without an ELBO (the adversarial ones) are watched on their test loss instead.
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
        schedule: str = "constant",
        warmup_epochs: int = 0,
        kl_warmup: int = 0,
        keep: str = "last",
        patience: Optional[int] = None,
    ):
        if not isinstance(objective, torch.nn.Module):
            raise ConfigError(
                f"objective of type {type(objective).__name__} is not a module; expected an objective "
                "such as vaezoo.inference.ELBO(model, guide)"
            )
        if on_epoch_end is not None and not callable(on_epoch_end):
            raise ConfigError(f"on_epoch_end {on_epoch_end!r} is not callable; expected None or a function (trainer, record)")
        self.objective = objective
        self.optimizer_spec = check_optimizer(optimizer)
        self.lr = check_positive_float("lr", lr)
        self.epochs = check_int("epochs", epochs, minimum=0)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.seed = check_seed(seed)
        self.clip_norm = None if clip_norm is None else check_positive_float("clip_norm", clip_norm)
        if out is not None and not isinstance(out, (str, os.PathLike)):
            raise ConfigError(f"out {out!r} is not a path; expected None or a run directory")
        self.out = Path(out) if out is not None else None
        if self.out is not None and self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"out {str(self.out)!r} is a file; expected a run directory")
        self.progress = bool(progress)
        self.metadata = dict(metadata or {})
        self.on_epoch_end = on_epoch_end
        self.schedule = schedules.check_schedule(schedule)
        self.warmup_epochs = schedules.check_epochs("warmup_epochs", warmup_epochs)
        self.kl_warmup = schedules.check_epochs("kl_warmup", kl_warmup)
        if self.kl_warmup and not getattr(objective, "weights_kl", False):
            raise ConfigError(f"kl_warmup={self.kl_warmup} needs an objective with a KL term to weight; "
                              f"{type(objective).__name__} has none (expected ELBO)")
        if keep not in KEEP:
            raise ConfigError(f"keep {keep!r} is not a choice of checkpoints; expected one of {', '.join(KEEP)}")
        self.keep = keep
        self.patience = None if patience is None else check_positive_int("patience", patience)
        self.stopping = EarlyStopping(self.patience)
        self.stop_reason: Optional[str] = None  # why fit stopped before `epochs`, if it did
        self.scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.params: List[torch.Tensor] = []
        self._store_params: Dict[str, torch.Tensor] = {}  # param-store entries the objective does not own
        self._owned_names: set = set()  # param-store names of the objective's own parameters
        self.epoch = 0  # epochs completed
        self._saved = False  # whether this trainer wrote the checkpoint in out
        self.history: List[Dict[str, Any]] = []
        self._steps: Dict[tuple, Optional[compiled.TrainingStep]] = {}  # one-program steps, per input
        self._step_seconds = 0.0  # spent compiling them

    # ----------------------------------------------------------------------------- set-up
    @property
    def checkpoint_path(self) -> Optional[Path]:
        return self.out / "checkpoint.pt" if self.out is not None else None

    @property
    def best_path(self) -> Optional[Path]:
        return self.out / "best.pt" if self.out is not None else None

    def _prepare(self, data, name: str, batch_size: int) -> Tuple[torch.Tensor, bool]:
        """The checks of :func:`as_data`, the data on the trainer's device and dtype, and the
        support of the model's observed sites checked on its first batch (once per dataset: the
        training loop itself never checks)."""
        x, dynamic = as_data(data, name)
        x = x.to(self.device, self.dtype)
        model = getattr(self.objective, "model", None)
        if model is None:  # an objective of the user's own, not built from a model and a guide
            return x, dynamic
        traces.check_event_shape(model, x, name)  # a model that declares its data shape (zoo entries)
        xs = x[:batch_size]  # a batch the model sees anyway (a plate may subsample a fixed size)
        # the check must not shift the random stream of the run (nor of a user's evaluate call)
        with rng_scope(self.device):
            if dynamic:
                xs = torch.bernoulli(xs)
            with _RegisterParams(self.device, self.dtype, {id(p) for p in self.objective.parameters()}):
                check_support(model, xs, name, full=None if dynamic else x)
        return x, dynamic

    def _parameters(self, probe: torch.Tensor) -> List[torch.Tensor]:
        """The objective's parameters plus the param-store parameters that one probing run of the
        pair registers (a plain-function pair keeps its networks there with ``pyro.module``), each
        once: a PyroModule pair registers its own parameters in the store too, as the same tensors."""
        owned = {id(p) for p in self.objective.parameters()}
        register = _RegisterParams(self.device, self.dtype, owned)
        with register:
            self.objective(probe)  # also validates the pair on its first call
        params = {id(p): p for p in self.objective.parameters()}
        self._store_params = {n: t for n, t in register.params.items() if id(t) not in params}
        self._owned_names = {n for n, t in register.params.items() if id(t) in params}
        for t in self._store_params.values():
            params.setdefault(id(t), t)
        return [p for p in params.values() if p.requires_grad]

    def _build_optimizer(self, params) -> torch.optim.Optimizer:
        if callable(self.optimizer_spec):
            return self.optimizer_spec(params)
        options = {}
        if self.optimizer_spec in FUSED and getattr(self.objective, "compiles", False):
            # a compiled objective's run: the fused Adam kernel (0.54 against 1.76 ms a step for
            # foreach Adam, and 1.26 for torch.compile(opt.step), on the Burda MLP's parameters,
            # one thread; bench/RESULTS.md). Its floating-point order is not foreach's: compiled
            # runs are reproducible among themselves, not against eager ones.
            options["fused"] = True
        return OPTIMIZERS[self.optimizer_spec](params, lr=self.lr, **options)

    def _parameters_finite(self) -> bool:
        """Whether every parameter and floating buffer is finite: one fused max-norm (the infinity
        norm cannot overflow on large finite values, and NaN propagates through it)."""
        tensors = list(self.params) + [b for b in self.objective.buffers() if b.is_floating_point()]
        if not tensors:
            return True
        return bool(torch.isfinite(torch.nn.utils.get_total_norm(tensors, norm_type=math.inf)))

    # ----------------------------------------------------------------------------- loops
    @property
    def _eval_batch_size(self) -> int:
        return max(self.batch_size, 500)  # no gradients kept: larger batches fit

    @torch.no_grad()
    def evaluate(self, data, batch_size: Optional[int] = None) -> Dict[str, float]:
        """Mean of the objective's terms over a dataset (e.g. the test ELBO), per datapoint. In a
        process group, each process evaluates its share and the sums are combined."""
        bs = self._eval_batch_size if batch_size is None else check_positive_int("batch_size", batch_size)
        self.objective.to(self.device, self.dtype)
        x_all, dynamic = self._prepare(data, "data", bs)
        if self.optimizer is None:  # not set up by fit: register the pair's Pyro parameters
            with rng_scope(self.device):
                self._parameters(torch.bernoulli(x_all[:bs]) if dynamic else x_all[:bs])
        return self._evaluate(x_all, dynamic, bs)

    @torch.no_grad()
    def _evaluate(self, x_all: torch.Tensor, dynamic: bool, batch_size: Optional[int] = None) -> Dict[str, float]:
        n_all = x_all.shape[0]
        shared = distributed.is_distributed() and n_all >= distributed.world_size()
        if shared:
            x_all = x_all[distributed.rank() :: distributed.world_size()]
        bs = batch_size or self._eval_batch_size
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
        keys = sorted(sums)
        totals = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=self.device) for k in keys])
        if shared:
            distributed.all_reduce_sum(totals)
        return {k: float(v) / n_all for k, v in zip(keys, totals.tolist())}

    def fit(self, train, test=None, resume: bool = False) -> List[Dict[str, Any]]:
        """Trains for the epochs that remain: from epoch 1 (and the current parameters) unless
        ``resume``, which continues the checkpoint in ``out``. Returns the history (one dict per
        epoch, as in ``metrics.jsonl``).

        The data are checked once, here (see :func:`as_data` and :func:`check_support`); the test
        set must have the training set's shape per datapoint."""
        if resume and self.out is None:
            raise ConfigError("resume=True needs out=, the run directory that holds checkpoint.pt")
        if self.keep == "best" and self.out is None:
            raise ConfigError("keep='best' needs out=, the run directory for best.pt")
        if (self.keep == "best" or self.patience is not None) and test is None:
            what = "keep='best' (--keep best)" if self.keep == "best" else f"patience={self.patience} (--patience)"
            raise ConfigError(f"{what} watches the test ELBO; expected test data: fit(train, test)")
        if not resume and self.out is not None and self.checkpoint_path.exists() and not self._saved:
            # another run's checkpoint (or this run's, from another process): never overwritten
            raise RunError(
                f"{self.checkpoint_path} already holds a checkpoint; expected resume=True to continue it, "
                "or another out for a new run"
            )
        self.objective.to(self.device, self.dtype)
        x_train, dynamic = self._prepare(train, "training data", self.batch_size)
        x_test, test_dynamic = None, False
        if test is not None:
            x_test, test_dynamic = self._prepare(test, "test data", self._eval_batch_size)
            if x_test.shape[1:] != x_train.shape[1:]:
                raise ShapeError(
                    f"test data have shape {tuple(x_test.shape[1:])} per datapoint; expected the training "
                    f"data's {tuple(x_train.shape[1:])}"
                )
        pyro.set_rng_seed(self.seed)
        # the probe is this process's share of the first batch: the shapes every step will see
        probe = x_train[distributed.shard(torch.arange(min(self.batch_size, x_train.shape[0]), device=self.device))]
        self.optimizer = self._build_optimizer(self._parameters(torch.bernoulli(probe) if dynamic else probe))
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.scheduler = schedules.make_scheduler(self.optimizer, self.schedule, self.epochs, self.warmup_epochs)
        distributed.broadcast_parameters(self.params)
        if resume:
            state = ckpt.load(self.checkpoint_path, map_location=self.device, objective=self.objective.state_dict(),
                              params=[tuple(p.shape) for p in self.params], optimizer=self.optimizer.state_dict())
            self.load_state_dict(state, self.checkpoint_path)
        else:
            self.epoch, self.history = 0, []
            self.stopping.reset()
            pyro.set_rng_seed(self._rank_seed(self.seed))  # the probe above must not shift the stream
        self.stop_reason = self.stopping.reason(self.epoch) if self.epoch < self.epochs else None
        n = x_train.shape[0]
        world = distributed.world_size()
        # every process needs a share of each global batch: a last batch smaller than the number
        # of processes is dropped (by all of them alike)
        steps = math.ceil(n / self.batch_size)
        if 0 < n % self.batch_size < world:
            steps -= 1
        if steps == 0:
            raise ConfigError(f"{n} training datapoints cannot be shared by {world} processes; expected at least {world}")
        lead = distributed.rank() == 0
        # a compiled objective's whole step (forward, backward, Adam) as one program, where it can be
        stepped = world == 1 and self._can_step_compiled()
        self._steps = {}
        if getattr(self.objective, "compiles", False) and self.progress and lead and self.epoch < self.epochs and self.stop_reason is None:
            # the first steps wait for the compiler: say so, or the bar looks frozen at 0%
            print("compiling the training step (about 20 s per batch shape on a CPU) ...", file=sys.stderr, flush=True)
        while self.epoch < self.epochs and self.stop_reason is None:
            epoch = self.epoch + 1
            start = time.perf_counter()
            compiled_before = self._compile_seconds()
            # modules that change with the epoch (a warm-up) are told it, as torch's samplers are
            for module in self.objective.modules():
                set_epoch = getattr(module, "set_epoch", None)
                if callable(set_epoch):
                    set_epoch(epoch)
            # the optimizer's hyperparameters, constants of a one-program step: read once an epoch
            # (an on_epoch_end callback may have changed them)
            hyper = compiled.TrainingStep.key(self.optimizer, self.clip_norm) if stepped else None
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
            order = order.to(self.device)
            running = torch.zeros((), device=self.device, dtype=self.dtype)
            # refreshed by time (the loss is read, a device sync, at most twice a second), not by steps
            bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", disable=not (self.progress and lead), leave=False,
                       mininterval=PROGRESS_SECONDS, miniters=1)
            shown = time.monotonic()
            lr = self.optimizer.param_groups[0]["lr"]
            for step in range(steps):
                if self.kl_warmup:  # a buffer: compiled programs read it as an input
                    self.objective.kl_weight.fill_(schedules.kl_weight((epoch - 1) * steps + step, steps, self.kl_warmup))
                batch = order[step * self.batch_size : (step + 1) * self.batch_size]
                mine = distributed.shard(batch)
                xb = x_train[mine]
                program = self._training_step(xb, dynamic, hyper) if stepped else None
                if program is not None:  # it binarizes a dynamic batch itself
                    loss, _ = program(xb)
                else:
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
                # a single process reads the loss (a device sync) at most twice a second; a process
                # group every 50 steps, so that all of them take part in each sum (and stop together)
                due = time.monotonic() - shown >= PROGRESS_SECONDS if world == 1 else (step + 1) % 50 == 0
                if due or step + 1 == steps:
                    shown = time.monotonic()
                    mean = float(distributed.all_reduce_sum(running.clone())) / world / (step + 1)
                    if not math.isfinite(mean):
                        bar.close()
                        self._stop_non_finite("the loss", epoch, f" by step {step + 1}")
                    bar.set_postfix(loss=f"{mean:.3f}", refresh=False)
                    bar.update((step + 1) - bar.n)
            bar.close()
            # a NaN/inf gradient in the last steps leaves the loss finite but the parameters not:
            # such an epoch must never replace the last good checkpoint
            if not self._parameters_finite():
                self._stop_non_finite("the parameters", epoch, " (the loss was still finite: a NaN or infinite gradient)")
            record = {"epoch": epoch, "train_loss": mean, "seconds": time.perf_counter() - start}
            if self.scheduler is not None:
                record["lr"] = lr
                schedules.step(self.scheduler)  # the next epoch's rate, in the checkpoint below
            if self.kl_warmup:
                record["kl_weight"] = float(self.objective.kl_weight)
                self.objective.kl_weight.fill_(1.0)  # the test loss: the unweighted bound
            compile_seconds = self._compile_seconds() - compiled_before
            if compile_seconds > 0:  # included in "seconds"
                record["compile_seconds"] = compile_seconds
            if x_test is not None:
                # the test ELBO's draws (binarization, the guide's samples) come from a stream of
                # their own, the same at every epoch: training goes on as if unevaluated (the same
                # seed trains the same parameters with and without a test set), and successive
                # epochs' test ELBOs differ by the parameters' change, not by fresh noise
                with rng_scope(self.device):
                    seed_device(self._eval_seed(self.seed), self.device)
                    terms = self._evaluate(x_test, test_dynamic)
                record.update({f"test_{k}": v for k, v in terms.items() if k != "loss"})
                record["test_loss"] = terms["loss"]
            improved = self.stopping.update(epoch, record)
            self.stop_reason = self.stopping.reason(epoch) if epoch < self.epochs else None
            if self.stop_reason is not None:
                record["stopped"] = self.stop_reason
            self.epoch = epoch
            self.history.append(record)
            self._save(best=improved and self.keep == "best")
            if self.on_epoch_end is not None and lead:
                self.on_epoch_end(self, record)
        return self.history

    def _can_step_compiled(self) -> bool:
        """Whether steps may run as one compiled program (:class:`compiled.TrainingStep`): an
        objective that compiles and whose ``forward`` is the loss alone (``Constrained``'s also
        updates its multipliers), the Trainer's own Adam or AdamW, and one process (averaging the
        gradients over processes happens between backward and the update)."""
        return (
            getattr(self.objective, "compiles", False)
            and type(self.objective).forward is Objective.forward
            and self.optimizer_spec in FUSED
            and not self._store_params
        )

    def _training_step(self, x: torch.Tensor, binarize: bool, hyper: tuple) -> Optional[compiled.TrainingStep]:
        """The one-program step for ``x``'s shape and the optimizer's hyperparameters ``hyper``
        (:meth:`compiled.TrainingStep.key`), built at its first use (its compile time counted in
        :meth:`_compile_seconds`); None where it cannot be built, after one warning naming the
        reason (the steps then run as the objective's compiled loss, backward and fused Adam)."""
        if not (self.objective.compiles and torch.is_grad_enabled() and self.objective.guards_hold()):
            return None  # (a changed Python value turns the objective's compiling off, with a warning)
        key = (tuple(x.shape), x.dtype, x.device, self.objective.training, binarize, hyper)
        if key in self._steps:
            return self._steps[key]
        try:
            program = compiled.TrainingStep(self.objective, self.optimizer, self.clip_norm, x, binarize)
        except Exception as e:  # CompileBlocked, or any failure to capture or compile
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            if not isinstance(e, compiled.CompileBlocked):
                reason = f"compiling failed ({type(e).__name__}: {reason})"
            warnings.warn(f"the training step does not run as one compiled program: {reason}; "
                          "it runs as the compiled loss, its backward and the optimizer", stacklevel=3)
            program = None
        else:
            self._step_seconds += program.compile_seconds
            compiled.log.info("Trainer: compiled the training step for x %s %s on %s in %.1f s",
                              list(x.shape), x.dtype, x.device, program.compile_seconds)
        self._steps[key] = program
        return program

    def _compile_seconds(self) -> float:
        """Time spent compiling so far: the objective's programs and the training steps'."""
        return getattr(self.objective, "compile_seconds", 0.0) + self._step_seconds

    def _stop_non_finite(self, what: str, epoch: int, where: str):
        kept = (
            f"the last good checkpoint (epoch {self.epoch}) is kept at {self.checkpoint_path}"
            if self.out is not None and self.epoch > 0
            else "no checkpoint was written"
        )
        clip = (
            "clip the gradient norm: --clip-norm on the command line, Trainer(clip_norm=...) in Python"
            if self.clip_norm is None
            else f"clip the gradient norm below {self.clip_norm} (--clip-norm, Trainer(clip_norm=...))"
        )
        raise NonFiniteLossError(
            f"{what} became non-finite in epoch {epoch}{where}; training stopped and {kept} "
            f"(try a lower learning rate, --lr or Trainer(lr=...), or {clip})"
        )
