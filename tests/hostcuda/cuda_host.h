// The CUDA built-ins generated kernels use, for running them on the host with g++.
//
// Force-included (g++ -include) ahead of the generated CUDA source, which is compiled
// unchanged. The execution model lives in runtime.cpp: the threads of a block are
// fibers run concurrently in warps of 32, so __syncthreads() and the warp shuffles
// block and exchange values as on a GPU; blocks run one after another in a seeded
// random order. Qualifiers compile away, __shared__ variables become statics in the
// section "nc_shared" (one block at a time uses them; the launcher fills them with NaN
// bytes before each block), and the math functions are the C library's under their
// CUDA names, in float and double.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ __attribute__((section("nc_shared"))) static
// __restrict__ is a g++ keyword already.

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };

extern "C" {
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

// runtime.cpp: block-wide barrier; warp-wide exchange of 8 bytes per lane (returns the 32
// deposits of this exchange, valid until the warp's next-but-one exchange); harness errors.
void nc_syncthreads(void);
const uint64_t* nc_warp_exchange(unsigned mask, uint64_t bits, const char* what);
void nc_fail(const char* message);
}

static const int warpSize = 32;

inline void __syncthreads() { nc_syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { nc_warp_exchange(mask, 0, "__syncwarp"); }
inline void __threadfence() {}
inline void __threadfence_block() {}

inline unsigned nc_lane_id()
{
    return (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32u;
}

template <typename T> inline uint64_t nc_bits(T value)
{
    static_assert(sizeof(T) <= 8, "a warp shuffle moves at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    return bits;
}

template <typename T> inline T nc_value(uint64_t bits)
{
    T value;
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

// One shuffle: every lane of `mask` deposits `var`, then reads lane `src`'s deposit.
template <typename T> inline T nc_shuffle(unsigned mask, T var, int src, int width, const char* what)
{
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0) nc_fail("warp shuffle width must be a power of 2 up to 32");
    const uint64_t* slots = nc_warp_exchange(mask, nc_bits(var), what);
    if (!(mask & (1u << src))) nc_fail("warp shuffle reads a lane outside its mask (undefined in CUDA)");
    return nc_value<T>(slots[src]);
}

template <typename T> inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32)
{
    const int lane = (int)nc_lane_id(), base = lane - lane % width;
    return nc_shuffle(mask, var, base + ((srcLane % width) + width) % width, width, "__shfl_sync");
}

template <typename T> inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32)
{
    const int lane = (int)nc_lane_id(), base = lane - lane % width, src = lane - (int)delta;
    return nc_shuffle(mask, var, src < base ? lane : src, width, "__shfl_up_sync");
}

template <typename T> inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32)
{
    const int lane = (int)nc_lane_id(), base = lane - lane % width, src = lane + (int)delta;
    return nc_shuffle(mask, var, src >= base + width ? lane : src, width, "__shfl_down_sync");
}

template <typename T> inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32)
{
    const int lane = (int)nc_lane_id(), base = lane - lane % width, src = lane ^ laneMask;
    return nc_shuffle(mask, var, src >= base + width ? lane : src, width, "__shfl_xor_sync");
}

inline unsigned __ballot_sync(unsigned mask, int predicate)
{
    const uint64_t* slots = nc_warp_exchange(mask, predicate != 0, "__ballot_sync");
    unsigned ballot = 0;
    for (int lane = 0; lane < 32; ++lane)
        if ((mask & (1u << lane)) && slots[lane]) ballot |= 1u << lane;
    return ballot;
}

inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }

// Atomics: fibers switch only inside the barrier and exchange calls, so a plain
// read-modify-write is atomic here.
template <typename T> inline T atomicAdd(T* address, T value) { const T old = *address; *address = old + value; return old; }
template <typename T> inline T atomicSub(T* address, T value) { const T old = *address; *address = old - value; return old; }
template <typename T> inline T atomicExch(T* address, T value) { const T old = *address; *address = value; return old; }
template <typename T> inline T atomicMax(T* address, T value) { const T old = *address; *address = old < value ? value : old; return old; }
template <typename T> inline T atomicMin(T* address, T value) { const T old = *address; *address = value < old ? value : old; return old; }
template <typename T> inline T atomicCAS(T* address, T compare, T value)
{
    const T old = *address;
    if (old == compare) *address = value;
    return old;
}

// Bit casts and intrinsics of the CUDA math API.
inline float __int_as_float(int x) { return nc_value<float>((uint32_t)x); }
inline int __float_as_int(float x) { return (int)(uint32_t)nc_bits(x); }
inline double __longlong_as_double(long long x) { return nc_value<double>((uint64_t)x); }
inline long long __double_as_longlong(double x) { return (long long)nc_bits(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline double rcbrt(double x) { return 1.0 / cbrt(x); }
inline float saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
// Integer intrinsics (counter-based random numbers, bit tricks) and rounding conversions.
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b)
{
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x)
{
    unsigned r = 0;
    for (int k = 0; k < 32; ++k) r |= ((x >> k) & 1u) << (31 - k);
    return r;
}
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __double2int_rn(double x) { return (int)nearbyint(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline double __int2double_rn(int x) { return (double)x; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a < b ? b : a; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a < b ? b : a; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a < b ? b : a; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
