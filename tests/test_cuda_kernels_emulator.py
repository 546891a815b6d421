"""The test-only CUDA emulator (tests/cuda_emu) catches what it exists to catch: each test
launches a small kernel, correct or deliberately broken, and checks the emulator's verdict."""
import numpy as np
import pytest

from cuda_emu import ORDERS, EmulatorError, Module, block_order

KERNELS = r"""
#include <cuda/std/cstdint>

// Each block sums its part of x with warp shuffles and shared memory, then adds it to *out.
extern "C" __global__ void block_sum(const float* x, float* out, int n) {
    __shared__ float warp_sums[32];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int w = 0; w < blockDim.x / 32; w++) s += warp_sums[w];
        atomicAdd(out, s);
    }
}

// Reverses each block's slice through dynamic shared memory.
extern "C" __global__ void reverse_blocks(const float* x, float* y, int n) {
    extern __shared__ float tile[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    if (i < n) y[i] = tile[blockDim.x - 1 - threadIdx.x];
}

// The same, but without the barrier: a race.
extern "C" __global__ void reverse_blocks_racy(const float* x, float* y, int n) {
    extern __shared__ float tile[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = i < n ? x[i] : 0.0f;
    if (i < n) y[i] = tile[blockDim.x - 1 - threadIdx.x];
}

// Reads a shared value that nobody wrote: the dynamic area is NaN before every block.
extern "C" __global__ void read_unwritten(float* y, int n) {
    extern __shared__ float tile[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = tile[threadIdx.x];
}

// The last block to run wins.
extern "C" __global__ void last_block(int* out) {
    if (threadIdx.x == 0) *out = blockIdx.x;
}

extern "C" __global__ void write_past_end(float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = 1.0f;                                        // no `if (i < n)` guard
}

extern "C" __global__ void sync_in_branch(float* y, int n) {
    int i = threadIdx.x;
    if (i < n) {
        __syncthreads();
        y[i] = 1.0f;
    }
}

extern "C" __global__ void shuffles(const int* x, int* down, int* up, int* xr, int* bcast) {
    int v = x[threadIdx.x];
    down[threadIdx.x] = __shfl_down_sync(0xffffffffu, v, 3);
    up[threadIdx.x] = __shfl_up_sync(0xffffffffu, v, 5);
    xr[threadIdx.x] = __shfl_xor_sync(0xffffffffu, v, 6);
    bcast[threadIdx.x] = __shfl_sync(0xffffffffu, v, 7, 16);
}

extern "C" __global__ void fixed_width(const cuda::std::int64_t* x, long long* y) {
    y[threadIdx.x] = x[threadIdx.x] * 2;
}

extern "C" __global__ void scalars(double* y, double a, long long b, unsigned c) {
    y[0] = a + b + c;
}
"""


@pytest.fixture(scope="module")
def mod():
    return Module(code=KERNELS, options=("--std=c++17",))


@pytest.mark.parametrize("order", ORDERS)
def test_shuffles_shared_memory_and_atomics_sum_correctly(mod, order):
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    out = np.zeros(1, np.float32)
    with block_order(order, seed=3):
        mod.get_function("block_sum")((4,), (256,), (x, out, np.int32(x.size)))
    assert abs(out[0] - x.astype(np.float64).sum()) < 1e-3, (out[0], x.sum())


@pytest.mark.parametrize("order", ORDERS)
def test_dynamic_shared_memory(mod, order):
    x = np.arange(300, dtype=np.float32)
    y = np.zeros_like(x)
    with block_order(order):
        mod.get_function("reverse_blocks")((3,), (128,), (x, y, np.int32(300)),
                                           shared_mem=128 * 4)
    want = np.zeros(300, np.float32)
    for b in range(3):
        for t in range(128):
            i, j = b * 128 + t, b * 128 + 127 - t
            if i < 300:
                want[i] = x[j] if j < 300 else 0.0
    np.testing.assert_array_equal(y, want)


def test_a_missing_barrier_gives_a_wrong_answer(mod):
    x = np.arange(128, dtype=np.float32)
    y = np.zeros_like(x)
    mod.get_function("reverse_blocks_racy")((1,), (128,), (x, y, np.int32(128)),
                                            shared_mem=128 * 4)
    assert not np.array_equal(y, x[::-1])


