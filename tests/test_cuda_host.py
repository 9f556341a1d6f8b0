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

import pytest

from cuda_models import large, matrix

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
