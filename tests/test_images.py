"""Image models as people use them: declarations and their one-line errors, image data everywhere X is
taken, what `derive` and `graph` show, and the shape of the generated NumPy code."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import conv_models
import nncompile as nc
from nncompile import nn
from nncompile.cli import main
from nncompile.gradcheck import random_batch
from nncompile.generate import standalone

ROOT = Path(__file__).resolve().parent.parent
CNN = ROOT / "examples" / "digits_cnn.py"


def _small() -> nn.Sequential:
    return nn.Sequential(nn.Conv2D(4, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(6, (2, 3), stride=(2, 1)),
                         nn.Tanh(), nn.Flatten(), nn.Dense(3), input_shape=(2, 8, 8), loss=nn.SoftmaxCrossEntropy(),
                         l2=0.05, name="small_cnn")


# -- declarations --------------------------------------------------------------------------------------

def test_parameters_are_named_shaped_and_ordered_as_the_contract_says() -> None:
    prog = nc.compile(_small())
    assert prog.param_names == ["conv1.W", "conv1.b", "conv2.W", "conv2.b", "dense1.W", "dense1.b"]
    shapes = prog.param_shapes
    assert shapes["conv1.W"] == (4, 2, 3, 3) and shapes["conv1.b"] == (4,)
    assert shapes["conv2.W"] == (6, 4, 2, 3) and shapes["dense1.W"] == (6 * 2 * 2, 3)
    assert [layer.name for layer in _small().layers] == ["conv1", None, "maxpool1", "conv2", None, "flatten1",
                                                          "dense1"]


def test_kernels_start_as_dense_weights_with_fans_over_the_kernel() -> None:
    """Xavier: U(±sqrt(6/(in*kh*kw + out*kh*kw))); He before ReLU: N(0, 2/(in*kh*kw)); biases zero."""
    model = nn.Sequential(nn.Conv2D(64, 5), nn.Tanh(), nn.Conv2D(64, 3), nn.ReLU(), nn.Flatten(), nn.Dense(2),
                          input_shape=(16, 9, 9), loss=nn.MSE())
    params = nc.compile(model).init_params(0)
    bound = math.sqrt(6 / (16 * 25 + 64 * 25))
    w1 = params["conv1.W"]
    assert np.abs(w1).max() <= bound and np.abs(w1).max() > 0.95 * bound
    assert np.std(w1) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert np.std(params["conv2.W"]) == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert not params["conv1.b"].any() and not params["conv2.b"].any()


@pytest.mark.parametrize("build, words", [
    (lambda: nn.Sequential(nn.Conv2D(2, 9), nn.Flatten(), nn.Dense(2), input_shape=(1, 8, 8), loss=nn.MSE()),
     ["conv1", "9x9 kernel", "larger", "(N, 1, 8, 8)"]),
    (lambda: nn.Sequential(nn.Conv2D(2, 3, stride=2), nn.Flatten(), nn.Dense(2), input_shape=(1, 8, 8),
                           loss=nn.MSE()), ["conv1", "stride 2", "3.5", "(N, 1, 8, 8)"]),
    (lambda: nn.Sequential(nn.Conv2D(2, 3), nn.Dense(2), input_shape=(1, 8, 8), loss=nn.MSE()),
     ["dense1", "(N, 2, 6, 6)", "Flatten"]),
    (lambda: nn.Sequential(nn.Conv2D(2, 3), nn.Flatten(), nn.Dense(2), input_dim=64, loss=nn.MSE()),
     ["conv1", "(N, 64)", "input_shape"]),
    (lambda: nn.Sequential(nn.Conv2D(2, 3), nn.MaxPool2D(4), nn.Flatten(), nn.Dense(2), input_shape=(1, 8, 8),
                           loss=nn.MSE()), ["maxpool1", "stride 4", "(N, 2, 6, 6)"]),
    (lambda: nn.Sequential(nn.Conv2D(2, 3), input_shape=(1, 8, 8), loss=nn.MSE()), ["(N, 2, 6, 6)", "flatten"]),
    (lambda: nn.Sequential(nn.Conv2D(2, 3), nn.Softmax(), input_shape=(1, 8, 8), loss=nn.MSE()),
     ["(N, 2, 6, 6)", "flatten"]),
    (lambda: nn.Conv2D(0, 3), ["filters", "positive integer"]),
    (lambda: nn.Conv2D(2, (3, 3, 3)), ["kernel_size", "pair"]),
    (lambda: nn.Conv2D(2, 3, padding=-1), ["padding", ">= 0"]),
    (lambda: nn.MaxPool2D(2, stride=(1, 0)), ["MaxPool2D stride"]),
    (lambda: nn.AvgPool2D(2)(nn.Input(5)), ["images (N, C, H, W)", "(N, 5)"]),
    (lambda: nn.BatchNorm()(nn.Input((3, 4))), ["(N, 3, 4)"]),
])
def test_a_shape_that_does_not_fit_is_one_line_at_declaration(build: object, words: list[str]) -> None:
    with pytest.raises(nc.ModelError) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_flatten_of_features_is_the_identity_and_cache_keys_see_every_setting() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Dense(2), input_dim=3, loss=nn.MSE())
    prog = nc.compile(model)
    X = np.arange(6.0).reshape(2, 3)
    params = prog.init_params(0)
    np.testing.assert_allclose(prog.forward(params, X), X @ params["dense1.W"])
    specs = {nn.Sequential(nn.Conv2D(2, 3, **kw), nn.Flatten(), nn.Dense(2), input_shape=(1, 9, 9),
                           loss=nn.MSE()).spec() for kw in ({}, {"stride": 3}, {"padding": 3}, {"padding": (0, 3)})}
    assert len(specs) == 4


def test_l2_and_l1_penalise_conv_weights_not_biases() -> None:
    base = nc.compile(_small())
    x = nn.Input((2, 8, 8))
    plain_model = nn.Sequential(nn.Conv2D(4, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
                                nn.Conv2D(6, (2, 3), stride=(2, 1)), nn.Tanh(), nn.Flatten(), nn.Dense(3),
                                input_shape=(2, 8, 8), loss=nn.SoftmaxCrossEntropy(), name="small_cnn")
    del x
    plain = nc.compile(plain_model)
    params = base.init_params(4)
    X, y = random_batch(base, 5, 4)
    loss, grads = base.loss_and_grad(params, X, y)
    loss0, grads0 = plain.loss_and_grad(params, X, y)
    penalty = 0.05 / 2 * sum(np.sum(params[k] ** 2) for k in ("conv1.W", "conv2.W", "dense1.W"))
    assert loss - loss0 == pytest.approx(penalty, rel=1e-10)
    for name in grads:
        extra = 0.05 * params[name] if name.endswith(".W") else 0
        np.testing.assert_allclose(grads[name] - grads0[name], extra, atol=1e-13)


# -- image data wherever X is taken ---------------------------------------------------------------------

def test_images_and_their_row_major_rows_are_the_same_data() -> None:
    prog = nc.compile(_small())
    params = prog.init_params(1)
    X = np.random.default_rng(0).normal(size=(6, 2, 8, 8))
    y = np.arange(6) % 3
    four, flat = prog.loss_and_grad(params, X, y), prog.loss_and_grad(params, X.reshape(6, -1), y)
    assert four[0] == flat[0]
    np.testing.assert_array_equal(prog.forward(params, X), prog.forward(params, X.reshape(6, 128)))
    assert prog.evaluate(params, X, y) == prog.evaluate(params, X.reshape(6, -1), y)
    with pytest.raises(nc.DataError, match=r"shape \(6, 8, 8, 2\).*images \(N, 2, 8, 8\), or \(N, 128\)"):
        prog.forward(params, X.transpose(0, 2, 3, 1))


def test_run_digits_as_images_and_predict_from_an_image_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "w.npz"
    assert main(["run", str(CNN), "--data", "digits", "--epochs", "2", "--json", "--no-diagnostics",
                 "--save", str(weights)]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["test_rows"] == 359 and summary["test_accuracy"] > 0.8
    images = nc.data.digits()
    np.savez(tmp_path / "images.npz", X=images.X[:50].reshape(50, 1, 8, 8), y=images.y[:50])
    assert main(["predict", str(CNN), "--weights", str(weights), "--data", str(tmp_path / "images.npz"), "-o",
                 str(tmp_path / "p.npz")]) == 0
    assert "50 rows" in capsys.readouterr().err
    labels = np.load(tmp_path / "p.npz")["label"]
    prog = nc.compile(conv_models.example())
    with np.load(weights) as saved:
        params = {k: saved[k] for k in saved.files}
    np.testing.assert_array_equal(labels, prog.predict(params, images.X[:50]))


def test_run_refuses_images_of_the_wrong_layout_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = nc.data.digits()
    np.savez(tmp_path / "nhwc.npz", X=images.X[:40].reshape(40, 8, 8, 1), y=images.y[:40])
    assert main(["run", str(CNN), "--data", str(tmp_path / "nhwc.npz"), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "(40, 8, 8, 1)" in err and "(N, 1, 8, 8)" in err


def test_a_generated_script_trains_a_cnn_on_image_files_with_numpy_alone(tmp_path: Path) -> None:
    script = tmp_path / "train_cnn.py"
    script.write_text(standalone(_small(), "numpy", filename=script.name), encoding="utf-8")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", X=rng.normal(size=(40, 2, 8, 8)), y=rng.integers(0, 3, size=40))
    blocker = ("import importlib.abc, runpy, sys\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'nncompile': raise ImportError('no nncompile here')\n"
               "sys.meta_path.insert(0, Block())\nsys.argv = sys.argv[1:]\n"
               "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-I", "-c", blocker, str(script), "--data", "train.npz", "--epochs", "3",
                           "--json", "--save", "w.npz", "--no-diagnostics"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    history = json.loads(done.stdout)["history"]
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    assert sorted(np.load(tmp_path / "w.npz").files) == sorted(nc.compile(_small()).param_names)


# -- what derive and graph show ------------------------------------------------------------------------

def _evaluate(expr: sp.Basic, arrays: dict, values: dict) -> float:
    """A formula of the derivation at concrete indices: sums written out, array entries read (0 outside
    an array: the zero padding; the conditions of a Piecewise decided)."""
    expr = expr.xreplace(values)
    if isinstance(expr, sp.Sum):
        body, (index, low, high), *rest = expr.function, expr.limits[0], *expr.limits[1:]
        inner = sp.Sum(body, *rest) if rest else body
        return sum(_evaluate(inner, arrays, {index: v}) for v in range(int(low), int(high) + 1))
    if isinstance(expr, sp.Indexed):
        array = arrays[expr.base.label.name]
        at = tuple(int(i) for i in expr.indices)
        inside = all(0 <= i < d for i, d in zip(at, array.shape))
        return float(array[at]) if inside else 0.0
    if isinstance(expr, sp.Piecewise):
        for value, cond in expr.args:
            if bool(cond):
                return _evaluate(value, arrays, {})
    if expr.args:
        parts = [_evaluate(a, arrays, {}) if a.atoms(sp.Indexed) or isinstance(a, sp.Sum) else float(a)
                 for a in expr.args]
        return float(expr.func(*parts))
    return float(expr)


def test_the_formulas_derive_shows_evaluate_to_the_compiled_gradients() -> None:
    """∂L/∂W, ∂L/∂b and the δ sent to the input, as printed, entry by entry: a conv read by a flattening MSE
    loss (so δ at its output is known in closed form) after a 1x1 conv that reads the δ sent back."""
    x = nn.Input((2, 5, 3))
    z = nn.Conv2D(3, (3, 2), stride=(2, 1), padding=(1, 2), name="conv")(nn.Conv2D(2, 1, name="pre")(x))
    model = nn.Model(x, nn.Flatten()(z), loss=nn.MSE(), name="shown")
    prog = nc.compile(model)
    params = prog.init_params(3)
    params["pre.W"], params["pre.b"] = np.eye(2).reshape(2, 2, 1, 1), np.zeros(2)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2, 2, 5, 3))
    out = prog.forward(params, X)
    T = rng.normal(size=out.shape)
    _, grads = prog.loss_and_grad(params, X, T)
    formulas = prog.formulas
    record = next(r for r in prog.derivation.records if r.layer == "conv")
    values = {sym: int(v) for sym, v in record.constants.items()}
    delta = (2 * (out - T) / T.size).reshape(2, 3, *z.shape[1:])
    arrays = {record.inp: X, "K2": params["conv.W"], "bc2": params["conv.b"], f"d{record.out}": delta}
    sizes = {sp.Symbol(n, integer=True, positive=True): v for n, v in
             {"N": 2, "C": 2, "O": 3, "H_o": z.shape[1], "W_o": z.shape[2]}.items()}
    weight = formulas["conv.W"].gradient
    entry = weight.lhs.args[1]
    for o, c, p, q in np.ndindex(params["conv.W"].shape):
        at = {**values, **sizes, **dict(zip(entry.indices, (o, c, p, q)))}
        assert _evaluate(weight.rhs, arrays, at) == pytest.approx(grads["conv.W"][o, c, p, q], abs=1e-12)
    bias = formulas["conv.b"].gradient
    for o in range(3):
        assert _evaluate(bias.rhs, arrays, {**sizes, bias.lhs.args[1].indices[0]: o}) == \
            pytest.approx(grads["conv.b"][o], abs=1e-12)
    rows = dict(formulas["conv"].rows)
    sent, condition = rows["to the input"], rows["nonzero terms"][0]
    dx = np.zeros_like(X)
    for n, c, h, w in np.ndindex(X.shape):
        at = {**values, **sizes, **dict(zip(sent[0].indices, (n, c, h, w)))}
        term = sp.Piecewise((sent[1].function, condition), (0, True))
        dx[n, c, h, w] = _evaluate(sp.Sum(term, *sent[1].limits), arrays, at)
    np.testing.assert_allclose(np.einsum("nohw,nchw->oc", dx, X).reshape(2, 2, 1, 1), grads["pre.W"],
                               rtol=1e-11, atol=1e-13)


def test_derive_shows_the_indexed_derivation_and_how_the_code_evaluates_it(capsys: pytest.CaptureFixture) -> None:
    assert main(["derive", str(CNN), "--format", "unicode"]) == 0
    text = capsys.readouterr().out
    for piece in ("zc₁[n, o, i, j] = bc₁[o] + Σ_{c,p,q}(K₁[o, c, p, q]·X₁[n, c, p + i·s − pad, q + j·s − pad])",
                  "∂L/∂K₂[o, c, p, q] = Σ_{n,i,j}(", "∂L/∂bc₂[o] = Σ_{n,i,j}(∂L/∂zc₂[n, o, i, j])",
                  "full correlation: ∂L/∂pm₁[n, c, h, w] = Σ_{o,p,q}(K₂[o, c, k − 1 − p, k − 1 − q]",
                  "pm₁[n, c, i, j] = max_{u,v}(", "[h = i·s + u*[n, c, i, j]]", "first maximum",
                  "im2col + GEMM", "SymPy finds the full correlation equal", "Σ_{n,h,w}",
                  "1x8x8 image inputs -> conv1"):
        assert piece in text, piece
    assert main(["derive", str(CNN), "--format", "latex"]) == 0
    assert r"\sum_{n,i,j}" in capsys.readouterr().out


def test_check_passes_on_the_cnn_example(capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(CNN)]) == 0
    out = capsys.readouterr().out
    assert "conv1.W" in out and "batchnorm2.gamma" in out and "agree with finite differences" in out


def test_scalar_view_refuses_convolutions_in_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["derive", str(CNN), "--scalar"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "conv1" in err and "--scalar" in err


def test_graph_counts_the_convolutions_flops(capsys: pytest.CaptureFixture) -> None:
    assert main(["graph", str(CNN), "--batch-size", "10"]) == 0
    rows = {line.split()[4]: line for line in capsys.readouterr().out.splitlines() if "Conv2D" in line}
    forward = next(line for line in rows.values() if " Conv2D " in line and "zc1" in line.split()[3])
    assert f"{2 * 10 * 64 * 16 * 9 + 10 * 64 * 16:,}" in forward


# -- the generated NumPy code ---------------------------------------------------------------------------

def _blocks(source: str, function: str) -> dict[str, list[str]]:
    """Code lines of each op of one generated function, by the op's header comment."""
    start = source.index(f"    def {function}(")
    body = source[start:source.index("\n    def ", start + 1)]
    blocks: dict[str, list[str]] = {}
    header = None
    for line in body.splitlines()[2:]:
        stripped = line.strip()
        if stripped.startswith("# forward:") or stripped.startswith("# backward:"):
            header = stripped
            blocks[header] = []
        elif header and stripped and not stripped.startswith(("#", "return")):
            blocks[header].append(stripped)
    return blocks


