"""Run directories: ``config.json`` (checked on every read) says what was trained on what;
``checkpoint.pt`` holds the weights. This module decides where a new run may go, rebuilds a trained
zoo entry from a run (for evaluate, sample and resume) and writes its pictures, evaluations and report."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from vaezoo import __version__, data, fileio, provenance, runlock, zoo
from vaezoo.arguments import check_int, check_positive_float
from vaezoo.defaults import KEEP, TRAIN_DEFAULTS
from vaezoo.errors import CheckpointError, ConfigError, RunError, UnknownNameError
from vaezoo.evaluation.figures import reconstruction_pairs, save_image_grid
from vaezoo.fileio import atomic_write_text, write_json
from vaezoo.inference import checkpoint as ckpt
from vaezoo.randomness import rng_scope

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
TENSORBOARD = "tb"  # with --tensorboard: the event files, one scalar per metric and epoch
BEST = "best.pt"  # with --keep best: the checkpoint of the epoch of the best test ELBO so far
EVAL = "eval.json"  # the evaluation `vaezoo train` makes of the full test split after training
SEED_END = 2**32


# ----------------------------------------------------------------------------- train settings
def _int(lo: int, hi: Optional[int] = None):
    """A check of an integer setting in ``[lo, hi)``."""
    return lambda value, label: check_int(label, value, lo, None if hi is None else hi - 1)


def _positive_float(value, label):
    return check_positive_float(label, value)


def _bool(value, label):
    if not isinstance(value, bool):
        raise ConfigError(f"{label} {value!r} is not a boolean; expected true or false")
    return value


def _optional(check):
    return lambda value, label: None if value is None else check(value, label)


def _dtype(value, label):
    if value not in ("float32", "float64"):
        raise ConfigError(f"{label} {value!r} is not a dtype; expected float32 or float64")
    return value


def _schedule(value, label):
    from vaezoo.inference.schedules import SCHEDULES

    if value not in SCHEDULES:
        raise ConfigError(f"{label} {value!r} is not a schedule; expected one of {', '.join(SCHEDULES)}")
    return value


def _keep(value, label):
    if value not in KEEP:
        raise ConfigError(f"{label} {value!r} is not a choice of checkpoints; expected one of {', '.join(KEEP)}")
    return value


# the train settings a run records in config.json["train"], each with its check
TRAIN_CHECKS = {
    "epochs": _int(1),
    "batch_size": _int(1),
    "lr": _positive_float,
    "seed": _int(0, SEED_END),
    "clip_norm": _optional(_positive_float),
    "dtype": _dtype,
    "n_train": _optional(_int(1)),
    "compile": _bool,
    "schedule": _schedule,
    "warmup_epochs": _int(0),
    "kl_warmup": _int(0),
    "keep": _keep,
    "patience": _optional(_int(1)),
}


def check_train(train: Dict[str, Any], label=lambda key: key) -> Dict[str, Any]:
    """The train settings ``train`` with every value checked (``label(key)`` names a value in
    errors, e.g. its command-line flag); unknown keys are a :class:`ConfigError`."""
    out = {}
    for key, value in train.items():
        if key not in TRAIN_CHECKS:
            raise ConfigError(f"{label(key)} is not a train setting; expected one of {', '.join(TRAIN_CHECKS)}")
        out[key] = TRAIN_CHECKS[key](value, label(key))
    return out


def pose_conditional(cfg: Dict[str, Any]) -> bool:
    """Whether a run's log p(x) is conditional on a deterministic pose (transformer VAEs with
    ``pose_prior=none``: a flat prior on the pose, which the guide infers as a point)."""
    return cfg["config"].get("pose_prior") == "none"


# ----------------------------------------------------------------------------- config.json
def _read_json_dict(path: Path) -> Dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _looks_like_run(run: Path) -> bool:
    """Whether ``run`` holds a config.json written by vaezoo (without checking its values)."""
    return {"model", "config", "data_shape", "dataset"} <= set(_read_json_dict(Path(run) / CONFIG))


def read_config(run: Path) -> Dict[str, Any]:
    """``run/config.json``, every value checked as if it came from the command line: the model's
    config through :func:`vaezoo.zoo.make_config`, the train settings through :func:`check_train`."""
    run = Path(run)
    if not run.is_dir():
        what = "is not a directory" if run.exists() else "does not exist"
        raise RunError(f"run directory {run} {what}; expected a directory made by vaezoo train")
    path = run / CONFIG
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} not found; expected a run directory made by vaezoo train") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); expected the run's config") from None
    except RecursionError:  # Python's JSON reader recurses once per level of nesting
        raise RunError(f"{path} is nested too deeply to be read; expected the run's config, an object "
                       "a few levels deep") from None
    except OSError as e:
        raise RunError(f"cannot read {path} ({e.strerror or e}); expected a readable config.json") from None
    if not isinstance(cfg, dict):
        raise RunError(f"{path} holds a {type(cfg).__name__}; expected a config.json written by vaezoo train")
    for key in ("model", "config", "data_shape", "dataset"):
        if key not in cfg:
            raise RunError(f"{path} has no {key!r}; expected a config.json written by vaezoo train")
    if not isinstance(cfg["model"], str):
        raise ConfigError(f"{path}: model={cfg['model']!r} is not a name; expected a zoo entry name")
    if not isinstance(cfg["config"], dict):
        raise ConfigError(f"{path}: config={cfg['config']!r} is not an object; expected the model's config fields")
    shape = cfg["data_shape"]
    if not (isinstance(shape, list) and shape and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)):
        raise ConfigError(f"{path}: data_shape={shape!r}; expected a list of positive integers")
    if not isinstance(cfg["dataset"], str) or cfg["dataset"] not in data.names():
        raise ConfigError(f"{path}: dataset={cfg['dataset']!r}; expected one of {', '.join(data.names())}")
    if cfg.get("data_dir") is not None and not isinstance(cfg["data_dir"], str):
        raise ConfigError(f"{path}: data_dir={cfg['data_dir']!r}; expected a folder path or null")
    try:
        zoo.make_config(cfg["model"], cfg["config"])
    except (ConfigError, UnknownNameError) as e:
        raise ConfigError(f"{path}: {e}") from None
    train = cfg.get("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"{path}: train={train!r} is not an object; expected the run's train settings")
    if "epochs" not in train:
        raise ConfigError(f"{path} has no train.epochs; expected the run's train settings")
    cfg["train"] = {**TRAIN_DEFAULTS, **check_train(train, lambda key: f"{path}: train.{key}")}
    return cfg


def recorded_commits(run: Path) -> List[Optional[str]]:
    """The commits of vaezoo recorded in ``run``'s config.json: the one that started it, then each
    other one that resumed it (empty for a run without a config.json)."""
    cfg = _read_json_dict(Path(run) / CONFIG)
    return _commits(cfg) if cfg else []


def _commits(cfg: Dict[str, Any]) -> List[Optional[str]]:
    return [cfg.get("vaezoo_commit")] + list(cfg.get("resumed_by_commits") or [])


def code_of(cfg: Dict[str, Any]) -> Optional[str]:
    """A run's code in one string: the commit that started it, and those that resumed it; None when
    not recorded (runs older than the record, or outside a git checkout)."""
    commits = _commits(cfg)
    if commits == [None]:
        return None
    shown = [c or "a commit not recorded" for c in commits]
    return shown[0] + (f" (resumed by {', '.join(shown[1:])})" if len(shown) > 1 else "")


def write_config(run: Path, model: zoo.ZooModel, dataset: str, data_dir: Optional[str], train: Dict[str, Any],
                 resumed_run: bool = False) -> None:
    """Writes ``run``'s config.json; for a resumed run it keeps the commit and versions that started
    the run and adds this commit to those that resumed it (a new run ignores a config.json left in
    its directory)."""
    before = _read_json_dict(Path(run) / CONFIG) if resumed_run else {}
    commits, now = (_commits(before) if before else []), provenance.source_commit()
    started = commits[0] if commits else now
    resumed = commits[1:] + ([now] if commits and now not in commits else [])
    write_json(
        Path(run) / CONFIG,
        {
            "model": model.name,
            "config": zoo.config_dict(model.config),
            "data_shape": list(model.data_shape),
            "dataset": dataset,
            "data_dir": data_dir,
            "train": train,
            "vaezoo_version": before.get("vaezoo_version", __version__),
            "vaezoo_commit": started,  # None outside a git checkout
            **({"resumed_by_commits": resumed} if resumed else {}),
            "torch_version": before.get("torch_version", torch.__version__),
        },
    )


def build(cfg: Dict[str, Any]) -> zoo.ZooModel:
    return zoo.create(cfg["model"], data_shape=cfg["data_shape"], **cfg["config"])


def load_trained(run: Path, device: torch.device, dtype=torch.float32, checkpoint: str = CHECKPOINT):
    """``(zoo model with trained weights, config dict, checkpoint state)`` of a run directory, from
    its last checkpoint or (``checkpoint=BEST``) the one of its best test ELBO."""
    run = Path(run)
    cfg = read_config(run)
    if checkpoint == BEST and not (run / BEST).is_file():
        raise RunError(f"{run} has no {BEST}: it was trained without --keep best; expected which='last', "
                       "or a run trained with --keep best")
    m = build(cfg)
    objective = m.objective()
    # the whole checkpoint is checked against this model before anything uses it: the caller
    # (evaluate, sample, a resume) has written nothing yet
    stepped = [tuple(p.shape) for p in objective.parameters() if p.requires_grad]
    state = ckpt.load(run / checkpoint, map_location=device, objective=objective.state_dict(), params=stepped,
                      model=f"model {cfg['model']!r}")
    meta = state.get("metadata", {})
    if meta.get("model", cfg["model"]) != cfg["model"]:
        raise CheckpointError(
            f"{run / checkpoint} is a checkpoint of {meta.get('model')!r} but {run / CONFIG} says {cfg['model']!r}; "
            "expected the checkpoint of this run's model"
        )
    try:
        objective.load_state_dict(state["objective"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{run / checkpoint} does not fit model {cfg['model']!r} ({first})") from None
    return m.to(device, dtype).eval(), cfg, state


def load_split(cfg: Dict[str, Any], split: str, data_dir: Optional[str] = None):
    """The run's dataset split under the evaluation protocol: one fixed seeded binarization
    (Burda et al. 2016) of either split when the run trained on binarized data (dynamically or
    not), the intensities otherwise."""
    binarize = "fixed" if cfg["config"].get("binarize") is not None else None
    return data.load(cfg["dataset"], split=split, binarize=binarize, data_dir=data_dir or cfg.get("data_dir"))


def write_pictures(run: Path, m: zoo.ZooModel, test_x: torch.Tensor, seed: int = 0) -> Dict[str, Path]:
    """``samples.png`` (64 prior samples) and ``reconstructions.png`` (32 test images, each above
    its reconstruction)."""
    run = Path(run)
    with rng_scope(torch.device("cpu")):
        torch.manual_seed(seed)
        samples = m.sample(64)
        x = test_x[:32]
        recon = m.reconstruct(x)
    return {
        "samples": save_image_grid(samples, run / "samples.png"),
        "reconstructions": save_labelled_pairs(reconstruction_pairs(x, recon), run / "reconstructions.png"),
    }


#: the legend of reconstructions.png, in its title and in its PNG text (the "Description" key)
PAIRS_LEGEND = "odd rows (data): test images; even rows (recon): their reconstructions"


def save_labelled_pairs(pairs: torch.Tensor, path: Path, nrow: int = 8, scale: int = 2) -> Path:
    """The grid of :func:`reconstruction_pairs` (rows alternating data and reconstructions) with a
    title saying so and each row labelled "data" or "recon", written atomically as a PNG."""
    import io

    from PIL import Image, ImageDraw, PngImagePlugin

    from vaezoo.evaluation.figures import image_grid

    pad = 2
    grid = Image.fromarray(image_grid(pairs, nrow, pad=pad)).convert("RGB")
    rows = math.ceil(pairs.shape[0] / nrow)
    row_height = (grid.height - pad) // rows  # an image's height and its padding
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    margin, title = 40, 16
    out = Image.new("RGB", (grid.width + margin, grid.height + title), "white")
    out.paste(grid, (margin, title))
    draw = ImageDraw.Draw(out)
    draw.text((2, 2), "rows: data, then its reconstruction (recon)", fill="black")
    for r in range(rows):
        middle = title + scale * (pad + r * row_height + (row_height - pad) // 2)
        draw.text((2, middle - 5), "data" if r % 2 == 0 else "recon", fill="black" if r % 2 == 0 else (160, 0, 0))
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", PAIRS_LEGEND)
    buf = io.BytesIO()
    out.save(buf, format="PNG", pnginfo=info)
    fileio.atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# ----------------------------------------------------------------------------- directories
def check_not_under_file(path: Path, flag: str, expected: str) -> None:
    """Refuses a path whose nearest existing ancestor is a file (nothing can be created there)."""
    for ancestor in Path(path).parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise RunError(f"{flag} {path} lies under the file {ancestor}; expected {expected}")
            break


def check_new_run(run: Path, flag: str = "--out") -> None:
    """Refuses a path that cannot become a new run without harming anything: the current
    directory, a file or a path under one, a non-empty directory that is not a vaezoo run, or a
    run that already has a checkpoint (that one is continued with ``--resume``). Writes nothing."""
    run = Path(run)
    if str(run).strip() == "" or run.resolve() == Path.cwd().resolve():
        raise RunError(f"{flag} {str(run)!r} is the current directory; expected a new directory for the run, e.g. runs/NAME")
    if run.exists() and not run.is_dir():
        raise RunError(f"{flag} {run} is a file; expected a directory for the run")
    check_not_under_file(run, flag, "a directory path")
    if not run.is_dir():
        return
    try:
        entries = [p.name for p in run.iterdir() if p.name != runlock.LOCK and not fileio.is_part(p)]
    except OSError as e:
        raise RunError(f"cannot read {flag} {run} ({e.strerror or e}); expected a readable directory") from None
    if entries and not _looks_like_run(run):
        raise RunError(
            f"{flag} {run} is a non-empty directory that is not a vaezoo run (it holds {sorted(entries)[0]!r}); "
            "expected a new or empty directory"
        )
    if (run / CHECKPOINT).exists():
        raise RunError(f"{run} already holds a run; pass --resume to continue it or choose another {flag}")


def discard_unstarted(run: Path) -> None:
    """Removes what a new run wrote before its first checkpoint (its config.json, metrics and
    temporary files) after it failed: a run directory holding only a config is no run. Only by the
    run's owner, and only while no checkpoint exists."""
    run = Path(run)
    if (run / CHECKPOINT).exists():
        return
    for name in (CONFIG, "metrics.jsonl", BEST):
        try:
            (run / name).unlink()
        except FileNotFoundError:
            pass
        except OSError:  # cannot remove it: the run stays as it is, the error that stopped it is what is told
            return
    fileio.remove_stale_parts(run)
    tb = run / TENSORBOARD
    if tb.is_dir():  # the event files of --tensorboard, and the folder once empty
        for p in tb.glob("events.out.tfevents.*"):
            with contextlib.suppress(OSError):
                p.unlink()
        with contextlib.suppress(OSError):
            tb.rmdir()


