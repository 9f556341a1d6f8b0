"""The host CUDA harness itself (tests/hostcuda): CUDA's semantics where bugs hide, and its refusals.

Hand-written kernels, launched through the CuPy stand-in, against what CUDA specifies:
warp shuffles and ballots lane by lane, barriers that a warp running ahead would break,
undefined behaviour a GPU would not report (a barrier in divergent code, a shuffle
waiting for a lane that has exited), blocks in a seeded random order, every buffer
bounds-checked by AddressSanitizer down to a view into a larger vector, arguments
checked against the kernel's C signature, cuBLAS calls as CuPy makes them, graphs.
"""
from __future__ import annotations

import numpy as np
import pytest

from hostcuda.client import ScenarioFailed, WorkerDied

SHUFFLES = r"""
extern "C" __global__ void shuffles(int* out, const int width)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int* row = out + warp * 32 * 7 + lane;
    row[0] = __shfl_xor_sync(0xffffffffu, lane * 10, 5, width);
    row[32] = __shfl_down_sync(0xffffffffu, lane * 10, 3, width);
    row[64] = __shfl_up_sync(0xffffffffu, lane * 10, 3, width);
    row[96] = __shfl_sync(0xffffffffu, lane * 10, lane + 7, width);
    row[128] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    row[160] = __any_sync(0xffffffffu, lane == 31) + 2 * __all_sync(0xffffffffu, lane < 31);
    row[192] = (int)__shfl_xor_sync(0xffffffffu, (double)lane + 0.5, 1);
}
"""


def _expected_shuffles(width: int) -> np.ndarray:
    lane = np.arange(32)
    base = lane - lane % width
    xor = lane ^ 5
    xor = np.where(xor >= base + width, lane, xor)
    down = np.where(lane + 3 >= base + width, lane, lane + 3)
    up = np.where(lane - 3 < base, lane, lane - 3)
    idx = base + (lane + 7) % width
    ballot = sum(1 << k for k in range(0, 32, 3))
    ballot = ballot - 2**32 if ballot >= 2**31 else ballot
    return np.stack([xor * 10, down * 10, up * 10, idx * 10, np.full(32, ballot), np.full(32, 1),
                     (lane ^ 1)]).astype(np.int32)


@pytest.mark.parametrize("width", [32, 16, 8])
def test_warp_shuffles_and_votes_follow_cuda(host_cuda, width: int) -> None:
    """Each lane gets the lane CUDA's programming guide names, with `width` segments: a source in a
    later segment (or outside the warp) gives the lane its own value."""
    (out, _) = host_cuda.call("kernel", source=SHUFFLES, name="shuffles", grid=(3,), block=(64,),
                              args=[np.zeros(2 * 32 * 7, np.int32), np.int32(width)])
    expected = _expected_shuffles(width)
    for warp in range(2):
        np.testing.assert_array_equal(out.reshape(2, 7, 32)[warp], expected)


REVERSE = r"""
extern "C" __global__ void reverse(const double* x, double* y, const int n)
{
    __shared__ double tile[256];
    const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    tile[t] = i < n ? x[i] : 0.0;
    BARRIER
    const int j = blockIdx.x * blockDim.x + (blockDim.x - 1 - t);
    if (j < n) y[j] = tile[blockDim.x - 1 - t] * 2.0;
}
"""


def test_a_barrier_makes_a_block_see_its_shared_writes(host_cuda) -> None:
    x = np.arange(1000, dtype=np.float64)
    _, y, _ = host_cuda.call("kernel", source=REVERSE.replace("BARRIER", "__syncthreads();"), name="reverse",
                             grid=(4,), block=(256,), args=[x, np.zeros(1000), np.int32(1000)])
    np.testing.assert_array_equal(y, 2 * x)


def test_without_the_barrier_warps_read_shared_memory_before_it_is_written(host_cuda) -> None:
    """Warps run ahead of each other, and shared memory starts as NaN bytes in every block: the
    race a GPU would show only sometimes shows in every launch."""
    x = np.arange(1000, dtype=np.float64)
    for seed in range(3):
        _, y, _ = host_cuda.call("kernel", source=REVERSE.replace("BARRIER", ""), name="reverse", grid=(4,),
                                 block=(256,), args=[x, np.zeros(1000), np.int32(1000)], seed=seed)
        assert np.isnan(y).any() or not np.array_equal(y, 2 * x)


ORDER = r"""
extern "C" __global__ void order(int* counter, int* seen)
{
    if (threadIdx.x == 0) seen[atomicAdd(counter, 1)] = blockIdx.x + 100 * blockIdx.y;
}
"""


def test_blocks_run_in_a_seeded_random_order(host_cuda) -> None:
    def run(seed: int) -> np.ndarray:
        _, seen = host_cuda.call("kernel", source=ORDER, name="order", grid=(16, 4), block=(64,),
                                 args=[np.zeros(1, np.int32), np.zeros(64, np.int32)], seed=seed)
        return seen
    first, again, other = run(1), run(1), run(2)
    assert sorted(first) == sorted(x + 100 * y for x in range(16) for y in range(4))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert not np.array_equal(first, np.sort(first))


