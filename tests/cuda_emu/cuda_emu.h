// cuda_emu.h: a test-only CUDA emulator. The loader (tests/cuda_emu/__init__.py) compiles an
// unchanged kernels/*.cu file with g++ after this header, so the same source runs on the CPU.
//
// How CUDA maps onto the CPU:
//   - a launch runs its blocks one after another, in ascending, descending or random order;
//   - each thread of a block is a fiber (ucontext) with its own stack; a fiber runs until it
//     reaches a barrier (__syncthreads, __syncwarp, a warp shuffle) or returns;
//   - after every yield the scheduler resumes the first runnable thread in the block's order
//     (ascending, descending or a random permutation, as for blocks): the first threads race
//     ahead through barriers while the rest lag, so a missing barrier shows as a wrong value;
//   - __shared__ is thread_local static storage: one copy per block, since blocks run in turn;
//     the dynamic (extern __shared__) area is filled with NaN bytes before every block;
//   - a barrier that some threads never reach, a shuffle whose mask names missing lanes, or
//     masks that disagree, stop the launch with a message instead of hanging.
// Atomics are plain read-modify-writes: fibers never pre-empt one another.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// ---- the built-in types and qualifiers --------------------------------------------------------
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef dim3 uint3;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ thread_local
#define warpSize 32

namespace cuda_emu {

enum State { RUNNABLE, WAITING, DONE };

struct Barrier {
    int expected = 0;       // how many threads must arrive before any may leave
    int arrived = 0;
    unsigned mask = 0;      // for a warp barrier: the lanes named by the first arrival
};

struct Fiber {
    ucontext_t ctx;
    State state = DONE;
    dim3 tid;
    int linear = 0;         // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
    Barrier* waiting = nullptr;
};

struct Warp {
    Barrier bar;
    int size = 32;                  // lanes that exist (the last warp of a block may be short)
    unsigned long long slot[32];    // the value each lane offers to a shuffle
};

constexpr size_t kStack = 64 * 1024;              // bytes of stack per emulated thread
constexpr size_t kMaxDynSmem = 48 * 1024;         // the default limit of dynamic shared memory

struct Emu {
    dim3 grid, block, bid;
    std::vector<Fiber> fibers;
    std::vector<char> stacks;
    std::vector<Warp> warps;
    Barrier block_bar;
    ucontext_t sched;
    ucontext_t blank;               // a context made once by getcontext, copied per fiber
    bool have_blank = false;
    Fiber* cur = nullptr;
    bool failed = false;
    char msg[1024] = {0};
    void (*body)(void*) = nullptr;  // runs the kernel for the current thread
    void* body_arg = nullptr;
    void (*poison_dyn_smem)() = nullptr;   // set by the loader's glue if the file has any
};

inline Emu g;

// Stop the launch: record the first message and leave the fiber for good.
inline void fail(const char* fmt, ...) {
    if (!g.failed) {
        g.failed = true;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g.msg, sizeof g.msg, fmt, ap);
        va_end(ap);
    }
    if (g.cur) {
        g.cur->state = DONE;
        swapcontext(&g.cur->ctx, &g.sched);
    }
}

// Arrive at barrier b; the last arrival releases every waiter. Always yields to the scheduler.
inline void barrier_wait(Barrier& b) {
    Fiber* f = g.cur;
    if (++b.arrived == b.expected) {
        b.arrived = 0;
        for (Fiber& o : g.fibers)
            if (o.waiting == &b) { o.waiting = nullptr; o.state = RUNNABLE; }
    } else {
        f->state = WAITING;
        f->waiting = &b;
    }
    swapcontext(&f->ctx, &g.sched);
}

inline Warp& warp_of_current(unsigned mask, const char* what) {
    Fiber* f = g.cur;
    Warp& w = g.warps[f->linear / 32];
    int lane = f->linear % 32;
    unsigned exist = w.size == 32 ? 0xffffffffu : ((1u << w.size) - 1u);
    if (mask & ~exist)
        fail("%s: mask 0x%08x names lanes that do not exist (warp %d has %d threads)",
             what, mask, f->linear / 32, w.size);
    if (!(mask & (1u << lane)))
        fail("%s: lane %d calls with mask 0x%08x that does not include itself", what, lane, mask);
    if (w.bar.arrived == 0) {
        w.bar.mask = mask;
        w.bar.expected = __builtin_popcount(mask);
    } else if (w.bar.mask != mask) {
        fail("%s: lanes of warp %d disagree on the mask (0x%08x vs 0x%08x)",
             what, f->linear / 32, w.bar.mask, mask);
    }
    return w;
}

