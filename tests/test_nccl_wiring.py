"""NCCL on the CUDA backend, checked without a GPU: set-up order, the buffer each step sums, the
chained step's launches and graph capture, and the one-line errors.

No GPU here, so CuPy is a recording stand-in (tests/nccl_fakes.py) for these wiring checks;
MPI, the runtime's set-up and step code and cupy_support's Entry and Chain are the real ones.
The sums themselves, the kernels and graph replay on a device run in scripts/gpu-check.sh.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="needs mpi4py (pip install 'nncompile[mpi]')")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from nccl_fakes import Log, fake_cupy  # noqa: E402

from nncompile.backends.cuda import cupy_support  # noqa: E402

MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install 'nncompile[mpi]')")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[list]]:
    """Each process's log of a two-process job, for machines with 2 GPUs and with 1."""
    out = {}
    for devices in (2, 1):
        tmp = tmp_path_factory.mktemp(f"nccl{devices}")
        done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(HERE / "nccl_worker.py"), str(tmp / "log"),
                               str(devices)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        out[devices] = [json.loads((tmp / f"log.{rank}.json").read_text()) for rank in (0, 1)]
    return out


def _names(log: list) -> list[str]:
    return [event[0] for event in log]


@needs_mpiexec
@pytest.mark.parametrize("devices", [2, 1])
def test_each_process_takes_its_gpu_then_joins_the_communicator_made_from_rank_0s_id(logs: dict,
                                                                                    devices: int) -> None:
    for rank, log in enumerate(logs[devices]):
        names = _names(log)
        setup = names[:names.index("NcclCommunicator") + 1]
        assert setup[:2] == ["getDeviceCount", "device.use"], setup   # the GPU first, before any other CUDA call
        assert log[1][1] == rank % devices                             # this machine's rank, modulo its GPUs
        assert ("get_unique_id" in setup) == (rank == 0)               # rank 0 alone makes the id ...
        communicator = log[names.index("NcclCommunicator")]
        assert communicator[1:] == [2, [0, 1, 2, 3], rank]             # ... which every process joins with


@needs_mpiexec
def test_a_step_sums_the_gradient_vector_and_tail_in_place_then_updates(logs: dict) -> None:
    for log in logs[2]:
        names = _names(log)
        _, pointer, size = log[names.index("reduced")]
        sums = [event for event in log if event[0] == "allReduce"]
        assert len(sums) == 2  # the eager first step and the captured second; the third replays the graph
        for event in sums:  # in place (send = receive) on the whole vector + [loss, count], float64, sum
            assert event[1:7] == [pointer, pointer, size, 8, 0, 0x5EED]
        first = names.index("call")
        assert names[first:first + 6] == ["call", "gradient.scalars", "update.scalars", "gradient", "scale",
                                          "allReduce"] and names[first + 6] == "update"
        assert log[names.index("gradient.scalars")][1:] == [0.5, 1, 3]  # gscale, step, row0 (dropout masks)
        assert log[names.index("update.scalars")][1:] == [0.1, 1]       # lr, step
        assert log[names.index("scale")][1] == [0.25, 1.0]              # loss times this process's share
        assert log[names.index("returned")][1:] == [0.5, 3.0]           # (loss·share, count) after the sum


@needs_mpiexec
def test_the_second_step_is_captured_with_the_nccl_call_and_later_ones_replay(logs: dict) -> None:
    log = logs[2][0]
    calls = [i for i, event in enumerate(log) if event[0] == "call"]
    second, third = log[calls[1]:calls[2]], log[calls[2]:]
    names = _names(second)
    assert names.index("begin_capture") < names.index("allReduce") < names.index("end_capture")
    assert second[names.index("allReduce")][7] is True        # enqueued on the capturing stream
    assert names[-2:] == ["graph.launch", "returned"]
    assert "gradient" not in _names(third) and "allReduce" not in _names(third) and "graph.launch" in _names(third)


def test_a_chain_that_cannot_be_captured_warns_and_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    log = Log()
    cupy = fake_cupy(log)

    def refuse() -> None:
        raise RuntimeError("operation not permitted when stream is capturing")
    cupy.cuda.Stream.end_capture = lambda self: refuse()
    monkeypatch.setattr(cupy_support, "_cupy", cupy)
    chain = cupy_support.Chain("step", [cupy_support.Entry("a", lambda: log.add("a")), lambda: log.add("host")])
    chain(())
    with pytest.warns(RuntimeWarning, match="step: CUDA graph capture failed"):
        chain(())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chain(())
    assert _names(log) == ["a", "host", "begin_capture", "a", "host", "a", "host", "a", "host"]


def test_a_cupy_without_nccl_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    cupy = fake_cupy(Log(), with_nccl=False)
    monkeypatch.setattr(cupy_support, "_cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cupy.cuda)
    with pytest.raises(RuntimeError, match="sums gradients with NCCL, which CuPy cannot use here") as info:
        cupy_support.nccl_join(None)
    assert "\n" not in str(info.value)


@needs_mpiexec
def test_a_cuda_script_without_a_gpu_says_so_once(tmp_path: Path) -> None:
    script = tmp_path / "train_xor_cuda.py"
    subprocess.run([sys.executable, "-m", "nncompile.cli", "generate", str(HERE.parent / "examples" / "xor.py"),
                    "--backend", "cuda", "-o", str(script)], check=True, capture_output=True)
    np.savez(tmp_path / "xor.npz", X=np.zeros((8, 2)), y=np.zeros(8))
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script), "--data", str(tmp_path / "xor.npz"),
                           "--distributed"], capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and len(lines) == 1 and "the cuda backend needs" in lines[0], done.stderr[-2000:]
