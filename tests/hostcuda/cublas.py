"""cuBLAS calls of the CuPy stand-in: `gemm` and `gemv` as CuPy makes them.

Each call makes CuPy's own decisions (its shape asserts, the operation and leading
dimension it derives from each operand's memory order, the transposed problem for a
C-ordered output) and then runs that column-major BLAS call with NumPy on strided views
of the operands' memory, refusing operands CuPy would have to copy.
"""
from __future__ import annotations

import numpy as np

from .device import HarnessError, _device, ndarray

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


def gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
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


def gemv(transa, alpha, a, x, beta, y):
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