// Every lane in mask offers v; each gets the value of lane src (or keeps its own if own_if).
template <class T>
inline T warp_exchange(unsigned mask, T v, int src, bool keep_own, const char* what) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    Warp& w = warp_of_current(mask, what);
    int lane = g.cur->linear % 32;
    std::memcpy(&w.slot[lane], &v, sizeof(T));
    barrier_wait(w.bar);                            // every lane has written its slot
    T r = v;
    if (!keep_own) {
        if (src < 0 || src >= 32 || !(mask & (1u << src)))
            fail("%s: lane %d reads lane %d, which is not in mask 0x%08x", what, lane, src, mask);
        std::memcpy(&r, &w.slot[src], sizeof(T));
    }
    warp_of_current(mask, what);
    barrier_wait(w.bar);                            // every lane has read before slots change
    return r;
}

// ---- launching --------------------------------------------------------------------------------
inline void fiber_main() {
    g.body(g.body_arg);
    g.cur->state = DONE;            // uc_link returns to the scheduler
}

inline std::vector<unsigned> make_order(unsigned n, int order, std::mt19937_64& gen) {
    std::vector<unsigned> idx(n);
    for (unsigned i = 0; i < n; i++) idx[i] = i;
    if (order == 1) std::reverse(idx.begin(), idx.end());
    if (order == 2) std::shuffle(idx.begin(), idx.end(), gen);
    return idx;
}

inline int run_block(const std::vector<unsigned>& thread_order) {
    const int n = (int)g.fibers.size();
    for (int i = 0; i < n; i++) {
        Fiber& f = g.fibers[i];
        f.ctx = g.blank;
        f.ctx.uc_stack.ss_sp = &g.stacks[(size_t)i * kStack];
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = &g.sched;
        makecontext(&f.ctx, fiber_main, 0);
        f.state = RUNNABLE;
        f.waiting = nullptr;
    }
    g.block_bar = Barrier();
    g.block_bar.expected = n;
    for (Warp& w : g.warps) w.bar = Barrier();
    if (g.poison_dyn_smem) g.poison_dyn_smem();
    // After every yield, resume the first runnable thread in this block's order (ascending:
    // the lowest index; descending: the highest; random: a random permutation), so one group
    // of threads races ahead through barriers while the others lag behind.
    for (;;) {
        Fiber* next = nullptr;
        bool all_done = true;
        for (unsigned i : thread_order) {
            Fiber& f = g.fibers[i];
            if (f.state != DONE) all_done = false;
            if (f.state == RUNNABLE) { next = &f; break; }
        }
        if (all_done) return 0;
        if (!next) {
            int waiting = 0, done = 0;
            for (Fiber& f : g.fibers) (f.state == DONE ? done : waiting)++;
            fail("deadlock in block (%u,%u,%u): %d threads wait at a barrier that %d finished "
                 "threads never reached (a __syncthreads or shuffle inside a branch?)",
                 g.bid.x, g.bid.y, g.bid.z, waiting, done);
            return -1;
        }
        g.cur = next;
        swapcontext(&g.sched, &next->ctx);
        g.cur = nullptr;
        if (g.failed) return -1;
    }
}

inline int launch(const unsigned* grid, const unsigned* block, size_t shared_mem,
                  int order, unsigned long long seed, void (*body)(void*), void* arg) {
    g.failed = false;
    g.msg[0] = 0;
    g.cur = nullptr;
    g.grid = dim3(grid[0], grid[1], grid[2]);
    g.block = dim3(block[0], block[1], block[2]);
    const unsigned nthreads = block[0] * block[1] * block[2];
    if (shared_mem > kMaxDynSmem) {
        fail("dynamic shared memory of %zu bytes exceeds the %zu-byte default limit",
             shared_mem, kMaxDynSmem);
        return -1;
    }
    if (!g.have_blank) { getcontext(&g.blank); g.have_blank = true; }
    g.fibers.assign(nthreads, Fiber());
    if (g.stacks.size() < (size_t)nthreads * kStack) g.stacks.resize((size_t)nthreads * kStack);
    g.warps.assign((nthreads + 31) / 32, Warp());
    for (unsigned w = 0; w < g.warps.size(); w++)
        g.warps[w].size = (int)std::min(32u, nthreads - 32 * w);
    for (unsigned z = 0, i = 0; z < block[2]; z++)
        for (unsigned y = 0; y < block[1]; y++)
            for (unsigned x = 0; x < block[0]; x++, i++) {
                g.fibers[i].tid = dim3(x, y, z);
                g.fibers[i].linear = (int)i;
            }
    g.body = body;
    g.body_arg = arg;
    std::mt19937_64 gen(seed);
    const unsigned nblocks = grid[0] * grid[1] * grid[2];
    std::vector<unsigned> blocks = make_order(nblocks, order, gen);
    for (unsigned b : blocks) {
        g.bid = dim3(b % grid[0], (b / grid[0]) % grid[1], b / (grid[0] * grid[1]));
        if (run_block(make_order(nthreads, order, gen)) != 0) return -1;
    }
    return 0;
}

