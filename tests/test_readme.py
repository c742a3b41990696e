"""The README's Python examples run as written, each in a fresh namespace and param store."""

import re
from pathlib import Path

import pyro
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)

# what each example prints, in the order of the README
EXPECTED = [
    ["log p(x)", "gap"],  # your own model, in plain Pyro
    # the zoo; the param-store names are the model's own ("vae" in a fresh process, "vae#k" in this one)
    ["torch.Size([4, 20]) torch.Size([200, 20])", "log p(x)", "exact", "'{pyro_name}.guide.encoder$$$net.0.bias'"],
    ["samples torch.Size([3, 4, 1, 28, 28])", "edited torch.Size([4, 1, 28, 28])", "FID of samples"],  # SOS-VAE
    ["epoch 3: test ELBO", "log p(x)"],  # a trained run in Python
]


def test_readme_has_the_examples():
    assert len(BLOCKS) == len(EXPECTED)


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_readme_example_runs(index, capsys):
    pyro.clear_param_store()
    namespace = {}
    try:
        exec(compile(BLOCKS[index], f"README.md example {index + 1}", "exec"), namespace)
    finally:
        pyro.clear_param_store()
    out = capsys.readouterr().out
    for text in EXPECTED[index]:
        if "{pyro_name}" in text:
            text = text.replace("{pyro_name}", namespace["m"].pyro_name)
        assert text in out, (text, out)
