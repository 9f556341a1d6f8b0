"""Kernel launches of the CuPy stand-in: `RawModule(code=...)` and its functions.

A source is compiled once for the host (`build`); a launch ``function(grid, block, args)``
checks the geometry and every argument against the kernel's C signature (the dtype of each
pointer, np.int32 for an int, C-contiguous arrays: CuPy passes raw bytes and would not),
gives each buffer its own AddressSanitizer-checked heap block (a whole NumPy allocation is
one already; a view, such as a layer's weights in the flat parameter vector, is copied into
one and back; buffers sharing memory share a block) and runs the grid (`runtime.cpp`).
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import build
from .device import HarnessError, _device, ndarray

_CTYPES = {"double": np.float64, "float": np.float32, "int": np.int32, "unsigned int": np.uint32,
           "long long": np.int64, "unsigned long long": np.uint64}


class RawModule:
    """cupy.RawModule(code=...): the source compiled for the host, once per source text."""

    def __init__(self, code: str, options=(), backend="nvrtc", name_expressions=None) -> None:
        device = _device()
        if code not in device.libraries:
            library, kernels = device.builder.kernels(code)
            lib = ctypes.CDLL(str(library))
            begin, end = ctypes.c_void_p(), ctypes.c_void_p()
            lib.nc_shared_range(ctypes.byref(begin), ctypes.byref(end))
            device.libraries[code] = (lib, kernels, begin, end)
        self.lib, self.kernels, self.shared_begin, self.shared_end = device.libraries[code]

    def get_function(self, name: str) -> "Function":
        if name not in self.kernels:
            raise HarnessError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name}")
        return Function(self, name, self.kernels[name])


def _dims(value, what: str, limits: tuple[int, int, int]) -> tuple[int, int, int]:
    dims = tuple(value) if isinstance(value, tuple) else (value,)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise HarnessError(f"{what} must be a tuple of 1 to 3 ints, got {value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if any(d < 1 or d > limit for d, limit in zip(dims, limits)):
        raise HarnessError(f"{what} {dims} is outside (1..{limits[0]}, 1..{limits[1]}, 1..{limits[2]})")
    return dims


class Function:
    """A kernel: called as CuPy calls a RawKernel, (grid, block, args)."""

    def __init__(self, module: RawModule, name: str, params: list[build.Param]) -> None:
        self.module, self.name, self.params = module, name, params
        self.thunk = getattr(module.lib, f"nc_thunk_{name}")

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None) -> None:
        grid = _dims(grid, f"{self.name}: grid", (2**31 - 1, 65535, 65535))
        block = _dims(block, f"{self.name}: block", (1024, 1024, 64))
        if block[0] * block[1] * block[2] > 1024:
            raise HarnessError(f"{self.name}: block {block} has more than 1024 threads")
        if shared_mem:
            raise HarnessError(f"{self.name}: dynamic shared memory is not supported by the host harness")
        args = tuple(args)
        if len(args) != len(self.params):
            raise HarnessError(f"{self.name} takes {len(self.params)} arguments, the driver passed {len(args)}")
        values = [self._checked(param, arg) for param, arg in zip(self.params, args)]
        description = {"kernel": self.name, "grid": grid, "block": block,
                       "args": [(p.name, a.shape if isinstance(a, ndarray) else a) for p, a in zip(self.params, args)]}
        _device().submit(description, lambda: self._run(grid, block, values))

    def _checked(self, param: build.Param, arg: object):
        where = f"{self.name}: argument {param.name} ({param.ctype})"
        want = _CTYPES.get(param.base)
        if want is None:
            raise HarnessError(f"{where}: the host harness knows no type {param.base!r}")
        if param.pointer:
            if not isinstance(arg, ndarray):
                raise HarnessError(f"{where} must be a device array, got {type(arg).__name__}")
            if arg.dtype != want:
                raise HarnessError(f"{where} gets a {arg.dtype} array: the kernel would read its bytes as {param.base}")
            if not arg.flags.c_contiguous:
                raise HarnessError(f"{where} gets a non-contiguous view: the kernel would read it as contiguous")
            return arg._a
        if isinstance(arg, ndarray) or not np.isscalar(arg):
            raise HarnessError(f"{where} must be a scalar, got {type(arg).__name__}")
        # CuPy passes a Python int as long long and a Python float as double
        passed = {int: np.int64, float: np.float64, bool: np.bool_}.get(type(arg), type(arg))
        if np.dtype(passed) != np.dtype(want):
            raise HarnessError(f"{where} gets a {np.dtype(passed).name}: CuPy would pass {np.dtype(passed).itemsize} "
                               f"bytes of {np.dtype(passed).name} where the kernel reads {param.base}")
        return want(arg)

    def _run(self, grid, block, values) -> None:
        device = _device()
        storage, pointers, blocks = [], [], []
        arrays = [v for v in values if isinstance(v, np.ndarray)]
        groups = _memory_groups(arrays)
        whole = {span for span in map(_allocation, arrays) if span is not None}
        for start, stop in groups:
            if (start, stop) in whole:  # a NumPy allocation is an exact checked block already
                blocks.append((start, stop, start))
                continue
            address = device.block(stop - start)
            _bytes(address, stop - start)[...] = _bytes(start, stop - start)
            blocks.append((start, stop, address))
        described = []
        for param, value in zip(self.params, values):
            if isinstance(value, np.ndarray):
                start = value.__array_interface__["data"][0]
                base = next(b for b in blocks if b[0] <= start < b[1] or (start == b[0] == b[1]))
                cell = ctypes.c_void_p(base[2] + (start - base[0]))
                described.append(f"{param.name} = {value.nbytes} bytes at {cell.value:#x}")
            else:
                cell = np.ctypeslib.as_ctypes_type(value.dtype)(value.item())
                described.append(f"{param.name} = {value.item()}")
            storage.append(cell)
            pointers.append(ctypes.cast(ctypes.byref(cell), ctypes.c_void_p))
        argv = (ctypes.c_void_p * max(len(pointers), 1))(*[p.value for p in pointers])
        error = ctypes.create_string_buffer(1024)
        seed = int(device.rng.integers(2**63))
        try:
            status = device.launch(ctypes.cast(self.thunk, ctypes.c_void_p), argv, (ctypes.c_uint * 3)(*grid),
                                   (ctypes.c_uint * 3)(*block), seed, self.module.shared_begin,
                                   self.module.shared_end, error, len(error),
                                   f"kernel {self.name}(grid {grid}, block {block}; {', '.join(described)})".encode())
            for start, stop, address in blocks:
                if address != start:
                    _bytes(start, stop - start)[...] = _bytes(address, stop - start)
        finally:
            for start, stop, address in blocks:
                if address != start:
                    device.release(stop - start, address)
        if status:
            raise HarnessError(f"kernel {self.name} (grid {grid}, block {block}): {error.value.decode()} "
                               f"[harness seed {device.seed}]")


def _bytes(address: int, nbytes: int) -> np.ndarray:
    """The bytes at `address` as a NumPy array (its copies are memcpy: ctypes.memmove would go
    through AddressSanitizer's byte-by-byte internal_memmove)."""
    return np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(address)) if nbytes else np.empty(0, np.uint8)


def _allocation(array: np.ndarray) -> tuple[int, int] | None:
    """The byte range of `array` when it is a whole NumPy allocation (malloc'd at exactly its size,
    so AddressSanitizer's redzones surround it), else None (a view into a larger buffer)."""
    owner = array
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    start = array.__array_interface__["data"][0]
    if owner.flags.owndata and owner.__array_interface__["data"][0] == start and owner.nbytes == array.nbytes > 0:
        return start, start + array.nbytes
    return None


def _memory_groups(arrays: list[ndarray]) -> list[tuple[int, int]]:
    """Byte ranges covering the arrays, overlapping ones merged (a view and the vector it is part of)."""
    spans = sorted((a.__array_interface__["data"][0], a.__array_interface__["data"][0] + a.nbytes) for a in arrays)
    merged: list[list[int]] = []
    for start, stop in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [tuple(m) for m in merged]
