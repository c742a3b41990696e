"""Test-wide settings: figures render off-screen; a helper that signals a command as a scheduler does."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

# Under pytest-xdist (-n N) the N workers share the cores: each takes its share of torch's threads
# (and passes it on to the commands it starts), set before torch is first imported
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


@pytest.fixture(scope="session")
def bench_script():
    """``load(name)``: the script ``bench/<name>.py`` as a module (``bench/`` is not a package), for
    the tests that check a benchmark's own functions."""
    import importlib.util
    from pathlib import Path

    def load(name):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def signal_when_checkpointed():
    """The function :func:`_signal_when_checkpointed`."""
    return _signal_when_checkpointed


def _signal_when_checkpointed(argv, checkpoint, signum, start_timeout=600, stop_timeout=300):
    """Runs ``argv`` (a ``python -m vaezoo ...`` command) as a process of its own with this test run's
    ``sys.path``, sends it ``signum`` once ``checkpoint`` exists (what a scheduler's preemption, a
    ``kill`` or a ``timeout`` does), and returns ``(returncode, stderr)``."""
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + start_timeout
        while not checkpoint.exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert checkpoint.exists(), p.communicate()
        p.send_signal(signum)
        _, err = p.communicate(timeout=stop_timeout)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, err
