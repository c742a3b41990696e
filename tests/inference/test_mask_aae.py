"""MaskAAE's paper mode (``training="paper"``): each of the four losses (eqs. 14-17) against a hand
computation, each alternation step moving only its own parameters, the open-mask baseline, an exact
resume, and the tolerance and ablation rules on constructed cases."""

import json
import math

import pyro
import pytest
import torch
from torch import nn

from vaezoo import cli, data, zoo
from vaezoo.errors import ConfigError
from vaezoo.inference import Trainer
from vaezoo.inference.mask_aae import AblationRule, ToleranceRule, polar, variance_penalty

LOG_2PI = math.log(2 * math.pi)


def pair(name="mask-aae", latent_dim=2, **kw):
    pyro.set_rng_seed(0)
    kw = dict(dict(hidden=(8,), critic_hidden=(8,), critic_steps=1, training="paper"), **kw)
    return zoo.create(name, data_shape=(3,), latent_dim=latent_dim, **kw).double()


def batch(n=4):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def set_alpha(model, alpha):
    with torch.no_grad():
        model.model.mask.raw.copy_(-torch.log1p(-torch.as_tensor(alpha, dtype=torch.float64)) / model.model.mask.rate)


def linear_critic(obj, w, b):
    """Replaces the critic's weights by a linear map D(z) = w . z + b (its own module, in place)."""
    lin = nn.Linear(len(w), 1).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([w], dtype=torch.float64))
        lin.bias.fill_(b)
    obj._critic[0] = lin
    obj._optimizer = None


# ----------------------------------------------------------------------------- the loss terms by hand
def test_variance_term_and_polar_by_hand():
    q = torch.tensor([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]], dtype=torch.float64)
    alpha = torch.tensor([0.0, 0.5], dtype=torch.float64)
    var0 = ((1 - 2) ** 2 + (3 - 2) ** 2 + 0) / 3  # biased variance of column 0 (mean 2)
    var1 = ((2 - 3) ** 2 + (2 - 3) ** 2 + (5 - 3) ** 2) / 3  # column 1 (mean 3)
    expected = (1.0 * var0 + math.exp(-10 * 0.25) * var1) / 2
    assert math.isclose(float(variance_penalty(q, alpha)), expected, rel_tol=1e-12)
    assert math.isclose(float(polar(torch.tensor([0.0, 0.5, 1.0, 0.9]))), 0.25 + 0.09, rel_tol=1e-6)


def test_autoencoder_loss_eq14_by_hand():
    m = pair(variance_weight=7.0)
    set_alpha(m, [0.3, 0.8])
    obj, x = m.objective(), batch()
    loss, recon, var, q = obj.autoencoder_loss(x)
    alpha = torch.tensor([0.3, 0.8], dtype=torch.float64)
    codes = m.guide.encoder(x)
    mu = m.model.decoder(codes * alpha)
    s = m.model.likelihood.log_scale.exp()  # the entries' likelihood_scale 0.3 (its log stored in float32)
    assert abs(float(s) - 0.3) < 1e-7
    nll = (((x - mu) / s) ** 2 / 2 + s.log() + LOG_2PI / 2).sum(-1).mean()
    v = ((codes - codes.mean(0)) ** 2 * torch.exp(-10 * alpha**2)).mean()
    assert torch.allclose(q, codes) and torch.allclose(recon, nll, rtol=1e-12)
    assert torch.allclose(var, v, rtol=1e-12) and torch.allclose(loss, nll + 7.0 * v, rtol=1e-12)
    loss.backward()
    assert m.model.mask.raw.grad is None  # alpha held in (14)


def test_generator_and_critic_losses_eq15_eq16_with_a_linear_critic():
    m = pair(gp_weight=3.0)
    set_alpha(m, [0.5, 1 - math.exp(-4)])
    obj = m.objective()
    linear_critic(obj, [2.0, -1.0], 0.25)
    alpha = m.model.mask.alpha().detach()
    q = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    p = torch.tensor([[0.5, 0.5], [2.0, -1.0]], dtype=torch.float64)
    dq = [2 * a - b + 0.25 for a, b in (q * alpha).tolist()]
    dp = [2 * a - b + 0.25 for a, b in (p * alpha).tolist()]
    assert math.isclose(float(obj.generator_loss(q)), -sum(dq) / 2, rel_tol=1e-12)
    # (16): a linear critic's input gradient is w everywhere: the penalty is (|w| - 1)^2
    expected = sum(dq) / 2 - sum(dp) / 2 + 3.0 * (math.sqrt(5) - 1) ** 2
    assert math.isclose(obj.critic_loss(q * alpha, p * alpha).item(), expected, rel_tol=1e-12)


