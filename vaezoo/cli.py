"""The command line: ``vaezoo list | train | evaluate | sample | compare``.

A user's mistake (a :class:`vaezoo.errors.VaezooError`) is printed as one line and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from vaezoo.inference.settings import DTYPES
from vaezoo import data, resources, runs, zoo
from vaezoo.cli_common import DEFAULT_EPOCHS, MAX_SAMPLES, count as _count, overrides as _overrides, device as _device, owning as _owning
from vaezoo.compare.command import add_parser as add_compare_parser, cmd_compare
from vaezoo.cli_evaluate import cmd_evaluate, cmd_sample, log_px, meanings, write_evaluation
from vaezoo.errors import ConfigError, SiteError, VaezooError, from_os_error

DEFAULT_MODEL = "vae"
DEFAULT_DATASET = "mnist-small"
#: ``train`` compiles a run of at least this many steps unless told (--compile / --no-compile): the
#: compiled MLP step pays its ~20 s of compiling back after 5,000-8,000 steps (bench/RESULTS.md)
COMPILE_AUTO_STEPS = 10_000
EVAL_SAMPLES_AFTER_TRAIN = 500

# the train settings a run records, and the flag that sets each
TRAIN_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
               "clip_norm": "--clip-norm", "dtype": "--dtype", "n_train": "--n-train", "compile": "--compile",
               "schedule": "--schedule", "warmup_epochs": "--warmup-epochs", "kl_warmup": "--kl-warmup"}


def _default_out(model: str, dataset: str) -> Path:
    return Path("runs") / f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


# ----------------------------------------------------------------------------------- list
def cmd_list(args) -> int:
    width = max(len(n) for n in zoo.names())
    for name in zoo.names():
        print(f"{name:<{width}}  {zoo.describe(name)}")
    print()
    print("datasets: " + ", ".join(data.names()))
    return 0


def cmd_show(args) -> int:
    """An entry's description, its config's docstring, and every field ``--set`` takes."""
    import inspect

    fields = zoo.fields(args.name)  # refuses an unknown name in one line
    print(f"{args.name}: {zoo.describe(args.name)}")
    doc = inspect.getdoc(zoo.entry(args.name).config)
    if doc:
        print()
        print(doc)
    print()
    print("config fields (vaezoo train --model %s --set key=value):" % args.name)
    width = max(len(name) for name, _, _ in fields)
    for name, takes, default in fields:
        shown = ",".join(str(v) for v in default) if isinstance(default, tuple) else default
        print(f"  {name:<{width}}  {takes}; default {shown}")
    return 0


# ----------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from vaezoo.inference import distributed

    # every value is checked before anything is read or written
    given = runs.check_train({k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}, TRAIN_FLAGS.get)
    eval_samples = _count(args.eval_samples, "--eval-samples", 0, EVAL_SAMPLES_AFTER_TRAIN)
    overrides = _overrides(args.set)
    device = _device(args.device)
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
    _check_data(m, cfg, train, test)
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


def _check_data(m, cfg, train, test):
    # dynamically binarized training data are intensities: their support is checked on the test split
    m.check_data(train.data if cfg["config"].get("binarize") is None else test.data)


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
        if resume and runs.read_config(run)["train"]["epochs"] != train_cfg["epochs"]:
            runs.write_config(run, m, cfg["dataset"], cfg.get("data_dir"), train_cfg)
        procs = f", {distributed.world_size()} processes" if distributed.is_distributed() else ""
        print(f"training {cfg['model']} on {cfg['dataset']} ({len(train)} images, device {device}{procs}) -> {run}", file=sys.stderr)
    distributed.barrier()

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
    )
    history = trainer.fit(train, test, resume=resume)
    if not lead:  # rank 0 evaluates and draws the pictures; the others wait to leave the group with it
        distributed.barrier()
        return 0
    if history and not (run / "curves.png").exists():  # a resumed run with no epoch left to train
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
    for name in ("config.json", "metrics.jsonl", "curves.png", "checkpoint.pt"):
        print(f"  {run / name}")
    for path in list(pictures.values()) + written + [report_path]:
        print(f"  {path}")
    # all processes leave the group together: a Gloo process torn down while its peer still holds
    # the connections can abort (SIGABRT) instead of exiting
    distributed.barrier()
    return 0


# ----------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vaezoo", description="Structured VAEs as Pyro programs: train, evaluate, sample.")
    sub = p.add_subparsers(dest="command")

    sub.add_parser("list", help="list the zoo's entries and the datasets")
    show = sub.add_parser("show", help="an entry's description and the config fields --set takes")
    show.add_argument("name", help="a zoo entry (see vaezoo list)")

    t = sub.add_parser("train", help="train a zoo entry (default: vae on mnist-small)")
    t.add_argument("--model", default=None, help=f"zoo entry (default {DEFAULT_MODEL}); see vaezoo list")
    t.add_argument("--dataset", default=None, help=f"dataset (default {DEFAULT_DATASET})")
    t.add_argument("--data-dir", default=None, help="folder holding mnist/ etc. (default $VAEZOO_DATA_DIR or the user cache)")
    t.add_argument("--epochs", type=int, default=None, help=f"total epochs (default {DEFAULT_EPOCHS})")
    # None marks a flag not given: a resumed run honours given flags or refuses them
    t.add_argument("--batch-size", type=int, default=None, help=f"default {runs.TRAIN_DEFAULTS['batch_size']}")
    t.add_argument("--lr", type=float, default=None, help=f"default {runs.TRAIN_DEFAULTS['lr']}")
    t.add_argument("--clip-norm", type=float, default=None, help="clip the gradient norm (default: no clipping)")
    t.add_argument("--schedule", default=None, help="learning-rate schedule: constant (default), burda or cosine")
    t.add_argument("--warmup-epochs", type=int, default=None, help="epochs of linear learning-rate warm-up (default 0)")
    t.add_argument("--kl-warmup", type=int, default=None, metavar="EPOCHS",
                   help="epochs of a KL weight rising linearly from 0 to 1 (ELBO objectives; default 0)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    t.add_argument("--dtype", default=None, choices=["float32", "float64"], help="default float32")
    t.add_argument("--seed", type=int, default=None, help="default 0")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compiled training steps and log p(x) passes (torch.compile: ~20 s per batch shape on a CPU, "
                        f"then faster steps); default: on for runs of at least {COMPILE_AUTO_STEPS:,} steps")
    t.add_argument("--out", default=None, help="run directory (default runs/<model>-<dataset>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    t.add_argument("--eval-samples", type=int, default=None,
                   help=f"importance samples per test image for log p(x) after training (default {EVAL_SAMPLES_AFTER_TRAIN}; 0: skip)")
    t.add_argument("--n-train", type=int, default=None, help=argparse.SUPPRESS)  # tiny budgets in tests
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="test ELBO and log p(x) of a trained run")
    e.add_argument("run")
    e.add_argument("--samples", type=int, default=1000, help="importance samples per datapoint (0: ELBO only)")
    e.add_argument("--ais", type=int, default=0, metavar="STEPS", help="also run AIS with this many steps")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--n", type=int, default=None, help="evaluate the first N datapoints only")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--fid", action="store_true", help="Frechet distance of the model's means and samples to the split")
    e.add_argument("--fid-features", default="mnist", choices=["mnist", "inception"],
                   help="feature space of --fid: vaezoo's MNIST classifier (28x28 grey images, default) or Inception-v3")
    e.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="Inception-v3 weights file for --fid-features inception (torch-fidelity's pt_inception-2015-12-05)")

    s = sub.add_parser("sample", help="a PNG grid of samples from a trained run")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=64, help=f"number of samples, 1 to {MAX_SAMPLES}")
    s.add_argument("--out", default=None, help="PNG path (default RUN/samples.png)")
    s.add_argument("--device", default="auto")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--from-likelihood", action="store_true", help="draw from the observation distribution, not its mean")
    s.add_argument("--edit", nargs=2, metavar=("MASK.png", "VALUES.png"),
                   help="set the mask's white pixels to the values' grey levels; the rest: their conditional mean")
    add_compare_parser(sub)
    return p


COMMANDS = {"list": cmd_list, "show": cmd_show, "train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample, "compare": cmd_compare}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block), like every other refusal of the CLI."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message}; see {self.prog} --help")


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (a scheduler's preemption, or
    ``kill``): it unwinds like Ctrl-C, so that the lock is released and the last checkpoint kept."""


#: the signals a command handles like Ctrl-C, with the exit status the shell would report
SIGNALS = {"SIGINT": 130, "SIGTERM": 143}


@contextlib.contextmanager
def _terminating():
    """SIGTERM raises :class:`Terminated` while the command runs (the previous handler is put back
    after it); SIGINT keeps Python's own handler, which raises ``KeyboardInterrupt``."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may handle signals
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train"] + argv  # `vaezoo` alone is the main job, like `vaezoo train`
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as e:
        print(e, file=sys.stderr)
        return 2
    command = args.command
    try:
        with _terminating():
            return COMMANDS[command](args)
    except VaezooError as e:
        print(f"vaezoo {command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of the output left (`vaezoo list | head`): stop quietly, as a filter does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 0
    except OSError as e:  # the operating system refused a path: one line naming it
        print(f"vaezoo {command}: error: {from_os_error(e)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:
        name = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
        kept = "the last checkpoint is kept" if command == "train" else "every file is whole, as before or complete"
        print(f"vaezoo {command}: interrupted; {kept} ({name}; the lock is released)", file=sys.stderr)
        return SIGNALS[name]
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
