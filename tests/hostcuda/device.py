"""The host "GPU" of the CuPy stand-in: memory accounting, graph capture, and device arrays.

`ndarray` wraps a NumPy array with CuPy's manners: no implicit conversion to NumPy
(np.asarray raises, as do host arrays in ufuncs with device arrays and assignments of host
arrays into device arrays), `get` copies to the host, `set` checks like CuPy.  Every
allocation (`zeros`, `ones`, `empty`, `asarray` of host data, `copy`) is recorded, and
`Device.capacity` minus the live allocations is what memGetInfo reports free.
"""
from __future__ import annotations

import ctypes
import os
import weakref

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from . import build


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
        """As CuPy: an element is a 0-d device array, a view of the memory (NumPy would copy a scalar)."""
        key = _unwrap(key, "indexing")
        item = self._a[key]
        if not isinstance(item, np.ndarray):
            item = self._a[(*key, Ellipsis) if isinstance(key, tuple) else (key, Ellipsis)]
        return _wrap(item)

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