def test_mask_loss_eq17_by_hand():
    m = pair(weight=4.0, mask_recon_weight=2.0, penalty=0.5)
    set_alpha(m, [0.3, 0.8])
    obj, x = m.objective(), batch()
    linear_critic(obj, [1.0, 3.0], -0.5)
    p = torch.tensor([[0.5, 0.5], [2.0, -1.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    alpha = torch.tensor([0.3, 0.8], dtype=torch.float64)
    codes = m.guide.encoder(x).detach()
    mu = m.model.decoder(codes * alpha)
    s = m.model.likelihood.log_scale.exp()
    nll = (((x - mu) / s) ** 2 / 2 + s.log() + LOG_2PI / 2).sum(-1).mean()
    d = lambda z: (z * alpha) @ torch.tensor([1.0, 3.0], dtype=torch.float64) - 0.5  # noqa: E731
    gap = d(codes).mean() - d(p).mean()
    polar_ = (0.3 * 0.7 + 0.8 * 0.2)
    expected = 2.0 * nll + 4.0 * (1 - gap) ** 2 + 0.5 * polar_
    loss = obj.mask_loss(x, p)
    assert torch.allclose(loss, expected, rtol=1e-12)
    loss.backward()
    assert m.model.mask.raw.grad is not None and all(p.grad is None for p in obj.critic.parameters())


# ----------------------------------------------------------------------------- the alternation
def _groups(m, obj):
    mask = list(m.model.mask.parameters())
    ids = {id(p) for p in mask}
    return {"encoder": list(m.guide.parameters()), "decoder": [p for p in m.model.parameters() if id(p) not in ids],
            "critic": list(obj.critic.parameters()), "mask": mask}


def test_each_alternation_step_moves_only_its_own_parameters(monkeypatch):
    m = pair(critic_steps=2)
    obj = m.objective()
    owns = {"autoencoder": {"encoder", "decoder"}, "critic": {"critic"}, "generator": {"encoder"}, "mask": {"mask"}}
    seen = []

    def spy(name, run):
        snap = {g: [p.detach().clone() for p in ps] for g, ps in _groups(m, obj).items()}
        run()
        moved = {g for g, ps in _groups(m, obj).items() if any(not torch.equal(a, b) for a, b in zip(snap[g], ps))}
        seen.append((name, moved))

    descend, critic = obj._descend, obj.train_critic
    monkeypatch.setattr(obj, "_descend", lambda name, loss: spy(name, lambda: descend(name, loss)))
    monkeypatch.setattr(obj, "train_critic", lambda q, prior: spy("critic", lambda: critic(q, prior)))
    loss, terms = obj(batch())
    assert [n for n, _ in seen] == ["autoencoder", "critic", "generator", "mask"]  # algorithm 1's order
    for name, moved in seen:
        assert moved == owns[name], name
    assert set(terms) >= {"reconstruction", "variance", "wasserstein", "active_dims", "penalty"}
    # the loss handed to the Trainer has no graph: its backward gives no parameter a gradient
    assert loss.grad_fn is None
    loss.backward()
    assert all(p.grad is None for ps in _groups(m, obj).values() for p in ps)
    assert all(isinstance(o, torch.optim.RMSprop) for o, _ in obj._paper.values())
    assert isinstance(obj.critic_optimizer(), torch.optim.RMSprop)


def test_the_mask_waits_for_the_warmup_and_stays_non_negative():
    m = pair(mask_warmup=2, paper_lr=(1e-3, 1e-3, 1e-3, 10.0))  # a mask rate large enough to hit 0
    obj = m.objective()
    raw0 = m.model.mask.raw.detach().clone()
    obj(batch()), obj(batch())
    assert torch.equal(m.model.mask.raw, raw0)
    for _ in range(3):
        obj(batch())
    assert not torch.equal(m.model.mask.raw, raw0) and bool((m.model.mask.raw >= 0).all())


@pytest.mark.parametrize("training", ["paper", "joint"])
def test_the_open_mask_stays_open(training):
    torch.manual_seed(0)
    m = zoo.create("mask-aae-open", data_shape=(128,), latent_dim=4, hidden=(16,), critic_hidden=(16,), training=training)
    assert list(m.model.mask.parameters()) == []
    train = data.load("synthetic", split="train", true_dim=2, num_samples=64)
    Trainer(m.objective(), epochs=2, batch_size=32, device="cpu", dtype="float64", seed=1, progress=False).fit(train)
    assert torch.equal(m.model.mask.alpha(), torch.ones(4, dtype=torch.float64))
    assert int(m.model.mask.active()) == 4


# ----------------------------------------------------------------------------- resume
def train_run(out, epochs, **kw):
    torch.manual_seed(0)
    m = zoo.create("mask-aae", data_shape=(128,), latent_dim=4, hidden=(16,), critic_hidden=(16,), training="paper", **kw)
    return m, Trainer(m.objective(), epochs=epochs, batch_size=32, device="cpu", dtype="float64", seed=1, out=out, progress=False)


@pytest.mark.parametrize("kw", [{}, {"mask_rule": "tolerance", "mask_warmup": 2},
                                {"mask_rule": "ablation", "mask_warmup": 2, "ablation_every": 2}],
                         ids=["paper", "paper-tolerance", "paper-ablation"])
def test_resume_of_the_paper_mode_is_exact(tmp_path, kw):
    train = data.load("synthetic", split="train", true_dim=2, num_samples=96)
    test = data.load("synthetic", split="test", true_dim=2, num_samples=32)
    m_full, t_full = train_run(tmp_path / "full", 3, **kw)
    t_full.fit(train, test)
    train_run(tmp_path / "cut", 1, **kw)[1].fit(train, test)
    m_cut, t_cut = train_run(tmp_path / "cut", 3, **kw)
    t_cut.fit(train, test, resume=True)
    for (k, a), (_, b) in zip(m_full.state_dict().items(), m_cut.state_dict().items()):
        assert torch.equal(a, b), k
    full_obj, cut_obj = t_full.objective, t_cut.objective
    for a, b in zip(full_obj.critic.parameters(), cut_obj.critic.parameters()):
        assert torch.equal(a, b)
    for name, (opt, _) in full_obj._paper.items():
        for sa, sb in zip(opt.state.values(), cut_obj._paper[name][0].state.values()):
            assert torch.equal(sa["square_avg"], sb["square_avg"]), name
    assert full_obj.steps == cut_obj.steps and torch.equal(torch.as_tensor(full_obj.gate), torch.as_tensor(cut_obj.gate))
    if kw:
        assert full_obj.rule.state() == cut_obj.rule.state()
        assert not math.isnan(next(iter(full_obj.rule.state().values()))[0] if kw["mask_rule"] == "ablation"
                              else full_obj.rule.reference)
    full = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    cut = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in full] == [r["train_loss"] for r in cut]
    assert all("test_variance" in r for r in cut)


def test_the_cli_trains_the_paper_mode(tmp_path, capsys):
    run = tmp_path / "paper"
    assert cli.main(["train", "--model", "mask-aae", "--dataset", "synthetic", "--epochs", "1", "--n-train", "64",
                     "--set", "training=paper", "--set", "latent_dim=4", "--eval-samples", "0", "--quiet",
                     "--device", "cpu", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert "test_variance" in metrics and metrics["test_active_dims"] in range(0, 5)
    # a fresh objective (no step taken) must accept the checkpoint: the paper's optimizers in its layout
    assert cli.main(["evaluate", str(run), "--n", "4", "--samples", "0", "--quiet", "--device", "cpu"]) == 0
    assert cli.main(["sample", str(run), "--n", "2", "--device", "cpu"]) == 0


# ----------------------------------------------------------------------------- the tolerance rule
def test_tolerance_rule_on_a_constructed_sequence():
    rule = ToleranceRule(tolerance=0.1, warmup=2)
    assert [rule.update(10.0, 0), rule.update(10.0, 1)] == [0.0, 0.0]  # the warm-up: held anyway
    assert rule.update(10.0, 2) == 1.0 and rule.reference == 10.0 and math.isclose(rule.bound(), 11.0)
    assert rule.update(21.0, 3) == 0.0  # average 11.1 > 11: stop closing
    assert rule.reference == 10.0  # a worse reconstruction leaves the reference where it was
    assert rule.update(0.0, 4) == 1.0  # average 9.99: within the bound again, and the best so far
    assert rule.reference == 9.99 and math.isclose(rule.bound(), 10.989)
    assert rule.update(12.0, 5) == 1.0 and rule.update(30.0, 6) == 0.0  # 10.19 <= 10.989 < 12.17
    neg = ToleranceRule(tolerance=0.5, warmup=1)  # a negative reconstruction (a normal likelihood's)
    neg.update(-4.0, 0), neg.update(-4.0, 1)
    assert neg.bound() == -2.0


def test_tolerance_rule_in_nats_does_not_move_with_the_likelihoods_constant():
    """The same reconstructions shifted by a constant (a normal likelihood's sigma moves R's zero):
    the bound in nats gives the same switches; the relative one does not."""
    seq = [10.0, 10.0, 10.5, 12.0, 30.0, 0.0]
    switches = {}
    for unit in ("nats", "relative"):
        for shift in (0.0, -100.0):
            rule = ToleranceRule(tolerance=1.0 if unit == "nats" else 0.1, warmup=2, unit=unit)
            switches[unit, shift] = [rule.update(r + shift, i) for i, r in enumerate(seq)]
            if shift == 0.0 and unit == "nats":
                assert math.isclose(rule.bound(), rule.reference + 1.0)
    assert switches["nats", 0.0] == switches["nats", -100.0] == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    # relative: 10% of |R_0| is 1 nat at R_0 = 10 and 9 at R_0 = -90, so the rise to 12.0 (average
    # 10.2, within 1) and to 30.0 (average 12.2) are both within the shifted run's bound
    assert switches["relative", 0.0] == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert switches["relative", -100.0] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_the_entrys_tolerance_unit_reaches_the_rule():
    for unit in ("relative", "nats"):
        m = zoo.create("mask-aae", data_shape=(3,), latent_dim=2, mask_rule="tolerance", mask_warmup=1, tolerance=0.5,
                       tolerance_unit=unit)
        rule = m.objective().rule
        rule.update(-4.0, 0), rule.update(-4.0, 1)
        assert rule.bound() == (-3.5 if unit == "nats" else -2.0)
    with pytest.raises(ConfigError, match="unit='nat'; expected relative or nats"):
        ToleranceRule(tolerance=1.0, warmup=1, unit="nat")


def _forced_off(obj):
    """The rule past its warm-up with a reference the reconstruction cannot meet."""
    obj.steps = obj.mask_warmup
    obj.rule.reference, obj.rule.average = -1e9, 0.0


@pytest.mark.parametrize("off", [False, True])
def test_tolerance_rule_stops_the_critic_closing_the_mask_in_the_paper_mode(off):
    """With the rule off, (17)'s critic term is gone: the mask's step does not depend on ``weight``."""
    raws = []
    for weight in (1.0, 1000.0):
        m = pair(weight=weight, mask_rule="tolerance", mask_warmup=1)
        obj = m.objective()
        if off:
            _forced_off(obj)
        else:
            obj(batch())  # the warm-up step sets the reference; the next is within the bound
        _, terms = obj(batch())
        assert terms["closing"].item() == (0.0 if off else 1.0)
        raws.append(m.model.mask.raw.detach().clone())
    assert torch.equal(raws[0], raws[1]) == off


def test_tolerance_rule_stops_the_critic_closing_the_mask_in_the_joint_mode():
    m = pair(training="joint", mask_rule="tolerance", mask_warmup=1)
    obj = m.objective()
    _forced_off(obj)
    x = batch()
    loss, terms = obj(x)
    assert terms["closing"].item() == 0.0
    (g_off,) = torch.autograd.grad(loss, m.model.mask.raw)
    alpha = m.model.mask.alpha()
    recon = obj.codes(x)[0]
    (g_expected,) = torch.autograd.grad(recon + obj.penalty() * polar(alpha), m.model.mask.raw)
    assert torch.allclose(g_off, g_expected, rtol=1e-10)  # no gradient from the critic's term


# ----------------------------------------------------------------------------- the ablation rule
def test_ablation_cost_by_hand():
    m = pair(latent_dim=3, mask_rule="ablation", mask_warmup=1, ablation_batch=3)
    set_alpha(m, [0.3, 0.8, 0.6])
    obj, x = m.objective(), batch(5)
    codes = m.guide.encoder(x[:3]).detach()  # the first ablation_batch datapoints only
    s = m.model.likelihood.log_scale.exp()

    def nll(alpha):
        mu = m.model.decoder(codes * torch.tensor(alpha, dtype=torch.float64))
        return float((((x[:3] - mu) / s) ** 2 / 2 + s.log() + LOG_2PI / 2).sum(-1).mean().detach())

    full = nll([0.3, 0.8, 0.6])
    expected = [nll([0.0, 0.8, 0.6]) - full, nll([0.3, 0.0, 0.6]) - full, nll([0.3, 0.8, 0.0]) - full]
    got = obj.ablation_cost(x).tolist()
    assert all(math.isclose(a, b, rel_tol=1e-10, abs_tol=1e-12) for a, b in zip(got, expected))
    assert torch.allclose(obj.ablation_cost(x, m.guide.encoder(x)), torch.tensor(expected, dtype=torch.float64))


def test_ablation_rule_on_a_constructed_sequence():
    rule = AblationRule(nats=1.0, warmup=2, every=3, dim=3)
    calls = []

    def cost(values):
        return lambda: calls.append(values) or torch.tensor(values)

    assert rule.update(cost([0.0, 0.0, 0.0]), 0).tolist() == [0.0, 0.0, 0.0] and not calls  # the warm-up
    assert rule.update(cost([0.5, 5.0, 2.0]), 2).tolist() == [1.0, 0.0, 0.0]  # the first reading
    assert rule.update(cost([9.0, 9.0, 9.0]), 3).tolist() == [1.0, 0.0, 0.0] and len(calls) == 1  # not a reading step
    assert rule.update(cost([1.2, 0.0, -0.2]), 5).tolist() == [1.0, 0.0, 1.0]  # averages 0.85, 2.5, 0.9
    assert rule.cost.tolist() == pytest.approx([0.85, 2.5, 0.9]) and len(calls) == 2
    assert rule.update(cost([1.0, 0.0, 1.1]), 8).tolist() == [1.0, 0.0, 0.0]  # 0.925, 1.25, 1.0: not under 1


def test_ablation_rule_protects_the_dimensions_the_decoder_needs():
    """In the joint mode the mask's gradient on a protected dimension is the reconstruction's and the
    penalty's alone; on a closable one the critic's term adds to it."""
    m = pair(training="joint", latent_dim=2, mask_rule="ablation", mask_warmup=1)
    obj = m.objective()
    obj.steps = obj.mask_warmup
    obj.rule.nats = 1e9  # everything closable ...
    obj.rule.cost = torch.tensor([float("nan"), float("nan")], dtype=torch.float64)
    x = batch()
    obj.rule.update(lambda: torch.tensor([0.0, 5.0]), obj.steps)  # ... then dimension 1 protected
    obj.rule.nats = 1.0
    obj.gate = (obj.rule.cost < obj.rule.nats).double()
    obj.rule.every = 10**9  # no new reading in the step below
    obj.steps += 1
    loss, terms = obj(x)
    assert terms["closable"].item() == 1.0
    (g,) = torch.autograd.grad(loss, m.model.mask.raw)
    recon = obj.codes(x)[0]
    (g_plain,) = torch.autograd.grad(recon + obj.penalty() * polar(m.model.mask.alpha()), m.model.mask.raw)
    assert torch.allclose(g[1], g_plain[1], rtol=1e-10)  # protected: no critic term
    assert not torch.allclose(g[0], g_plain[0], rtol=1e-6)  # closable: the critic's term reaches it


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, says", [
    ({"training": "alternate"}, "training='alternate'; expected joint or paper"),
    ({"mask_rule": "budget"}, "mask_rule='budget'; expected none or tolerance or ablation"),
    ({"mask_rule": "ablation"}, "mask_warmup=0 with mask_rule=ablation; expected an integer >= 1"),
    ({"ablation_nats": 0.0}, "ablation_nats=0.0; expected a number > 0"),
    ({"ablation_every": 0}, "ablation_every=0; expected an integer >= 1"),
    ({"mask_rule": "tolerance"}, "mask_warmup=0 with mask_rule=tolerance; expected an integer >= 1"),
    ({"paper_lr": (1e-3, 1e-3)}, "paper_lr=(0.001, 0.001); expected 4 numbers > 0"),
    ({"tolerance": 0.0}, "tolerance=0.0; expected a number > 0"),
    ({"tolerance_unit": "percent"}, "tolerance_unit='percent'; expected relative or nats"),
])
def test_config_errors_name_the_value(kw, says):
    with pytest.raises(ConfigError) as err:
        zoo.create("mask-aae", data_shape=(3,), latent_dim=2, **kw)
    assert says in str(err.value) and "\n" not in str(err.value)
