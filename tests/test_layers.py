"""The layering holds at import time too: the bottom layers load without the Trainer, the compiler
or any zoo entry, and the registry still finds every entry when it is first read."""

import subprocess
import sys


def _loaded(statement: str) -> set:
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('vaezoo')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_bottom_layers_load_without_training_or_compiling_code():
    # one process for all five: if their union loads no higher layer, none of them does
    bottom = ("vaezoo.distributions", "vaezoo.nets", "vaezoo.traces", "vaezoo.particles", "vaezoo.guards")
    loaded = _loaded("import " + ", ".join(bottom))
    assert set(bottom) <= loaded
    assert not {m for m in loaded if m.startswith(("vaezoo.inference", "vaezoo.entries", "vaezoo.evaluation"))}, loaded


def test_the_registry_loads_the_entries_when_first_read():
    loaded = _loaded("from vaezoo import zoo; assert 'vae' in zoo.names() and zoo.create('vae') is not None")
    assert "vaezoo.entries.vae" in loaded
