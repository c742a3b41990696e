"""The cells of a comparison: one ordinary run directory ``DIR/<entry>/seed<S>`` per entry and seed,
trained and evaluated by ``vaezoo train`` / ``vaezoo evaluate`` in subprocesses, as jobs run J at a
time on this machine or through submitit on a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from vaezoo import runs, zoo
from vaezoo.errors import ConfigError, MissingDependencyError, RunError

LOGS = "logs"
#: seconds a cell's running command is given to stop on its own when this process is interrupted
#: (a terminal's Ctrl-C reaches both) before the signal is passed on to it (a ``kill`` or a
#: ``timeout`` reaches this process alone)
FORWARD_GRACE = 10.0
SLURM_CPUS = 4  # cores (and torch threads) per cell on a cluster: an MLP cell gains little beyond


@dataclass(frozen=True)
class Cell:
    """What one job does: train ``model`` with ``seed`` into ``run`` for ``epochs`` epochs, then
    evaluate it with ``samples`` importance samples (0: not at all, a point-mass guide) and, if
    ``ais_steps``, AIS on the first ``ais_subset`` test points."""

    model: str
    seed: int
    run: str
    log: str
    epochs: int
    dataset: str
    overrides: Dict[str, str]
    train: Dict[str, Any]
    samples: int
    eval_seed: int
    ais_subset: Optional[int]
    ais_steps: Optional[int]
    data_dir: Optional[str]
    num_test: Optional[int] = None  # the test points scored (None: the largest evaluation found)
    n_test: Optional[int] = None  # --n-test: evaluate the first n_test points only (None: the whole split)
    threads: Optional[int] = None


def cell_dir(out: Path, model: str, seed: int) -> Path:
    return Path(out) / model / f"seed{seed}"


def checkpoint_epoch(run: Path) -> Optional[int]:
    """The epochs done by the run's checkpoint, or None when it has none."""
    from vaezoo.inference import checkpoint as ckpt

    path = Path(run) / runs.CHECKPOINT
    if not path.is_file():
        return None
    return int(ckpt.load(path)["epoch"])


def eval_file(run: Path, n: Optional[int], samples: int, seed: int, ais_steps: int = 0) -> Optional[Path]:
    """The run's ``vaezoo evaluate`` result for these settings (``n`` None: the whole test split,
    the largest n), or None."""
    if n is not None:
        path = Path(run) / runs.eval_name("test", n, samples, seed, ais_steps)
        return path if path.is_file() else None
    suffix = f"-K{samples}-seed{seed}.json"
    found = [p for p in Path(run).glob(f"eval-test-n*{suffix}") if p.name[len("eval-test-n"):-len(suffix)].isdigit()]
    return max(found, key=lambda p: int(p.name[len("eval-test-n"):-len(suffix)]), default=None)


def _evaluated(path: Optional[Path], epoch: int, samples: int) -> bool:
    if path is None:
        return False
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return content.get("epoch") == epoch and (samples == 0 or path.with_suffix(".npz").is_file())


def check_cell(run: Path, expected: Dict[str, Any], epochs: int) -> None:
    """Refuses (one line naming the field and both values) a cell trained with other settings than
    ``expected`` (see :func:`settings.expected_config`), or one past ``epochs``."""
    run = Path(run)
    if not (run / runs.CONFIG).is_file():
        if run.exists() and any(p for p in run.iterdir() if p.name != ".vaezoo.lock" and not p.name.endswith(".part")):
            raise RunError(f"cell {run} holds files but no config.json; expected a run made by vaezoo train or no directory")
        return
    cfg = runs.read_config(run)
    for key in ("model", "dataset"):
        if cfg[key] != expected[key]:
            raise ConfigError(f"cell {run} was trained with {key} {cfg[key]!r}, not {expected[key]!r} as asked; "
                              "expected the same settings or another --out")
    # a field the cell's config.json lacks was added to the entry after the cell was trained, and
    # reads as its default (a new field's default keeps the old behaviour), as loading the run does
    defaults = json.loads(json.dumps(zoo.config_dict(zoo.make_config(expected["model"]))))
    have_config = {**defaults, **json.loads(json.dumps(cfg["config"]))}
    for key, want in expected["config"].items():
        if have_config.get(key, "(absent)") != want:
            raise ConfigError(f"cell {run} was trained with config {key}={have_config.get(key, '(absent)')!r}, not "
                              f"{want!r} as asked; expected the same settings (--set) or another --out")
    for key, want in expected["train"].items():
        have = cfg["train"].get(key)
        if have != want:
            raise ConfigError(f"cell {run} was trained with {key} {have!r}, not {want!r} as asked; "
                              "expected the same settings or another --out")
    done = checkpoint_epoch(run)
    if done is not None and done > epochs:
        raise ConfigError(f"cell {run} has done {done} epochs, more than --epochs {epochs}; expected --epochs >= {done}")


