"""The registry: entries are listed whichever module is imported first, and zoo.py imports none of
them (no zoo <-> entries cycle)."""

import ast
import os
import subprocess
import sys
from pathlib import Path

from vaezoo import zoo

ROOT = Path(__file__).resolve().parents[2]


def test_fresh_import_of_zoo_lists_every_entry():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-c", "import vaezoo.zoo as z; print(','.join(z.names()))"],
        env=env, capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.strip()
    assert out.split(",") == zoo.names()
    assert {"vae", "iwae", "rho-vae"} <= set(out.split(","))


def test_zoo_module_imports_no_entry_and_nothing_of_the_layers_above():
    tree = ast.parse((ROOT / "vaezoo" / "zoo.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):  # a relative import named in full (zoo.py is vaezoo/zoo.py)
            module = ".".join(filter(None, ["vaezoo"] * (node.level > 0) + [node.module])) if node.level else node.module
            imported.add(module)
            imported.update(f"{module}.{a.name}" for a in node.names)
    for above in ("vaezoo.entries", "vaezoo.cli", "vaezoo.runs", "vaezoo.evaluation", "vaezoo.data"):
        assert not any(m == above or m.startswith(above + ".") for m in imported), above