UNDEFINED = {
    "a barrier in divergent code": (r"""
extern "C" __global__ void k(double* x)
{
    if (threadIdx.x >= 32) return;
    __syncthreads();
    x[threadIdx.x] = 1.0;
}""", "__syncthreads() is waited at by 32 threads while 32 have exited"),
    "a shuffle waiting for a lane that exited": (r"""
extern "C" __global__ void k(double* x)
{
    if (threadIdx.x % 32 >= 16) return;
    x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0, 1);
}""", "which has exited"),
    "lanes of a warp disagreeing on the mask": (r"""
extern "C" __global__ void k(double* x)
{
    x[threadIdx.x] = __shfl_xor_sync(threadIdx.x % 32 < 16 ? 0xffffffffu : 0xfffffffeu, 1.0, 1);
}""", "different masks"),
    "a barrier in a block whose first block had none": (r"""
extern "C" __global__ void k(double* x)
{
    if (atomicAdd((int*)x, 1) >= 64) __syncthreads();   // every block but the first to run
    x[1 + threadIdx.x] = 1.0;
}""", "reached in a block run without fibers"),
}


@pytest.mark.parametrize("case", sorted(UNDEFINED))
def test_undefined_behaviour_stops_the_launch_with_a_message(host_cuda, case: str) -> None:
    source, message = UNDEFINED[case]
    grid = (4,) if "first block" in case else (1,)
    with pytest.raises(ScenarioFailed, match="HarnessError: kernel k") as info:
        host_cuda.call("kernel", source=source, name="k", grid=grid, block=(64,), args=[np.zeros(256)], seed=0)
    assert message in str(info.value)


OVERRUN = r"""
extern "C" __global__ void k(const double* w, double* out, const int n)
{
    for (int i = threadIdx.x; i <= n; i += blockDim.x) out[0] += w[i];
}
"""


def test_reading_one_past_a_view_into_a_larger_vector_is_caught(host_cuda) -> None:
    """The view w = params[10:20] gets its own checked block: params[20] is in the vector, yet
    reading it through w ends the worker with AddressSanitizer's report naming kernel and buffer."""
    with pytest.raises(WorkerDied) as info:
        host_cuda.call("kernel", source=OVERRUN, name="k", grid=(1,), block=(32,),
                       args=[("slice", np.ones(30), 10, 20), np.zeros(1), np.int32(10)])
    report = str(info.value)
    assert "heap-buffer-overflow" in report and "READ of size 8" in report
    assert "0 bytes to the right of 80-byte region" in report
    assert "kernel k(grid (1, 1, 1), block (32, 1, 1); w = 80 bytes at" in report


ARGUMENTS = r"""
extern "C" __global__ void k(const double* x, float* y, const int n, const double h)
{
}
"""


@pytest.mark.parametrize("args,message", [
    ([np.zeros(4, np.float32), np.zeros(4, np.float32), np.int32(4), 1.0], "gets a float32 array"),
    ([np.zeros(4), np.zeros(4, np.float32), ("python", 4), 1.0], "gets a int64: CuPy would pass 8 bytes"),
    ([np.zeros(4), np.zeros(4, np.float32), np.int32(4), np.float32(1.0)], "gets a float32"),
    ([("python", np.zeros(4)), np.zeros(4, np.float32), np.int32(4), 1.0], "must be a device array"),
    ([np.zeros(4), np.zeros(4, np.float32), np.int32(4)], "takes 4 arguments, the driver passed 3"),
])
def test_arguments_are_checked_against_the_kernel_signature(host_cuda, args: list, message: str) -> None:
    """CuPy passes raw bytes: a float32 array for a double*, or a Python int (8 bytes) for an int, would
    run on a GPU and compute garbage; the stand-in refuses them."""
    with pytest.raises(ScenarioFailed, match="HarnessError") as info:
        host_cuda.call("kernel", source=ARGUMENTS, name="k", grid=(1,), block=(32,), args=args)
    assert message in str(info.value)


def test_launch_geometry_is_checked(host_cuda) -> None:
    with pytest.raises(ScenarioFailed, match=r"block \(1025, 1, 1\) is outside"):
        host_cuda.call("kernel", source=ARGUMENTS, name="k", grid=(1,), block=(1025,),
                       args=[np.zeros(4), np.zeros(4, np.float32), np.int32(4), 1.0])
    with pytest.raises(ScenarioFailed, match="grid"):
        host_cuda.call("kernel", source=ARGUMENTS, name="k", grid=(0,), block=(32,),
                       args=[np.zeros(4), np.zeros(4, np.float32), np.int32(4), 1.0])