def plan(cell: Cell) -> List[List[str]]:
    """The ``vaezoo`` commands still to run for ``cell`` (none for a finished cell)."""
    run = Path(cell.run)
    done = checkpoint_epoch(run)
    commands = []
    common = ["--quiet"] + (["--data-dir", cell.data_dir] if cell.data_dir else [])
    if done is None:
        train = ["train", "--model", cell.model, "--dataset", cell.dataset, "--epochs", str(cell.epochs),
                 "--seed", str(cell.seed), "--out", str(run), "--eval-samples", "0"]
        flags = {"batch_size": "--batch-size", "lr": "--lr", "n_train": "--n-train", "schedule": "--schedule"}
        train += [x for k, v in cell.train.items() if k in flags for x in (flags[k], str(v))]
        train += [x for k, v in cell.overrides.items() for x in ("--set", f"{k}={v}")]
        commands.append(train + common)
    elif done < cell.epochs:
        commands.append(["train", "--resume", "--out", str(run), "--epochs", str(cell.epochs), "--eval-samples", "0"] + common)
    if cell.samples == 0:  # a point-mass guide: no density, nothing for evaluate to estimate
        return commands
    trained = bool(commands)
    scored = ["evaluate", str(run), "--samples", str(cell.samples), "--seed", str(cell.eval_seed)] + common
    evaluate = scored + (["--n", str(cell.n_test)] if cell.n_test is not None else [])
    if trained or not _evaluated(eval_file(run, cell.num_test, cell.samples, cell.eval_seed), cell.epochs, cell.samples):
        commands.append(evaluate)
    if cell.ais_steps:
        n = cell.ais_subset
        if trained or not _evaluated(eval_file(run, n, cell.samples, cell.eval_seed, cell.ais_steps), cell.epochs, cell.samples):
            commands.append(scored + ["--n", str(n), "--ais", str(cell.ais_steps)])
    return commands


