"""The README's Python example runs as written."""

import re
from pathlib import Path

import pyro

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    pyro.clear_param_store()
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "log p(x)" in out and "gap" in out
    pyro.clear_param_store()
