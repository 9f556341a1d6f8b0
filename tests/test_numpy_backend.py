"""The generated NumPy step: no allocation after warm-up, optimisations keep the numbers."""
from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest

import nncompile as nc
from nncompile import nn
from nncompile.gradcheck import random_batch


def _digits() -> nn.Sequential:
    return nn.Sequential(nn.Dense(32), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64, loss=nn.CrossEntropy(),
                         l2=1e-4, name="digits_mlp")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_step_allocates_nothing_after_warm_up(optimizer: str) -> None:
    prog = nc.compile(_digits())
    engine = prog.engine(prog.init_params(0))
    engine.reset_state(optimizer)
    ws = engine.workspace(32)
    X, Y = random_batch(prog, 32, 0)
    ws.X[...], ws.T[...] = prog.prepare(X, Y)
    step = getattr(ws, f"step_{optimizer}")
    hyper = [v for v in prog.module.OPTIMIZERS[optimizer][1].values()]
    for t in range(1, 11):
        step(0.01, t, *hyper)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for t in range(11, 111):
        step(0.01, t, *hyper)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < 32 * 32 * 8, f"{grown} bytes allocated over 100 steps"


@pytest.mark.parametrize("model", [
    _digits(),
    nn.Sequential(nn.Dense(8), nn.ReLU(), nn.Dense(8), nn.Dense(3), input_dim=5, loss=nn.MSE(), l1=0.01),
    nn.Sequential(nn.Dense(8), nn.Sigmoid(), nn.Dense(1), nn.Sigmoid(), input_dim=2, loss=nn.BinaryCrossEntropy()),
    nn.Sequential(nn.Dense(9), nn.LeakyReLU(0.2), nn.Dense(7), nn.Softplus(), nn.Dense(6), nn.Sigmoid(), input_dim=3,
                  loss=nn.BinaryCrossEntropy(), l2=0.1),
    nn.Sequential(nn.Dense(5), nn.Activation("x*tanh(log(1 + exp(x)))", name="mish"), nn.Dense(4), input_dim=3,
                  loss=nn.SoftmaxCrossEntropy()),
])
def test_every_optimisation_keeps_the_numbers(model: nn.Sequential) -> None:
    """Bias folding, aliasing, BLAS sums, fast softplus/Heaviside/Piecewise forms and lr folding
    against the plain lowering (fold_bias=False, optimize=False): equal to float64 round-off."""
    folded, plain = nc.compile(model), nc.compile(model, fold_bias=False, optimize=False)
    assert "_aug" in folded.source and "_aug" not in plain.source
    X, Y = random_batch(folded, 16, 4)
    params = folded.init_params(4)
    loss_f, g_f = folded.loss_and_grad(params, X, Y)
    loss_p, g_p = plain.loss_and_grad(params, X, Y)
    assert loss_f == pytest.approx(loss_p, rel=1e-13)
    for name in g_f:
        np.testing.assert_allclose(g_f[name], g_p[name], rtol=1e-12, atol=1e-15)
    # plain SGD folds lr into the output delta; the result must equal p - lr * g
    result = nc.train(folded, X, Y, mode="gd", epochs=1, lr=0.3, params=params, evaluate=False)
    for name in params:
        np.testing.assert_allclose(result.params[name], params[name] - 0.3 * g_f[name], rtol=1e-12, atol=1e-15)


def test_every_backward_line_carries_its_formula() -> None:
    source = nc.compile(_digits()).source
    start = source.index("    def loss_and_grad")
    body = source[start:source.index("    def ", start + 1)]
    backward = body[body.index("# backward:"):]
    code = [line for line in backward.splitlines() if line.strip() and not line.strip().startswith(("#", "return"))]
    assert code and all(re.search(r"\S\s+# \S.*=", line) for line in code), code


def test_workspace_bytes_is_an_upper_bound() -> None:
    prog = nc.compile(_digits())
    engine = prog.engine(prog.init_params(0))
    ws = engine.workspace(100)
    arrays = {id(v.base if v.base is not None else v): (v.base if v.base is not None else v)
              for v in ws.__dict__.values() if isinstance(v, np.ndarray)}
    assert prog.workspace_bytes(100) >= sum(a.nbytes for a in arrays.values())
    assert prog.workspace_bytes(200) > prog.workspace_bytes(100)
