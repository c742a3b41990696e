"""The command line: ``vaezoo list | train | evaluate | sample``.

A user's mistake (a :class:`vaezoo.errors.VaezooError`) is printed as one line and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from vaezoo import data, runs, zoo
from vaezoo.errors import ConfigError, RunError, VaezooError

DEFAULT_MODEL = "vae"
DEFAULT_DATASET = "mnist-small"
DEFAULT_EPOCHS = 250  # the main job: about 1 min 45 s on 2 CPU cores (bench/RESULTS.md)
EVAL_SAMPLES_AFTER_TRAIN = 500


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
    from vaezoo.inference import Trainer, distributed, resolve_device

    # under torchrun: join the process group; rank 0 writes the run directory, the others train
    device = resolve_device(args.device)
    if distributed.launched():
        device = distributed.init_from_env(device)
    lead = distributed.rank() == 0
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN, the run directory to continue")
        run = Path(args.out)
        cfg = runs.read_config(run)
        if args.model is not None and args.model != cfg["model"]:
            raise ConfigError(f"--model {args.model} does not match the run's model {cfg['model']!r}; omit --model to resume")
        if args.set:
            raise ConfigError("--set cannot change the config of a run being resumed")
        train_cfg = dict(cfg["train"])
        for key in ("epochs",):
            if getattr(args, key) is not None:
                train_cfg[key] = getattr(args, key)
        m = runs.build(cfg)
        dataset, data_dir = cfg["dataset"], args.data_dir or cfg.get("data_dir")
    else:
        model = args.model or DEFAULT_MODEL
        dataset = args.dataset or DEFAULT_DATASET
        data_dir = args.data_dir
        zoo.entry(model)  # an unknown name fails before any data is read
        config = zoo.make_config(model, _overrides(args.set))
        train_cfg = {
            "epochs": args.epochs if args.epochs is not None else DEFAULT_EPOCHS,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "clip_norm": args.clip_norm,
            "dtype": args.dtype,
        }
        run = Path(args.out) if args.out is not None else _default_out(model, dataset)
        if distributed.is_distributed():  # every process must name the same directory
            run = Path(distributed.gather_objects(str(run))[0])
        if (run / runs.CHECKPOINT).exists():
            raise ConfigError(f"{run} already holds a run; pass --resume to continue it or choose another --out")
        cfg = {"model": model, "config": zoo.config_dict(config), "dataset": dataset, "data_dir": data_dir}
    binarize = cfg["config"].get("binarize")
    train = data.load(dataset, split="train", binarize=binarize, data_dir=data_dir)
    test = runs.load_split({**cfg, "dataset": dataset}, "test", data_dir)
    if args.n_train is not None:
        train.data, train.targets = train.data[: args.n_train], train.targets[: args.n_train]
    if not args.resume:
        torch.manual_seed(train_cfg["seed"])  # the initial weights follow the seed too
        m = zoo.create(cfg["model"], data_shape=train.shape, **cfg["config"])
        if lead:
            runs.write_config(run, m, dataset, data_dir, train_cfg)
        distributed.barrier()
        cfg = runs.read_config(run)
    m.check_data(train.data if binarize is None else test.data)
    dtype = train_cfg.get("dtype", "float32")
    if lead:
        procs = f", {distributed.world_size()} processes" if distributed.is_distributed() else ""
        print(f"training {cfg['model']} on {dataset} ({len(train)} images, device {device}{procs}) -> {run}", file=sys.stderr)

    def report_epoch(trainer, record):
        line = f"epoch {record['epoch']:>3}/{trainer.epochs}  train loss {record['train_loss']:9.3f}"
        if "test_elbo" in record:
            line += f"  test ELBO {record['test_elbo']:9.3f}"
        print(line + f"  ({record['seconds']:.1f} s)", file=sys.stderr)

    trainer = Trainer(
        m.objective(),
        lr=train_cfg["lr"],
        epochs=train_cfg["epochs"],
        batch_size=train_cfg["batch_size"],
        device=device,
        dtype=dtype,
        seed=train_cfg["seed"],
        clip_norm=train_cfg.get("clip_norm"),
        out=run,
        progress=not args.quiet,
        metadata={"model": cfg["model"], "config": cfg["config"]},
        on_epoch_end=report_epoch,
    )
    if args.resume and train_cfg["epochs"] != cfg["train"]["epochs"]:
        if lead:
            runs.write_config(run, m, dataset, data_dir, train_cfg)
        distributed.barrier()
        cfg = runs.read_config(run)
    history = trainer.fit(train, test, resume=args.resume)
    if not lead:  # rank 0 evaluates and draws the pictures
        return 0
    m.eval()
    test_x = test.data.to(trainer.device, trainer.dtype)
    pictures = runs.write_pictures(run, m, test_x, seed=train_cfg["seed"])
    sections = {}
    if args.eval_samples > 0:
        sections["Marginal likelihood"] = _evaluate(m, test_x, run, args.eval_samples, seed=train_cfg["seed"], quiet=args.quiet)
    report = runs.write_report(run, cfg, history, sections)
    print(f"run directory: {run}")
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt"):
        print(f"  {run / name}")
    for path in list(pictures.values()) + [report]:
        print(f"  {path}")
    return 0


# ----------------------------------------------------------------------------------- evaluate
def _evaluate(m, x, run: Path, samples: int, seed: int, quiet: bool, ais_steps: int = 0) -> str:
    """Per-datapoint log p(x) by importance sampling (and AIS if asked); writes ``eval.json`` and
    ``gaps.png`` in the run; returns the markdown summary for ``report.md``."""
    from vaezoo import evaluation
    from vaezoo.evaluation import report

    start = time.perf_counter()
    result = evaluation.log_marginal(m.model, m.guide, x, num_samples=samples, seed=seed, progress=not quiet)
    seconds = time.perf_counter() - start
    summary = dict(result.to_dict(), seconds=seconds, num_data=int(x.shape[0]))
    text = report.format_summary(result, seconds=seconds)
    if ais_steps > 0:
        start = time.perf_counter()
        a = evaluation.ais(m.model, x, proposal="guide", guide=m.guide, steps=ais_steps, seed=seed, progress=not quiet)
        summary["ais"] = {
            "steps": ais_steps,
            "log_px_mean": float(a.log_px.mean()),
            "log_px_se": float(a.log_px.std() / a.log_px.numel() ** 0.5) if a.log_px.numel() > 1 else None,
            "accept_rate_mean": float(a.accept_rate.mean()),
            "seconds": time.perf_counter() - start,
        }
        text += "\n" + report.format_ais(a)
    report.write_json(run / "eval.json", summary)
    report.plot_gap_histogram(result, run / "gaps.png")
    print(text)
    return text + "\n\n![per-datapoint gaps](gaps.png)"


def cmd_evaluate(args) -> int:
    from vaezoo.inference import Trainer, resolve_device, resolve_dtype

    run = Path(args.run)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype)
    m, cfg, state = runs.load_trained(run, device, dtype)
    split = runs.load_split(cfg, args.split, args.data_dir)
    x = split.data if args.n is None else split.data[: args.n]
    x = x.to(device, dtype)
    m.check_data(x)
    trainer = Trainer(m.objective(), device=device, dtype=dtype, progress=False)
    terms = trainer.evaluate(x)
    print(f"{cfg['model']} on {cfg['dataset']} ({args.split}, {x.shape[0]} images): ELBO {terms['elbo']:.3f} nats")
    sections = {}
    if args.fid:
        from vaezoo.evaluation.quality import model_quality

        fid = model_quality(m, x, seed=args.seed)
        sections["Sample quality"] = (f"Frechet distance to the {x.shape[0]} {args.split} images in the features of vaezoo's "
                                      f"MNIST classifier: means {fid['means']:.2f}, samples {fid['samples']:.2f}")
        print(sections["Sample quality"])
    if args.samples > 0:
        sections["Marginal likelihood"] = _evaluate(m, x, run, args.samples, args.seed, args.quiet, args.ais)
    runs.write_report(run, cfg, state.get("history", []), sections)
    return 0


# ----------------------------------------------------------------------------------- sample
def cmd_sample(args) -> int:
    from vaezoo.evaluation.figures import save_image_grid
    from vaezoo.inference import resolve_device

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    run = Path(args.run)
    m, cfg, _ = runs.load_trained(run, resolve_device(args.device))
    torch.manual_seed(args.seed)
    out = Path(args.out) if args.out else run / "samples.png"
    if args.edit:
        from vaezoo.evaluation.observation import edit_from_png

        save_image_grid(edit_from_png(m, *args.edit, n=args.n, seed=args.seed), out, nrow=args.n)
    elif args.from_likelihood:
        from vaezoo.evaluation.quality import generate

        save_image_grid(generate(m, args.n, from_likelihood=True, seed=args.seed), out, nrow=min(args.n, 8))
    else:
        save_image_grid(m.sample(args.n), out, nrow=min(args.n, 8))
    print(out)
    return 0


# ----------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaezoo", description="Structured VAEs as Pyro programs: train, evaluate, sample.")
    sub = p.add_subparsers(dest="command")

    sub.add_parser("list", help="list the zoo's entries and the datasets")

    t = sub.add_parser("train", help="train a zoo entry (default: vae on mnist-small)")
    t.add_argument("--model", default=None, help=f"zoo entry (default {DEFAULT_MODEL}); see vaezoo list")
    t.add_argument("--dataset", default=None, help=f"dataset (default {DEFAULT_DATASET})")
    t.add_argument("--data-dir", default=None, help="folder holding mnist/ etc. (default $VAEZOO_DATA_DIR or the user cache)")
    t.add_argument("--epochs", type=int, default=None, help=f"total epochs (default {DEFAULT_EPOCHS})")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--clip-norm", type=float, default=None, help="clip the gradient norm")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="run directory (default runs/<model>-<dataset>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    t.add_argument("--eval-samples", type=int, default=EVAL_SAMPLES_AFTER_TRAIN,
                   help="importance samples per test image for log p(x) after training (0: skip)")
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
    e.add_argument("--fid", action="store_true", help="Frechet distance of the model's means and samples to the split (28x28 images)")

    s = sub.add_parser("sample", help="a PNG grid of samples from a trained run")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", default=None, help="PNG path (default RUN/samples.png)")
    s.add_argument("--device", default="auto")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--from-likelihood", action="store_true", help="draw from the observation distribution, not its mean")
    s.add_argument("--edit", nargs=2, metavar=("MASK.png", "VALUES.png"),
                   help="set the mask's white pixels to the values' grey levels; the rest: their conditional mean")
    return p


COMMANDS = {"list": cmd_list, "train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "train"  # `vaezoo` alone is the main job, like `vaezoo train`
    if args.command is None:
        args = parser.parse_args(["train"] + list(argv if argv is not None else sys.argv[1:]))
    try:
        return COMMANDS[command](args)
    except VaezooError as e:
        print(f"vaezoo {command}: error: {e}", file=sys.stderr)
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