def test_unwritten_shared_memory_reads_nan(mod):
    y = np.zeros(64, np.float32)
    mod.get_function("read_unwritten")((1,), (64,), (y, np.int32(64)), shared_mem=64 * 4)
    assert np.isnan(y).all()


@pytest.mark.parametrize("order, want", [("ascending", 9), ("descending", 0)])
def test_block_order(mod, order, want):
    out = np.zeros(1, np.int32)
    with block_order(order):
        mod.get_function("last_block")((10,), (32,), (out,))
    assert out[0] == want


def test_random_order_differs_between_seeds(mod):
    seen = set()
    for seed in range(6):
        out = np.zeros(1, np.int32)
        with block_order("random", seed):
            mod.get_function("last_block")((50,), (32,), (out,))
        seen.add(int(out[0]))
    assert len(seen) > 1


def test_out_of_bounds_write_is_caught(mod):
    y = np.zeros(100, np.float32)
    with pytest.raises(EmulatorError, match="out-of-bounds write after argument 0"):
        mod.get_function("write_past_end")((1,), (128,), (y, np.int32(100)))


def test_barrier_in_a_branch_is_a_deadlock_not_a_hang(mod):
    y = np.zeros(64, np.float32)
    with pytest.raises(EmulatorError, match="deadlock"):
        mod.get_function("sync_in_branch")((1,), (64,), (y, np.int32(40)))


def test_warp_shuffles_follow_cuda_semantics(mod):
    x = np.arange(64, dtype=np.int32) * 10
    outs = [np.zeros(64, np.int32) for _ in range(4)]
    mod.get_function("shuffles")((1,), (64,), (x, *outs))
    lane = np.arange(64) % 32
    base = np.arange(64) - lane
    down = np.where(lane + 3 < 32, x[base + np.minimum(lane + 3, 31)], x)
    up = np.where(lane >= 5, x[base + np.maximum(lane - 5, 0)], x)
    xr = x[base + (lane ^ 6)]
    bcast = x[base + (lane // 16) * 16 + 7]
    for got, want in zip(outs, (down, up, xr, bcast)):
        np.testing.assert_array_equal(got, want)


def test_cstdint_shim_and_wide_scalars(mod):
    x = np.arange(5, dtype=np.int64) << 40
    y = np.zeros(5, np.int64)
    mod.get_function("fixed_width")((1,), (5,), (x, y))
    np.testing.assert_array_equal(y, x * 2)
    out = np.zeros(1, np.float64)
    mod.get_function("scalars")((1,), (1,), (out, np.float64(0.5), np.int64(2**40),
                                             np.uint32(7)))
    assert out[0] == 0.5 + 2**40 + 7


@pytest.mark.parametrize("bad, match", [
    (1000, "Python int"),
    (1000.0, "Python float"),
    (np.int64(1000), "int64, the kernel takes int32"),
    (np.float32(1000), "float32, the kernel takes int32"),
])
def test_scalar_arguments_must_be_exact_numpy_types(mod, bad, match):
    x, out = np.zeros(10, np.float32), np.zeros(1, np.float32)
    with pytest.raises(EmulatorError, match=match):
        mod.get_function("block_sum")((1,), (32,), (x, out, bad))


def test_array_arguments_are_checked(mod):
    f = mod.get_function("block_sum")
    out = np.zeros(1, np.float32)
    with pytest.raises(EmulatorError, match="float64"):
        f((1,), (32,), (np.zeros(10), out, np.int32(10)))
    with pytest.raises(EmulatorError, match="C-contiguous"):
        f((1,), (32,), (np.zeros((4, 4), np.float32).T, out, np.int32(10)))
    with pytest.raises(EmulatorError, match="takes 3 arguments"):
        f((1,), (32,), (out, np.int32(10)))
    with pytest.raises(EmulatorError, match="1024"):
        f((1,), (2048,), (out, out, np.int32(1)))
    with pytest.raises(EmulatorError, match="no kernel named"):
        mod.get_function("nope")
