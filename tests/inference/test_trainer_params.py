"""The Trainer and the parameters it optimizes: wherever they live (the objective's modules, Pyro's
param store or both), each is optimized once, moved to the trainer's dtype, saved once, restored in
place, and never saved when it is not finite."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from vaezoo.errors import NonFiniteLossError
from vaezoo.inference import ELBO, Trainer
from vaezoo.inference import checkpoint as ckpt

D = 8


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def data(n=40, seed=1):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class ModuleModel(nn.Module):
    """An nn.Module pair that registers its own submodules with pyro.module inside forward, as a
    PyroModule registers its parameters: the store then holds the module's own tensors."""

    def __init__(self):
        super().__init__()
        self.dec = nn.Linear(2, D)

    def forward(self, x):
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 0.5).to_event(1), obs=x)


class ModuleGuide(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(D, 4)

    def forward(self, x):
        pyro.module("enc", self.enc)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, log_scale = self.enc(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def module_pair():
    torch.manual_seed(0)
    return ModuleModel().double(), ModuleGuide().double()


def param_pair():
    """A plain-function pair whose parameters live in the param store alone (one constrained)."""

    def model(x):
        w = pyro.param("w", lambda: 0.1 * torch.randn(2, D, dtype=x.dtype))
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Normal(z @ w, 0.5).to_event(1), obs=x)

    def guide(x):
        a = pyro.param("a", torch.zeros(D, 2, dtype=x.dtype))
        scale = pyro.param("scale", torch.ones(2, dtype=x.dtype), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x @ a, scale).to_event(1))

    return model, guide


def fit(pair, out, epochs, resume=False, **kw):
    torch.manual_seed(0)
    t = Trainer(ELBO(*pair), epochs=epochs, batch_size=16, lr=0.02, device="cpu", dtype="float64", seed=5,
                out=out, progress=False, **kw)
    t.fit(data(), test=data(20, seed=2), resume=resume)
    return t


def store_values():
    return {name: pyro.param(name).detach().clone() for name in pyro.get_param_store().keys()}


@pytest.mark.parametrize("make_pair", [module_pair, param_pair])
def test_exact_resume_and_checkpoint_contents(tmp_path, make_pair):
    full = fit(make_pair(), tmp_path / "full", 3)
    want_params, want_store, want_history = full.objective.state_dict(), store_values(), full.history
    # every parameter once in the optimizer: the module pair's store entries are its own tensors
    assert len(full.params) == len({id(p) for p in full.params}) == len(want_store)
    store = pyro.get_param_store()
    owned = {id(p) for p in full.objective.parameters()}
    assert all(id(store[n].unconstrained()) in owned for n in store.keys()) == (make_pair is module_pair)

    pyro.clear_param_store()  # a new process
    fit(make_pair(), tmp_path / "cut", 1)
    state = ckpt.load(tmp_path / "cut" / "checkpoint.pt")
    if make_pair is module_pair:  # the objective's state holds the networks: nothing twice
        assert state["param_store"]["params"] == {} and len(state["objective"]) == 4
    else:
        assert set(state["param_store"]["params"]) == {"w", "a", "scale"} and state["objective"] == {}
        assert set(state["param_store"]["constraints"]) == {"w", "a", "scale"}
    pyro.clear_param_store()
    resumed = fit(make_pair(), tmp_path / "cut", 3, resume=True)
    for k, v in want_params.items():
        assert torch.equal(resumed.objective.state_dict()[k], v), k
    got_store = store_values()
    assert set(got_store) == set(want_store)
    for k, v in want_store.items():
        assert torch.equal(got_store[k], v), k
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in want_history]
    assert [r["test_elbo"] for r in resumed.history] == [r["test_elbo"] for r in want_history]
    # restored in place: the store holds the very tensors the optimizer steps (no stale copies)
    optimized = {id(p) for p in resumed.params}
    assert all(id(store[n].unconstrained()) in optimized for n in store.keys())


def test_stale_store_copies_of_module_parameters_are_replaced(tmp_path):
    """Another model's tensors under the same names (an earlier model in the same process) are
    neither optimized nor saved: the objective's modules own those names."""
    fit(module_pair(), None, 1)  # leaves its tensors in the store under dec$$$weight, ...
    stale = {n: pyro.get_param_store()[n].unconstrained() for n in pyro.get_param_store().keys()}
    t = fit(module_pair(), tmp_path, 1)
    store = pyro.get_param_store()
    assert store["dec$$$weight"].unconstrained() is t.objective.model.dec.weight
    assert not {id(p) for p in t.params} & {id(p) for p in stale.values()}
    assert len(t.params) == 4 and ckpt.load(tmp_path / "checkpoint.pt")["param_store"]["params"] == {}


