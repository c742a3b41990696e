"""Data-parallel training across processes: two Gloo processes take exactly the steps one process
takes on the same global batches (a deterministic pair, float64)."""

import json

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp
from torch import nn

from vaezoo.inference import ELBO, Trainer

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

EPOCHS, BATCH = 3, 6


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.dec = nn.Linear(2, 8)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 0.5).to_event(1), obs=x)


class Guide(nn.Module):  # a point mass: the objective has no randomness, the steps can be compared
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(8, 2)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(self.enc(x)).to_event(1))


def data():
    return torch.randn(20, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def train(out=None):
    torch.manual_seed(0)
    objective = ELBO(Model(), Guide())
    trainer = Trainer(objective, epochs=EPOCHS, batch_size=BATCH, lr=0.05, device="cpu", dtype=torch.float64, seed=0, out=out, progress=False)
    trainer.fit(data(), test=data())
    return trainer


def _worker(rank, world, init_file, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        trainer = train(out)
        params = {k: v.clone() for k, v in trainer.objective.state_dict().items()}
        torch.save({"params": params, "history": trainer.history}, f"{out}/rank{rank}.pt")
        torch.distributed.barrier()  # leave the group together (a Gloo peer torn down early can abort)
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_take_the_single_process_steps(tmp_path):
    single = train()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, p in single.objective.state_dict().items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name])  # in step with each other
        torch.testing.assert_close(ranks[0]["params"][name], p, rtol=1e-10, atol=1e-12)
    # the loss and the test ELBO are those of the global batches and the whole test set
    for a, b in zip(ranks[1]["history"], single.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
        assert a["test_elbo"] == pytest.approx(b["test_elbo"], rel=1e-10)
    # rank 0 alone writes the run directory
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert len(state["rng_ranks"]) == 2 and state["epoch"] == EPOCHS
