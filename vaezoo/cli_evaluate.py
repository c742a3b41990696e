"""``vaezoo evaluate`` and ``vaezoo sample``: they read a trained run (and write into it only what
they are asked for: an evaluation named by its settings, a picture)."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Dict, List

import torch

from vaezoo import resources, runs
from vaezoo.cli_common import MAX_SAMPLES, count, device as _device, owning, seed as _seed, write_error
from vaezoo.errors import ConfigError, DataError, RunError
from vaezoo.evaluation.seeding import rng_scope, seed_device


def log_px(m, x, samples: int, seed: int, quiet: bool, ais_steps: int = 0, compile: bool = False):
    """Per-datapoint log p(x) by importance sampling (and AIS if asked): ``(summary for the JSON
    file, markdown for report.md, the importance-sampling result)``. In a process group
    (``torchrun``), each process scores its shard of ``x`` and every process gets the whole result,
    equal to one process's to the last bit (see ``log_marginal(shard=...)``)."""
    from vaezoo import evaluation
    from vaezoo.evaluation import report
    from vaezoo.inference import distributed

    start = time.perf_counter()
    processes = distributed.world_size()
    shard = (distributed.rank(), processes) if processes > 1 else None
    result = evaluation.log_marginal(m.model, m.guide, x, num_samples=samples, seed=seed, progress=not quiet,
                                     compile=compile, shard=shard)
    if shard is not None:
        result = evaluation.LogMarginalResult.concatenate(distributed.gather_objects(result))
    seconds = time.perf_counter() - start
    summary = dict(_without_duplicates(result.to_dict()), seconds=seconds, num_data=int(x.shape[0]))
    if shard is not None:
        summary["processes"] = processes
    text = report.format_summary(result, seconds=seconds)
    if ais_steps > 0:
        start = time.perf_counter()
        a = evaluation.ais(m.model, m.guide, x, steps=ais_steps, seed=seed, progress=not quiet)
        summary["ais"] = dict(_without_duplicates(a.to_dict()), steps=ais_steps, seconds=time.perf_counter() - start)
        text += "\n" + report.format_ais(a)
    print(text)
    return summary, text, result


def _without_duplicates(summary: Dict) -> Dict:
    """An estimator's ``to_dict()`` for an evaluation file, which names the datapoints ``num_data``
    and the time ``seconds`` (for every entry, densities or not): their duplicates and an empty
    ``iwae`` (no IWAE-k bound asked for) left out."""
    out = {k: v for k, v in summary.items() if k not in ("num_datapoints", "wall_time_s")}
    if not out.get("iwae", True):
        del out["iwae"]
    return out


#: what each number of an evaluation file is (written into it as ``meaning``)
MEANING = {
    "objective_elbo": "the ELBO of the training objective's own pass: one draw per datapoint, closed-form KL "
                      "where exact (what the training curves show)",
    "elbo": "the importance sampler's ELBO: the mean log-weight of its K particles (same expectation, less noise)",
    "log_px": "log p(x) by importance sampling with K particles: a stochastic lower bound (the IWAE-K bound)",
    "gap": "log_px - elbo: an estimate of KL(q(z | x) || p(z | x)), biased low as log_px is",
    "khat": "Pareto k-hat of the importance weights per datapoint: above 0.7 the estimate is loose",
}
CONDITIONAL = ("conditional on the pose the guide infers as a point (pose_prior=none: a flat pose prior): "
               "log p(x | u), not comparable with the marginal log p(x) of other entries")


def meanings(cfg: Dict) -> Dict[str, str]:
    """:data:`MEANING` for the run with config ``cfg`` (its log p(x) labelled conditional where it is)."""
    if runs.pose_conditional(cfg):
        return dict(MEANING, log_px="log p(x | u) " + CONDITIONAL)
    return dict(MEANING)


