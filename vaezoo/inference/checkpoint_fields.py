"""What a checkpoint holds, field by field, and the one check of all of it.

:data:`FIELDS` is the table: each field ``Trainer.state_dict()`` writes, with what it is (for the
message) and a function that checks its whole content (types, shapes, finiteness) the way this
version writes it. :func:`validate` runs every check before the caller touches any file, so a
checkpoint damaged inside is refused in one line instead of failing half-way through a resume. A
new field of the checkpoint is one new row (optional fields: :data:`OPTIONAL`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch.distributions import constraints

from vaezoo.errors import CheckpointError
from vaezoo.randomness import rng_scope


class _Bad(Exception):
    """What is wrong inside a field (the message's middle part)."""


class _Misfit(_Bad):
    """A well-formed field that does not fit the model at hand (another config, another entry)."""


def _shown(value) -> str:
    if isinstance(value, (bool, int, float, str, type(None))):
        return repr(value)[:60]
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)} ({value.dtype})"
    return f"a {type(value).__name__}"


def _number(value, where: str, finite: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Bad(f"{where} is {_shown(value)}, not a number")
    if finite and not math.isfinite(float(value)):
        raise _Bad(f"{where} is {value}, not finite")
    return float(value)


def _finite_tensor(t: torch.Tensor, where: str) -> None:
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise _Bad(f"{where} (shape {list(t.shape)}) holds non-finite values")


def _mapping(value, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise _Bad(f"{where} is {_shown(value)}, not a dictionary")
    return value


def _tensor_kind(t: torch.Tensor) -> str:
    return "floating" if t.is_floating_point() else "boolean" if t.dtype == torch.bool else "integer"


#: optimizer state entries shaped like their parameter (torch's Adam, AdamW, SGD, RMSprop, Adagrad, ...)
PER_PARAMETER = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "grad_avg", "acc_delta",
                 "sum", "exp_inf"}


def _is_optimizer_state(value) -> bool:
    return isinstance(value, Mapping) and set(value) == {"state", "param_groups"}


def _optimizer(value, where: str, params: Optional[Sequence] = None, template: Optional[Mapping] = None) -> None:
    """An optimizer's ``state_dict()``: parameter groups naming distinct parameter ids, and a state
    per id whose tensors are finite and, where ``params`` (the stepped parameters' shapes, in the
    optimizer's order) are known, of their parameter's shape."""
    value = _mapping(value, where)
    if set(value) != {"state", "param_groups"}:
        raise _Bad(f"{where} has the keys {sorted(map(str, value))}, not 'state' and 'param_groups'")
    groups = value["param_groups"]
    if not isinstance(groups, (list, tuple)) or not groups:
        raise _Bad(f"{where}['param_groups'] is {_shown(groups)}, not a non-empty list of groups")
    ids = []
    for g, group in enumerate(groups):
        group = _mapping(group, f"{where}['param_groups'][{g}]")
        members = group.get("params")
        if not isinstance(members, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in members):
            raise _Bad(f"{where}['param_groups'][{g}]['params'] is {_shown(members)}, not a list of parameter ids")
        if "lr" in group and not isinstance(group["lr"], torch.Tensor):
            _number(group["lr"], f"{where}['param_groups'][{g}]['lr']")
        ids += list(members)
    if len(set(ids)) != len(ids):
        raise _Bad(f"{where} names a parameter id twice in its groups")
    if template is not None and _is_optimizer_state(template):
        want = [len(g["params"]) for g in template["param_groups"]]
        have = [len(g["params"]) for g in groups]
        if want != have:
            raise _Misfit(f"{where} has groups of {have} parameters; the model's optimizer has {want}")
    if params is not None and len(params) != len(ids):
        raise _Misfit(f"{where} steps {len(ids)} parameters; the model has {len(params)}")
    shapes = dict(zip(ids, params)) if params is not None else {}
    state = _mapping(value["state"], f"{where}['state']")
    for key, entry in state.items():
        if key not in ids:
            raise _Bad(f"{where}['state'] has an entry for {key!r}, which no parameter group names")
        entry = _mapping(entry, f"{where}['state'][{key!r}]")
        for name, v in entry.items():
            at = f"{where}['state'][{key!r}][{name!r}]"
            if isinstance(v, torch.Tensor):
                _finite_tensor(v, at)
                if name in PER_PARAMETER and key in shapes and tuple(v.shape) != tuple(shapes[key]):
                    raise _Misfit(f"{at} has shape {list(v.shape)}, its parameter {list(shapes[key])}")
            elif isinstance(v, (list, tuple)):  # LBFGS-like histories
                for i, t in enumerate(v):
                    if isinstance(t, torch.Tensor):
                        _finite_tensor(t, f"{at}[{i}]")
            elif v is not None and not isinstance(v, bool):
                _number(v, at)


def _like(value, template, where: str) -> None:
    """``value`` laid out as ``template`` (a fresh ``state_dict()``): the same keys, tensors of the
    same shape and kind (finite where floating), the same scalar types; an optimizer's state inside
    (a critic's) is checked as one."""
    if _is_optimizer_state(value) or _is_optimizer_state(template):
        _optimizer(value, where, template=template)
    elif isinstance(template, torch.Tensor):
        if not isinstance(value, torch.Tensor):
            raise _Bad(f"{where} is {_shown(value)}, not a tensor of shape {list(template.shape)}")
        if tuple(value.shape) != tuple(template.shape) or _tensor_kind(value) != _tensor_kind(template):
            raise _Misfit(f"{where} is {_shown(value)}; the model's is {_shown(template)}")
        _finite_tensor(value, where)
    elif isinstance(template, Mapping):
        value = _mapping(value, where)
        missing = [k for k in template if k not in value]
        extra = [k for k in value if k not in template]
        if missing or extra:
            what = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which the model lacks"
            raise _Misfit(f"{where} {what}")
        for k in template:
            _like(value[k], template[k], f"{where}[{k!r}]")
    elif isinstance(template, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(template):
            raise _Misfit(f"{where} is {_shown(value)}; the model's is a list of {len(template)}")
        for i, (v, t) in enumerate(zip(value, template)):
            _like(v, t, f"{where}[{i}]")
    elif template is None:
        if value is not None:
            raise _Bad(f"{where} is {_shown(value)}; the model's is None")
    elif isinstance(template, bool) or isinstance(template, str):
        if type(value) is not type(template):
            raise _Bad(f"{where} is {_shown(value)}, not a {type(template).__name__}")
    elif isinstance(template, numbers.Real):
        _number(value, where, finite=False)
        if isinstance(template, numbers.Integral) and not isinstance(value, numbers.Integral):
            raise _Bad(f"{where} is {_shown(value)}, not an integer")


# ------------------------------------------------------------------------------- the fields
def _objective(value, expect: Dict) -> None:
    value = _mapping(value, "it")
    template = expect.get("objective")
    if template is not None:
        _like(value, template, "")
        return
    for k, v in value.items():  # without the model: every tensor finite, every optimizer well formed
        if isinstance(v, torch.Tensor):
            _finite_tensor(v, repr(k))


def _param_store(value, expect: Dict) -> None:
    value = _mapping(value, "it")
    if set(value) != {"params", "constraints"}:
        raise _Bad(f"it has the keys {sorted(map(str, value))}, not 'params' and 'constraints'")
    for name, t in _mapping(value["params"], "['params']").items():
        if not isinstance(t, torch.Tensor):
            raise _Bad(f"['params'][{name!r}] is {_shown(t)}, not a tensor")
        _finite_tensor(t, f"['params'][{name!r}]")
    for name, c in _mapping(value["constraints"], "['constraints']").items():
        if not isinstance(c, constraints.Constraint):
            raise _Bad(f"['constraints'][{name!r}] is {_shown(c)}, not a constraint")


def _optimizer_field(value, expect: Dict) -> None:
    _optimizer(value, "", params=expect.get("params"), template=expect.get("optimizer"))


def _epoch(value, expect: Dict) -> None:
    if value < 0:
        raise _Bad("it is negative")


def _history(value, expect: Dict) -> None:
    for i, record in enumerate(value):
        if not isinstance(record, Mapping):
            raise _Bad(f"[{i}] is {_shown(record)}, not a record of an epoch's metrics")
        if record.get("epoch") != i + 1 or isinstance(record.get("epoch"), bool):
            raise _Bad(f"[{i}]['epoch'] is {_shown(record.get('epoch'))}, not {i + 1}")
        for key in ("train_loss", "seconds"):
            if key not in record:
                raise _Bad(f"[{i}] has no {key!r}")
            _number(record[key], f"[{i}][{key!r}]")
        for key, v in record.items():
            if not isinstance(key, str):
                raise _Bad(f"[{i}] has the key {key!r}, not a name")
            if not isinstance(v, (str, bool, type(None))):  # what a callback may add; metrics are numbers
                _number(v, f"[{i}][{key!r}]", finite=False)


def _rng_entry(value, where: str) -> None:
    value = _mapping(value, where)
    if "torch" not in value:
        raise _Bad(f"{where} has no 'torch' state")
    extra = [k for k in value if k not in ("torch", "cuda")]
    if extra:
        raise _Bad(f"{where} has {extra[0]!r}, not a random number state vaezoo saves")
    for key, t in value.items():
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 1 or t.numel() == 0:
            raise _Bad(f"{where}[{key!r}] is {_shown(t)}, not a byte tensor")
    size = torch.get_rng_state().numel()
    if value["torch"].numel() != size:
        raise _Bad(f"{where}['torch'] holds {value['torch'].numel()} bytes, not {size}")
    with rng_scope(torch.device("cpu")):
        try:
            torch.set_rng_state(value["torch"].cpu())
        except RuntimeError:
            raise _Bad(f"{where}['torch'] is not a valid generator state") from None


def _rng(value, expect: Dict) -> None:
    _rng_entry(value, "")


def _rng_ranks(value, expect: Dict) -> None:
    if not isinstance(value, list) or not value:
        raise _Bad(f"it is {_shown(value)}, not a list of states")
    for i, entry in enumerate(value):
        _rng_entry(entry, f"[{i}]")


def _metadata(value, expect: Dict) -> None:
    if "model" in value and not isinstance(value["model"], str):
        raise _Bad(f"['model'] is {_shown(value['model'])}, not a name")
    if "config" in value:
        _mapping(value["config"], "['config']")


def _scheduler(value, expect: Dict) -> None:
    """A learning-rate scheduler's ``state_dict`` (``LambdaLR``: the epochs stepped, the base rates)."""
    epoch = value.get("last_epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < -1:
        raise _Bad(f"['last_epoch'] is {_shown(epoch)}, not a count of epochs")
    rates = value.get("base_lrs")
    if not isinstance(rates, list) or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r > 0 for r in rates):
        raise _Bad(f"['base_lrs'] is {_shown(rates)}, not a list of positive learning rates")


def _best(value, expect: Dict) -> None:
    """The best epoch so far and the epochs since it (:class:`~vaezoo.inference.early_stopping.EarlyStopping`)."""
    if set(value) != {"epoch", "value", "metric", "since"}:
        raise _Bad(f"it has the keys {sorted(map(str, value))}, not 'epoch', 'value', 'metric' and 'since'")
    epoch, since, metric = value["epoch"], value["since"], value["metric"]
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1):
        raise _Bad(f"['epoch'] is {_shown(epoch)}, not an epoch (an integer >= 1) or None")
    if not isinstance(since, int) or isinstance(since, bool) or since < 0:
        raise _Bad(f"['since'] is {_shown(since)}, not a count of epochs")
    if metric not in (None, "test_elbo", "test_loss"):
        raise _Bad(f"['metric'] is {_shown(metric)}, not 'test_elbo', 'test_loss' or None")
    if (epoch is None) != (value["value"] is None) or (epoch is None) != (metric is None):
        raise _Bad("['epoch'], ['value'] and ['metric'] are not all set or all None")
    if value["value"] is not None:
        _number(value["value"], "['value']")


Check = Callable[[Any, Dict], None]
# field -> (type, what it is, the check of its content), as Trainer.state_dict() writes them
FIELDS: Dict[str, Tuple[type, str, Check]] = {
    "objective": (dict, "the objective's state_dict", _objective),
    "param_store": (dict, "Pyro's param-store state", _param_store),
    "optimizer": (dict, "the optimizer's state_dict", _optimizer_field),
    "epoch": (int, "the number of epochs done", _epoch),
    "history": (list, "the per-epoch metrics", _history),
    "rng": (dict, "the random number states", _rng),
    "metadata": (dict, "the model's name and config", _metadata),
}
# fields present in some checkpoints only (rng_ranks: written by a process group)
OPTIONAL: Dict[str, Tuple[type, str, Check]] = {
    "rng_ranks": (list, "the random number states of every process", _rng_ranks),
    "scheduler": (dict, "the learning-rate schedule's state", _scheduler),
    "best": (dict, "the best epoch so far and the epochs since it", _best),
}


def validate(state: Mapping, path, objective: Optional[Mapping] = None, params: Optional[Sequence] = None,
             optimizer: Optional[Mapping] = None, model: str = "this model") -> None:
    """Checks every field of the checkpoint ``state`` read from ``path`` against what this version
    writes; ``objective`` (a fresh objective's ``state_dict()``), ``params`` (the shapes of the
    parameters the optimizer steps, in its order) and ``optimizer`` (a fresh optimizer's
    ``state_dict()``) add the checks against the model (``model`` names it). Raises a one-line :class:`CheckpointError`
    naming the field and what is wrong in it."""
    expect = {"objective": objective, "params": params, "optimizer": optimizer}
    known = dict(FIELDS, **OPTIONAL, format=(str, "the format", lambda v, e: None))
    for key in state:
        if key not in known:
            raise CheckpointError(f"checkpoint {path} has a field {key!r} that vaezoo never writes; "
                                  "expected a checkpoint written by vaezoo train")
    for key, (kind, what, check) in known.items():
        if key not in state:
            if key in OPTIONAL:
                continue
            raise CheckpointError(f"checkpoint {path} has no {key!r}; expected {what} in a checkpoint written by vaezoo train")
        value = state[key]
        if not isinstance(value, kind) or isinstance(value, bool) or (key == "epoch" and value < 0):
            raise CheckpointError(f"checkpoint {path} has {key}={_shown(value)}; expected {what}")
        try:
            check(value, expect)
        except _Bad as e:
            msg = str(e)
            detail = key + (msg[2:] if msg.startswith("it ") else msg)
            if isinstance(e, _Misfit):
                raise CheckpointError(f"checkpoint {path} does not fit {model} ({detail}); expected a checkpoint of "
                                      "the same model and config") from None
            raise CheckpointError(f"checkpoint {path} is damaged: {detail}; expected {what} as vaezoo writes it") from None
    best = state.get("best", {}).get("epoch")
    if best is not None and best > state["epoch"]:
        raise CheckpointError(f"checkpoint {path} is damaged: best['epoch'] is {best}, after the {state['epoch']} "
                              "epochs done; expected a best epoch among them")
    if len(state["history"]) != state["epoch"]:
        raise CheckpointError(f"checkpoint {path} is damaged: history holds {len(state['history'])} epochs but epoch is "
                              f"{state['epoch']}; expected one record per epoch done")
