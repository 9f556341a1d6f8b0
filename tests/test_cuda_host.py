"""The generated CUDA programs, executed on the CPU: every entry point against the NumPy backend.

tests/hostcuda/ compiles each generated CUDA source, unchanged, with g++ and
AddressSanitizer against a header of CUDA built-ins, and runs the generated driver
itself with a stand-in for CuPy, so the kernels, arguments, grids and cuBLAS calls the
driver issues run on host buffers: a block's threads as fibers in warps of 32 (barriers
and shuffles block as on a GPU), blocks in a seeded random order, every buffer
bounds-checked.  The reference is the NumPy backend's plain lowering, in the same dtype:
float64 to 1e-12 and float32 to 1e-5, relative to each quantity's largest entry.  What
only a GPU shows (CuPy loading the module, CUDA graphs, cuBLAS itself, speed) stays in
test_cuda_gpu.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cuda_models import large, matrix

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(matrix())
DTYPES = ("float64", "float32")
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
#: 37 rows leave a row kernel's last block (8 rows) and a warp partly empty.
BATCHES = (1, 7, 37, 256)


def assert_close(errors: dict[str, float], tolerance: float) -> None:
    """Every quantity within `tolerance`; the message names the worst ones."""
    assert errors, "nothing was compared"
    bad = sorted(((v, k) for k, v in errors.items() if not v <= tolerance), reverse=True)
    assert not bad, (f"{len(bad)} of {len(errors)} quantities differ by more than {tolerance:g}; worst: "
                     + "; ".join(f"{k} {v:.3g}" for v, k in bad[:8]))


@pytest.fixture(scope="module")
def worker(host_cuda, request: pytest.FixtureRequest):
    """The host worker, with every (model, dtype) this module's selected tests use derived up front
    (their g++ builds then run on the other core while the tests execute)."""
    pairs = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.module is request.module and "name" in params and "dtype" in params:
            pairs.append((params["name"], params["dtype"]))
    host_cuda.call("prepare", pairs=list(dict.fromkeys(pairs)), timeout=600)
    return host_cuda


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", MODELS)
def test_every_entry_point_matches_the_numpy_backend(worker, name: str, dtype: str) -> None:
    """forward, loss, loss_and_grad, diagnose and every optimizer's step at batch sizes 1, 7, 37
    and 256, each called three times (eager, captured into a graph, replayed)."""
    errors = worker.call("entry_points", model=name, dtype=dtype, batches=BATCHES)
    for entry in ("forward", "loss", "loss_and_grad", "diagnose", "step_sgd", "step_momentum", "step_nesterov",
                  "step_adam", "step_rmsprop"):
        assert any(f"n=256 {entry} call 3:" in key for key in errors), entry
    assert_close(errors, TOLERANCE[dtype])
    if dtype == "float32":  # 1 - beta2 evaluated in float was 1.3e-5 off; now rounded once from double
        assert_close({k: v for k, v in errors.items() if "step_adam" in k and "state v" in k}, 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(large()))
def test_grid_stride_loops_match_the_numpy_backend(worker, name: str, dtype: str) -> None:
    """Every entry point of a model whose elementwise kernels need more threads than one launch
    has (MAX_BLOCKS x BLOCK), so each of their threads loops a second time."""
    result = worker.call("grid_stride", model=name, dtype=dtype)
    assert_close(result["errors"], TOLERANCE[dtype])
    limit = 8192 * 256   # cupy_support.MAX_BLOCKS * BLOCK
    strided = {launch["kernel"] for launch in result["launches"] if "kernel" in launch
               and launch["grid"][0] == 8192 and max(_elements(shape) for _, shape in launch["args"]) > limit}
    kinds = {launch["kernel"].split("_", 1)[1] for launch in result["launches"] if launch.get("kernel") in strided}
    assert {"a1", "dz1", "params"} <= kinds, strided   # activation, its derivative, every optimizer's update
    assert len([k for k in strided if k.endswith("_params")]) == 5, strided


def _elements(shape: object) -> int:
    if not isinstance(shape, tuple):
        return 1
    count = 1
    for d in shape:
        count *= d
    return count


TRAINING = {
    "digits adam minibatch, validation, diagnostics": (
        "digits", "float64", dict(mode="minibatch", batch_size=16, epochs=3, lr=0.003, optimizer="adam",
                                  eps=1e-3, val_split=0.2, diagnostics=True)),
    "xor nesterov gd, cosine schedule": (
        "xor", "float64", dict(mode="gd", epochs=30, lr=0.5, optimizer="nesterov", schedule="cosine")),
    "bce momentum sgd (float32)": (
        "relu_leaky_bce_l1", "float32", dict(mode="sgd", epochs=2, lr=0.01, optimizer="momentum")),
    "hidden softmax sgd minibatch with a partial batch (float32)": (
        "hidden_softmax_stack", "float32", dict(mode="minibatch", batch_size=7, epochs=3, lr=0.05, optimizer="sgd")),
    "logits rmsprop minibatch, step schedule": (
        "softplus_identity_logits", "float64", dict(mode="minibatch", batch_size=9, epochs=3, lr=0.002,
                                                    optimizer="rmsprop", eps=1e-3, schedule="step", step_size=2)),
}
TRAINING_TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


@pytest.mark.parametrize("case", sorted(TRAINING))
def test_training_matches_the_numpy_backend(host_cuda, case: str) -> None:
    """A few epochs of nc.train (shuffled batches, schedules, validation, diagnostics) end with the
    NumPy backend's parameters and history: float64 to 1e-10, float32 to 1e-4 (round-off compounds
    over the updates)."""
    name, dtype, settings = TRAINING[case]
    errors = host_cuda.call("training", model=name, dtype=dtype, **settings)
    assert errors.pop("epochs") == 0.0, "the runs have different numbers of epochs"
    assert f"epoch {settings['epochs']} loss" in errors
    assert_close(errors, TRAINING_TOLERANCE[dtype])


# -- GPU memory ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_memory_estimate_is_what_the_driver_allocates(host_cuda, dtype: str) -> None:
    """The bytes the engine checks against the GPU's free memory before allocating (parameter and
    gradient vectors, optimizer state, workspace_bytes(n) for build(n)) are the bytes the driver
    then allocates, for every model of the CUDA set."""
    for name in MODELS:
        found = host_cuda.call("allocations", model=name, dtype=dtype)
        assert len(found) == 1 + 5 + 3
        wrong = {piece: pair for piece, pair in found.items() if pair[0] != pair[1]}
        assert not wrong, f"{name}: (allocated, estimated) differ for {wrong}"


DIGITS_FLOAT32_PARAMS = 2410
MEMORY_CASES = {
    "the batch's buffers": (60_000, dict(mode="gd", optimizer="adam"), 40 * 2**20,
                            r"^a batch of 60000 rows needs [\d.,]+ MiB of GPU memory but only [\d.,]+ MiB is "
                            r"available: use a smaller batch$"),
    "the training data": (200_000, dict(mode="minibatch", batch_size=32), 40 * 2**20,
                          r"^copying an array of shape \(200000, 64\) \(float32\) to the GPU needs [\d.,]+ MiB of GPU "
                          r"memory but only [\d.,]+ MiB is available: use less data or a smaller model$"),
    "the parameters": (64, dict(mode="gd"), 10_000,
                       rf"^the parameter and gradient vectors of {DIGITS_FLOAT32_PARAMS} entries needs [\d.]+ MiB of "
                       r"GPU memory but only [\d.]+ MiB is available: use a smaller model$"),
    "the optimizer state": (64, dict(mode="gd", optimizer="adam"), 3 * 4 * DIGITS_FLOAT32_PARAMS + 8,
                            r"^the adam state vector 'v' needs [\d.]+ MiB of GPU memory but only [\d.]+ MiB is "
                            r"available: use a smaller model$"),
}


@pytest.mark.parametrize("case", sorted(MEMORY_CASES))
def test_what_does_not_fit_in_gpu_memory_fails_in_one_line_before_allocating(host_cuda, case: str) -> None:
    """With the device's free memory (memGetInfo) too small, nc.train raises one DataError line
    naming what does not fit, and nothing of that is allocated."""
    rows, settings, free, message = MEMORY_CASES[case]
    result = host_cuda.call("memory_refusal", model="digits", dtype="float32", free=free, rows=rows,
                            epochs=1, **settings)
    assert result["error"] is not None and "\n" not in result["error"]
    assert re.match(message, result["error"]), result["error"]
    allowed = {(DIGITS_FLOAT32_PARAMS,), (DIGITS_FLOAT32_PARAMS + 2,), (rows, 64), (rows, 10), (rows,)}  # + 2: the tail
    assert set(result["allocated"]) <= allowed, result["allocated"]


def test_cli_run_on_a_gpu_without_room_exits_2_in_one_line(host_cuda) -> None:
    done = host_cuda.call("cli", args=["run", str(ROOT / "examples" / "digits.py"), "--data", "digits",
                                       "--backend", "cuda", "--epochs", "1"], free=1000)
    assert done["status"] == 2
    err = done["stderr"].strip()
    assert "\n" not in err and re.match(r"^nncompile: error: the parameter and gradient vectors of \d+ entries needs "
                                        r".* of GPU memory but only .* is available: use a smaller model$", err), err


def test_cli_run_trains_with_the_cuda_backend(host_cuda) -> None:
    """`nncompile run --backend cuda` end to end (data, progress, evaluation, summary) on host execution."""
    done = host_cuda.call("cli", args=["run", str(ROOT / "examples" / "xor.py"), "--data", "xor", "--backend",
                                       "cuda", "--epochs", "300", "--quiet", "--json"])
    assert done["status"] == 0, done["stderr"]
    summary = json.loads(done["stdout"])
    assert summary["history"][-1]["loss"] < 0.05, summary["history"][-1]


def test_standalone_cuda_script_trains_as_the_numpy_script(host_cuda, tmp_path) -> None:
    """The scripts `nncompile generate` writes for both backends, run with the same flags, save the
    same weights."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    np.savez(tmp_path / "data.npz", X=X, y=(X[:, 0] * X[:, 1] > 0).astype(float))
    runs = host_cuda.call("scripts", model_file=str(ROOT / "examples" / "xor.py"), folder=str(tmp_path),
                          args=["--data", str(tmp_path / "data.npz"), "--mode", "minibatch", "--batch-size", "8",
                                "--epochs", "20", "--lr", "0.5", "--optimizer", "momentum"])
    for backend, run in runs.items():
        assert run["status"] == 0, (backend, run["stderr"])
    numpy_weights, cuda_weights = runs["numpy"]["weights"], runs["cuda"]["weights"]
    assert numpy_weights and set(cuda_weights) == set(numpy_weights)
    for key, value in numpy_weights.items():
        scale = max(float(np.abs(value).max()), 1e-30)
        assert float(np.abs(cuda_weights[key] - value).max()) / scale <= 1e-10, key