def _keep_earlier(run: Path, name: str, gaps: str, epoch) -> None:
    """An evaluation with the same settings of another epoch (a run trained further since) keeps its
    files under names that say its epoch (``eval-...-epoch{E}.json``, ``.npz``, ``gaps-...``), so the
    new one does not overwrite it; the unsuffixed names are always the latest epoch's."""
    import json

    old = run / name
    try:
        earlier = json.loads(old.read_text()).get("epoch")
    except (OSError, ValueError, AttributeError):
        return
    if earlier is None or earlier == epoch:
        return
    moved = {}
    for path in (old.with_suffix(".npz"), run / gaps, old):  # the JSON file last: it names the others
        if path.exists():
            target = moved[path.name] = path.with_name(f"{path.stem}-epoch{earlier}{path.suffix}")
            try:
                path.replace(target)
            except OSError as e:
                raise write_error(target, e) from None
    kept = moved.get(old.name)
    if kept is not None and (run / gaps).name in moved:  # its report links the picture it now has
        from vaezoo.fileio import write_json

        content = json.loads(kept.read_text())
        if isinstance(content.get("report_md"), str):
            content["report_md"] = content["report_md"].replace(f"]({gaps})", f"]({moved[gaps].name})")
            write_json(kept, content)


def write_evaluation(run: Path, name: str, gaps: str, summary: Dict, text: str, result=None, **settings) -> List[Path]:
    """Writes an evaluation's JSON file (with its markdown, which report.md collects) and, for an
    importance-sampling ``result``, its histogram of gaps and its per-datapoint arrays (``.npz``);
    returns the paths."""
    from vaezoo.evaluation import report
    from vaezoo.evaluation.arrays import write_per_datapoint

    _keep_earlier(run, name, gaps, settings.get("epoch"))
    paths = []
    if result is not None:
        paths.append(report.plot_gap_histogram(result, run / gaps))
        # per-datapoint log p(x), ELBO, k-hat beside the JSON file: `vaezoo compare` pairs them
        paths.append(write_per_datapoint(result, run / (Path(name).stem + ".npz")))
        text += f"\n\n![per-datapoint gaps]({gaps})"
    paths.insert(0, report.write_json(run / name, dict(summary, **settings, report_md=text)))
    return paths


def check_fid_flags(args) -> None:
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
    from vaezoo.inference import distributed, resolve_dtype

    samples = count(args.samples, "--samples", 0)
    ais_steps = count(args.ais, "--ais", 0)
    n = count(args.n, "--n", 1)
    seed = _seed(args.seed)
    device = _device(args.device)
    dtype = resolve_dtype(args.dtype)
    check_fid_flags(args)
    if distributed.launched():  # under torchrun: each process scores a shard, rank 0 writes
        for flag, asked in (("--ais", ais_steps), ("--fid", args.fid)):
            if asked:
                raise ConfigError(f"{flag} is not sharded over processes; run it in one process, without torchrun")
        device = distributed.init_from_env(device)
    lead = distributed.rank() == 0
    with contextlib.ExitStack() as stack:
        if not lead:  # one process reports
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            args.quiet = True
        return _evaluate(args, samples, ais_steps, n, seed, device, dtype, lead)


