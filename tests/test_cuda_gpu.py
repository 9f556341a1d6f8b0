"""The CUDA backend on a GPU: the NumPy backend's numbers, training, graphs, the standalone script.

Every test is marked gpu and skips (saying why) unless CuPy reaches a CUDA device;
scripts/gpu-check.sh runs them. References are the NumPy backend (float64 agreement to
1e-10, float32 to 1e-4, relative to each gradient's largest entry) and, for what that
backend cannot print, central finite differences of the CUDA loss itself.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from cuda_models import NUMPY_FAILS, matrix
from nncompile import data, nn
from nncompile import load_model
from nncompile.generate import standalone
from nncompile.gradcheck import check_gradients, random_batch

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parent.parent
MODELS = matrix()
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "rmsprop")


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
    return float(np.abs(np.asarray(got, dtype=np.float64) - want).max(initial=0.0)) / scale


def _no_capture_warnings(caught: list) -> None:
    assert not [w for w in caught if "CUDA graph capture failed" in str(w.message)], [str(w.message) for w in caught]


@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("name", sorted(set(MODELS) - NUMPY_FAILS))
def test_loss_gradients_and_output_match_the_numpy_backend(name: str, dtype: str, tolerance: float) -> None:
    model = MODELS[name]
    ref, gpu = nc.compile(model, dtype=dtype), nc.compile(model, backend="cuda", dtype=dtype)
    X, Y = random_batch(ref, 37, seed=1)
    params = ref.init_params(1, scheme="xavier")
    loss, grads = ref.loss_and_grad(params, X, Y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = [gpu.loss_and_grad(params, X, Y) for _ in range(3)]  # eager, captured, replayed
    _no_capture_warnings(caught)
    for gpu_loss, gpu_grads in runs:
        assert abs(float(gpu_loss) - float(loss)) <= tolerance * max(abs(float(loss)), 1e-30)
        assert type(gpu_loss) is np.dtype(dtype).type
        for key in grads:
            assert gpu_grads[key].dtype == np.dtype(dtype) and gpu_grads[key].shape == grads[key].shape
            assert _relative(gpu_grads[key], grads[key]) <= tolerance, key
    assert _relative(gpu.forward(params, X), ref.forward(params, X)) <= tolerance


@pytest.mark.parametrize("name", sorted(NUMPY_FAILS | {"mish", "custom_formulas"}))
def test_gradients_match_finite_differences_of_the_cuda_loss(name: str) -> None:
    gpu = nc.compile(MODELS[name], backend="cuda", dtype="float64")
    X, Y = random_batch(gpu, 9, seed=2)
    report = check_gradients(gpu, gpu.init_params(2, scheme="xavier"), X, Y, samples=0, seed=2)
    assert max(report.values()) <= 1e-6, report


@pytest.mark.parametrize("name", ["xor", "digits", "relu_leaky_bce_l1", "softplus_identity_logits"])
def test_extreme_inputs_stay_finite_and_agree(name: str) -> None:
    model = MODELS[name]
    ref, gpu = nc.compile(model), nc.compile(model, backend="cuda")
    X, Y = random_batch(ref, 16, seed=3)
    X = X * 1000.0
    params = ref.init_params(3, scheme="xavier")
    loss, grads = ref.loss_and_grad(params, X, Y)
    gpu_loss, gpu_grads = gpu.loss_and_grad(params, X, Y)
    assert np.isfinite(float(gpu_loss)) and all(np.isfinite(g).all() for g in gpu_grads.values())
    assert abs(float(gpu_loss) - float(loss)) <= 1e-9 * max(abs(float(loss)), 1.0)
    for key in grads:
        assert _relative(gpu_grads[key], grads[key]) <= 1e-9, key


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_training_with_every_optimizer_matches_the_numpy_backend(optimizer: str) -> None:
    """Three epochs of mini-batches (the last one partial): scalars, step counts and graphs on the device."""
    model = MODELS["sigmoid_tanh_mse_l2"]
    ref, gpu = nc.compile(model), nc.compile(model, backend="cuda")
    X, Y = random_batch(ref, 45, seed=4)
    settings = dict(mode="minibatch", batch_size=8, epochs=3, lr=0.05, optimizer=optimizer, seed=4)
    want = nc.train(ref, X, Y, **settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = nc.train(gpu, X, Y, **settings)
    _no_capture_warnings(caught)
    for key in want.params:
        assert _relative(got.params[key], want.params[key]) <= 1e-9, key
    for a, b in zip(got.history, want.history):
        assert a["updates"] == b["updates"] and abs(a["loss"] - b["loss"]) <= 1e-9 * abs(b["loss"])


def test_graph_replay_and_one_launch_at_a_time_agree() -> None:
    model = MODELS["digits"]
    graphed = nc.compile(model, backend="cuda")
    plain = nc.compile(model, backend="cuda", cuda_graphs=False)
    ds = data.digits()
    settings = dict(mode="minibatch", batch_size=32, epochs=2, lr=0.1, optimizer="adam", seed=0)
    a = nc.train(graphed, ds.X[:500], ds.y[:500], **settings)
    b = nc.train(plain, ds.X[:500], ds.y[:500], **settings)
    for key in a.params:
        assert _relative(a.params[key], b.params[key]) <= 1e-12, key
    engine = graphed.engine(a.params)
    engine.reset_state("sgd")
    ws = engine.workspace(32)
    for step in range(1, 4):
        ws.step_sgd(0.1, step)
    assert ws.step_sgd.graph is not None  # captured on the second call, replayed on the third


def test_steps_allocate_no_gpu_memory_after_warm_up() -> None:
    import cupy
    prog = nc.compile(MODELS["digits"], backend="cuda", dtype="float32")
    engine = prog.engine(prog.init_params(0))
    engine.reset_state("adam")
    ws = engine.workspace(32)
    X, T = prog.prepare(*random_batch(prog, 32, 0))
    ws.X[...], ws.T[...] = engine.device(X), engine.device(T)
    for step in range(1, 4):
        ws.step_adam(0.01, step, 0.9, 0.999, 1e-8)
    cupy.cuda.Device().synchronize()
    pool = cupy.get_default_memory_pool()
    before = pool.used_bytes()
    for step in range(4, 104):
        ws.step_adam(0.01, step, 0.9, 0.999, 1e-8)
    cupy.cuda.Device().synchronize()
    assert pool.used_bytes() == before
    assert type(engine.params).__module__.startswith("cupy") and type(ws.X).__module__.startswith("cupy")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_digits_trains_to_the_numpy_backends_accuracy(dtype: str) -> None:
    model, settings = load_model(str(ROOT / "examples" / "digits.py"))
    train_set, test_set = data.split(data.digits(), 0.2, 0)
    accuracy = {}
    for backend in ("numpy", "cuda"):
        prog = nc.compile(model, backend=backend, dtype=dtype)
        result = nc.train(prog, train_set.X, train_set.y, seed=0, **settings)
        accuracy[backend] = float(np.mean(prog.predict(result.params, test_set.X) == test_set.y))
    assert accuracy["cuda"] >= 0.95 and abs(accuracy["cuda"] - accuracy["numpy"]) <= 0.01, accuracy


def test_divergence_is_reported_on_the_gpu() -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(8), nn.ReLU(), nn.Dense(1), input_dim=3, loss=nn.MSE()), backend="cuda")
    X, Y = random_batch(prog, 32, 5)
    with pytest.raises(nc.DivergenceError, match="lower the learning rate"):
        nc.train(prog, X * 1e3, Y * 1e3, mode="gd", epochs=50, lr=1e3)


def test_standalone_cuda_script_trains_xor(tmp_path: Path) -> None:
    model, _ = load_model(str(ROOT / "examples" / "xor.py"))
    script = tmp_path / "train_xor_cuda.py"
    script.write_text(standalone(model, "cuda", filename=script.name))
    np.savez(tmp_path / "xor.npz", X=np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float), y=np.array([0, 1, 1, 0]))
    done = subprocess.run([sys.executable, str(script), "--data", "xor.npz", "--mode", "gd", "--epochs", "2000",
                           "--lr", "1.0", "--save", "w.npz", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "binary accuracy 100.00%" in done.stdout
    assert sorted(np.load(tmp_path / "w.npz").files) == ["dense1.W", "dense1.b", "dense2.W", "dense2.b"]


def test_cli_run_on_the_gpu_reaches_95_percent_on_digits() -> None:
    done = subprocess.run([sys.executable, "-m", "nncompile.cli", "run", str(ROOT / "examples" / "digits.py"),
                           "--data", "digits", "--backend", "cuda", "--json"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["test_accuracy"] >= 0.95


def test_dropout_masks_and_running_statistics_match_the_numpy_backend_through_cuda_graphs() -> None:
    """Each step draws its masks on the device from the step count it advances there (eager, captured,
    replayed): 15 updates with BatchNorm and Dropout end where the NumPy backend's do."""
    from reference import dropout_mask
    model = MODELS["norms_dropout"]
    ref, gpu = nc.compile(model), nc.compile(model, backend="cuda")
    X, Y = random_batch(ref, 40, seed=4)
    expected = nc.train(ref, X, Y, epochs=3, batch_size=8, seed=5, lr=0.05, optimizer="adam")
    got = nc.train(gpu, X, Y, epochs=3, batch_size=8, seed=5, lr=0.05, optimizer="adam")
    for key in expected.params:
        assert _relative(got.params[key], expected.params[key]) <= 1e-9, key
    engine = gpu.engine(expected.params)
    engine.set_seed(2**40 + 1)
    ws = engine.workspace(8)
    ws.X[...] = engine.device(np.ones((8, ws.X.shape[1])))
    ws.train_loss()
    np.testing.assert_array_equal(ws.masks[0].get(), dropout_mask(2**40 + 1, 0, 1, 0.25, (8, 7)))