// The kernel's parameter types, as codes the loader checks each argument against.
template <class T> struct code;
template <> struct code<float> { static constexpr const char* s = "f"; };
template <> struct code<double> { static constexpr const char* s = "d"; };
template <> struct code<int> { static constexpr const char* s = "i"; };
template <> struct code<unsigned> { static constexpr const char* s = "I"; };
template <> struct code<long> { static constexpr const char* s = "q"; };
template <> struct code<long long> { static constexpr const char* s = "q"; };
template <> struct code<unsigned long> { static constexpr const char* s = "Q"; };
template <> struct code<unsigned long long> { static constexpr const char* s = "Q"; };
template <> struct code<bool> { static constexpr const char* s = "b"; };
template <class T> struct code<T*> {
    static std::string str() { return std::string("P") + code<std::remove_cv_t<T>>::s; }
};
template <class T> std::string code_str() {
    if constexpr (std::is_pointer_v<T>) return code<T>::str();
    else return code<T>::s;
}

template <class... A> const char* signature(void (*)(A...)) {
    static std::string s;
    s.clear();
    ((s += code_str<A>() + ","), ...);
    if (!s.empty()) s.pop_back();
    return s.c_str();
}

template <class... A> struct Call {
    void (*f)(A...);
    void** args;
    template <size_t... I> void go(std::index_sequence<I...>) {
        f(*static_cast<A*>(args[I])...);
    }
    static void run(void* self) {
        static_cast<Call*>(self)->go(std::index_sequence_for<A...>{});
    }
};

template <class... A>
int launch_kernel(void (*f)(A...), const unsigned* grid, const unsigned* block,
                  size_t shared_mem, void** args, int order, unsigned long long seed) {
    Call<A...> c{f, args};
    return launch(grid, block, shared_mem, order, seed, &Call<A...>::run, &c);
}

}  // namespace cuda_emu

#define CUDA_EMU_API __attribute__((visibility("default")))

// The loader appends CUDA_EMU_EXPORT(name) for every kernel of the file.
#define CUDA_EMU_EXPORT(k)                                                                     \
    extern "C" CUDA_EMU_API int cuda_emu_launch_##k(const unsigned* grid,                      \
                                                    const unsigned* block, size_t smem,        \
                                                    void** args, int order,                    \
                                                    unsigned long long seed) {                 \
        return cuda_emu::launch_kernel(k, grid, block, smem, args, order, seed);               \
    }                                                                                          \
    extern "C" CUDA_EMU_API const char* cuda_emu_signature_##k() {                             \
        return cuda_emu::signature(k);                                                         \
    }

extern "C" CUDA_EMU_API const char* cuda_emu_last_error() { return cuda_emu::g.msg; }

// ---- the built-in variables -------------------------------------------------------------------
#define threadIdx (static_cast<const dim3&>(cuda_emu::g.cur->tid))
#define blockIdx (static_cast<const dim3&>(cuda_emu::g.bid))
#define blockDim (static_cast<const dim3&>(cuda_emu::g.block))
#define gridDim (static_cast<const dim3&>(cuda_emu::g.grid))

// ---- synchronisation, warp shuffles, atomics --------------------------------------------------
inline void __syncthreads() { cuda_emu::barrier_wait(cuda_emu::g.block_bar); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    cuda_emu::warp_exchange(mask, 0, 0, true, "__syncwarp");
}

template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    int lane = cuda_emu::g.cur->linear % 32;
    return cuda_emu::warp_exchange(mask, v, (lane / width) * width + src % width, false,
                                   "__shfl_sync");
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    int lane = cuda_emu::g.cur->linear % 32;
    bool own = (lane % width) + (int)d >= width;
    return cuda_emu::warp_exchange(mask, v, lane + (int)d, own, "__shfl_down_sync");
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    int lane = cuda_emu::g.cur->linear % 32;
    bool own = (lane % width) < (int)d;
    return cuda_emu::warp_exchange(mask, v, lane - (int)d, own, "__shfl_up_sync");
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
    int lane = cuda_emu::g.cur->linear % 32;
    int src = lane ^ m;
    bool own = src / width != lane / width;
    return cuda_emu::warp_exchange(mask, v, src, own, "__shfl_xor_sync");
}

template <class T> inline T atomicAdd(T* a, T v) { T old = *a; *a = old + v; return old; }
template <class T> inline T atomicSub(T* a, T v) { T old = *a; *a = old - v; return old; }
template <class T> inline T atomicMax(T* a, T v) { T old = *a; *a = old > v ? old : v; return old; }
template <class T> inline T atomicMin(T* a, T v) { T old = *a; *a = old < v ? old : v; return old; }
template <class T> inline T atomicExch(T* a, T v) { T old = *a; *a = v; return old; }
template <class T> inline T atomicCAS(T* a, T cmp, T v) {
    T old = *a;
    if (old == cmp) *a = v;
    return old;
}

// ---- math: CUDA's device functions and intrinsics ---------------------------------------------
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
template <class T> inline T __ldg(const T* p) { return *p; }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
