"""A host stand-in for the part of CuPy that generated CUDA programs use.

Installed as ``cupy`` (`install`) in a worker process, it lets the real driver run
unchanged: `nc.compile(model, backend="cuda")`, the generated module's `build`, its
entry points, `nc.train`.  What each piece does instead of the GPU:

- arrays (`ndarray`) wrap NumPy arrays in host memory, with CuPy's manners: no implicit
  conversion to NumPy (np.asarray raises, host arrays are refused in ufuncs with device
  arrays, as kernel or cuBLAS arguments and in assignments), `get` copies to the host,
  `set` checks like CuPy;
  every allocation is recorded (`Device.allocations`), and `cuda.runtime.memGetInfo`
  reports a capacity minus the live allocations;
- `RawModule(code=...)` compiles the source with g++ against `cuda_host.h` (see
  `build`); `get_function(name)(grid, block, args)` checks the geometry and every
  argument against the kernel's C signature (dtype of each pointer, np.int32 for an int,
  C-contiguous arrays), gives each buffer its own AddressSanitizer-checked heap block (a
  whole NumPy allocation is one already; a view, such as a layer's weights in the flat
  parameter vector, is copied into one and back; buffers sharing memory share a block),
  and runs the grid (`runtime.cpp`);
- `cublas.gemm`/`gemv` make CuPy's own decisions (its shape asserts, the operation and
  leading dimension it derives from each operand's layout, the transposed problem for
  a C-ordered output) and then run that column-major BLAS call with NumPy on strided
  views of the operands' memory, refusing operands CuPy would have to copy;
- `cuda.Stream` capture records launches and BLAS calls instead of running them, and
  the graph it returns replays the record; copies and allocations during a capture are
  errors, as they break a real capture.
"""
from __future__ import annotations

import ctypes
import os
import sys
import types
import weakref

import numpy as np

from numpy.lib.mixins import NDArrayOperatorsMixin

from . import build

_CTYPES = {"double": np.float64, "float": np.float32, "int": np.int32, "unsigned int": np.uint32,
           "long long": np.int64, "unsigned long long": np.uint64}


class HarnessError(RuntimeError):
    """The driver did something a GPU (or CuPy) would not accept, or a kernel misbehaved."""


class Device:
    """The one host 'GPU': its memory accounting, its capture state, its launch seeds."""

    def __init__(self, builder: build.Builder, capacity: int = 80 * 2**30, seed: int | None = None) -> None:
        self.builder = builder
        self.capacity = capacity
        self.live = 0
        self.allocations: list[tuple[tuple, str, int]] = []   # (shape, dtype, bytes), in order
        self.capture: list | None = None
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
        self.rng = np.random.default_rng(self.seed)
        self.launches: list[dict] = []   # every kernel launch and BLAS call, for tests to read
        self.record = False
        self.libraries: dict = {}
        runtime = ctypes.CDLL(str(builder.runtime()), mode=ctypes.RTLD_GLOBAL)
        self.launch = runtime.nc_launch
        self.launch.restype = ctypes.c_int
        self.launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint),
                                ctypes.POINTER(ctypes.c_uint), ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
        libc = ctypes.CDLL(None)
        self._malloc = libc.malloc
        self._malloc.restype, self._malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        self.spare: dict[int, list[int]] = {}   # checked blocks by exact size, reused between launches

    def block(self, nbytes: int) -> int:
        """A heap block of exactly `nbytes` (AddressSanitizer's redzones right around it)."""
        spare = self.spare.get(nbytes)
        return spare.pop() if spare else self._malloc(max(nbytes, 1))

    def release(self, nbytes: int, address: int) -> None:
        self.spare.setdefault(nbytes, []).append(address)

    def allocated(self, array: "ndarray") -> "ndarray":
        if self.capture is not None:
            raise HarnessError("an allocation during CUDA graph capture")
        nbytes = int(array.nbytes)
        self.allocations.append((array.shape, array.dtype.name, nbytes))
        self.live += nbytes
        weakref.finalize(array, self._release, nbytes)
        return array

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes

    def outside_capture(self, what: str) -> None:
        if self.capture is not None:
            raise HarnessError(f"{what} during CUDA graph capture (a synchronous copy invalidates the capture)")

    def submit(self, description: dict, work) -> None:
        """Run `work` now, or record it into the graph being captured."""
        if self.record:
            self.launches.append(description)
        if self.capture is not None:
            self.capture.append(work)
        else:
            work()


DEVICE: Device | None = None


def _device() -> Device:
    if DEVICE is None:
        raise HarnessError("the CuPy stand-in is not installed (hostcuda.cupy_standin.install)")
    return DEVICE


