"""On a GPU: epoch accuracy counted by the CUDA steps, and data-parallel training over NCCL.

Marked gpu (scripts/gpu-check.sh runs them); each skips, saying why, without CuPy and a
device, and the NCCL ones without mpi4py/mpiexec (and, for K = 2, a second GPU).  The
reference is the NumPy backend in one process.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile import data, nn

pytestmark = pytest.mark.gpu
HERE = Path(__file__).resolve().parent
MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
MODEL = nn.Sequential(nn.Dense(16), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64, loss=nn.CrossEntropy(),
                      l2=1e-3, name="gpu_dp")
SETTINGS = dict(mode="minibatch", batch_size=25, epochs=3, lr=0.05, optimizer="momentum", seed=2)
WORKER = """
import json, sys, numpy as np, nncompile as nc
sys.path.insert(0, {here!r})
from test_gpu_distributed import MODEL, SETTINGS, rows
X, y = rows()
result = nc.train(nc.compile(MODEL, backend="cuda", dtype="float64"), X, y, distributed=True, **SETTINGS)
from mpi4py import MPI
if MPI.COMM_WORLD.rank == 0:
    np.savez({out!r}, **result.params)
    print(json.dumps(result.history))
"""


def rows() -> tuple[np.ndarray, np.ndarray]:
    ds = data.digits()
    return ds.X[:357], ds.y[:357]


def _device() -> None:
    from nncompile.backends.cuda.cupy_support import device_problem
    problem = device_problem()
    if problem:
        pytest.skip(problem)


def test_cuda_steps_count_the_same_correct_predictions() -> None:
    _device()
    X, y = rows()
    gpu = nc.train(nc.compile(MODEL, backend="cuda", dtype="float64"), X, y, **SETTINGS)
    ref = nc.train(nc.compile(MODEL, dtype="float64"), X, y, **SETTINGS)
    for mine, theirs in zip(gpu.history, ref.history):
        assert mine["accuracy"] == theirs["accuracy"]
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-10)


@pytest.mark.parametrize("k", [1, 2])
def test_nccl_data_parallel_matches_one_numpy_process(tmp_path: Path, k: int) -> None:
    _device()
    pytest.importorskip("mpi4py")
    if MPIEXEC is None:
        pytest.skip("no mpiexec (pip install 'nncompile[mpi]')")
    import cupy
    if cupy.cuda.runtime.getDeviceCount() < k:
        pytest.skip(f"K = {k} needs {k} GPUs (one process per GPU)")
    code = WORKER.format(here=str(HERE), out=str(tmp_path / "w.npz"))
    done = subprocess.run([MPIEXEC, "-n", str(k), sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CUDA graph capture failed" not in done.stderr, done.stderr[-3000:]
    X, y = rows()
    ref = nc.train(nc.compile(MODEL, dtype="float64"), X, y, **SETTINGS)
    history = json.loads(done.stdout.strip().splitlines()[-1])
    assert [h["accuracy"] for h in history] == [h["accuracy"] for h in ref.history]
    with np.load(tmp_path / "w.npz") as got:
        for name, want in ref.params.items():
            np.testing.assert_allclose(got[name], want, rtol=1e-10, atol=1e-12)
