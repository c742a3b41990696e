"""The SOS-VAE's command-line flags: samples from the likelihood, editing from PNGs, the Frechet
distance in ``evaluate``."""

import numpy as np
from PIL import Image

from vaezoo import cli


def test_sample_from_likelihood_edit_and_fid(tmp_path, capsys):
    run = tmp_path / "sos"
    assert cli.main(["train", "--model", "sos-vae", "--out", str(run), "--epochs", "1", "--n-train", "128",
                     "--eval-samples", "0", "--quiet", "--device", "cpu", "--set", "rank=3", "--set", "hidden=16"]) == 0
    mask = np.zeros((28, 28), dtype=np.uint8)
    mask[10:14, 10:14] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(np.full((28, 28), 255, dtype=np.uint8)).save(tmp_path / "values.png")
    assert cli.main(["sample", str(run), "--n", "3", "--from-likelihood", "--out", str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    assert np.asarray(Image.open(tmp_path / "s.png")).shape == (2 * 32, 2 * (3 * 30 + 2))
    assert cli.main(["sample", str(run), "--n", "3", "--edit", str(tmp_path / "mask.png"), str(tmp_path / "values.png"),
                     "--out", str(tmp_path / "e.png"), "--device", "cpu"]) == 0
    edited = np.asarray(Image.open(tmp_path / "e.png"))
    assert edited.shape == (2 * 62, 2 * 92)
    # the second row holds the edits: the painted square is white
    top, left = 2 * (2 + 30 + 10), 2 * (2 + 10)  # padding 2, 28 + 2 per image, scale 2
    assert (edited[top:top + 8, left:left + 8] == 255).all()
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--fid", "--samples", "0", "--n", "50", "--quiet", "--device", "cpu"]) == 0
    assert "Frechet distance to the 50 test images" in capsys.readouterr().out
    assert "Frechet distance to the 50 test images" in (run / "report.md").read_text()
