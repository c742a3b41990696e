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


@functools.lru_cache(maxsize=None)
def source_commit() -> Optional[str]:
    """``git describe --always --dirty`` of the checkout this vaezoo is imported from (a commit
    hash, ``-dirty`` appended when tracked files differ from it); None for an installed copy
    outside a checkout, or where git is missing or fails."""
    if not (ROOT / ".git").exists():  # a directory, or a file in a worktree
        return None
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