@pytest.mark.parametrize("orders", [("C", "C", "C"), ("F", "C", "C"), ("C", "F", "F"), ("F", "F", "C")])
@pytest.mark.parametrize("transa,transb", [("N", "N"), ("T", "N"), ("N", "T"), ("T", "T")])
def test_gemm_computes_what_cublas_computes(host_cuda, transa: str, transb: str, orders: tuple) -> None:
    """CuPy's gemm picks each operand's cuBLAS operation and leading dimension from its memory order
    (and solves out.T for a C-ordered out); the stand-in runs that column-major call."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 5) if transa == "N" else (5, 3))
    b = rng.normal(size=(5, 4) if transb == "N" else (4, 5))
    out = host_cuda.call("blas", "gemm", transa, transb, a, b, orders=orders[:2], out=np.full((3, 4), np.nan),
                         out_order=orders[2])
    expected = (a if transa == "N" else a.T) @ (b if transb == "N" else b.T)
    np.testing.assert_allclose(out, expected, rtol=1e-14)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("trans", ["N", "T"])
def test_gemv_computes_what_cublas_computes(host_cuda, trans: str, order: str) -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 3))
    x = rng.normal(size=3 if trans == "N" else 6)
    y = host_cuda.call("blas", "gemv", trans, 2.0, a, x, 0.0, np.full(6 if trans == "N" else 3, np.nan),
                       orders=(order,))
    np.testing.assert_allclose(y, 2.0 * ((a if trans == "N" else a.T) @ x), rtol=1e-14)


def test_gemm_refuses_what_cublas_would_refuse(host_cuda) -> None:
    with pytest.raises(ScenarioFailed, match="AssertionError"):
        host_cuda.call("blas", "gemm", "N", "N", np.ones((3, 5)), np.ones((4, 4)), out=np.zeros((3, 4)))
    with pytest.raises(ScenarioFailed, match="cuBLAS gets a ndarray where CuPy needs a device array"):
        host_cuda.call("blas", "gemv", "N", 1.0, np.ones((3, 5)), ("python", np.ones(5)), 0.0, np.zeros(3))


FILL = r"""
extern "C" __global__ void fill(double* x, const int n)
{
    for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] += 1.0;
}
"""


def test_graph_capture_records_launches_and_replays_them(host_cuda) -> None:
    seen = host_cuda.call("capture", source=FILL, name="fill", n=40)
    np.testing.assert_array_equal(seen["after capture"], np.zeros(40))
    np.testing.assert_array_equal(seen["after one replay"], np.ones(40))
    np.testing.assert_array_equal(seen["after two replays"], np.full(40, 2.0))
    assert "allocation during CUDA graph capture" in seen["allocation during capture"]


def test_device_arrays_refuse_host_arrays_as_cupy_does(host_cuda) -> None:
    outcomes = host_cuda.call("conversions")
    assert outcomes["np.asarray(device)"].startswith("TypeError: Implicit conversion to a NumPy array")
    assert outcomes["device + host array"].startswith("TypeError")
    assert outcomes["device[...] = host array"].startswith("TypeError")
    assert outcomes["device + 1"] == "ok" and outcomes["device[...] = device"] == "ok"
    assert outcomes["get is a copy"] is True


INTRINSICS = r"""
extern "C" __global__ void k(const unsigned long long* x, unsigned long long* out)
{
    const unsigned long long a = x[threadIdx.x], b = x[threadIdx.x + 32];
    unsigned long long* o = out + 8 * threadIdx.x;
    o[0] = __umulhi((unsigned)a, (unsigned)b);
    o[1] = __umul64hi(a, b);
    o[2] = (unsigned long long)__popcll(a);
    o[3] = (unsigned long long)__clzll((long long)a);
    o[4] = (unsigned long long)__ffs((int)(unsigned)a);
    o[5] = __brev((unsigned)a);
    o[6] = (unsigned long long)(long long)__float2int_rn((float)(a % 1000) + 0.5f);
    o[7] = __double_as_longlong(__longlong_as_double((long long)b));
}
"""


def test_integer_intrinsics_compute_what_cuda_documents(host_cuda) -> None:
    """The intrinsics counter-based random number generators use (Philox: __umulhi, __umul64hi)
    and bit tricks, against Python's integers."""
    rng = np.random.default_rng(3)
    x = rng.integers(1, 2**63, size=64, dtype=np.uint64)
    x[0] = 2**64 - 1
    _, out = host_cuda.call("kernel", source=INTRINSICS, name="k", grid=(1,), block=(32,),
                            args=[x, np.zeros(256, np.uint64)])
    for t in range(32):
        a, b = int(x[t]), int(x[t + 32])
        lo = a & 0xFFFFFFFF
        half = (a % 1000) + 0.5
        expected = [(lo * (b & 0xFFFFFFFF)) >> 32, (a * b) >> 64, bin(a).count("1"), 64 - a.bit_length(),
                    (lo & -lo).bit_length(), int(f"{lo:032b}"[::-1], 2),
                    int(np.rint(np.float32(half))), b]   # round half to even, as __float2int_rn
        assert [int(v) for v in out[8 * t:8 * t + 8]] == expected, t
