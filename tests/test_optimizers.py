"""Each optimizer's fused step equals its textbook update, written here in plain NumPy.

The references below are the update rules as printed in the papers / PyTorch docs, coded
independently of nncompile's SymPy formulas; gradients come from `loss_and_grad`, which
the gradient tests check against finite differences.
"""
from __future__ import annotations

import numpy as np
import pytest

import nncompile as nc
from nncompile import data, nn


@pytest.fixture(scope="module")
def prog() -> nc.CompiledProgram:
    return nc.compile(nn.Sequential(nn.Dense(12), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64,
                                    loss=nn.CrossEntropy(), l2=1e-3, name="opt_mlp"))


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    ds = data.digits()
    return ds.X[:150], ds.y[:150]


def sgd(p, g, s, t, lr, **_):
    return p - lr * g


def momentum(p, g, s, t, lr, momentum=0.9, **_):
    s["v"] = momentum * s.get("v", 0.0) + g                  # torch.optim.SGD(momentum=...), dampening 0
    return p - lr * s["v"]


def nesterov(p, g, s, t, lr, momentum=0.9, **_):
    s["v"] = momentum * s.get("v", 0.0) + g                  # torch.optim.SGD(nesterov=True)
    return p - lr * (g + momentum * s["v"])


def adam(p, g, s, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, **_):
    s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * g      # Kingma & Ba (2015), Algorithm 1
    s["v"] = beta2 * s.get("v", 0.0) + (1 - beta2) * g * g
    m_hat, v_hat = s["m"] / (1 - beta1 ** t), s["v"] / (1 - beta2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def rmsprop(p, g, s, t, lr, alpha=0.99, eps=1e-8, **_):
    s["v"] = alpha * s.get("v", 0.0) + (1 - alpha) * g * g  # torch.optim.RMSprop, centered=False
    return p - lr * g / (np.sqrt(s["v"]) + eps)


REFERENCES = {"sgd": sgd, "momentum": momentum, "nesterov": nesterov, "adam": adam, "rmsprop": rmsprop}
CASES = [("sgd", 0.5, {}), ("momentum", 0.05, {}), ("momentum", 0.05, {"momentum": 0.5}),
         ("nesterov", 0.05, {}), ("nesterov", 0.05, {"momentum": 0.7}), ("adam", 0.01, {}),
         ("adam", 0.01, {"betas": (0.8, 0.99), "eps": 1e-6}), ("rmsprop", 0.01, {}),
         ("rmsprop", 0.01, {"alpha": 0.9, "eps": 1e-6})]


def _reference(prog, params, X, y, name, lr, hyper, batches):
    """Textbook updates over the given index batches, state kept across them."""
    names = list(params)
    flat = np.concatenate([params[k].ravel() for k in names])
    state: dict = {}
    kwargs = dict(hyper)
    if "betas" in kwargs:
        kwargs["beta1"], kwargs["beta2"] = kwargs.pop("betas")
    for t, idx in enumerate(batches, 1):
        _, grads = prog.loss_and_grad(prog.unflatten(flat), X[idx], y[idx])
        g = np.concatenate([grads[k].ravel() for k in names])
        flat = REFERENCES[name](flat, g, state, t, lr, **kwargs)
    return prog.unflatten(flat)


@pytest.mark.parametrize("name,lr,hyper", CASES)
def test_gd_steps_equal_the_textbook_update(prog, batch, name, lr, hyper) -> None:
    X, y = batch
    start = prog.init_params(1)
    result = nc.train(prog, X, y, mode="gd", epochs=6, lr=lr, optimizer=name, params=start, evaluate=False,
                      **hyper)
    expected = _reference(prog, start, X, y, name, lr, hyper, [np.arange(len(y))] * 6)
    for key in expected:
        np.testing.assert_allclose(result.params[key], expected[key], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", ["momentum", "adam", "rmsprop"])
def test_minibatch_state_carries_across_epochs(prog, batch, name) -> None:
    """Two shuffled epochs: the update count t and the state vectors continue across the boundary."""
    X, y = batch
    start = prog.init_params(2)
    result = nc.train(prog, X, y, mode="minibatch", batch_size=40, epochs=2, lr=0.01, optimizer=name, seed=3,
                      params=start, evaluate=False)
    rng = np.random.default_rng(3)
    batches = [order[s:s + 40] for order in (rng.permutation(150), rng.permutation(150)) for s in range(0, 150, 40)]
    expected = _reference(prog, start, X, y, name, 0.01, {}, batches)
    assert sum(h["updates"] for h in result.history) == len(batches) == 8
    for key in expected:
        np.testing.assert_allclose(result.params[key], expected[key], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("torch_kwargs,rule,rule_kwargs", [
    ({"momentum": 0.8}, "momentum", {"momentum": 0.8}),
    ({"momentum": 0.8, "nesterov": True}, "nesterov", {"momentum": 0.8}),
    ({"momentum": 0.0}, "sgd", {}),
])
def test_torch_spelling_of_sgd_with_momentum(prog, batch, torch_kwargs, rule, rule_kwargs) -> None:
    """optimizer="sgd", momentum=m, nesterov=True reads as torch.optim.SGD does."""
    X, y = batch
    start = prog.init_params(3)
    a = nc.train(prog, X, y, mode="gd", epochs=3, lr=0.05, optimizer="sgd", params=start, **torch_kwargs)
    b = nc.train(prog, X, y, mode="gd", epochs=3, lr=0.05, optimizer=rule, params=start, **rule_kwargs)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in start)


def test_a_rule_defined_by_formula_runs_fused_in_the_step(prog, batch) -> None:
    X, y = batch
    heavy_ball = nc.Optimizer("heavy_ball", {"v": "mu*v + g", "p": "p - lr*v"}, {"mu": 0.9})
    start = prog.init_params(4)
    custom = nc.train(prog, X, y, mode="gd", epochs=5, lr=0.05, optimizer=heavy_ball, mu=0.6, params=start)
    builtin = nc.train(prog, X, y, mode="gd", epochs=5, lr=0.05, optimizer="momentum", momentum=0.6, params=start)
    for key in start:
        assert np.array_equal(custom.params[key], builtin.params[key])
    source = custom.program.source
    assert "def step_heavy_ball(lr, step, mu):" in source and "# update: v = g + mu*v" in source


def test_rules_may_use_the_old_state_and_any_whitelisted_function(prog, batch) -> None:
    """A Lion-style rule (Chen et al. 2023): p moves by the sign of an interpolation, then m updates."""
    X, y = batch
    lion = nc.Optimizer("lion", [("p", "p - lr*(sign(beta1*m + (1 - beta1)*g) + wd*p)"),
                                 ("m", "beta2*m + (1 - beta2)*g")], {"beta1": 0.9, "beta2": 0.99, "wd": 0.0})
    start = prog.init_params(5)
    result = nc.train(prog, X, y, mode="gd", epochs=4, lr=1e-3, optimizer=lion, params=start, evaluate=False)
    names = list(start)
    p, m = np.concatenate([start[k].ravel() for k in names]), 0.0
    for _ in range(4):
        _, grads = prog.loss_and_grad(prog.unflatten(p), X, y)
        g = np.concatenate([grads[k].ravel() for k in names])
        p = p - 1e-3 * np.sign(0.9 * m + 0.1 * g)
        m = 0.99 * m + 0.01 * g
    for key, value in prog.unflatten(p).items():
        np.testing.assert_allclose(result.params[key], value, rtol=1e-12, atol=1e-15)


def test_the_formulas_are_part_of_the_cache_key() -> None:
    model = nn.Sequential(nn.Dense(2), input_dim=2, loss=nn.MSE(), name="cache_key_probe")
    a = nc.compile(model, optimizers=[nc.Optimizer("mine", {"p": "p - lr*g/2"})])
    b = nc.compile(model, optimizers=[nc.Optimizer("mine", {"p": "p - lr*g/3"})])
    c = nc.compile(model, optimizers=[nc.Optimizer("mine", {"p": "p - lr*g/2"})])
    assert a.source_path != b.source_path and a.source_path == c.source_path
    assert "step_mine" in a.source and "step_mine" not in nc.compile(model).source


@pytest.mark.parametrize("make,error,message", [
    (lambda: nc.Optimizer("adam", {"p": "p - lr*g"}), nc.ModelError, "built-in"),
    (lambda: nc.Optimizer("o", {"v": "v + g"}), nc.FormulaError, "assign p"),
    (lambda: nc.Optimizer("o", {"p": "p - lr*q"}), nc.FormulaError, "unknown name 'q'"),
    (lambda: nc.Optimizer("o", {"p": "p - lr*__import__('os')"}), nc.FormulaError, "not allowed"),
    (lambda: nc.Optimizer("o", {"g": "2*g", "p": "p - lr*g"}), nc.FormulaError, "cannot be assigned"),
    (lambda: nc.Optimizer("o", {"p": "p - lr*np*g"}, {"np": 1.0}), nc.ModelError, "clash"),
    (lambda: nc.Optimizer("o", {"p": "p - lr*g*lambda"}, {"lambda": 1.0}), nc.FormulaError, "Python keyword"),
    (lambda: nc.Optimizer("o", {"p": "p - lr*g"}, {"mu": float("nan")}), nc.FormulaError, "finite"),
    (lambda: nc.Optimizer("bad name", {"p": "p - lr*g"}), nc.FormulaError, "not a valid name"),
])
def test_bad_rules_are_refused_with_one_line(make, error, message) -> None:
    model = nn.Sequential(nn.Dense(2), input_dim=2, loss=nn.MSE(), name="bad_rules")
    with pytest.raises(error, match=message):
        nc.compile(model, optimizers=[make()])


def test_only_sgd_folds_the_learning_rate() -> None:
    assert nc.OPTIMIZERS["sgd"].folds_lr and nc.Optimizer("plain", {"p": "p - g*lr"}).folds_lr
    assert not any(nc.OPTIMIZERS[name].folds_lr for name in ("momentum", "nesterov", "adam", "rmsprop"))


def test_matches_torch_optim_when_torch_is_installed(prog, batch) -> None:
    """Cross-check against torch.optim (.ci/run installs torch==2.13.0; skipped where torch is absent):
    gd steps equal torch.optim's in float64."""
    torch = pytest.importorskip("torch")
    X, y = batch
    start = prog.init_params(6)
    factories = {"sgd": lambda p: torch.optim.SGD(p, lr=0.3),
                 "momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
                 "nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
                 "adam": lambda p: torch.optim.Adam(p, lr=0.01),
                 "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01)}
    lrs = {"sgd": 0.3, "momentum": 0.05, "nesterov": 0.05, "adam": 0.01, "rmsprop": 0.01}
    for name, make in factories.items():
        result = nc.train(prog, X, y, mode="gd", epochs=5, lr=lrs[name], optimizer=name, params=start,
                          evaluate=False)
        tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in start.items()}
        opt = make(list(tensors.values()))
        for _ in range(5):
            opt.zero_grad()
            _, grads = prog.loss_and_grad({k: t.detach().numpy() for k, t in tensors.items()}, X, y)
            for k, t in tensors.items():
                t.grad = torch.from_numpy(grads[k].copy())
            opt.step()
        for k, t in tensors.items():
            np.testing.assert_allclose(result.params[k], t.detach().numpy(), rtol=1e-10, atol=1e-13, err_msg=name)
