"""The command line: ``vaezoo list | train | evaluate | sample | compare``.

A user's mistake (a :class:`vaezoo.errors.VaezooError`) is printed as one line and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from vaezoo import data, runlock, runs, zoo
from vaezoo.compare.command import add_parser as add_compare_parser, cmd_compare
from vaezoo.errors import ConfigError, DataError, RunError, SiteError, VaezooError

DEFAULT_MODEL = "vae"
DEFAULT_DATASET = "mnist-small"
DEFAULT_EPOCHS = 250  # the main job: about 2 min 10 s on 2 CPU cores, compiled (bench/RESULTS.md)
#: ``train`` compiles a run of at least this many steps unless told (--compile / --no-compile): the
#: compiled MLP step pays its ~20 s of compiling back after 5,000-8,000 steps (bench/RESULTS.md)
COMPILE_AUTO_STEPS = 10_000
EVAL_SAMPLES_AFTER_TRAIN = 500
MAX_SAMPLES = 10_000  # one picture of more images is unreadable, and the batch may not fit in memory

# the train settings a run records, and the flag that sets each
TRAIN_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
               "clip_norm": "--clip-norm", "dtype": "--dtype", "n_train": "--n-train", "compile": "--compile"}


def _overrides(pairs: List[str]) -> Dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r} is not key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _default_out(model: str, dataset: str) -> Path:
    return Path("runs") / f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _count(value: Optional[int], flag: str, minimum: int, default: Optional[int] = None, maximum: Optional[int] = None):
    """``value`` of an integer flag (``default`` if not given) checked against its range."""
    if value is None:
        return default
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
        raise ConfigError(f"{flag} {value} is out of range; expected {bound}")
    return value


def _seed(value: int) -> int:
    return runs.TRAIN_CHECKS["seed"](value, "--seed")


def _device(text: Optional[str]) -> torch.device:
    from vaezoo.inference import resolve_device

    text = "auto" if text is None else text
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise ConfigError(f"--device {text!r} is not supported; expected auto, cpu or cuda[:N]")
    device = resolve_device(text)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {text} names a GPU that is not here; expected cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


@contextlib.contextmanager
def _owning(run: Path, command: str, create: bool):
    """Holds ``run``'s lock (rank 0 takes it for a process group) while the block runs."""
    from vaezoo.inference import distributed

    with contextlib.ExitStack() as stack:
        error = None
        if distributed.rank() == 0:
            try:
                stack.enter_context(runlock.RunLock(run, f"vaezoo {command}", create=create))
            except RunError as e:
                error = str(e)
        error = distributed.gather_objects(error)[0]  # every process stops if rank 0 has no lock
        if error is not None:
            raise RunError(error)
        yield


def _write_error(path: Path, e: OSError) -> RunError:
    return RunError(f"cannot write {path} ({e.strerror or e}); expected a writable location")


# ----------------------------------------------------------------------------------- list
def cmd_list(args) -> int:
    width = max(len(n) for n in zoo.names())
    for name in zoo.names():
        print(f"{name:<{width}}  {zoo.describe(name)}")
    print()
    print("datasets: " + ", ".join(data.names()))
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
            return _train(args, run, *_resume(args, run, given), eval_samples, device, resume=True)
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
    torch.manual_seed(train_cfg["seed"])  # the initial weights follow the seed too
    m = zoo.create(model, data_shape=train.shape, **cfg["config"])
    _check_data(m, cfg, train, test)
    # only now, with everything checked, built and loaded, does the run directory appear
    with _owning(run, "train", create=True):
        runs.check_new_run(run)  # again, as its owner: another process may have made a run here
        if distributed.rank() == 0:
            runs.write_config(run, m, dataset, args.data_dir, train_cfg)
        distributed.barrier()
        return _train(args, run, m, runs.read_config(run), train, test, eval_samples, device, resume=False)


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

    def report_epoch(trainer, record):
        line = f"epoch {record['epoch']:>3}/{trainer.epochs}  train loss {record['train_loss']:9.3f}"
        if "test_elbo" in record:
            line += f"  test ELBO {record['test_elbo']:9.3f}"
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
    )
    history = trainer.fit(train, test, resume=resume)
    if not lead:  # rank 0 evaluates and draws the pictures; the others wait to leave the group with it
        distributed.barrier()
        return 0
    m.eval()
    test_x = test.data.to(trainer.device, trainer.dtype)
    pictures = runs.write_pictures(run, m, test_x, seed=train_cfg["seed"])
    written = []
    if eval_samples > 0:
        try:
            summary, text, result = _evaluate(m, test_x, eval_samples, seed=train_cfg["seed"], quiet=args.quiet,
                                              compile=train_cfg.get("compile", False))
        except SiteError as e:  # a pair no estimator can score (a deterministic encoder): the run stands
            print(f"log p(x) not estimated: {e}", file=sys.stderr)
        else:
            written = _write_evaluation(run, runs.EVAL, "gaps.png", summary, text, result, split="test", epoch=trainer.epoch)
    report_path = runs.write_report(run, cfg, history)
    runs.remove_stale_parts(run)
    print(f"run directory: {run}")
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt"):
        print(f"  {run / name}")
    for path in list(pictures.values()) + written + [report_path]:
        print(f"  {path}")
    # all processes leave the group together: a Gloo process torn down while its peer still holds
    # the connections can abort (SIGABRT) instead of exiting
    distributed.barrier()
    return 0


