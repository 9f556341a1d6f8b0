"""The scalar view: every weight's gradient written out equals the compiled gradient to 1e-10 (float64).

The expressions are evaluated with `sympy.lambdify` for one example and, as the explicit
batch mean (a SymPy Sum over the rows of X and T), for a batch; the reference is
`prog.loss_and_grad`.  For XOR the one-example expressions are also checked against
`sympy.diff` of the written-out loss, an independent derivation.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import nncompile as nc
from nncompile import nn
from nncompile.cli import main
from nncompile.errors import ModelError
from nncompile.explain.scalar import LAMBDIFY_MODULES, MAX_NODES, N, TB, XB

MODELS = {
    "xor221": lambda: nn.Sequential(nn.Dense(2), nn.Tanh(), nn.Dense(1), nn.Sigmoid(), input_dim=2,
                                    loss=nn.BinaryCrossEntropy(), name="xor221s"),
    "softmax_ce": lambda: nn.Sequential(nn.Dense(2), nn.Sigmoid(), nn.Dense(3), nn.Softmax(), input_dim=2,
                                        loss=nn.CrossEntropy(), name="sce_s"),
    "logits_l2": lambda: nn.Sequential(nn.Dense(2), nn.Tanh(), nn.Dense(2), input_dim=2,
                                       loss=nn.SoftmaxCrossEntropy(), l2=0.05, name="lce_s"),
    "leaky_l1_mse": lambda: nn.Sequential(nn.Dense(2), nn.LeakyReLU(0.2), nn.Dense(2), input_dim=2, loss=nn.MSE(),
                                          l1=0.01, name="leaky_s"),
    "three_layers": lambda: nn.Sequential(nn.Dense(2), nn.Tanh(), nn.Dense(2), nn.ReLU(), nn.Dense(1), input_dim=2,
                                          loss=nn.MSE(), name="three_s"),
    "softmax_mse": lambda: nn.Sequential(nn.Dense(2), nn.Tanh(), nn.Dense(2), nn.Softmax(), input_dim=1,
                                         loss=nn.MSE(), name="smse_s"),
    "odd_shapes": lambda: nn.Sequential(nn.Tanh(), nn.Dense(2), nn.Dense(2), nn.Sigmoid(), nn.Tanh(), nn.Dense(1),
                                        nn.Identity(), input_dim=2, loss=nn.Loss("(y - t)**4", name="quartic"),
                                        name="odd_s"),
}


def _setup(name: str, rows: int = 5) -> tuple:
    prog = nc.compile(MODELS[name]())
    rng = np.random.default_rng(7)
    params = {k: v + rng.normal(scale=0.6, size=v.shape) for k, v in prog.init_params(1).items()}
    X = rng.normal(size=(rows, prog.model.input_dim))
    k = prog.model.output_dim
    Y = {"onehot": rng.integers(0, k, size=rows), "binary": rng.integers(0, 2, size=(rows, k)).astype(float),
         "real": rng.normal(size=(rows, k))}[prog.module.TARGET_ENCODING]
    return prog, params, X, Y


def _values(scalar: object, params: dict) -> list[float]:
    entries = {e: v for name, es in scalar.params.items() for e, v in zip(es, params[name].ravel())}
    return [entries[e] for name in scalar.params for e in scalar.params[name]] + list(scalar.constants.values())


@pytest.mark.parametrize("simplify", [True, False], ids=["simplified", "raw"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_scalar_expansion_equals_compiled_gradients(name: str, simplify: bool) -> None:
    prog, params, X, Y = _setup(name)
    try:
        scalar = prog.formulas.scalar(simplify)
    except ModelError:      # raw softmax products outgrow the size limit: check the output bias
        scalar = prog.formulas.scalar(simplify, params=prog.param_names[-1:])
    _, T = prog.prepare(X, Y)
    _, one = prog.loss_and_grad(params, X[:1], Y[:1])
    _, batch = prog.loss_and_grad(params, X, Y)
    weights = [e for es in scalar.params.values() for e in es] + list(scalar.constants)
    values = _values(scalar, params)
    assert len(scalar.gradients) == sum(params[name].size for name in {g.param for g in scalar})
    for g in scalar:
        f1 = sp.lambdify([*scalar.inputs, *scalar.targets, *weights], g.one_example, modules=LAMBDIFY_MODULES)
        assert f1(*X[0], *T[0], *values) == pytest.approx(one[g.param][g.index], rel=1e-10, abs=1e-10), g.symbol
        fn = sp.lambdify([XB, TB, N, *weights], g.batch_mean, modules=LAMBDIFY_MODULES)
        assert fn(X, T, len(X), *values) == pytest.approx(batch[g.param][g.index], rel=1e-10, abs=1e-10), g.symbol
        assert not g.one_example.free_symbols - set(scalar.symbols) - set(scalar.constants)


def test_xor_one_example_gradients_equal_sympy_diff_of_the_loss() -> None:
    prog, params, X, Y = _setup("xor221")
    scalar = prog.formulas.scalar()
    loss = scalar.forward[-1].rhs
    for eq in reversed(scalar.forward[:-1]):        # the loss written out in x, t, W, b alone
        loss = loss.subs(eq.lhs, eq.rhs)
    _, T = prog.prepare(X, Y)
    point = dict(zip(scalar.inputs, X[0])) | dict(zip(scalar.targets, T[0]))
    point |= {e: v for name, es in scalar.params.items() for e, v in zip(es, params[name].ravel())}
    for g in scalar:
        assert float(g.one_example.subs(point)) == pytest.approx(float(sp.diff(loss, g.symbol).subs(point)), rel=1e-12)
        assert g.n_paths == 1


def test_paths_are_summed_in_a_three_layer_network() -> None:
    scalar = nc.compile(MODELS["three_layers"]()).formulas.scalar()
    assert scalar["W1_00"].n_paths == 2 and scalar[("dense3.W", (1, 0))].n_paths == 1
    assert isinstance(scalar["W1_00"].paths, sp.Add) and len(scalar["W1_00"].paths.args) == 2


def test_scalar_view_refuses_large_networks_politely(capsys: pytest.CaptureFixture) -> None:
    wide = nn.Sequential(nn.Dense(16), nn.Tanh(), nn.Dense(1), input_dim=4, loss=nn.MSE(), name="wide")
    with pytest.raises(ModelError, match="at most 64 parameters, 3 dense layers, 10 units per layer; model wide "
                                         "has 97 parameters"):
        nc.compile(wide).formulas.scalar()
    assert main(["derive", "examples/digits.py", "--scalar"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scalar expands networks of at most 64 parameters" in err[0]
    dense3 = nn.Sequential(nn.Dense(4), nn.Tanh(), nn.Dense(4), nn.Tanh(), nn.Dense(2), nn.Softmax(), input_dim=2,
                           loss=nn.CrossEntropy(), name="deep")
    with pytest.raises(ModelError, match=f"at most {MAX_NODES:,} terms.*--param"):
        nc.compile(dense3).formulas.scalar()
    assert nc.compile(dense3).formulas.scalar(params=["dense3.b"]).gradients[0].param == "dense3.b"
