"""Which code made a result: the git commit of the vaezoo checkout a program runs from.

``vaezoo_version`` alone does not tell two runs of a checkout apart (it changes with releases, the
code with every commit), and a cached result can outlive the code that made it; a run records
:func:`source_commit` beside the version, and a table built from several runs can say when they
came from different code.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> Optional[subprocess.CompletedProcess]:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=None)
def source_commit() -> Optional[str]:
    """The commit of the checkout this vaezoo is imported from, 12 hex digits, with ``-dirty``
    appended when tracked files differ from it; None for an installed copy outside a checkout, or
    where git is missing or fails."""
    if not (ROOT / ".git").exists():  # a directory, or a file in a worktree
        return None
    head = _git("rev-parse", "--short=12", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return None
    changed = _git("diff", "--quiet", "HEAD", "--")  # exit status 1: tracked files differ from HEAD
    return head.stdout.strip() + ("-dirty" if changed is not None and changed.returncode == 1 else "")


def code_header() -> str:
    """``code: <commit>`` (``not-a-checkout`` outside a checkout): the first line a bench script prints,
    so that its log names the code that made it (``bench/tvae_probe.py --from-logs`` reads it back)."""
    return f"code: {source_commit() or 'not-a-checkout'}"
