"""Small stand-ins for the parts of CuPy the NCCL wiring touches, for machines without a GPU.

They record what is asked of them, in order, so a test can check the set-up order (device
chosen before the communicator, the id made by rank 0 alone), the arguments of each NCCL
call (which buffer, how many elements, which type, which stream) and the order of the
launches of a chained step.  They compute nothing on a device: the NCCL sum itself, the
kernels and the graphs run only on a GPU (scripts/gpu-check.sh).
"""
from __future__ import annotations

import types

import numpy as np


class Log(list):
    def add(self, *event: object) -> None:
        self.append(list(event))


def fake_cupy(log: Log, devices: int = 2, with_nccl: bool = True, rank: int = 0) -> types.SimpleNamespace:
    """A module with cupy.cuda's runtime, Device, streams and (optionally) nccl, logging every call."""

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        def use(self) -> None:
            log.add("device.use", self.index)

    class Stream:
        ptr = 0x5EED

        def __init__(self, non_blocking: bool = False) -> None:
            self.capturing = False

        def __enter__(self) -> "Stream":
            current.append(self)
            return self

        def __exit__(self, *exc: object) -> None:
            current.pop()

        def begin_capture(self) -> None:
            log.add("begin_capture")
            self.capturing = True

        def end_capture(self) -> "Graph":
            log.add("end_capture")
            return Graph()

    class Graph:
        def launch(self) -> None:
            log.add("graph.launch")

    current: list = [Stream()]
    nccl = types.SimpleNamespace(
        NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_SUM=0,
        get_version=lambda: 22005,
        get_unique_id=lambda: (log.add("get_unique_id"), tuple(range(rank * 100, rank * 100 + 4)))[1],
        NcclCommunicator=lambda size, uid, r: (log.add("NcclCommunicator", size, list(uid), r),
                                               Communicator())[1])

    class Communicator:
        def allReduce(self, send: int, recv: int, count: int, dtype: int, op: int, stream: int) -> None:
            log.add("allReduce", send, recv, count, dtype, op, stream,
                    bool(current and getattr(current[-1], "capturing", False)))

    cuda = types.SimpleNamespace(Device=Device, Stream=Stream, get_current_stream=lambda: current[-1],
                                 runtime=types.SimpleNamespace(getDeviceCount=lambda: (log.add("getDeviceCount"),
                                                                                       devices)[1]))
    if with_nccl:
        cuda.nccl = nccl
    return types.SimpleNamespace(cuda=cuda)


class DeviceArray(np.ndarray):
    """A host array that answers `.data.ptr` and `.get()` as a CuPy array does."""

    @property
    def data(self) -> types.SimpleNamespace:  # type: ignore[override]
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

    def get(self) -> np.ndarray:
        return np.array(self)

    def set(self, values: np.ndarray) -> None:
        self[...] = values


def device_array(values: object, dtype: object = None) -> DeviceArray:
    return np.array(values, dtype=dtype).view(DeviceArray)