def _evaluate(args, samples, ais_steps, n, seed, device, dtype, lead: bool) -> int:
    from vaezoo.inference import Trainer

    run = Path(args.run)
    with owning(run, "evaluate", create=False):  # it writes eval-*.json and report.md
        m, cfg, state = runs.load_trained(run, device, dtype)  # the whole checkpoint checked: nothing written yet
        if lead:
            runs.remove_stale_parts(run)  # a killed evaluation's temporary files: this process owns the run now
        if args.fid:  # before any expensive pass
            from vaezoo.evaluation.quality import check_model

            check_model(m, args.fid_features)
        split = runs.load_split(cfg, args.split, args.data_dir)
        x = split.data if n is None else split.data[:n]
        x = x.to(device, dtype)
        m.check_data(x)
        objective = m.objective()
        objective.load_state_dict(state["objective"])  # the trained critic of an adversarial entry too
        trainer = Trainer(objective, device=device, dtype=dtype, progress=False, seed=seed)
        asked = [f"{x.shape[0]} {args.split} images", f"--samples {samples}"] + (["--fid"] if args.fid else [])
        with resources.memory_guard(f"evaluating {cfg['model']}", asked, device):
            with rng_scope(device):  # the ELBO's draws follow --seed too
                seed_device(seed, device)
                terms = trainer.evaluate(x)
            density = "elbo" in terms
            head = f"{cfg['model']} on {cfg['dataset']} ({args.split}, {x.shape[0]} images)"
            conditional = runs.pose_conditional(cfg)
            if density:
                print(f"{head}: ELBO {terms['elbo']:.3f} nats (the objective's pass: one draw, closed-form KL where exact)")
                if conditional:
                    print(f"note: every density of {cfg['model']} here is {CONDITIONAL}")
            else:  # a deterministic encoder (aae, wae-*, mask-aae): q(z | x) is a point mass
                samples = ais_steps = 0
                shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(terms.items()) if k != "loss")
                print(f"{head}: {shown}; {cfg['model']} has a deterministic encoder and so no density: no ELBO, "
                      "no log p(x)" + ("" if args.fid else "; --fid measures its samples"))
            settings = dict(split=args.split, num_data=int(x.shape[0]), epoch=state["epoch"], seed=seed, dtype=args.dtype,
                            objective_elbo=terms.get("elbo"), objective_terms=terms, density=density)
            if density:
                settings["meaning"] = meanings(cfg)
            name = runs.eval_name(args.split, int(x.shape[0]), samples, seed, ais_steps)
            if samples > 0:
                summary, text, result = log_px(m, x, samples, seed, args.quiet, ais_steps)
            elif density:
                summary, text, result = {"num_samples": 0}, f"- ELBO: {terms['elbo']:.3f} nats (no importance sampling)", None
            else:
                text = f"- no density (a deterministic encoder): no ELBO, no log p(x); objective terms per datapoint: {shown}"
                summary, result = {"num_samples": 0}, None
            if args.fid:
                from vaezoo.evaluation.quality import model_quality

                fid = model_quality(m, x, seed=seed, features=args.fid_features, weights=args.inception_weights)
                space = "Inception-v3" if args.fid_features == "inception" else "vaezoo's MNIST classifier"
                line = (f"- Frechet distance to the {x.shape[0]} {args.split} images in the features of {space}: "
                        f"means {fid['means']:.2f}, samples {fid['samples']:.2f}")
                print(line)
                summary, text = dict(summary, fid=dict(fid, features=args.fid_features)), text + "\n" + line
        if not lead:
            return 0
        gaps = "gaps-" + name[len("eval-"):-len(".json")] + ".png"
        for path in write_evaluation(run, name, gaps, summary, text, result, **settings):
            print(path)
        runs.write_report(run, cfg, state["history"])
    return 0


def cmd_sample(args) -> int:
    from vaezoo.evaluation.figures import save_image_grid

    n = count(args.n, "--n", 1, maximum=MAX_SAMPLES)
    seed = _seed(args.seed)
    device = _device(args.device)
    run = Path(args.run)
    if args.out is not None:
        out = Path(args.out)
        if str(args.out).strip() == "" or out.is_dir():
            raise RunError(f"--out {args.out!r} is a directory; expected the path of a PNG file")
        runs.check_not_under_file(out, "--out", "the path of a PNG file")
    else:
        out = None  # RUN/samples-epochE-seedS.png, named once the checkpoint's epoch is read
    into_run = out is None or run.resolve() in out.resolve().parents
    with owning(run, "sample", create=False) if into_run else contextlib.nullcontext():
        m, cfg, state = runs.load_trained(run, device)
        if out is None:  # never training's samples.png, nor another setting's picture
            kind = "edits" if args.edit else "samples-likelihood" if args.from_likelihood else "samples"
            out = run / f"{kind}-epoch{state['epoch']}-seed{seed}.png"
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
            raise write_error(out, e) from None
    print(out)
    return 0
