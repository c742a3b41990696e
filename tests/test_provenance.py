"""Which code made a run: vaezoo.provenance, and the line a leaderboard prints of it."""

import re
import subprocess

import pytest

from vaezoo import provenance
from vaezoo.compare.report import code_line


@pytest.fixture
def fresh():
    provenance.source_commit.cache_clear()
    yield
    provenance.source_commit.cache_clear()


def test_source_commit_of_a_checkout(fresh):
    if not (provenance.ROOT / ".git").exists():
        pytest.skip("vaezoo is not imported from a git checkout here")
    head = subprocess.run(["git", "-C", str(provenance.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = provenance.source_commit()
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?", commit), commit  # a hash even where tags exist
    assert head.stdout.startswith(commit.split("-")[0])
    clean = subprocess.run(["git", "-C", str(provenance.ROOT), "diff", "--quiet", "HEAD", "--"]).returncode == 0
    assert commit.endswith("-dirty") != clean


def test_source_commit_outside_a_checkout_or_without_git(fresh, tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "ROOT", tmp_path)  # an installed copy: no .git beside the package
    assert provenance.source_commit() is None
    provenance.source_commit.cache_clear()
    (tmp_path / ".git").mkdir()  # looks like a checkout, is not one: git fails
    assert provenance.source_commit() is None
    provenance.source_commit.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert provenance.source_commit() is None


def test_code_line_names_one_commit_or_counts_several():
    assert code_line([{"code": "abc"}, {"code": "abc"}]) == "Code: every cell trained by vaezoo commit abc."
    assert "not recorded" in code_line([{"code": None}, {}])
    assert code_line([{"code": "abc"}, {"code": "def-dirty"}, {"code": "abc"}, {}, {"code": None, "epochs_done": 0}]) == (
        "Code: the cells were trained by different vaezoo code: abc (2 cells), def-dirty (1 cell), not recorded (1 cell).")
    assert code_line([{"epochs_done": 0}]) == "Code: no cell trained yet."  # a cell that never trained has no code


def test_code_header_is_the_line_bench_logs_are_read_back_by(fresh, monkeypatch):
    monkeypatch.setattr(provenance, "source_commit", lambda: "0123456789ab-dirty")
    assert provenance.code_header() == "code: 0123456789ab-dirty"
    monkeypatch.setattr(provenance, "source_commit", lambda: None)
    assert provenance.code_header() == "code: not-a-checkout"


# scripts that only read what other tools measured (their inputs name the code that made them)
READERS = {"budget_change.py", "joined_compare.py", "rho_latent_sweep.py"}


def test_every_measuring_bench_script_prints_its_code():
    """A bench log cannot be tied to its code unless the script says which code ran (a recorded
    MaskAAE log once turned out to come from code never committed)."""
    bench = provenance.ROOT / "bench"
    if not bench.is_dir():
        pytest.skip("not a checkout: no bench/")
    scripts = {p.name: p.read_text() for p in bench.glob("*.py")}
    assert READERS <= set(scripts), READERS - set(scripts)  # a renamed reader must be renamed here too
    silent = [name for name, text in scripts.items()
              if name not in READERS and "print(code_header()" not in text]
    assert not silent, f"bench scripts that do not print code_header(): {silent}"


def test_every_bench_script_imports(bench_script):
    """Each script's imports resolve (run as a module, not as __main__: nothing runs), so a renamed
    function cannot leave a script that only fails when someone runs it."""
    bench = provenance.ROOT / "bench"
    if not bench.is_dir():
        pytest.skip("not a checkout: no bench/")
    for path in sorted(bench.glob("*.py")):
        bench_script(path.stem)
