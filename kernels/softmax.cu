// softmax.cu: the softmax over the last axis of a (rows, cols) array, for self-attention
// (Vaswani et al. 2017, Eq. 1), and its backward pass.
//
// Kernels, each naive version first:
//   softmax_forward_naive    one thread per row
//   softmax_forward          one block per row, with block reductions
//       y_j = exp(x_j - max_k x_k) / sum_k exp(x_k - max_k x_k)
//   softmax_backward_naive   one thread per row
//   softmax_backward         one block per row, with block reductions
//       dx_j = y_j (dy_j - sum_k dy_k y_k)      (the Jacobian diag(y) - y y^T applied to dy)
//
// The block kernels need blockDim.x a multiple of 32 (at most 1024).

#define FLT_MAX_F 3.402823466e+38f    // the largest float: -FLT_MAX_F starts a max

// The sum (or max) of v over the block, returned to every thread; scratch holds 32 floats.
// (block_sum is also in groupnorm.cu: each file stands alone, so CuPy's cache, keyed by the
// source text, sees every change.)
__device__ float block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();                                   // scratch may still be read by a caller
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    float s = 0.0f;
    for (int w = 0; w < blockDim.x / 32; w++) s += scratch[w];
    return s;
}

__device__ float block_max(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    float s = scratch[0];
    for (int w = 1; w < blockDim.x / 32; w++) s = fmaxf(s, scratch[w]);
    return s;
}

extern "C" __global__ void softmax_forward_naive(const float* __restrict__ x,
                                                 float* __restrict__ y, int rows, int cols) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < rows) {
        const float* xr = x + (long long)r * cols;
        float m = -FLT_MAX_F, s = 0.0f;
        for (int j = 0; j < cols; j++) m = fmaxf(m, xr[j]);
        for (int j = 0; j < cols; j++) s += expf(xr[j] - m);
        for (int j = 0; j < cols; j++) y[(long long)r * cols + j] = expf(xr[j] - m) / s;
    }
}

extern "C" __global__ void softmax_forward(const float* __restrict__ x, float* __restrict__ y,
                                           int rows, int cols) {
    __shared__ float scratch[32];
    int r = blockIdx.x;                                 // one block per row
    if (r >= rows) return;                              // uniform over the block
    const float* xr = x + (long long)r * cols;
    float m = -FLT_MAX_F, s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, xr[j]);
    m = block_max(m, scratch);                          // subtracted so exp cannot overflow
    for (int j = threadIdx.x; j < cols; j += blockDim.x) s += expf(xr[j] - m);
    s = block_sum(s, scratch);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        y[(long long)r * cols + j] = expf(xr[j] - m) / s;          // Vaswani et al. 2017, Eq. 1
}

extern "C" __global__ void softmax_backward_naive(const float* __restrict__ y,
                                                  const float* __restrict__ dy,
                                                  float* __restrict__ dx, int rows, int cols) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < rows) {
        long long base = (long long)r * cols;
        float s = 0.0f;
        for (int j = 0; j < cols; j++) s += dy[base + j] * y[base + j];
        for (int j = 0; j < cols; j++) dx[base + j] = y[base + j] * (dy[base + j] - s);
    }
}

extern "C" __global__ void softmax_backward(const float* __restrict__ y,
                                            const float* __restrict__ dy,
                                            float* __restrict__ dx, int rows, int cols) {
    __shared__ float scratch[32];
    int r = blockIdx.x;                                 // one block per row
    if (r >= rows) return;                              // uniform over the block
    long long base = (long long)r * cols;
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) s += dy[base + j] * y[base + j];
    s = block_sum(s, scratch);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        dx[base + j] = y[base + j] * (dy[base + j] - s);   // (diag(y) - y y^T) dy
}