def test_one_gemm_per_convolution_and_gradient_no_add_at_no_allocation() -> None:
    prog = nc.compile(conv_models.lenet())
    source = prog.source
    assert "add.at" not in source and "np.pad" not in source
    blocks = _blocks(source, "step_sgd")
    convs = {h: lines for h, lines in blocks.items() if "conv2d" in h}
    assert len(convs) == 2 + 2 + 1   # two forward, two weight gradients, one input gradient (conv2's)
    for header, lines in convs.items():
        assert sum("np.dot(" in line for line in lines) == 1, (header, lines)
    pools = {h: lines for h, lines in blocks.items() if "maxpool(" in h}
    assert len(pools) == 2
    assert re.search(r"pwin_pm1 = \w+\.reshape\(", source)   # windows that tile the input: a reshape
    engine = prog.engine(prog.init_params(0))
    engine.reset_state("sgd")
    ws = engine.workspace(16)
    ws.X[...], ws.T[...] = prog.prepare(*random_batch(prog, 16, 0))
    for _ in range(3):
        ws.step_sgd(0.01, 1)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(20):
        ws.step_sgd(0.01, 1)
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename") if s.size_diff > 0)
    tracemalloc.stop()
    assert grown < 16 * 1024, f"{grown} bytes allocated over 20 steps"


def test_workspace_bytes_bounds_every_array_a_conv_step_uses() -> None:
    prog = nc.compile(conv_models.mixed())
    engine = prog.engine(prog.init_params(0))
    engine.reset_state("adam")
    ws = engine.workspace(50)
    spans = []   # the memory every array the entry points see lies in (views share their array's)
    for fn in (ws.step_adam, ws.loss_and_grad, ws.forward):
        for cell in fn.__closure__ or ():
            value = cell.cell_contents
            for item in (value if isinstance(value, tuple) else (value,)):
                for array in (item if isinstance(item, tuple) else (item,)):
                    if isinstance(array, np.ndarray) and array.size > 1:
                        spans.append(np.lib.array_utils.byte_bounds(array))
    flat = [np.lib.array_utils.byte_bounds(v) for v in (engine.params, engine.grads, *engine.state.values())]
    used, end = 0, 0
    for low, high in sorted(spans):
        if any(a <= low < b for a, b in flat):
            continue
        used += max(0, high - max(low, end))
        end = max(end, high)
    assert used <= prog.workspace_bytes(50) < 3 * used
