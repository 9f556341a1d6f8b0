"""A host stand-in for the part of CuPy that generated CUDA programs use.

Installed as ``cupy`` (`install`) in a worker process, it lets the real driver run
unchanged: `nc.compile(model, backend="cuda")`, the generated module's `build`, its
entry points, `nc.train`.  What each piece does instead of the GPU:

- arrays (`device.ndarray`) are NumPy arrays behind CuPy's manners (no implicit
  conversion to NumPy), their allocations recorded; `cuda.runtime.memGetInfo` reports a
  capacity less the live allocations;
- `RawModule(code=...)` (`launch`) compiles the source for the host (`build`) and runs
  each launch's grid with every argument checked and every buffer bounds-checked;
- `cublas.gemm`/`gemv` (`cublas`) make CuPy's layout decisions and run that BLAS call;
- `cuda.Stream` capture records launches and BLAS calls instead of running them, and
  the graph it returns replays the record; copies and allocations during a capture are
  errors, as they break a real capture.
"""
from __future__ import annotations

import sys
import types

import numpy as np

from . import build, cublas as blas, device as host
from .device import Device, HarnessError, _device, asarray, empty, ndarray, ones, zeros  # noqa: F401 (cupy's names)
from .launch import RawModule  # noqa: F401

array = asarray


def __getattr__(name: str):
    """NumPy's functions and types for the rest (isfinite, float32, ...), on device arrays;
    DEVICE, the installed device."""
    if name == "DEVICE":
        return host.DEVICE
    return getattr(np, name)


# -- streams and graphs ---------------------------------------------------------------------
class Graph:
    """A captured sequence of launches and BLAS calls; launch() replays it."""

    def __init__(self, work: list) -> None:
        self.work = work

    def launch(self, stream=None) -> None:
        _device().outside_capture("launching a graph")
        for item in self.work:
            item()


class Stream:
    """cupy.cuda.Stream: a capture between begin_capture and end_capture records, not runs."""

    def __init__(self, null=False, non_blocking=False, ptds=False) -> None:
        self.capturing = False

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def begin_capture(self, mode=None) -> None:
        device = _device()
        if device.capture is not None:
            raise HarnessError("begin_capture while another capture is under way")
        device.capture, self.capturing = [], True

    def end_capture(self) -> Graph:
        device = _device()
        if not self.capturing:
            raise HarnessError("end_capture without begin_capture")
        graph, device.capture, self.capturing = Graph(device.capture), None, False
        return graph


class _Runtime:
    """cupy.cuda.runtime: one device, whose free memory is its capacity less the live allocations."""

    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802  (CUDA's name)
        return 1

    @staticmethod
    def memGetInfo() -> tuple[int, int]:  # noqa: N802
        device = _device()
        return max(device.capacity - device.live, 0), device.capacity


class _DeviceHandle:
    """cupy.cuda.Device."""

    def __init__(self, device: int | None = None) -> None:
        self.id = 0 if device is None else int(device)

    def synchronize(self) -> None:
        return None


class _MemoryPool:
    """CuPy's pool: the stand-in frees at once, so the pool never holds unused bytes."""

    def free_bytes(self) -> int:
        return 0

    def used_bytes(self) -> int:
        return _device().live


_POOL = _MemoryPool()


def get_default_memory_pool() -> _MemoryPool:
    return _POOL


def install(builder: build.Builder, capacity: int = 80 * 2**30, seed: int | None = None) -> Device:
    """Make ``import cupy`` (and cupy.cublas, cupy.cuda) give this stand-in; return its device."""
    host.DEVICE = Device(builder, capacity, seed)
    module = sys.modules[__name__]
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime = _Runtime()
    cuda.Device = _DeviceHandle
    cuda.Stream = Stream
    cuda.Graph = Graph
    cublas = types.ModuleType("cupy.cublas")
    cublas.gemm, cublas.gemv = blas.gemm, blas.gemv
    module.cuda, module.cublas = cuda, cublas
    sys.modules.update({"cupy": module, "cupy.cuda": cuda, "cupy.cublas": cublas})
    return host.DEVICE
