// Host execution of CUDA kernels: a launch runs every block of the grid, one after
// another in a seeded random order; inside a block the threads are fibers (a stack and
// a few saved registers each) grouped in warps of 32.
//
// The scheduler picks a random warp with a runnable lane and runs that warp's lanes, in
// random order, until each blocks: at __syncthreads() (released when every thread of
// the block waits there), or at a warp exchange such as __shfl_xor_sync (completed when
// every lane of its mask has deposited its value). Running one warp far ahead of the
// others exposes a missing barrier; the __shared__ variables are filled with NaN bytes
// before each block, so reading one before it is written shows. Undefined behaviour a
// GPU would not report (a barrier some threads never reach, a shuffle waiting for a lane
// that has exited, lanes disagreeing on a mask, a deadlock) stops the launch with a
// message. A block whose threads never synchronise costs little: when the first block
// of a launch uses no barrier or exchange, the others run as plain calls (and a barrier
// met there is an error, never a silent pass).
//
// The kernels are built with AddressSanitizer; this file is not (its own memory needs no
// checking). Fiber switches are not announced to ASan (__sanitizer_start_switch_fiber
// would double their cost): ASan needs to know which stack it runs on only to detect
// use after return (off) and at a noreturn call, longjmp or throw, which kernels do not
// make; the redzones of frames a failed launch abandons are cleared after it.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include "cuda_host.h"

#if NC_ASAN
extern "C" void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
extern "C" void __asan_set_death_callback(void (*callback)(void));
#else
static void __asan_unpoison_memory_region(void const volatile*, size_t) {}
static void __asan_set_death_callback(void (*)(void)) {}
#endif

extern "C" {
uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
}

// Callee-saved registers and the stack pointer: the whole context a cooperative switch
// needs (the kernels change neither the MXCSR nor the x87 control word).
#if !defined(__x86_64__)
#error "the host CUDA runtime switches fibers with x86-64 assembly"
#endif
extern "C" void nc_swap(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl nc_swap
    .type nc_swap, @function
nc_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size nc_swap, .-nc_swap
)");

