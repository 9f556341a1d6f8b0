"""What the worker runs to test the harness itself: single kernels, cuBLAS calls, graphs, arrays.

Called by tests/test_cuda_host_harness.py with hand-written kernels and arrays; each
returns plain data (host arrays, messages) for the test to judge.
"""
from __future__ import annotations

import numpy as np

from . import cupy_standin


def _device_argument(spec: object) -> object:
    """An argument for a launch: a host array becomes a device array; ("slice", array, start, stop)
    a view into one; ("python", value) passes the Python value itself; anything else as it is."""
    if isinstance(spec, np.ndarray):
        return cupy_standin.asarray(spec)
    if isinstance(spec, tuple) and len(spec) == 4 and spec[0] == "slice":
        return cupy_standin.asarray(spec[1])[spec[2]:spec[3]]
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "python":
        return spec[1]
    return spec


def kernel(source: str, name: str, grid: tuple, block: tuple, args: list, seed: int | None = None) -> list:
    """Launch one kernel of `source` as the driver would; the arrays after it, on the host."""
    device = cupy_standin.DEVICE
    if seed is not None:
        device.rng = np.random.default_rng(seed)
    values = [_device_argument(spec) for spec in args]
    cupy_standin.RawModule(code=source).get_function(name)(grid, block, tuple(values))
    return [v.get() if isinstance(v, cupy_standin.ndarray) else v for v in values]


def blas(call: str, *args: object, orders: tuple = (), **kwargs: object) -> np.ndarray:
    """cupy.cublas.gemm or gemv on device copies of the arrays (in the memory orders given); the output."""
    import cupy
    order = iter(orders)
    values = [cupy.asarray(np.asarray(a, order=next(order, "C"))) if isinstance(a, np.ndarray) else
              _device_argument(a) for a in args]
    if "out" in kwargs:
        kwargs["out"] = cupy.asarray(np.asarray(kwargs["out"], order=kwargs.pop("out_order", "C")))
    result = getattr(cupy.cublas, call)(*values, **kwargs)
    return result.get()


def capture(source: str, name: str, n: int) -> dict:
    """A launch captured into a graph: what the buffer holds after capture, after one and two replays."""
    import cupy
    function = cupy.RawModule(code=source).get_function(name)
    x = cupy.zeros((n,), dtype=np.float64)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        function((1,), (32,), (x, np.int32(n)))
        graph = stream.end_capture()
    seen = {"after capture": x.get()}
    graph.launch()
    seen["after one replay"] = x.get()
    graph.launch()
    seen["after two replays"] = x.get()
    stream.begin_capture()
    try:
        cupy.zeros((3,))
        seen["allocation during capture"] = "allowed"
    except cupy_standin.HarnessError as exc:
        seen["allocation during capture"] = str(exc)
    finally:
        stream.end_capture()
    return seen


def conversions() -> dict:
    """What the stand-in's device arrays do where CuPy's refuse host arrays."""
    import cupy
    x = cupy.zeros((4,), dtype=np.float64)
    outcomes = {}
    for what, action in {"np.asarray(device)": lambda: np.asarray(x),
                         "device + host array": lambda: x + np.ones(4),
                         "device[...] = host array": lambda: x.__setitem__(Ellipsis, np.ones(4)),
                         "device + 1": lambda: x + 1,
                         "device[...] = device": lambda: x.__setitem__(Ellipsis, cupy.ones((4,)))}.items():
        try:
            action()
            outcomes[what] = "ok"
        except TypeError as exc:
            outcomes[what] = f"TypeError: {exc}"
    outcomes["get is a copy"] = x.get() is not x.get() and isinstance(x.get(), np.ndarray)
    return outcomes