# -- proof that it can fail ------------------------------------------------------------------
#: Bugs planted in the generated digits program (kernels and driver), one at a time.
PLANTED = {
    "column index i / width for i % width": [("const int col = (int)(i % 32);", "const int col = (int)(i / 32);")],
    "warp sum missing its last shuffle": [("for (int offset = 16; offset > 0; offset /= 2) v +=",
                                           "for (int offset = 16; offset > 1; offset /= 2) v +=")],
    "block reduction missing a __syncthreads()": [("    if (lane == 0) partial[warp] = v;\n    __syncthreads();\n",
                                                   "    if (lane == 0) partial[warp] = v;\n")],
    "row loop one past the row": [("col < 10; col += 32", "col <= 10; col += 32")],
    "row kernels launched on an elementwise grid": [("(rows_grid(n), BLOCK", "(grid(n), BLOCK")],
    "map loop one short": [("i < total;", "i < total - 1;")],
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_host_execution_catches_planted_bugs(host_cuda, bug: str) -> None:
    """Each bug makes the comparison fail, the harness stop the launch, or AddressSanitizer end the
    worker with a report naming the kernel (the worker then restarts for the next test)."""
    from hostcuda.client import ScenarioFailed, WorkerDied
    try:
        errors = host_cuda.call("planted", model="digits", dtype="float64", edits=PLANTED[bug], batches=(7, 37),
                                calls=2)
    except WorkerDied as exc:
        assert "ERROR: AddressSanitizer" in str(exc) and "kernels-" in str(exc), str(exc)[-3000:]
        return
    except ScenarioFailed as exc:
        assert "HarnessError" in str(exc), str(exc)[-3000:]
        return
    assert any(not value <= TOLERANCE["float64"] for value in errors.values()), "the planted bug went unnoticed"


def test_cuda_max_pooling_ties_pick_the_first_maximum(host_cuda) -> None:
    """nc_maxpool of the generated kernels, on windows with tied maxima: the index recorded (which the
    backward pass routes δ by) is the first maximum in row-major order, as the NumPy backend's."""
    from nncompile.generate import standalone
    from conv_models import example
    text = standalone(example(), "cuda", filename="x.py")
    source = text.split('CUDA_SOURCE = r"""', 1)[1].split('"""', 1)[0]
    x = np.array([[3.0, 3.0, 1.0, 2.0], [3.0, 0.0, 2.0, 2.0],
                  [0.0, 0.0, 5.0, 4.0], [0.0, 0.0, 5.0, 5.0]]).reshape(1, 1, 4, 4)
    out, index, *_ = host_cuda.call(
        "kernel", source=source, name="nc_maxpool", grid=(1,), block=(32,),
        args=[np.zeros(4), np.zeros(4, np.int32), x.ravel(), np.int32(1), np.int32(1), np.int32(4), np.int32(4),
              np.int32(2), np.int32(2), np.int32(2), np.int32(2), np.int32(2), np.int32(2)])
    np.testing.assert_array_equal(out, [3.0, 2.0, 0.0, 5.0])
    np.testing.assert_array_equal(index, [0, 1, 0, 0])