namespace {

// SplitMix64: a small, fast generator for the orders (std::mt19937_64 costs more than the
// threads it orders in a block that runs as plain calls).
struct Random {
    using result_type = uint64_t;
    uint64_t state = 0;
    static constexpr uint64_t min() { return 0; }
    static constexpr uint64_t max() { return ~(uint64_t)0; }
    void seed(uint64_t value) { state = value; }
    uint64_t operator()()
    {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    size_t below(size_t bound) { return (size_t)(((unsigned __int128)(*this)() * bound) >> 64); }
};

// Fisher-Yates with Random::below (std::shuffle's distribution objects cost more).
template <typename T> void shuffle(T* first, size_t count, Random& rng)
{
    for (size_t k = count; k > 1; --k) std::swap(first[k - 1], first[rng.below(k)]);
}

constexpr size_t STACK_SIZE = 256 * 1024;
constexpr unsigned FULL = 0xffffffffu;

enum State { READY, AT_BARRIER, AT_EXCHANGE, DONE };

struct Fiber {
    void* sp = nullptr;
    char* stack = nullptr;   // lowest usable byte (a guard page lies below)
    State state = READY;
    bool started = false;
    uint3 idx{};
    uint64_t exchange = 0;   // generation of the warp exchange it waits in
};

struct Warp {
    uint64_t generation = 0;         // completed exchanges
    unsigned arrived = 0, mask = 0;  // the pending exchange
    const char* what = "";
    uint64_t slots[2][32];           // deposits, by generation parity
    unsigned ready = 0;              // lanes READY
};

struct Launch {
    void (*thunk)(void**) = nullptr;
    void** args = nullptr;
    unsigned threads = 0;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    Fiber* current = nullptr;
    void* scheduler_sp = nullptr;
    bool fibers_on = true;   // false: threads of this block run as plain calls
    bool synchronised = false;  // a barrier or exchange was used in this launch
    std::string error;
    Random rng;
    std::vector<char*> stacks;  // kept across launches
    std::string description;    // the launch and its buffers' addresses, printed if ASan stops it
} L;

std::string where()
{
    char text[160];
    std::snprintf(text, sizeof text, " (block %u,%u,%u, thread %u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z,
                  threadIdx.x, threadIdx.y, threadIdx.z);
    return text;
}

void describe_launch()
{
    std::fprintf(stderr, "host CUDA harness: the error above happened in %s%s\n", L.description.c_str(),
                 where().c_str());
}

void fail(const std::string& message)
{
    if (L.error.empty()) L.error = message + where();
}

unsigned linear(const uint3& t) { return t.x + blockDim.x * (t.y + blockDim.y * t.z); }

Fiber& fiber_of(unsigned tid) { return L.fibers[tid]; }

void set_state(Fiber& f, State state)
{
    Warp& w = L.warps[linear(f.idx) / 32];
    if (f.state == READY) --w.ready;
    if (state == READY) ++w.ready;
    f.state = state;
}

char* stack_for(unsigned tid)
{
    while (L.stacks.size() <= tid) {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        void* block = mmap(nullptr, STACK_SIZE + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (block == MAP_FAILED) { std::perror("nc host runtime: mmap"); std::abort(); }
        mprotect(block, page, PROT_NONE);  // a stack overflow faults instead of corrupting a neighbour
        L.stacks.push_back((char*)block + page);
    }
    return L.stacks[tid];
}

extern "C" void nc_fiber_entry();

void prepare(Fiber& f, unsigned tid)
{
    f.stack = stack_for(tid);
    uintptr_t top = ((uintptr_t)(f.stack + STACK_SIZE)) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;                       // return address of nc_fiber_entry (never used)
    *--sp = (void*)&nc_fiber_entry;        // where nc_swap's ret goes
    for (int k = 0; k < 6; ++k) *--sp = nullptr;  // rbp, rbx, r12-r15
    f.sp = sp;
    f.started = true;
}

void resume(Fiber& f)
{
    L.current = &f;
    threadIdx = f.idx;
    nc_swap(&L.scheduler_sp, f.sp);
    L.current = nullptr;
}

// From a fiber back to the scheduler; returns when the scheduler resumes it.
void yield()
{
    Fiber& f = *L.current;
    nc_swap(&f.sp, L.scheduler_sp);
}

// A harness error inside a fiber: the fiber is abandoned, the launch stops.
[[noreturn]] void abandon()
{
    Fiber& f = *L.current;
    set_state(f, DONE);
    nc_swap(&f.sp, L.scheduler_sp);
    __builtin_unreachable();
}

}  // namespace

extern "C" void nc_fiber_entry()
{
    Fiber& f = *L.current;
    L.thunk(L.args);
    set_state(f, DONE);
    nc_swap(&f.sp, L.scheduler_sp);
    __builtin_unreachable();
}

namespace {

// A pending exchange whose lanes can no longer all arrive is a deadlock on a GPU.
void check_waiters(const Warp& w, unsigned warp)
{
    if (!w.arrived) return;
    for (unsigned lane = 0; lane < 32; ++lane) {
        if (!(w.mask & (1u << lane)) || (w.arrived & (1u << lane))) continue;
        const unsigned tid = warp * 32 + lane;
        const State state = tid < L.threads ? fiber_of(tid).state : DONE;
        if (state == DONE) {
            fail(std::string(w.what) + " waits for lane " + std::to_string(lane) +
                 ", which has exited (its mask names a lane that never arrives: undefined in CUDA)");
        } else if (state == AT_BARRIER) {
            fail(std::string(w.what) + " waits for lane " + std::to_string(lane) +
                 ", which waits at __syncthreads(): deadlock");
        }
    }
}

void run_warp(unsigned warp)
{
    unsigned lanes[32];
    while (L.warps[warp].ready && L.error.empty()) {
        unsigned count = 0;
        for (unsigned lane = 0; lane < 32; ++lane) {
            const unsigned tid = warp * 32 + lane;
            if (tid < L.threads && fiber_of(tid).state == READY) lanes[count++] = tid;
        }
        shuffle(lanes, count, L.rng);
        for (unsigned k = 0; k < count && L.error.empty(); ++k) {
            Fiber& f = fiber_of(lanes[k]);
            if (f.state != READY) continue;
            if (!f.started) prepare(f, lanes[k]);
            resume(f);
        }
    }
}

// Every thread of the block blocked or finished: release a barrier, or report why not.
bool release()
{
    unsigned done = 0, barrier = 0;
    for (unsigned tid = 0; tid < L.threads; ++tid) {
        done += fiber_of(tid).state == DONE;
        barrier += fiber_of(tid).state == AT_BARRIER;
    }
    if (done == L.threads) return false;
    if (barrier + done == L.threads && done == 0) {
        for (unsigned tid = 0; tid < L.threads; ++tid) set_state(fiber_of(tid), READY);
        return true;
    }
    if (barrier + done == L.threads) {
        fail("__syncthreads() is waited at by " + std::to_string(barrier) + " threads while " + std::to_string(done) +
             " have exited without reaching it (a barrier in divergent code: undefined in CUDA)");
        return false;
    }
    for (unsigned w = 0; w < L.warps.size() && L.error.empty(); ++w) check_waiters(L.warps[w], w);
    if (L.error.empty()) fail("deadlock: threads wait in warp exchanges that cannot complete");
    return false;
}

void run_block_with_fibers()
{
    for (unsigned tid = 0; tid < L.threads; ++tid) {
        Fiber& f = fiber_of(tid);
        f.state = READY;
        f.started = false;
        f.idx = {tid % blockDim.x, (tid / blockDim.x) % blockDim.y, tid / (blockDim.x * blockDim.y)};
    }
    for (unsigned w = 0; w < L.warps.size(); ++w) {
        L.warps[w].arrived = 0;
        L.warps[w].ready = std::min(32u, L.threads - 32 * w);
    }
    std::vector<unsigned> runnable;
    while (L.error.empty()) {
        runnable.clear();
        for (unsigned w = 0; w < L.warps.size(); ++w)
            if (L.warps[w].ready) runnable.push_back(w);
        if (runnable.empty()) {
            if (!release()) break;
            continue;
        }
        run_warp(runnable[L.rng.below(runnable.size())]);
    }
}

void run_block_directly(std::vector<unsigned>& order)
{
    shuffle(order.data(), order.size(), L.rng);
    for (unsigned tid : order) {
        threadIdx = {tid % blockDim.x, (tid / blockDim.x) % blockDim.y, tid / (blockDim.x * blockDim.y)};
        L.thunk(L.args);
        if (!L.error.empty()) return;
    }
}

}  // namespace

extern "C" {

void nc_fail(const char* message)
{
    fail(message);
    if (L.current) abandon();
}

void nc_syncthreads(void)
{
    L.synchronised = true;
    if (!L.fibers_on) {
        fail("__syncthreads() reached in a block run without fibers: the first block of this launch used no "
             "barrier, this one does (the host harness cannot run such a launch)");
        return;
    }
    set_state(*L.current, AT_BARRIER);
    yield();
}

const uint64_t* nc_warp_exchange(unsigned mask, uint64_t bits, const char* what)
{
    L.synchronised = true;
    static uint64_t alone[32];
    if (!L.fibers_on) {
        fail(std::string(what) + " reached in a block run without fibers: the first block of this launch used "
             "none (the host harness cannot run such a launch)");
        return alone;
    }
    Fiber& f = *L.current;
    const unsigned tid = linear(f.idx), warp_id = tid / 32, lane = tid % 32;
    Warp& w = L.warps[warp_id];
    const unsigned present = L.threads - 32 * warp_id >= 32 ? FULL : (1u << (L.threads - 32 * warp_id)) - 1;
    if (!(mask & (1u << lane))) fail(std::string(what) + " called by a lane outside its own mask");
    if (mask & ~present) fail(std::string(what) + " names lanes that do not exist in this block");
    if (w.arrived && w.mask != mask)
        fail(std::string(what) + ": lanes of one warp wait in exchanges with different masks (" + w.what + ")");
    if (!L.error.empty()) abandon();
    if (!w.arrived) {
        w.mask = mask;
        w.what = what;
    }
    const uint64_t generation = w.generation;
    w.slots[generation % 2][lane] = bits;
    w.arrived |= 1u << lane;
    if (w.arrived == mask) {  // the last lane completes the exchange and carries on
        w.arrived = 0;
        ++w.generation;
        for (unsigned other = 0; other < 32; ++other)
            if ((mask & (1u << other)) && other != lane) set_state(fiber_of(warp_id * 32 + other), READY);
        return w.slots[generation % 2];
    }
    f.exchange = generation;
    set_state(f, AT_EXCHANGE);
    yield();
    return w.slots[f.exchange % 2];
}

// Run the grid of one launch; 0 on success, else 1 with a message in `error`.
int nc_launch(void (*thunk)(void**), void** args, const unsigned* grid, const unsigned* block, uint64_t seed,
              char* shared_begin, char* shared_end, char* error, int error_size, const char* description)
{
    static bool announced = false;
    if (!announced) __asan_set_death_callback(describe_launch);
    announced = true;
    L.description = description;
    L.thunk = thunk;
    L.args = args;
    L.error.clear();
    L.rng.seed(seed);
    L.synchronised = false;
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    L.threads = block[0] * block[1] * block[2];
    L.fibers.assign(L.threads, Fiber{});
    L.warps.assign((L.threads + 31) / 32, Warp{});
    const uint64_t blocks = (uint64_t)grid[0] * grid[1] * grid[2];
    std::vector<uint64_t> order(blocks);
    for (uint64_t b = 0; b < blocks; ++b) order[b] = b;
    shuffle(order.data(), order.size(), L.rng);
    std::vector<unsigned> threads(L.threads);
    for (unsigned t = 0; t < L.threads; ++t) threads[t] = t;
    for (uint64_t k = 0; k < blocks && L.error.empty(); ++k) {
        const uint64_t b = order[k];
        blockIdx = {(unsigned)(b % grid[0]), (unsigned)((b / grid[0]) % grid[1]), (unsigned)(b / ((uint64_t)grid[0] * grid[1]))};
        if (shared_end > shared_begin) std::memset(shared_begin, 0xff, (size_t)(shared_end - shared_begin));
        L.fibers_on = k == 0 || L.synchronised;
        if (L.fibers_on) {
            run_block_with_fibers();
        } else {
            run_block_directly(threads);
        }
    }
    if (L.error.empty()) return 0;
    for (char* stack : L.stacks) __asan_unpoison_memory_region(stack, STACK_SIZE);  // abandoned frames
    std::snprintf(error, (size_t)error_size, "%s", L.error.c_str());
    return 1;
}

}  // extern "C"