def _environment(threads: Optional[int]) -> Dict[str, str]:
    import vaezoo

    env = dict(os.environ)
    # the subprocesses import this very vaezoo (a checkout on sys.path, not another installed copy)
    root = str(Path(vaezoo.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if threads is not None:  # torch reads these when it starts: J jobs share the cores
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    return env


def run_cell(cell: Cell, children: Optional[Children] = None) -> Dict[str, Any]:
    """Trains and evaluates ``cell`` with ``python -m vaezoo ...`` subprocesses (what is done already
    is not redone; an interrupted cell resumes from its checkpoint). Returns ``{"run", "commands"}``;
    a failing command is a :class:`RunError` naming its last line and the log. ``children``: where
    the running command is registered, so that :func:`run_local` can stop it."""
    children = children if children is not None else Children()
    Path(cell.log).parent.mkdir(parents=True, exist_ok=True)
    commands = plan(cell)
    with open(cell.log, "a") as log:
        for command in commands:
            if children.stopping.is_set():
                raise RunError(f"cell {cell.run}: not started: the comparison was interrupted")
            log.write("$ vaezoo " + " ".join(command) + "\n")
            log.flush()
            done = children.run([sys.executable, "-m", "vaezoo"] + command, log, _environment(cell.threads))
            if done is None:  # the comparison was stopped between the check above and the start
                raise RunError(f"cell {cell.run}: not started: the comparison was interrupted")
            returncode, stderr = done
            log.write(stderr)
            if returncode != 0:
                lines = [line for line in stderr.strip().splitlines() if line.strip()]
                last = lines[-1] if lines else f"exit status {returncode}"
                raise RunError(f"cell {cell.run}: vaezoo {command[0]} failed: {last} (log {cell.log})")
    return {"run": cell.run, "commands": [" ".join(c) for c in commands]}


class Children:
    """The cells' running commands, so that an interrupted comparison stops them. ``subprocess.run``
    alone would leave a ``kill`` of this process waiting for the running cells to finish (hours) while
    they never hear of it; a terminal's Ctrl-C reaches them too, so they are first given
    :data:`FORWARD_GRACE` seconds to stop on their own (a second signal could cut their cleanup short)."""

    def __init__(self):
        self.stopping = threading.Event()
        self._live: set = set()
        self._lock = threading.Lock()

    def run(self, argv: List[str], log, env: Dict[str, str]):
        """``(returncode, stderr)`` of ``argv``, its stdout into ``log``; None, not started, once
        :meth:`stop` was called (the start and the registration are one step under the lock, so
        :meth:`stop` sees every command that started)."""
        with self._lock:
            if self.stopping.is_set():
                return None
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.PIPE, text=True, env=env)
            self._live.add(proc)
        try:
            _, stderr = proc.communicate()
        finally:
            with self._lock:
                self._live.discard(proc)
        return proc.returncode, stderr

    def stop(self, signum: int, grace: float = FORWARD_GRACE) -> None:
        """No new command starts; the running ones get ``grace`` seconds, then ``signum``."""
        with self._lock:
            self.stopping.set()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._running():
            time.sleep(0.05)
        for proc in self._running():
            proc.send_signal(signum)

    def _running(self) -> list:
        with self._lock:
            return [p for p in self._live if p.poll() is None]


class CellJob:
    """``run_cell`` as a submitit job that is requeued when SLURM preempts it or its time runs out:
    the requeued job calls ``run_cell`` again, which resumes the run from its last checkpoint."""

    def __call__(self, cell: Cell) -> Dict[str, Any]:
        return run_cell(cell)

    def checkpoint(self, cell: Cell):
        import submitit

        return submitit.helpers.DelayedSubmission(self, cell)


def progress(line: str) -> None:
    """A comparison's progress line, on stderr: which cell started (and its log), which finished."""
    print(f"compare: {line}", file=sys.stderr, flush=True)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cell_threads(jobs: int, threads: Optional[int] = None, local: bool = True) -> int:
    """A cell's torch threads: ``threads`` if given, else the cores this process may use shared by
    ``jobs`` cells at once (at least 1), or :data:`SLURM_CPUS` for a cluster's job."""
    if threads is not None:
        return threads
    return max(1, cores() // jobs) if local else SLURM_CPUS


def run_local(cells: List[Cell], jobs: int, threads: Optional[int] = None) -> List[str]:
    """Runs ``cells`` ``jobs`` at a time on this machine, each with :func:`cell_threads` torch
    threads; returns the error lines of the cells that failed."""
    threads = cell_threads(jobs, threads)
    errors = []
    lock = threading.Lock()
    children = Children()
    finished = 0

    def work(cell: Cell):
        nonlocal finished
        start = time.monotonic()
        progress(f"{cell.model} seed {cell.seed}: started (log {cell.log})")
        try:
            run_cell(Cell(**{**asdict(cell), "threads": threads}), children)
            outcome = "done"
        except RunError as e:
            with lock:
                errors.append(str(e))
            outcome = "failed"
        with lock:
            finished += 1
            count = finished
        progress(f"cell {count} of {len(cells)} {outcome}: {cell.model} seed {cell.seed} "
                 f"({(time.monotonic() - start) / 60:.1f} min)")

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        list(pool.map(work, cells))
    except BaseException as e:  # Ctrl-C, or the CLI's SIGTERM (a kill, a timeout, a scheduler)
        children.stop(signal.SIGINT if isinstance(e, KeyboardInterrupt) else signal.SIGTERM)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return errors


def run_submitit(cells: List[Cell], out: Path, jobs: int, local: bool, partition: Optional[str] = None,
                 timeout_min: int = 24 * 60, threads: Optional[int] = None) -> List[str]:
    """Runs ``cells`` as one submitit job array: on SLURM (``submitit.AutoExecutor``, which falls back
    to local processes where there is no SLURM) or, with ``local``, ``submitit.LocalExecutor``.

    Why submitit rather than Ray: the cells are independent batch jobs that already resume from
    their checkpoints, which is exactly SLURM's job array with requeue on preemption; submitit submits
    a Python function as such an array (``map_array``), requeues it through ``checkpoint()``, needs
    no cluster service running beside the jobs (Ray needs a head node on the cluster), and has a local
    executor that runs the same jobs as processes, which the tests use."""
    try:
        import submitit
    except ImportError:
        raise MissingDependencyError("--launcher submitit needs submitit; expected it installed "
                                     "(pip install \"vaezoo[cluster]\")") from None
    folder = Path(out) / "submitit"
    threads = cell_threads(jobs, threads, local)
    cells = [Cell(**{**asdict(c), "threads": threads}) for c in cells]
    if local:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=timeout_min)
    else:
        executor = submitit.AutoExecutor(folder=folder)
        params = dict(timeout_min=timeout_min, slurm_array_parallelism=jobs, cpus_per_task=threads)
        if partition:
            params["slurm_partition"] = partition
        executor.update_parameters(**params)
    submitted = executor.map_array(CellJob(), cells)
    progress(f"{len(cells)} cells submitted (submitit's logs in {folder}; each cell's own in its log)")
    errors = []
    for count, (cell, job) in enumerate(zip(cells, submitted), 1):
        outcome = "done"
        try:
            job.result()
        except Exception as e:  # submitit wraps the job's exception in its own FailedJobError
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            reason = next((line.split(": ", 1)[1] for line in reversed(lines) if line.startswith("vaezoo.errors.")), None)
            errors.append(reason or f"cell {cell.run}: job {job.job_id} failed ({lines[-1] if lines else e}); see {folder}")
            outcome = "failed"
        progress(f"cell {count} of {len(cells)} {outcome}: {cell.model} seed {cell.seed}")
    return errors