# ----------------------------------------------------------------------------------- evaluate
def _evaluate(m, x, samples: int, seed: int, quiet: bool, ais_steps: int = 0, compile: bool = False):
    """Per-datapoint log p(x) by importance sampling (and AIS if asked): ``(summary for the JSON
    file, markdown for report.md, the importance-sampling result)``."""
    from vaezoo import evaluation
    from vaezoo.evaluation import report

    start = time.perf_counter()
    result = evaluation.log_marginal(m.model, m.guide, x, num_samples=samples, seed=seed, progress=not quiet, compile=compile)
    seconds = time.perf_counter() - start
    summary = dict(result.to_dict(), seconds=seconds, num_data=int(x.shape[0]))
    text = report.format_summary(result, seconds=seconds)
    if ais_steps > 0:
        start = time.perf_counter()
        a = evaluation.ais(m.model, m.guide, x, steps=ais_steps, seed=seed, progress=not quiet)
        summary["ais"] = dict(a.to_dict(), steps=ais_steps, seconds=time.perf_counter() - start)
        text += "\n" + report.format_ais(a)
    print(text)
    return summary, text, result


def _write_evaluation(run: Path, name: str, gaps: str, summary: Dict, text: str, result=None, **settings) -> List[Path]:
    """Writes an evaluation's JSON file (with its markdown, which report.md collects) and, for an
    importance-sampling ``result``, its histogram of gaps and its per-datapoint arrays (``.npz``);
    returns the paths."""
    from vaezoo.evaluation import report

    paths = []
    if result is not None:
        from vaezoo.evaluation.arrays import write_per_datapoint

        paths.append(report.plot_gap_histogram(result, run / gaps))
        # per-datapoint log p(x), ELBO, k-hat beside the JSON file: `vaezoo compare` pairs them
        paths.append(write_per_datapoint(result, run / (Path(name).stem + ".npz")))
        text += f"\n\n![per-datapoint gaps]({gaps})"
    paths.insert(0, report.write_json(run / name, dict(summary, **settings, report_md=text)))
    return paths


def _check_fid_flags(args) -> None:
    """Refuses FID flags that cannot work before a run is loaded and evaluated for minutes."""
    from vaezoo.evaluation.quality import INCEPTION_URL

    if args.inception_weights is not None and not (args.fid and args.fid_features == "inception"):
        raise ConfigError("--inception-weights without --fid --fid-features inception; expected both or neither")
    if args.fid and args.fid_features == "inception":
        if args.inception_weights is None:
            raise ConfigError(f"--fid-features inception needs the Inception-v3 weights: download {INCEPTION_URL} "
                              "and pass its path with --inception-weights PATH")
        if not Path(args.inception_weights).expanduser().is_file():
            raise DataError(f"--inception-weights {args.inception_weights}: no such file; expected the weights "
                            f"file {INCEPTION_URL}")


