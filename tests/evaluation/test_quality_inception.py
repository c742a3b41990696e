"""The Inception path of the sample-quality metric: its refusals in one line (no weights, a missing
or wrong weights file, no torch-fidelity), and, where torch-fidelity is installed, its value against
an exact Frechet distance of torch-fidelity's own features of the same network (random weights)."""

import sys

import numpy as np
import pytest
import torch

from vaezoo import cli
from vaezoo.errors import CheckpointError, ConfigError, DataError, MissingDependencyError, ShapeError
from vaezoo.evaluation import quality


def grey(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g, dtype=torch.float64)


def test_inception_refuses_in_one_line(tmp_path, monkeypatch):
    x = grey(4, 0)
    with pytest.raises(ConfigError, match=r"needs the Inception-v3 weights file; expected weights=PATH "
                                          r"\(download it from https://github.com/toshas/torch-fidelity/"):
        quality.frechet_distance(x, x, features="inception")
    with pytest.raises(ConfigError, match=r"features='fid'; expected one of 'mnist', 'inception'"):
        quality.frechet_distance(x, x, features="fid")
    with pytest.raises(DataError, match=r"no Inception weights at .*nope.pth; expected the file https://"):
        quality.frechet_distance(x, x, features="inception", weights=tmp_path / "nope.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a state dict")
    with pytest.raises(CheckpointError, match=r"garbage.pth are corrupt or not a state dict"):
        quality.frechet_distance(x, x, features="inception", weights=tmp_path / "garbage.pth")
    torch.save(quality.MNISTClassifier().state_dict(), tmp_path / "mnist.pth")
    with pytest.raises(CheckpointError, match=r"mnist.pth holds no Inception-v3 FID network"):
        quality.frechet_distance(x, x, features="inception", weights=tmp_path / "mnist.pth")
    with pytest.raises(ShapeError, match=r"of shape \(4, 2, 28, 28\); expected grey or colour images"):
        quality.frechet_distance(x, x.expand(-1, 2, -1, -1), features="inception", weights=tmp_path / "mnist.pth")
    # an Inception-shaped state dict passes the checks and then needs torch-fidelity
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, tmp_path / "fc.pth")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # makes `import torch_fidelity` fail
    with pytest.raises(MissingDependencyError, match=r"needs torch-fidelity; expected it installed \(pip install vaezoo\[fid\]\)"):
        quality.frechet_distance(x, x, features="inception", weights=tmp_path / "fc.pth")


def test_the_cli_refuses_inception_without_its_weights(tmp_path, capsys):
    run = str(tmp_path / "no-run")  # the flags are checked before the run is read
    assert cli.main(["evaluate", run, "--fid", "--fid-features", "inception"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert quality.INCEPTION_URL in err and "--inception-weights PATH" in err
    assert cli.main(["evaluate", run, "--fid", "--fid-features", "inception", "--inception-weights", run + ".pth"]) == 2
    assert "no-run.pth: no such file" in capsys.readouterr().err
    assert cli.main(["evaluate", run, "--fid", "--inception-weights", run + ".pth"]) == 2
    assert "--inception-weights without --fid --fid-features inception" in capsys.readouterr().err


@pytest.fixture
def random_inception(tmp_path, monkeypatch):
    """A state dict of torch-fidelity's FeatureExtractorInceptionV3 with its random initialization,
    built offline (its loading of pretrained weights skipped once), saved to a file."""
    pytest.importorskip("torch_fidelity")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(0)
    with monkeypatch.context() as m:
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        m.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: None)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "inception-random.pth"
    torch.save(net.state_dict(), path)
    return path


def exact_frechet(f, g):
    """The Frechet distance of Gaussians fitted to features ``f [N, d]`` and ``g [M, d]``, exact for
    N, M << d: tr (S_f S_g)^(1/2) is the nuclear norm of F G^T, F and G the centred features over
    sqrt(N - 1) and sqrt(M - 1), since S_f S_g = F^T F G^T G has the nonzero eigenvalues of
    (F G^T)(F G^T)^T."""
    f, g = f.double(), g.double()
    cf = (f - f.mean(0)) / (len(f) - 1) ** 0.5
    cg = (g - g.mean(0)) / (len(g) - 1) ** 0.5
    trace_root = torch.linalg.matrix_norm(cf @ cg.T, ord="nuc")
    return float(((f.mean(0) - g.mean(0)) ** 2).sum() + (cf**2).sum() + (cg**2).sum() - 2 * trace_root)


def test_inception_path_equals_the_distance_of_torch_fidelity_features(random_inception, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # the 64 features of Inception's first block: the same code path at a fraction of the cost
    monkeypatch.setattr(quality, "INCEPTION_FEATURES", 64)
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["64"], feature_extractor_weights_path=str(random_inception))
    reference = grey(4, 1)
    for generated in (grey(3, 2) ** 3, torch.rand(3, 3, 32, 32, dtype=torch.float64)):
        value = quality.frechet_distance(generated, reference.expand(-1, generated.shape[1], -1, -1),
                                         features="inception", weights=random_inception, batch_size=4)

        def features(x):  # torch-fidelity's own conversion: 8-bit RGB
            return net((x.expand(-1, 3, -1, -1) * 255).to(torch.uint8))[0]

        expected = exact_frechet(features(generated), features(reference.expand(-1, generated.shape[1], -1, -1)))
        assert value == pytest.approx(expected, rel=1e-3)
        assert np.isfinite(value) and value > 0


def test_the_cli_scores_a_run_in_inception_features(random_inception, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(quality, "INCEPTION_FEATURES", 64)  # as above: the same path, cheaper
    run = tmp_path / "sos"
    assert cli.main(["train", "--model", "sos-vae", "--out", str(run), "--epochs", "1", "--n-train", "64",
                     "--eval-samples", "0", "--quiet", "--device", "cpu", "--set", "rank=3", "--set", "hidden=16"]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--samples", "0", "--n", "4", "--quiet", "--device", "cpu", "--fid",
                     "--fid-features", "inception", "--inception-weights", str(random_inception)]) == 0
    assert "in the features of Inception-v3: means" in capsys.readouterr().out
    assert "in the features of Inception-v3" in (run / "report.md").read_text()
