"""Run directories: ``config.json`` says what was trained on what; ``checkpoint.pt`` holds the
weights. This module rebuilds a trained zoo entry from a run directory (for evaluate, sample and
resume) and writes the run's pictures and report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from vaezoo import __version__, data, zoo
from vaezoo.errors import CheckpointError, RunError
from vaezoo.evaluation.figures import reconstruction_pairs, save_image_grid
from vaezoo.fileio import atomic_write_text, write_json
from vaezoo.inference import checkpoint as ckpt

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"


def read_config(run: Path) -> Dict[str, Any]:
    run = Path(run)
    if not run.is_dir():
        raise RunError(f"run directory {run} does not exist; expected a directory made by vaezoo train")
    path = run / CONFIG
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} not found; expected a run directory made by vaezoo train") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); expected the run's config") from None
    for key in ("model", "config", "data_shape", "dataset"):
        if key not in cfg:
            raise RunError(f"{path} has no {key!r}; expected a config.json written by vaezoo train")
    return cfg


def write_config(run: Path, model: zoo.ZooModel, dataset: str, data_dir: Optional[str], train: Dict[str, Any]) -> None:
    write_json(
        Path(run) / CONFIG,
        {
            "model": model.name,
            "config": zoo.config_dict(model.config),
            "data_shape": list(model.data_shape),
            "dataset": dataset,
            "data_dir": data_dir,
            "train": train,
            "vaezoo_version": __version__,
            "torch_version": torch.__version__,
        },
    )


def build(cfg: Dict[str, Any]) -> zoo.ZooModel:
    return zoo.create(cfg["model"], data_shape=cfg["data_shape"], **cfg["config"])


def load_trained(run: Path, device: torch.device, dtype=torch.float32):
    """``(zoo model with trained weights, config dict, checkpoint state)`` of a run directory."""
    run = Path(run)
    cfg = read_config(run)
    m = build(cfg)
    state = ckpt.load(run / CHECKPOINT, map_location=device)
    meta = state.get("metadata", {})
    if meta.get("model", cfg["model"]) != cfg["model"]:
        raise CheckpointError(
            f"{run / CHECKPOINT} is a checkpoint of {meta.get('model')!r} but {run / CONFIG} says {cfg['model']!r}; "
            "expected the checkpoint of this run's model"
        )
    objective = m.objective()
    try:
        objective.load_state_dict(state["objective"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{run / CHECKPOINT} does not fit model {cfg['model']!r} ({first})") from None
    return m.to(device, dtype).eval(), cfg, state


def load_split(cfg: Dict[str, Any], split: str, data_dir: Optional[str] = None):
    """The run's dataset split with the protocol of the config: a fixed seeded binarization of the
    test set when training binarized (Burda et al. 2016), the training binarization otherwise."""
    binarize = cfg["config"].get("binarize")
    if split != "train" and binarize is not None:
        binarize = "fixed"
    return data.load(cfg["dataset"], split=split, binarize=binarize, data_dir=data_dir or cfg.get("data_dir"))


def write_pictures(run: Path, m: zoo.ZooModel, test_x: torch.Tensor, seed: int = 0) -> Dict[str, Path]:
    """``samples.png`` (64 prior samples) and ``reconstructions.png`` (32 test images, each above
    its reconstruction)."""
    run = Path(run)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        samples = m.sample(64)
        x = test_x[:32]
        recon = m.reconstruct(x)
    return {
        "samples": save_image_grid(samples, run / "samples.png"),
        "reconstructions": save_image_grid(reconstruction_pairs(x, recon), run / "reconstructions.png"),
    }


def write_report(run: Path, cfg: Dict[str, Any], history, sections: Dict[str, str]) -> Path:
    """``report.md``: what was trained, the last epoch's figures, and any extra ``sections``
    (e.g. the marginal-likelihood evaluation), with the pictures."""
    run = Path(run)
    lines = [f"# {cfg['model']} on {cfg['dataset']}", ""]
    lines.append(f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} by vaezoo {__version__}.")
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
        total = sum(r.get("seconds", 0.0) for r in history)
        lines.append(f"- training time: {total:.1f} s")
        lines.append("")
    for title, body in sections.items():
        lines += [f"## {title}", "", body.rstrip(), ""]
    lines += ["## Pictures", "", "![samples](samples.png)", "", "![reconstructions](reconstructions.png)", ""]
    path = run / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