def test_float64_pair_with_module_level_networks():
    """The README's pair: float32 networks outside the objective, registered with pyro.module,
    train in float64 exactly as the same networks made float64 beforehand."""
    histories = []
    for cast in (False, True):
        pyro.clear_param_store()
        torch.manual_seed(0)
        dec, enc = nn.Linear(2, D), nn.Linear(D, 4)
        if cast:
            dec, enc = dec.double(), enc.double()

        def model(x):
            pyro.module("decoder", dec)
            with pyro.plate("data", x.shape[0], dim=-1):
                z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(dec(z), 0.5).to_event(1), obs=x)

        def guide(x):
            pyro.module("encoder", enc)
            scale = pyro.param("scale", torch.ones(2), constraint=dist.constraints.positive)  # float32 too
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("z", dist.Normal(enc(x)[..., :2], scale).to_event(1))

        t = Trainer(ELBO(model, guide), epochs=2, batch_size=16, lr=0.02, device="cpu", dtype="float64", progress=False)
        histories.append([r["train_loss"] for r in t.fit(data())])
        assert dec.weight.dtype == enc.weight.dtype == pyro.param("scale").dtype == torch.float64
        assert pyro.get_param_store()["decoder$$$weight"] is dec.weight  # still shared, cast in place
        assert not torch.equal(pyro.param("scale").detach(), torch.ones(2, dtype=torch.float64))
    assert histories[0] == histories[1]


def test_nan_gradient_never_replaces_the_last_good_checkpoint(tmp_path):
    """A NaN gradient in the last step of epoch 2 leaves the loss finite but the parameters NaN:
    training stops, epoch 1's checkpoint stays on disk, and resuming from it is exact."""
    steps = 3  # 40 datapoints in batches of 16
    reference = fit(module_pair(), tmp_path / "reference", 3)
    pyro.clear_param_store()
    torch.manual_seed(0)
    pair = module_pair()
    calls = []

    def poison(grad):
        calls.append(None)
        return grad * float("nan") if len(calls) == 2 * steps else grad

    pair[0].dec.weight.register_hook(poison)
    t = Trainer(ELBO(*pair), epochs=3, batch_size=16, lr=0.02, device="cpu", dtype="float64", seed=5,
                out=tmp_path / "run", progress=False)
    with pytest.raises(NonFiniteLossError) as err:
        t.fit(data(), test=data(20, seed=2))
    msg = str(err.value)
    assert "\n" not in msg and "parameters became non-finite in epoch 2" in msg
    assert "last good checkpoint (epoch 1)" in msg and "--clip-norm" in msg and "Trainer(clip_norm=" in msg
    assert len(calls) == 2 * steps  # it stopped at the end of epoch 2
    assert not torch.isfinite(pair[0].dec.weight).all()
    kept = ckpt.load(tmp_path / "run" / "checkpoint.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["objective"].values())
    assert [r["epoch"] for r in kept["history"]] == [1]
    pyro.clear_param_store()
    resumed = fit(module_pair(), tmp_path / "run", 3, resume=True)
    for k, v in reference.objective.state_dict().items():
        assert torch.equal(resumed.objective.state_dict()[k], v), k
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in reference.history]


def test_probe_runs_on_a_full_batch():
    """A plate with a fixed subsample_size trains when every batch is large enough: the trainer's
    probing runs see the first batch, not fewer datapoints than any step sees."""
    torch.manual_seed(0)
    dec = nn.Linear(2, D).double()

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0], subsample_size=4, dim=-1) as idx:
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 0.5).to_event(1), obs=x[idx])

    def guide(x):
        loc = pyro.param("loc", torch.zeros(D, 2, dtype=torch.float64))
        with pyro.plate("data", x.shape[0], subsample_size=4, dim=-1) as idx:
            pyro.sample("z", dist.Normal(x[idx] @ loc, 1.0).to_event(1))

    t = Trainer(ELBO(model, guide), epochs=2, batch_size=8, device="cpu", dtype="float64", progress=False)
    history = t.fit(data(32), test=data(8, seed=2))
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
