// groupnorm.cu: Group Normalization (Wu & He 2018), forward and backward.
//
// x is (N, C, HW) and C = G * Cg, so group (n, g) is one contiguous run of L = Cg * HW
// elements starting at (n * G + g) * L. Channel c has scale gamma[c] and shift beta[c].
//
// Kernels, each naive version first:
//   group_norm_forward_naive            one thread per group (n, g): mean, variance, output
//   group_norm_forward                  one block per group: the same, with block reductions
//       mu = mean(x), var = mean((x - mu)^2), rstd = 1 / sqrt(var + eps)  (Wu & He 2018, Eq. 1-2)
//       y = (x - mu) rstd gamma_c + beta_c                                 (Wu & He 2018, Eq. 4)
//       mean and rstd (N, G) are saved for the backward pass.
//   group_norm_backward_input_naive     one thread per group: dx
//   group_norm_backward_input           one block per group: dx, with block reductions
//       xh = (x - mu) rstd, dxh = dy gamma_c,
//       dx = rstd (dxh - mean(dxh) - xh mean(dxh xh))     (chain rule, Wu & He 2018, Eq. 1)
//   group_norm_backward_params_naive    one thread per channel c: dgamma_c, dbeta_c
//   group_norm_backward_params          one block per channel c: the same, block reductions
//       dgamma_c = sum_{n,hw} dy xh,  dbeta_c = sum_{n,hw} dy
//
// The block kernels need blockDim.x a multiple of 32 (at most 1024). Every sum is taken in
// the same order whatever the order of the blocks, so results are deterministic.

// The sum of v over the block, returned to every thread. `scratch` holds 32 floats.
// (Also in softmax.cu: each file stands alone, so CuPy's cache, keyed by the source text,
// sees every change.)
__device__ float block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();                                   // scratch may still be read by a caller
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    float s = 0.0f;
    for (int w = 0; w < blockDim.x / 32; w++) s += scratch[w];
    return s;
}

extern "C" __global__ void group_norm_forward_naive(
        const float* __restrict__ x, const float* __restrict__ gamma,
        const float* __restrict__ beta, float* __restrict__ y, float* __restrict__ mean,
        float* __restrict__ rstd, int num_groups_total, int C, int HW, int G, float eps) {
    int ng = blockIdx.x * blockDim.x + threadIdx.x;
    if (ng < num_groups_total) {
        int Cg = C / G, L = Cg * HW, c0 = (ng % G) * Cg;
        const float* xg = x + (long long)ng * L;
        float s = 0.0f;
        for (int j = 0; j < L; j++) s += xg[j];
        float mu = s / L;                                                 // Wu & He 2018, Eq. 2
        float ss = 0.0f;
        for (int j = 0; j < L; j++) ss += (xg[j] - mu) * (xg[j] - mu);
        float r = rsqrtf(ss / L + eps);                                   // Wu & He 2018, Eq. 1-2
        for (int j = 0; j < L; j++) {
            int c = c0 + j / HW;
            y[(long long)ng * L + j] = (xg[j] - mu) * r * gamma[c] + beta[c];  // Wu & He 2018 (4)
        }
        mean[ng] = mu;
        rstd[ng] = r;
    }
}

extern "C" __global__ void group_norm_forward(
        const float* __restrict__ x, const float* __restrict__ gamma,
        const float* __restrict__ beta, float* __restrict__ y, float* __restrict__ mean,
        float* __restrict__ rstd, int num_groups_total, int C, int HW, int G, float eps) {
    __shared__ float scratch[32];
    int ng = blockIdx.x;                                // one block per group
    if (ng >= num_groups_total) return;                 // uniform over the block
    int Cg = C / G, L = Cg * HW, c0 = (ng % G) * Cg;
    const float* xg = x + (long long)ng * L;
    float s = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) s += xg[j];
    float mu = block_sum(s, scratch) / L;                                 // Wu & He 2018, Eq. 2
    float ss = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) ss += (xg[j] - mu) * (xg[j] - mu);
    float r = rsqrtf(block_sum(ss, scratch) / L + eps);                   // Wu & He 2018, Eq. 1-2
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        int c = c0 + j / HW;
        y[(long long)ng * L + j] = (xg[j] - mu) * r * gamma[c] + beta[c];     // Wu & He 2018, Eq. 4
    }
    if (threadIdx.x == 0) {
        mean[ng] = mu;
        rstd[ng] = r;
    }
}

