"""Schedules, and LAMB/LARS checked against their formulas."""


import pytest
import torch

from phi4lab.training.optim import LAMB, LARS, lr_at, make_optimizer


def test_schedule_shape():
    kw = dict(peak=1.0, warmup=10, total=110, min_ratio=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(109, **kw) == pytest.approx(0.1)
    mid = 10 + 99 / 2
    assert lr_at(int(mid), schedule="linear", **kw) == pytest.approx(1 - 0.9 * (int(mid) - 10) / 99)
    values = [lr_at(s, **kw) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(values, values[1:])), "decay must be monotone"
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, schedule="exp", **kw)


def _one_step(opt_cls, w0, g, **kw):
    w = torch.nn.Parameter(w0.clone())
    opt = opt_cls([w], **kw)
    w.grad = g.clone()
    opt.step()
    return w.detach(), opt.state[w]


def test_lamb_matches_formula():
    torch.manual_seed(0)
    w0, g = torch.randn(5, 7), torch.randn(5, 7)
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-6, 0.1
    w, state = _one_step(LAMB, w0, g, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    m, v = (1 - b1) * g, (1 - b2) * g * g
    u = (m / (1 - b1)) / ((v / (1 - b2)).sqrt() + eps) + wd * w0
    trust = w0.norm() / u.norm()
    torch.testing.assert_close(w, w0 - lr * trust * u)
    assert float(state["trust_ratio"]) == pytest.approx(float(trust), rel=1e-6)


def test_lars_matches_formula_and_skips_adaptation_without_decay():
    torch.manual_seed(1)
    w0, g = torch.randn(4, 4), torch.randn(4, 4)
    lr, eta, wd = 0.5, 0.001, 0.01
    w, state = _one_step(LARS, w0, g, lr=lr, weight_decay=wd, trust_coefficient=eta, momentum=0.9)
    trust = eta * w0.norm() / (g.norm() + wd * w0.norm() + 1e-8)
    torch.testing.assert_close(w, w0 - lr * trust * (g + wd * w0))
    w, state = _one_step(LARS, w0, g, lr=lr, weight_decay=0.0)
    torch.testing.assert_close(w, w0 - lr * g)
    assert float(state["trust_ratio"]) == 1.0


def test_zero_weights_get_trust_one():
    w, state = _one_step(LAMB, torch.zeros(3), torch.ones(3), lr=0.1)
    assert float(state["trust_ratio"]) == 1.0
    assert torch.all(w < 0)


@pytest.mark.parametrize("w0, g", [(torch.ones(4, 4), torch.zeros(4, 4)), (torch.zeros(4, 4), torch.ones(4, 4))],
                         ids=["zero-gradient", "zero-weights"])
def test_lars_zero_norm_gets_trust_one_with_weight_decay(w0, g):
    # timm's LARS: trust = 1 where ||w|| = 0 or ||g|| = 0, whatever the weight decay. The
    # denominator ||g|| + wd ||w|| is not zero for a zero gradient, so it must be ||g|| that is tested.
    w, state = _one_step(LARS, w0, g, lr=0.1, weight_decay=0.1, momentum=0.0)
    assert float(state["trust_ratio"]) == 1.0
    torch.testing.assert_close(w, w0 - 0.1 * (g + 0.1 * w0))


def test_make_optimizer_groups_and_names():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = make_optimizer(model, "adamw", lr=1e-3, weight_decay=0.1)
    decays = [g["weight_decay"] for g in opt.param_groups]
    sizes = [len(g["params"]) for g in opt.param_groups]
    assert decays == [0.1, 0.0] and sizes == [1, 3]   # only the Linear weight decays
    for name, cls in [("lamb", LAMB), ("lars", LARS)]:
        assert isinstance(make_optimizer(model, name, lr=1e-3), cls)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(model, "sgdd", lr=1e-3)


def test_lamb_and_lars_train_a_regression():
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)
    for cls, kw in [(LAMB, dict(lr=0.05)), (LARS, dict(lr=5.0, weight_decay=1e-4))]:
        model = torch.nn.Linear(8, 1)
        opt = cls(model.parameters(), **kw)
        first = None
        for _ in range(200):
            loss = torch.nn.functional.mse_loss(model(x), y)
            first = first or loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.05 * first, (cls.__name__, first, loss.item())
