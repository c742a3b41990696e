"""What the Trainer tells while it works: a line before compiling, progress bars refreshed by time."""

import torch

from vaezoo import data, zoo
from vaezoo.inference import trainer as trainer_mod
from vaezoo.inference.objective import Objective


def _trainer(progress=True):
    ds = data.load("digits", split="train", binarize="dynamic")
    ds.data = ds.data[:128]
    torch.manual_seed(0)
    m = zoo.create("vae", data_shape=(1, 8, 8), hidden=(16,), latent_dim=2)
    return ds, trainer_mod.Trainer(m.objective(), epochs=1, batch_size=64, device="cpu", progress=progress)


def test_a_compiled_run_says_it_compiles_before_its_first_steps(monkeypatch, capsys):
    # an objective that says it compiles, trained eagerly: only the announcement is under test
    monkeypatch.setattr(Objective, "compiles", property(lambda self: True))
    monkeypatch.setattr(trainer_mod.Trainer, "_can_step_compiled", lambda self: False)
    train, t = _trainer()
    t.fit(train)
    err = capsys.readouterr().err
    assert "compiling the training step (about 20 s per batch shape on a CPU) ..." in err
    assert err.index("compiling the training step") < err.index("epoch 1/1")  # before the bar
    train, t = _trainer(progress=False)
    t.fit(train)
    assert "compiling" not in capsys.readouterr().err  # progress=False: silent


def test_progress_bars_refresh_by_time(monkeypatch):
    seen = []
    real = trainer_mod.tqdm

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "tqdm", spy)
    train, t = _trainer()
    t.fit(train)
    assert seen and seen[0]["mininterval"] == trainer_mod.PROGRESS_SECONDS <= 1.0 and seen[0]["miniters"] == 1