extern "C" __global__ void group_norm_backward_input_naive(
        const float* __restrict__ dy, const float* __restrict__ x,
        const float* __restrict__ mean, const float* __restrict__ rstd,
        const float* __restrict__ gamma, float* __restrict__ dx, int num_groups_total, int C,
        int HW, int G) {
    int ng = blockIdx.x * blockDim.x + threadIdx.x;
    if (ng < num_groups_total) {
        int Cg = C / G, L = Cg * HW, c0 = (ng % G) * Cg;
        long long base = (long long)ng * L;
        float mu = mean[ng], r = rstd[ng], s1 = 0.0f, s2 = 0.0f;
        for (int j = 0; j < L; j++) {
            int c = c0 + j / HW;
            float xh = (x[base + j] - mu) * r;                            // Wu & He 2018, Eq. 1
            float dxh = dy[base + j] * gamma[c];                       // Wu & He 2018, d(Eq. 4)/dxh
            s1 += dxh;
            s2 += dxh * xh;
        }
        for (int j = 0; j < L; j++) {
            int c = c0 + j / HW;
            float xh = (x[base + j] - mu) * r;
            float dxh = dy[base + j] * gamma[c];                       // Wu & He 2018, d(Eq. 4)/dxh
            dx[base + j] = r * (dxh - s1 / L - xh * (s2 / L));          // Wu & He 2018, d(Eq. 1)/dx
        }
    }
}

extern "C" __global__ void group_norm_backward_input(
        const float* __restrict__ dy, const float* __restrict__ x,
        const float* __restrict__ mean, const float* __restrict__ rstd,
        const float* __restrict__ gamma, float* __restrict__ dx, int num_groups_total, int C,
        int HW, int G) {
    __shared__ float scratch[32];
    int ng = blockIdx.x;                                // one block per group
    if (ng >= num_groups_total) return;                 // uniform over the block
    int Cg = C / G, L = Cg * HW, c0 = (ng % G) * Cg;
    long long base = (long long)ng * L;
    float mu = mean[ng], r = rstd[ng], s1 = 0.0f, s2 = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        int c = c0 + j / HW;
        float xh = (x[base + j] - mu) * r;                                // Wu & He 2018, Eq. 1
        float dxh = dy[base + j] * gamma[c];                           // Wu & He 2018, d(Eq. 4)/dxh
        s1 += dxh;
        s2 += dxh * xh;
    }
    float m1 = block_sum(s1, scratch) / L, m2 = block_sum(s2, scratch) / L;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        int c = c0 + j / HW;
        float xh = (x[base + j] - mu) * r;
        float dxh = dy[base + j] * gamma[c];                           // Wu & He 2018, d(Eq. 4)/dxh
        dx[base + j] = r * (dxh - m1 - xh * m2);                        // Wu & He 2018, d(Eq. 1)/dx
    }
}

extern "C" __global__ void group_norm_backward_params_naive(
        const float* __restrict__ dy, const float* __restrict__ x,
        const float* __restrict__ mean, const float* __restrict__ rstd,
        float* __restrict__ dgamma, float* __restrict__ dbeta, int N, int C, int HW, int G) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < C) {
        int g = c / (C / G);
        float sg = 0.0f, sb = 0.0f;
        for (int n = 0; n < N; n++) {
            float mu = mean[n * G + g], r = rstd[n * G + g];
            for (int j = 0; j < HW; j++) {
                long long k = ((long long)n * C + c) * HW + j;
                float xh = (x[k] - mu) * r;                               // Wu & He 2018, Eq. 1
                sg += dy[k] * xh;                                   // Wu & He 2018, d(Eq. 4)/dgamma
                sb += dy[k];                                         // Wu & He 2018, d(Eq. 4)/dbeta
            }
        }
        dgamma[c] = sg;
        dbeta[c] = sb;
    }
}

extern "C" __global__ void group_norm_backward_params(
        const float* __restrict__ dy, const float* __restrict__ x,
        const float* __restrict__ mean, const float* __restrict__ rstd,
        float* __restrict__ dgamma, float* __restrict__ dbeta, int N, int C, int HW, int G) {
    __shared__ float scratch[32];
    int c = blockIdx.x;                                 // one block per channel
    if (c >= C) return;                                 // uniform over the block
    int g = c / (C / G);
    float sg = 0.0f, sb = 0.0f;
    for (int k = threadIdx.x; k < N * HW; k += blockDim.x) {
        int n = k / HW;
        long long e = ((long long)n * C + c) * HW + k % HW;
        float xh = (x[e] - mean[n * G + g]) * rstd[n * G + g];            // Wu & He 2018, Eq. 1
        sg += dy[e] * xh;                                           // Wu & He 2018, d(Eq. 4)/dgamma
        sb += dy[e];                                                 // Wu & He 2018, d(Eq. 4)/dbeta
    }
    sg = block_sum(sg, scratch);
    sb = block_sum(sb, scratch);
    if (threadIdx.x == 0) {
        dgamma[c] = sg;
        dbeta[c] = sb;
    }
}
