"""Property-based: random architectures compile to correct gradients, in float64 and float32.

For each random model (see `strategies.models`): the compiled forward pass equals an
independent NumPy evaluation of the formulas as written; the compiled gradient agrees
with central finite differences of the compiled loss; and the float32 program agrees
with the float64 one to the tolerances stated below.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import nncompile as nc
from nncompile import nn
from nncompile.gradcheck import random_batch

from strategies import examples, models, random_formulas, reference_forward

STEP = 1e-5          # central-difference step
FD_RTOL = 1e-5       # |g - fd| <= FD_RTOL * max|g of that tensor| + FD_ATOL * max(1, |L|)
FD_ATOL = 1e-8
SAMPLES = 8          # entries checked per parameter tensor
F32_LOSS_RTOL = 1e-4     # float32 loss within this of the float64 loss (relative, floor 1)
F32_GRAD_RTOL = 2e-3     # float32 gradients within this of max|float64 gradient| per tensor
KINK_MARGIN_F32 = 1e-3   # float32 check skips draws with a pre-activation this close to a kink

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _data(prog: nc.CompiledProgram, seed: int, rows: int) -> tuple[np.ndarray, np.ndarray, dict]:
    X, Y = random_batch(prog, rows, seed)
    return X, Y, prog.init_params(seed, scheme="xavier")


def _kink_pattern(model: nn.Sequential, params: dict, X: np.ndarray) -> list[np.ndarray]:
    pattern = reference_forward(model, params, X).pattern()
    if model.l1:
        pattern += [np.sign(params[f"{d.name}.W"]) for d in model.dense_layers]
    return pattern


def _assert_gradients_match_fd(model: nn.Sequential, seed: int, rows: int) -> None:
    prog = nc.compile(model)
    X, Y, params = _data(prog, seed, rows)
    ref = reference_forward(model, params, X)
    out = prog.forward(params, X)
    np.testing.assert_allclose(out, ref.output, rtol=1e-8, atol=1e-10 * max(1.0, np.abs(ref.output).max()))
    loss, grads = prog.loss_and_grad(params, X, Y)
    assert np.isfinite(loss)
    base = _kink_pattern(model, params, X)
    rng = np.random.default_rng(seed)
    checked = 0
    for name, g in grads.items():
        picks = rng.choice(g.size, min(SAMPLES, g.size), replace=False)
        scale = np.abs(g).max()
        for i in picks:
            fd, crossed = _central_difference(prog, model, params, X, Y, name, int(i), base)
            if crossed:
                continue  # the step crosses a kink (ReLU at 0, |w| at 0): no derivative to compare
            checked += 1
            err = abs(g.flat[i] - fd)
            assert err <= FD_RTOL * scale + FD_ATOL * max(1.0, abs(loss)), \
                f"{name}[{i}]: compiled {g.flat[i]!r} vs finite difference {fd!r} (model {model!r})"
    assert checked > 0


def _central_difference(prog: nc.CompiledProgram, model: nn.Sequential, params: dict, X: np.ndarray,
                        Y: np.ndarray, name: str, i: int, base: list) -> tuple[float, bool]:
    values, crossed = [], False
    for sign in (1, -1):
        shifted = {k: v.copy() for k, v in params.items()}
        shifted[name].flat[i] += sign * STEP
        values.append(float(prog.loss(shifted, X, Y)))
        crossed |= any(not np.array_equal(a, b) for a, b in zip(_kink_pattern(model, shifted, X), base))
    return (values[0] - values[1]) / (2 * STEP), crossed


@settings(max_examples=examples(50), **SETTINGS)
@given(model=models(), seed=st.integers(0, 2**16), rows=st.integers(1, 6))
def test_random_models_gradients_match_finite_differences(model: nn.Sequential, seed: int, rows: int) -> None:
    _assert_gradients_match_fd(model, seed, rows)


@settings(max_examples=examples(20), **SETTINGS)
@given(formula=random_formulas, loss=st.sampled_from(["mse", "bce"]), seed=st.integers(0, 2**16))
def test_random_formula_activations_match_finite_differences(formula: str, loss: str, seed: int) -> None:
    act = nn.Activation(formula, name="random")
    tail = [nn.Dense(2)] if loss == "mse" else [nn.Dense(2), nn.Sigmoid()]
    lossfn = nn.MSE() if loss == "mse" else nn.BinaryCrossEntropy()
    model = nn.Sequential(nn.Dense(4), act, nn.Dense(3), act, *tail, input_dim=3, loss=lossfn, l2=0.01)
    _assert_gradients_match_fd(model, seed, 5)


@settings(max_examples=examples(30), **SETTINGS)
@given(model=models(), seed=st.integers(0, 2**16), rows=st.integers(1, 16))
def test_float32_program_agrees_with_float64(model: nn.Sequential, seed: int, rows: int) -> None:
    p64, p32 = nc.compile(model, dtype="float64"), nc.compile(model, dtype="float32")
    X, Y, params = _data(p64, seed, rows)
    kinked = reference_forward(model, params, X).kinked
    assume(all(np.abs(z).min() > KINK_MARGIN_F32 for z in kinked))
    params32 = {k: v.astype(np.float32) for k, v in params.items()}
    params64 = {k: v.astype(np.float64) for k, v in params32.items()}  # the same numbers in both
    loss64, g64 = p64.loss_and_grad(params64, X.astype(np.float32), Y)
    loss32, g32 = p32.loss_and_grad(params32, X, Y)
    assert loss32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32.values())
    assert abs(float(loss32) - loss64) <= F32_LOSS_RTOL * max(1.0, abs(loss64)), (loss32, loss64)
    for name, g in g64.items():
        err = np.abs(g32[name] - g).max()
        assert err <= F32_GRAD_RTOL * max(np.abs(g).max(), 1e-3), f"{name}: float32 off by {err:.3g} ({model!r})"


# Models on which the property tests above found bugs, kept as fixed examples.
REGRESSIONS = [
    # an operand's scratch buffer was released while still the destination: 0.2*H(-x) was overwritten
    nn.Sequential(nn.Dense(3), nn.Activation("max(0.2*x, x)", name="c"), nn.Dense(2), input_dim=2, loss=nn.MSE()),
    # a width-1 hidden softmax: an alias was bound before the buffer it names was allocated
    nn.Sequential(nn.Dense(1), nn.Softmax(), nn.Dense(1), nn.Sigmoid(), input_dim=1, loss=nn.BinaryCrossEntropy()),
    # d/dx heaviside(x) is DiracDelta in SymPy, which no backend can evaluate: taken as 0
    nn.Sequential(nn.Dense(4), nn.Activation("max(x, 0.2*x) + heaviside(x)*sin(x)", name="odd"), nn.Dense(2),
                  input_dim=2, loss=nn.Loss("heaviside(y - t)*(y - t)^2", name="one_sided")),
    nn.Sequential(nn.Dense(4), nn.Activation("sign(x)*x^2", name="signed_square"), nn.Dense(3), nn.Softmax(),
                  nn.Dense(2), input_dim=2, loss=nn.MSE()),
    # u**-k printed as 1/Pow(u, k), which SymPy folds back into u**-k: endless recursion
    nn.Sequential(nn.Dense(4), nn.Activation("softplus(x) + asinh(-x)", name="r"), nn.Dense(3),
                  nn.Activation("(1 + x^2)^(-2.5) - x", name="s"), nn.Dense(2), input_dim=3, loss=nn.MSE(), l2=0.01),
]


@pytest.mark.parametrize("model", REGRESSIONS, ids=lambda m: repr(m)[:60])
def test_regressions_found_by_the_properties(model: nn.Sequential) -> None:
    for seed in range(3):
        _assert_gradients_match_fd(model, seed, 5)
