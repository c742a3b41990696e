"""``vaezoo train``: a new run or a resumed one, checked whole before its directory appears, then
trained, pictured, evaluated and reported (the parser is in :mod:`vaezoo.cli`)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Dict

import torch

from vaezoo import data, provenance, resources, runs, zoo
from vaezoo.cli_common import count as _count, overrides as _overrides, device as _device, owning as _owning
from vaezoo.cli_evaluate import log_px, meanings, write_evaluation
from vaezoo.defaults import COMPILE_AUTO_STEPS, DEFAULT_DATASET, DEFAULT_EPOCHS, DEFAULT_MODEL, EVAL_SAMPLES_AFTER_TRAIN
from vaezoo.errors import ConfigError, MissingDependencyError, SiteError
from vaezoo.inference.settings import DTYPES

# the train settings a run records, and the flag that sets each
TRAIN_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
               "clip_norm": "--clip-norm", "dtype": "--dtype", "n_train": "--n-train", "compile": "--compile",
               "schedule": "--schedule", "warmup_epochs": "--warmup-epochs", "kl_warmup": "--kl-warmup",
               "keep": "--keep", "patience": "--patience"}


def _default_out(model: str, dataset: str) -> Path:
    return Path("runs") / f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args) -> int:
    from vaezoo.inference import distributed

    # every value is checked before anything is read or written
    given = runs.check_train({k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}, TRAIN_FLAGS.get)
    eval_samples = _count(args.eval_samples, "--eval-samples", 0, EVAL_SAMPLES_AFTER_TRAIN)
    overrides = _overrides(args.set)
    device = _device(args.device)
    if args.tensorboard:
        tensorboard_writer(None)  # a missing package is refused before anything is read or written
    if distributed.launched():  # under torchrun: join the process group; rank 0 writes the run
        device = distributed.init_from_env(device)
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN, the run directory to continue")
        if overrides:
            raise ConfigError("--set cannot change the config of a run being resumed; omit --set")
        run = Path(args.out)
        with _owning(run, "train --resume", create=False):
            m, cfg, train, test = _resume(args, run, given)
            with _memory(cfg, device):
                return _train(args, run, m, cfg, train, test, eval_samples, device, resume=True)
    model = args.model or DEFAULT_MODEL
    dataset = args.dataset or DEFAULT_DATASET
    zoo.entry(model)  # an unknown name fails before any data is read
    config = zoo.make_config(model, overrides)
    train_cfg = {"epochs": DEFAULT_EPOCHS, **runs.TRAIN_DEFAULTS, **given}
    run = Path(args.out) if args.out is not None else _default_out(model, dataset)
    if distributed.is_distributed():  # every process must name the same directory
        run = Path(distributed.gather_objects(str(run))[0])
    runs.check_new_run(run)
    cfg = {"model": model, "config": zoo.config_dict(config), "dataset": dataset, "data_dir": args.data_dir, "train": train_cfg}
    train, test = _load_data(cfg, args.data_dir, train_cfg.get("n_train"))
    if "compile" not in given:  # long runs compile: ~20 s once, then steps ~1.3x faster (bench/RESULTS.md)
        steps = train_cfg["epochs"] * math.ceil(len(train) / train_cfg["batch_size"])
        train_cfg["compile"] = steps >= COMPILE_AUTO_STEPS
    # a model that cannot fit is refused before it is built (its parameters counted on no memory)
    resources.check_fits(model, config, train.shape, train_cfg["batch_size"], DTYPES[train_cfg["dtype"]], device)
    torch.manual_seed(train_cfg["seed"])  # the initial weights follow the seed too
    with _memory(cfg, device):
        m = zoo.create(model, data_shape=train.shape, **cfg["config"])
    _check_data(m, cfg, train, test, warn=True)
    if train_cfg.get("kl_warmup") and not getattr(m.objective(), "weights_kl", False):
        raise ConfigError(f"--kl-warmup needs an ELBO objective; {model!r} trains with {type(m.objective()).__name__}")
    # only now, with everything checked, built and loaded, does the run directory appear
    with _owning(run, "train", create=True):
        runs.check_new_run(run)  # again, as its owner: another process may have made a run here
        try:
            if distributed.rank() == 0:
                runs.write_config(run, m, dataset, args.data_dir, train_cfg)
            distributed.barrier()
            with _memory(cfg, device):
                return _train(args, run, m, runs.read_config(run), train, test, eval_samples, device, resume=False)
        except BaseException:
            # a new run that failed before its first checkpoint leaves nothing behind (the lock,
            # released next, removes the directory it made once it is empty)
            if distributed.rank() == 0:
                runs.discard_unstarted(run)
            raise


def _memory(cfg, device):
    """Allocator failures while building, training or evaluating become one line naming the run's
    settings (the batch size and the config fields set away from their defaults)."""
    settings = [f"batch size {cfg['train']['batch_size']}"] + list(resources.changed_settings(cfg["model"], cfg["config"]))
    return resources.memory_guard(f"training {cfg['model']}", settings, device)


def _load_data(cfg, data_dir, n_train):
    binarize = cfg["config"].get("binarize")
    train = data.load(cfg["dataset"], split="train", binarize=binarize, data_dir=data_dir or cfg.get("data_dir"))
    test = runs.load_split(cfg, "test", data_dir)
    if n_train is not None:
        train.data, train.targets = train.data[:n_train], train.targets[:n_train]
    return train, test


def _check_data(m, cfg, train, test, warn: bool = False):
    # dynamically binarized training data are intensities: their support is checked on the test split
    binarize = cfg["config"].get("binarize")
    x = train.data if binarize is None else test.data
    m.check_data(x)
    likelihood = getattr(m.model, "likelihood", None)
    if warn and likelihood is not None:
        from vaezoo.models.likelihoods import binary_data_warning

        line = binary_data_warning(getattr(likelihood, "support", None), x, binarize)
        if line is not None:
            print(f"warning: {cfg['model']}: {line}", file=sys.stderr)


def _resume(args, run: Path, given: Dict):
    """Checks that the run in ``run`` can continue with the flags given (a setting that differs
    from the run's is refused, ``--epochs`` may only grow) and loads its checkpoint and data."""
    cfg = runs.read_config(run)
    if args.model is not None and args.model != cfg["model"]:
        raise ConfigError(f"--model {args.model} does not match the run's model {cfg['model']!r}; omit --model to resume")
    if args.dataset is not None and args.dataset != cfg["dataset"]:
        raise ConfigError(f"--dataset {args.dataset} differs from the run's dataset {cfg['dataset']!r}; omit --dataset to resume")
    for key, value in given.items():
        have = cfg["train"].get(key)
        if key != "epochs" and value != have:
            flag = TRAIN_FLAGS[key]
            raise ConfigError(
                f"{flag} {value} differs from the run's {key} {have}; a resumed run keeps its settings: omit {flag} "
                "or start a new run"
            )
    m, cfg, state = runs.load_trained(run, torch.device("cpu"))  # the checkpoint must load before anything changes
    m.train()
    done = state["epoch"]
    epochs = given.get("epochs", cfg["train"]["epochs"])
    if epochs < done:
        raise ConfigError(f"--epochs {epochs} is below the {done} epochs the run has done; expected --epochs >= {done}")
    train, test = _load_data(cfg, args.data_dir, cfg["train"].get("n_train"))
    _check_data(m, cfg, train, test)
    if epochs != cfg["train"]["epochs"]:
        cfg = dict(cfg, train=dict(cfg["train"], epochs=epochs))
    return m, cfg, train, test


def _train(args, run: Path, m, cfg, train, test, eval_samples: int, device, resume: bool) -> int:
    from vaezoo.inference import Trainer, distributed

    lead = distributed.rank() == 0
    train_cfg = cfg["train"]
    if lead:
        runs.remove_stale_parts(run)  # left by a process killed in an atomic write: we own the run now
        if resume and (runs.read_config(run)["train"]["epochs"] != train_cfg["epochs"]
                       or provenance.source_commit() not in runs.recorded_commits(run)):
            runs.write_config(run, m, cfg["dataset"], cfg.get("data_dir"), train_cfg, resumed_run=True)
        procs = f", {distributed.world_size()} processes" if distributed.is_distributed() else ""
        print(f"training {cfg['model']} on {cfg['dataset']} ({len(train)} images, device {device}{procs}) -> {run}", file=sys.stderr)
    distributed.barrier()

    writer = tensorboard_writer(run, start=trainer_epoch(run) if resume else 0) if args.tensorboard and lead else None
    drawn = [0.0]  # when curves.png was last drawn: at most every 20 s (a plot costs ~0.2 s), and at the end

    def report_epoch(trainer, record):
        if time.monotonic() - drawn[0] > 20 or record["epoch"] == trainer.epochs:
            from vaezoo.evaluation.report import plot_curves

            plot_curves(trainer.history, run / "curves.png", title=f"{cfg['model']} on {cfg['dataset']}")
            drawn[0] = time.monotonic()
        line = f"epoch {record['epoch']:>3}/{trainer.epochs}  train loss {record['train_loss']:9.3f}"
        if "test_elbo" in record:
            line += f"  test ELBO {record['test_elbo']:9.3f}"
        if "lr" in record:
            line += f"  lr {record['lr']:.3g}"
        if "compile_seconds" in record:
            line += f"  (compiling {record['compile_seconds']:.1f} s)"
        print(line + f"  ({record['seconds']:.1f} s)", file=sys.stderr)
        if writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(key, value, record["epoch"])
            writer.flush()  # readable while the run goes on

    trainer = Trainer(
        m.objective(compile=train_cfg.get("compile", False)),
        lr=train_cfg["lr"],
        epochs=train_cfg["epochs"],
        batch_size=train_cfg["batch_size"],
        device=device,
        dtype=train_cfg["dtype"],
        seed=train_cfg["seed"],
        clip_norm=train_cfg["clip_norm"],
        out=run,
        progress=not args.quiet,
        metadata={"model": cfg["model"], "config": cfg["config"]},
        on_epoch_end=report_epoch,
        schedule=train_cfg.get("schedule", "constant"),
        warmup_epochs=train_cfg.get("warmup_epochs", 0),
        kl_warmup=train_cfg.get("kl_warmup", 0),
        keep=train_cfg.get("keep", "last"),
        patience=train_cfg.get("patience"),
    )
    try:
        history = trainer.fit(train, test, resume=resume)
    finally:
        if writer is not None:
            writer.close()
    if lead and trainer.stop_reason is not None:  # the one line; metrics.jsonl and report.md say it too
        kept = f"; {run / runs.BEST} holds epoch {trainer.stopping.best_epoch}" if train_cfg.get("keep") == "best" else ""
        print(f"{trainer.stop_reason}{kept}", file=sys.stderr)
    if not lead:  # rank 0 evaluates and draws the pictures; the others wait to leave the group with it
        distributed.barrier()
        return 0
    if history and (trainer.stop_reason is not None or not (run / "curves.png").exists()):  # its last epoch drawn
        from vaezoo.evaluation.report import plot_curves

        plot_curves(history, run / "curves.png", title=f"{cfg['model']} on {cfg['dataset']}")
    m.eval()
    test_x = test.data.to(trainer.device, trainer.dtype)
    pictures = runs.write_pictures(run, m, test_x, seed=train_cfg["seed"])
    written = []
    if eval_samples > 0:
        try:
            summary, text, result = log_px(m, test_x, eval_samples, seed=train_cfg["seed"], quiet=args.quiet,
                                              compile=train_cfg.get("compile", False))
        except SiteError as e:  # a pair no estimator can score (a deterministic encoder): the run stands
            print(f"log p(x) not estimated: {e}", file=sys.stderr)
        else:
            written = write_evaluation(run, runs.EVAL, "gaps.png", summary, text, result, split="test", epoch=trainer.epoch,
                                       meaning=meanings(cfg))
    report_path = runs.write_report(run, cfg, history)
    runs.remove_stale_parts(run)
    print(f"run directory: {run}")
    names = ["config.json", "metrics.jsonl", "curves.png", "checkpoint.pt"]
    names += [runs.BEST] if (run / runs.BEST).is_file() else []
    names += [runs.TENSORBOARD + "/"] if args.tensorboard else []
    for name in names:
        print(f"  {run / name}")
    for path in list(pictures.values()) + written + [report_path]:
        print(f"  {path}")
    # all processes leave the group together: a Gloo process torn down while its peer still holds
    # the connections can abort (SIGABRT) instead of exiting
    distributed.barrier()
    return 0




def trainer_epoch(run: Path) -> int:
    """The epochs a run's metrics.jsonl records (where a resumed run's TensorBoard events go on)."""
    try:
        return len((Path(run) / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def tensorboard_writer(run, start: int = 0):
    """A ``SummaryWriter`` on ``run/tb`` (``run`` None: only checks that TensorBoard is installed).
    Events of epochs after ``start`` that an interrupted invocation wrote are dropped (``purge_step``),
    so a resumed run's curves do not fold back on themselves."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingDependencyError("--tensorboard needs the tensorboard package; expected it installed: "
                                     'pip install "vaezoo[tensorboard]"') from None
    if run is None:
        return None
    return SummaryWriter(log_dir=str(Path(run) / runs.TENSORBOARD), purge_step=start + 1 if start else None)