def remove_stale_parts(run: Path) -> int:
    """Deletes the temporary files of atomic writes that a killed process left in ``run``; only
    while holding the run's lock."""
    return fileio.remove_stale_parts(run)


# ----------------------------------------------------------------------------- evaluations
def eval_name(split: str, n: int, samples: int, seed: int, ais_steps: int = 0) -> str:
    """The file of a ``vaezoo evaluate`` result, named by its settings, so that one evaluation
    never replaces another of other settings: ``eval-test-n2000-K1000-seed0[-ais500].json``."""
    return f"eval-{split}-n{n}-K{samples}-seed{seed}" + (f"-ais{ais_steps}" if ais_steps > 0 else "") + ".json"


def evaluations(run: Path) -> List[Tuple[Path, Dict[str, Any]]]:
    """The evaluations in ``run`` (``eval.json`` first, then by name), as ``(path, content)``."""
    run = Path(run)
    out = []
    for path in sorted(run.glob("eval*.json"), key=lambda p: (p.name != EVAL, p.name)):
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            continue  # not ours, or unreadable: the report simply leaves it out
        if isinstance(content, dict) and isinstance(content.get("report_md"), str):
            out.append((path, content))
    return out


def write_report(run: Path, cfg: Dict[str, Any], history) -> Path:
    """``report.md``: what was trained, the last epoch's figures, every evaluation in the run
    (``eval*.json``, each under a heading naming its settings), and the pictures."""
    run = Path(run)
    lines = [f"# {cfg['model']} on {cfg['dataset']}", ""]
    code = code_of(cfg)
    lines.append(f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} by vaezoo {__version__}"
                 + (f"; the run was trained by commit {code}." if code else "."))
    lines.append("")
    train = cfg.get("train", {})
    lines.append("| setting | value |")
    lines.append("| --- | --- |")
    for k, v in list(train.items()) + [(f"config.{k}", v) for k, v in cfg["config"].items()]:
        lines.append(f"| {k} | {v} |")
    lines.append("")
    if history:
        last = history[-1]
        lines.append(f"## Training ({last['epoch']} epochs)")
        lines.append("")
        lines.append(f"- final train loss (negative objective, nats per datapoint): {last['train_loss']:.3f}")
        if "test_elbo" in last:
            lines.append(f"- test ELBO: {last['test_elbo']:.3f} nats")
        if "best_epoch" in last:
            metric = "test ELBO" if "best_test_elbo" in last else "test loss"
            best = last.get("best_test_elbo", last.get("best_test_loss"))
            kept = f" (`{BEST}`)" if train.get("keep") == "best" else ""
            lines.append(f"- best {metric}: {best:.3f} nats at epoch {last['best_epoch']}{kept}")
        if last.get("stopped"):
            lines.append(f"- {last['stopped']}")
        total = sum(r.get("seconds", 0.0) for r in history)
        lines.append(f"- training time: {total:.1f} s")
        lines.append("")
    for path, ev in evaluations(run):
        title = "Marginal likelihood" if path.name == EVAL else f"Evaluation {path.stem[len('eval-'):]}"
        lines += [f"## {title}", "", f"`{path.name}`, {ev.get('split', 'test')} split, {ev.get('num_data')} datapoints, "
                  f"checkpoint of epoch {ev.get('epoch')}.", "", ev["report_md"].rstrip(), ""]
    lines += ["## Pictures", "", "![samples](samples.png)", "", "![reconstructions](reconstructions.png)", ""]
    path = run / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