def cmd_evaluate(args) -> int:
    from vaezoo.inference import Trainer, resolve_dtype

    samples = _count(args.samples, "--samples", 0)
    ais_steps = _count(args.ais, "--ais", 0)
    n = _count(args.n, "--n", 1)
    seed = _seed(args.seed)
    device = _device(args.device)
    dtype = resolve_dtype(args.dtype)
    _check_fid_flags(args)
    run = Path(args.run)
    with _owning(run, "evaluate", create=False):  # it writes eval-*.json and report.md
        m, cfg, state = runs.load_trained(run, device, dtype)
        split = runs.load_split(cfg, args.split, args.data_dir)
        x = split.data if n is None else split.data[:n]
        x = x.to(device, dtype)
        m.check_data(x)
        trainer = Trainer(m.objective(), device=device, dtype=dtype, progress=False)
        terms = trainer.evaluate(x)
        print(f"{cfg['model']} on {cfg['dataset']} ({args.split}, {x.shape[0]} images): ELBO {terms['elbo']:.3f} nats")
        settings = dict(split=args.split, num_data=int(x.shape[0]), epoch=state["epoch"], seed=seed, dtype=args.dtype,
                        objective_elbo=terms["elbo"])
        name = runs.eval_name(args.split, int(x.shape[0]), samples, seed, ais_steps)
        if samples > 0:
            summary, text, result = _evaluate(m, x, samples, seed, args.quiet, ais_steps)
        else:
            summary, text, result = {"num_samples": 0}, f"- ELBO: {terms['elbo']:.3f} nats (no importance sampling)", None
        if args.fid:
            from vaezoo.evaluation.quality import model_quality

            fid = model_quality(m, x, seed=seed, features=args.fid_features, weights=args.inception_weights)
            space = "Inception-v3" if args.fid_features == "inception" else "vaezoo's MNIST classifier"
            line = (f"- Frechet distance to the {x.shape[0]} {args.split} images in the features of {space}: "
                    f"means {fid['means']:.2f}, samples {fid['samples']:.2f}")
            print(line)
            summary, text = dict(summary, fid=dict(fid, features=args.fid_features)), text + "\n" + line
        gaps = "gaps-" + name[len("eval-"):-len(".json")] + ".png"
        for path in _write_evaluation(run, name, gaps, summary, text, result, **settings):
            print(path)
        runs.write_report(run, cfg, state["history"])
    return 0


# ----------------------------------------------------------------------------------- sample
def cmd_sample(args) -> int:
    from vaezoo.evaluation.figures import save_image_grid

    n = _count(args.n, "--n", 1, maximum=MAX_SAMPLES)
    seed = _seed(args.seed)
    device = _device(args.device)
    run = Path(args.run)
    if args.out is not None:
        out = Path(args.out)
        if str(args.out).strip() == "" or out.is_dir():
            raise RunError(f"--out {args.out!r} is a directory; expected the path of a PNG file")
        runs.check_not_under_file(out, "--out", "the path of a PNG file")
    else:
        out = run / "samples.png"
    into_run = run.resolve() in out.resolve().parents
    with _owning(run, "sample", create=False) if into_run else contextlib.nullcontext():
        m, cfg, _ = runs.load_trained(run, device)
        torch.manual_seed(seed)
        if args.edit:
            from vaezoo.evaluation.observation import edit_from_png

            images = edit_from_png(m, *args.edit, n=n, seed=seed)
        elif args.from_likelihood:
            from vaezoo.evaluation.quality import generate

            images = generate(m, n, from_likelihood=True, seed=seed)
        else:
            images = m.sample(n)
        try:
            save_image_grid(images, out, nrow=min(n, 8))
        except OSError as e:
            raise _write_error(out, e) from None
    print(out)
    return 0


# ----------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vaezoo", description="Structured VAEs as Pyro programs: train, evaluate, sample.")
    sub = p.add_subparsers(dest="command")

    sub.add_parser("list", help="list the zoo's entries and the datasets")

    t = sub.add_parser("train", help="train a zoo entry (default: vae on mnist-small)")
    t.add_argument("--model", default=None, help=f"zoo entry (default {DEFAULT_MODEL}); see vaezoo list")
    t.add_argument("--dataset", default=None, help=f"dataset (default {DEFAULT_DATASET})")
    t.add_argument("--data-dir", default=None, help="folder holding mnist/ etc. (default $VAEZOO_DATA_DIR or the user cache)")
    t.add_argument("--epochs", type=int, default=None, help=f"total epochs (default {DEFAULT_EPOCHS})")
    # None marks a flag not given: a resumed run honours given flags or refuses them
    t.add_argument("--batch-size", type=int, default=None, help=f"default {runs.TRAIN_DEFAULTS['batch_size']}")
    t.add_argument("--lr", type=float, default=None, help=f"default {runs.TRAIN_DEFAULTS['lr']}")
    t.add_argument("--clip-norm", type=float, default=None, help="clip the gradient norm (default: no clipping)")
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


COMMANDS = {"list": cmd_list, "train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample, "compare": cmd_compare}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block), like every other refusal of the CLI."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message}; see {self.prog} --help")


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
        return COMMANDS[command](args)
    except VaezooError as e:
        print(f"vaezoo {command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        # every file of a run is written atomically: what is on disk is complete, old or new
        print(f"vaezoo {command}: error: the disk is full ({e.filename or 'while writing the run'}); "
              "each file of the run is kept whole, in its previous version; expected free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vaezoo {command}: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
