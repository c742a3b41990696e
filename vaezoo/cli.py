"""The command line: ``vaezoo list | train | evaluate | sample | compare``.

A user's mistake (a :class:`vaezoo.errors.VaezooError`) is printed as one line and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
import threading
from typing import List, Optional

# only what building the parser needs: `vaezoo --help` must not wait for torch and Pyro (the
# commands import them when they run)
from vaezoo.cli_common import threads as _threads
from vaezoo.compare.command import add_parser as add_compare_parser
from vaezoo.defaults import COMPILE_AUTO_STEPS, DEFAULT_DATASET, DEFAULT_EPOCHS, DEFAULT_MODEL, DTYPE_NAMES, \
    EVAL_SAMPLES_AFTER_TRAIN, KEEP, MAX_SAMPLES, TRAIN_DEFAULTS
from vaezoo.errors import VaezooError, from_os_error


# ----------------------------------------------------------------------------------- list
def cmd_list(args) -> int:
    from vaezoo import data, zoo

    width = max(len(n) for n in zoo.names())
    for name in zoo.names():
        print(f"{name:<{width}}  {zoo.describe(name)}")
    print()
    print("datasets: " + ", ".join(data.names()))
    return 0


def cmd_show(args) -> int:
    """An entry's description, its config's docstring, and every field ``--set`` takes."""
    import inspect

    from vaezoo import zoo

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
    t.add_argument("--batch-size", type=int, default=None, help=f"default {TRAIN_DEFAULTS['batch_size']}")
    t.add_argument("--lr", type=float, default=None, help=f"default {TRAIN_DEFAULTS['lr']}")
    t.add_argument("--clip-norm", type=float, default=None, help="clip the gradient norm (default: no clipping)")
    t.add_argument("--schedule", default=None, help="learning-rate schedule: constant (default), burda or cosine")
    t.add_argument("--warmup-epochs", type=int, default=None, help="epochs of linear learning-rate warm-up (default 0)")
    t.add_argument("--kl-warmup", type=int, default=None, metavar="EPOCHS",
                   help="epochs of a KL weight rising linearly from 0 to 1 (ELBO objectives; default 0)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    t.add_argument("--dtype", default=None, choices=DTYPE_NAMES, help="default float32")
    t.add_argument("--seed", type=int, default=None, help="default 0")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compiled training steps and log p(x) passes (torch.compile: ~20 s per batch shape on a CPU the "
                        f"first time, then faster steps); default: on for runs of at least {COMPILE_AUTO_STEPS:,} steps")
    t.add_argument("--out", default=None, help="run directory (default runs/<model>-<dataset>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    t.add_argument("--eval-samples", type=int, default=None,
                   help=f"importance samples per test image for log p(x) after training (default {EVAL_SAMPLES_AFTER_TRAIN}; 0: skip)")
    t.add_argument("--n-train", type=int, default=None, help=argparse.SUPPRESS)  # tiny budgets in tests
    t.add_argument("--keep", default=None, choices=KEEP,
                   help="checkpoints kept: last (default: checkpoint.pt) or best (also best.pt, the epoch of the best test ELBO)")
    t.add_argument("--patience", type=int, default=None, metavar="N",
                   help="stop when the test ELBO has not improved for N epochs (default: train every epoch)")
    t.add_argument("--tensorboard", action="store_true",
                   help="also write each epoch's metrics as TensorBoard events in RUN/tb (pip install vaezoo[tensorboard])")
    _threads_flag(t)
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
    _threads_flag(e)
    e.add_argument("--fid", action="store_true", help="Frechet distance of the model's means and samples to the split")
    e.add_argument("--fid-features", default="mnist", choices=["mnist", "inception"],
                   help="feature space of --fid: vaezoo's MNIST classifier (28x28 grey images, default) or Inception-v3")
    e.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="Inception-v3 weights file for --fid-features inception (weights-inception-2015-12-05-6726825d.pth, torch-fidelity's conversion of the TensorFlow FID network)")

    s = sub.add_parser("sample", help="a PNG grid of samples from a trained run")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=64, help=f"number of samples, 1 to {MAX_SAMPLES}")
    s.add_argument("--out", default=None,
                   help="PNG path (default RUN/samples-epochE-seedS.png; RUN/samples.png is training's, never replaced)")
    s.add_argument("--device", default="auto")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--from-likelihood", action="store_true", help="draw from the observation distribution, not its mean")
    s.add_argument("--edit", nargs=2, metavar=("MASK.png", "VALUES.png"),
                   help="set the mask's white pixels to the values' grey levels; the rest: their conditional mean")
    _threads_flag(s)
    add_compare_parser(sub)
    return p


def _threads_flag(parser) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads torch uses (torch.set_num_threads; default: torch's, the cores or $OMP_NUM_THREADS)")


def _command(module: str, name: str):
    """The command ``name`` of ``module``, imported when it runs (so that --help imports neither)."""

    def run(args):
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return run


COMMANDS = {"list": cmd_list, "show": cmd_show, "train": _command("vaezoo.cli_train", "cmd_train"),
            "evaluate": _command("vaezoo.cli_evaluate", "cmd_evaluate"), "sample": _command("vaezoo.cli_evaluate", "cmd_sample"),
            "compare": _command("vaezoo.compare.command", "cmd_compare")}


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
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:  # `vaezoo trian`: train takes no word
        close = difflib.get_close_matches(argv[0], list(COMMANDS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(COMMANDS)}"
        print(f"vaezoo: error: unknown command {argv[0]!r}; {hint}", file=sys.stderr)
        return 2
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
            _threads(getattr(args, "threads", None))
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
        dist = sys.modules.get("torch.distributed")  # only a command that imported it can have a group
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
