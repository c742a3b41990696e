"""``vaezoo.load``: a trained run in Python, with the weights, the curve and the evaluations that
``vaezoo train`` wrote."""

import numpy as np
import pytest
import torch

import vaezoo
from vaezoo import cli, evaluation
from vaezoo.evaluation.arrays import read_per_datapoint
from vaezoo.errors import VaezooError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae-digits"
    args = ["train", "--dataset", "digits", "--epochs", "2", "--n-train", "128", "--eval-samples", "4", "--quiet",
            "--device", "cpu", "--out", str(out)]
    assert cli.main(args) == 0
    return out


def test_load_gives_the_trained_pair_its_curve_and_its_evaluation(run):
    loaded = vaezoo.load(run)
    assert loaded.config["model"] == "vae" and loaded.epoch == 2
    assert [r["epoch"] for r in loaded.metrics] == [1, 2] and all("test_elbo" in r for r in loaded.metrics)
    assert loaded.evaluations and loaded.evaluations[0][0].name == "eval.json"
    x = loaded.test_data()[:5]
    assert x.shape[1:] == (1, 8, 8)
    # the weights are the checkpoint's, and they give the run's own evaluation: log p(x) with the
    # run's settings (K = 4, seed 0) equals eval.npz's first five values exactly (an untrained pair
    # of the same config gives others)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    trained = {k: v for k, v in state["objective"].items()}
    mine = loaded.zoo_model.objective().state_dict()
    assert set(mine) == set(trained) and all(torch.equal(mine[k], trained[k]) for k in trained)
    result = evaluation.log_marginal(loaded.model, loaded.guide, x, num_samples=4, seed=0)
    recorded = read_per_datapoint(run / "eval.npz")["log_px"][:5]
    np.testing.assert_array_equal(result.log_px.double().numpy(), recorded)


def test_load_refuses_a_directory_that_is_not_a_run_in_one_line(tmp_path):
    with pytest.raises(VaezooError) as e:
        vaezoo.load(tmp_path)
    assert "\n" not in str(e.value)