# -- arrays ---------------------------------------------------------------------------------
def _unwrap(value: object, what: str) -> object:
    """A device array's host memory; a host array where CuPy needs a device array is refused."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray) and value.ndim > 0:
        raise TypeError(f"Unsupported type numpy.ndarray in {what} (CuPy refuses host arrays here)")
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap(v, what) for v in value)
    return value


def _wrap(value: object) -> object:
    if isinstance(value, np.ndarray):
        return ndarray(value)
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    return value


class ndarray(NDArrayOperatorsMixin):  # noqa: N801  (CuPy's name)
    """A device array: host memory behind CuPy's manners.

    Like cupy.ndarray it is no NumPy array: implicit conversion (np.asarray, a NumPy
    function mixing it with host arrays, assigning a host array into it) raises, and
    `get` is the way to the host.  Operators, ufuncs, NumPy functions and methods run on
    the memory behind it and give device arrays.
    """

    __slots__ = ("_a", "__weakref__")

    def __init__(self, array: np.ndarray) -> None:
        self._a = array

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = _unwrap(inputs, ufunc.__name__)
        kwargs = {k: _unwrap(v, ufunc.__name__) for k, v in kwargs.items()}
        return _wrap(getattr(ufunc, method)(*inputs, **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        args = _unwrap(args, func.__name__)
        kwargs = {k: _unwrap(v, func.__name__) for k, v in kwargs.items()}
        return _wrap(func(*args, **kwargs))

    def __getattr__(self, name: str):
        if name.startswith("__"):  # __array_interface__ and the like would let NumPy convert it silently
            raise AttributeError(name)
        attribute = getattr(self._a, name)
        if not callable(attribute):
            return _wrap(attribute) if name != "base" else attribute
        def method(*args, **kwargs):
            args = _unwrap(args, name)
            kwargs = {k: _unwrap(v, name) for k, v in kwargs.items()}
            return _wrap(attribute(*args, **kwargs))
        return method

    def __getitem__(self, key) -> object:
        return _wrap(self._a[_unwrap(key, "indexing")])

    def __setitem__(self, key, value) -> None:
        if isinstance(value, np.ndarray) and value.ndim > 0:
            raise TypeError("CuPy refuses to assign a NumPy array into a device array (copy it with cupy.asarray)")
        self._a[_unwrap(key, "indexing")] = _unwrap(value, "assignment")

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))

    def __len__(self) -> int:
        return len(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __repr__(self) -> str:
        return f"device {self._a!r}"

    def get(self, stream=None, order="C", out=None) -> np.ndarray:
        _device().outside_capture("ndarray.get")
        host = np.array(self._a, order=order, copy=True)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr: np.ndarray, stream=None) -> None:
        _device().outside_capture("ndarray.set")
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if self.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if self.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        self._a[...] = arr

    def copy(self, order="C") -> "ndarray":
        return _new(np.array(self._a, order=order, copy=True))


def _new(array: np.ndarray) -> ndarray:
    """A fresh device allocation holding `array` (which must own its memory)."""
    return ndarray(_device().allocated(array))


def zeros(shape, dtype=float, order="C") -> ndarray:
    return _new(np.zeros(shape, dtype=dtype, order=order))


def ones(shape, dtype=float, order="C") -> ndarray:
    return _new(np.ones(shape, dtype=dtype, order=order))


def empty(shape, dtype=float, order="C") -> ndarray:
    # CuPy's memory is uninitialised: NaN bytes make a read before the first write show
    return _new(np.full(shape, np.nan, dtype=dtype) if np.dtype(dtype).kind == "f" else np.empty(shape, dtype))


def asarray(a, dtype=None, order=None) -> ndarray:
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else _new(a._a.astype(dtype))
    _device().outside_capture("cupy.asarray (a copy to the device)")
    return _new(np.array(a, dtype=dtype, copy=True))


array = asarray


def __getattr__(name: str):
    """NumPy's functions and types for the rest (isfinite, float32, ...), on device arrays."""
    return getattr(np, name)


# -- kernels --------------------------------------------------------------------------------
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


# -- cuBLAS ---------------------------------------------------------------------------------
N, T = 0, 1   # CUBLAS_OP_N, CUBLAS_OP_T


def _op(trans) -> int:
    if trans in ("N", N):
        return N
    if trans in ("T", T):
        return T
    raise TypeError(f"invalid trans (actual: {trans})")


def _ld_and_trans(a: ndarray, trans: int) -> tuple[int | None, int]:
    """CuPy's _decide_ld_and_trans: a C-ordered matrix is its transpose in column-major order."""
    if a.flags.f_contiguous:
        return a.shape[0], trans
    if a.flags.c_contiguous:
        return a.shape[1], 1 - trans
    return None, trans


def _column_major(a: ndarray, rows: int, cols: int, ld: int, what: str) -> np.ndarray:
    """The rows x cols column-major matrix with leading dimension ld that cuBLAS sees at a's address."""
    if ld < max(1, rows):
        raise HarnessError(f"{what}: leading dimension {ld} < {rows} rows (cuBLAS returns CUBLAS_STATUS_INVALID_VALUE)")
    flat = a.ravel(order="K")
    if rows and cols and (rows - 1) + (cols - 1) * ld >= flat.size:
        raise HarnessError(f"{what}: a {rows}x{cols} matrix with leading dimension {ld} reaches past its buffer")
    return np.lib.stride_tricks.as_strided(flat, (rows, cols), (flat.itemsize, ld * flat.itemsize))


def _blas_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) -> None:
    """cublas<t>gemm on column-major operands: C = alpha op(A) op(B) + beta C (C not read when beta = 0)."""
    A = _column_major(a, *((m, k) if ta == N else (k, m)), lda, "gemm A")
    B = _column_major(b, *((k, n) if tb == N else (n, k)), ldb, "gemm B")
    C = _column_major(c, m, n, ldc, "gemm C")
    product = (A if ta == N else A.T) @ (B if tb == N else B.T)
    if alpha != 1.0:
        product *= alpha
    C[...] = product + beta * C if beta else product


def _memory_of(*arrays) -> list[np.ndarray]:
    """The host memory behind device arrays; anything else is refused, as CuPy's cuBLAS calls do."""
    for x in arrays:
        if not isinstance(x, ndarray):
            raise HarnessError(f"cuBLAS gets a {type(x).__name__} where CuPy needs a device array")
    return [x._a for x in arrays]


def _gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
    """cupy.cublas.gemm: out = alpha op(a) op(b) + beta out, with CuPy's checks and layout choices."""
    a, b, out = _memory_of(a, b, out)
    assert a.ndim == b.ndim == 2
    assert a.dtype == b.dtype
    if a.dtype.char not in "fd":
        raise TypeError("invalid dtype")
    transa, transb = _op(transa), _op(transb)
    m, k = a.shape if transa == N else a.shape[::-1]
    if transb == N:
        n = b.shape[1]
        assert b.shape[0] == k
    else:
        n = b.shape[0]
        assert b.shape[1] == k
    assert out.ndim == 2 and out.shape == (m, n) and out.dtype == a.dtype
    lda, ta = _ld_and_trans(a, transa)
    ldb, tb = _ld_and_trans(b, transb)
    if lda is None or ldb is None or not (out.flags.f_contiguous or out.flags.c_contiguous):
        raise HarnessError("gemm on a non-contiguous operand: CuPy would copy it (an allocation in every call)")
    alpha, beta = float(alpha), float(beta)
    description = {"blas": "gemm", "trans": (transa, transb), "shapes": (a.shape, b.shape, out.shape)}
    if out.flags.f_contiguous:
        work = lambda: _blas_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, out, m)  # noqa: E731
    else:  # out.T = alpha op(b).T op(a).T + beta out.T, as CuPy computes it
        work = lambda: _blas_gemm(1 - tb, 1 - ta, n, m, k, alpha, b, ldb, a, lda, beta, out, n)  # noqa: E731
    _device().submit(description, work)
    return ndarray(out)


def _blas_gemv(trans, m, n, alpha, a, lda, x, beta, y) -> None:
    """cublas<t>gemv on a column-major A (m x n): y = alpha op(A) x + beta y (y not read when beta = 0)."""
    A = _column_major(a, m, n, lda, "gemv A")
    product = (A if trans == N else A.T) @ x
    y[...] = alpha * product + beta * y if beta else alpha * product


def _gemv(transa, alpha, a, x, beta, y):
    """cupy.cublas.gemv: y = alpha op(a) x + beta y, with CuPy's checks and layout choices."""
    a, x, y = _memory_of(a, x, y)
    if a.dtype.char not in "fd":
        raise TypeError("invalid dtype")
    assert a.ndim == 2
    assert x.ndim == y.ndim == 1
    assert a.dtype == x.dtype == y.dtype
    m, n = a.shape
    transa = _op(transa)
    xlen, ylen = (n, m) if transa == N else (m, n)
    assert x.shape[0] == xlen
    assert y.shape[0] == ylen
    if not (x.flags.c_contiguous and y.flags.c_contiguous):
        raise HarnessError("gemv on a strided vector: the driver passes increment 1")
    alpha, beta = float(alpha), float(beta)
    description = {"blas": "gemv", "trans": transa, "shapes": (a.shape, x.shape, y.shape)}
    if a.flags.f_contiguous:
        work = lambda: _blas_gemv(transa, m, n, alpha, a, m, x, beta, y)  # noqa: E731
    elif a.flags.c_contiguous:
        work = lambda: _blas_gemv(1 - transa, n, m, alpha, a, n, x, beta, y)  # noqa: E731
    else:
        raise HarnessError("gemv on a non-contiguous matrix: CuPy would copy it (an allocation in every call)")
    _device().submit(description, work)
    return ndarray(y)


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
    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802  (CUDA's name)
        return 1

    @staticmethod
    def memGetInfo() -> tuple[int, int]:  # noqa: N802
        device = _device()
        return max(device.capacity - device.live, 0), device.capacity


class _DeviceHandle:
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
    global DEVICE
    DEVICE = Device(builder, capacity, seed)
    module = sys.modules[__name__]
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime = _Runtime()
    cuda.Device = _DeviceHandle
    cuda.Stream = Stream
    cuda.Graph = Graph
    cublas = types.ModuleType("cupy.cublas")
    cublas.gemm, cublas.gemv = _gemm, _gemv
    module.cuda, module.cublas = cuda, cublas
    sys.modules.update({"cupy": module, "cupy.cuda": cuda, "cupy.cublas": cublas})
    return DEVICE
