// conv2d.cu: 2-D convolution (cross-correlation, as in every deep-learning library), NCHW.
//
//   x (N, Ci, H, W), w (Co, Ci, KH, KW), y (N, Co, Ho, Wo),
//   Ho = (H + 2 ph - KH) / sh + 1,  Wo = (W + 2 pw - KW) / sw + 1      (zero padding ph, pw)
//   y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] x[n, c, i sh - ph + p, j sw - pw + q]    (1)
//
// Kernels, naive version first:
//   conv2d_forward_naive          one thread per output y[n,o,i,j]: the sum (1)
//   conv2d_backward_data_naive    one thread per input gradient:
//       dx[n,c,h,v] = sum_{o,p,q} w[o,c,p,q] dy[n, o, (h+ph-p)/sh, (v+pw-q)/sw]
//       over the (p, q) where the division is exact and the index inside dy     (adjoint of 1)
//   conv2d_backward_weight_naive  one thread per weight gradient:
//       dw[o,c,p,q] = sum_{n,i,j} dy[n,o,i,j] x[n, c, i sh - ph + p, j sw - pw + q]  (d1/dw)
//   conv2d_forward, conv2d_backward_data, conv2d_backward_weight: the same three sums as
//       tiled implicit GEMMs, C[M, Nc] = sum_k A[m, k] B[k, n], without forming the im2col
//       matrix: each 64 x 64 tile of C is one block of 256 threads (4 x 4 outputs each), and
//       16-deep slices of A and B are gathered from x, w or dy into shared memory.
//         forward        M = Co, Nc = N Ho Wo, K = Ci KH KW;  A = w,  B = im2col(x)
//         backward data  M = Ci, Nc = N H W,   K = Co KH KW;  A = w^T, B = col2im-gather(dy)
//         backward weight M = Co, Nc = Ci KH KW, K = N Ho Wo; A = dy,  B = im2col(x)^T
//       backward weight splits K over gridDim.z: block z writes partial[z] (Co, Ci KH KW),
//       and the caller sums the partials (deterministic, unlike atomics).
// The tiled kernels need blockDim = (256, 1, 1), grid = (ceil(Nc / 64), ceil(M / 64), splits).

struct ConvShape {
    int N, Ci, H, W, Co, KH, KW, Ho, Wo, sh, sw, ph, pw;
};

// The shape arrives as eleven ints (CuPy passes no structs portably); Ho and Wo follow.
__device__ __forceinline__ ConvShape conv_shape(int N, int Ci, int H, int W, int Co, int KH,
                                                int KW, int sh, int sw, int ph, int pw) {
    int Ho = (H + 2 * ph - KH) / sh + 1, Wo = (W + 2 * pw - KW) / sw + 1;
    return ConvShape{N, Ci, H, W, Co, KH, KW, Ho, Wo, sh, sw, ph, pw};
}

// ---- naive kernels ----------------------------------------------------------------------------
extern "C" __global__ void conv2d_forward_naive(const float* __restrict__ x,
                                                const float* __restrict__ w,
                                                const float* __restrict__ b,
                                                float* __restrict__ y, int N, int Ci, int H,
                                                int W, int Co, int KH, int KW, int sh, int sw,
                                                int ph, int pw, int n) {
    ConvShape s = conv_shape(N, Ci, H, W, Co, KH, KW, sh, sw, ph, pw);
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e < n) {
        int j = e % s.Wo, i = (e / s.Wo) % s.Ho, o = (e / (s.Wo * s.Ho)) % s.Co;
        int nb = e / (s.Wo * s.Ho * s.Co);
        float acc = b[o];
        for (int c = 0; c < s.Ci; c++)
            for (int p = 0; p < s.KH; p++)
                for (int q = 0; q < s.KW; q++) {
                    int h = i * s.sh - s.ph + p, v = j * s.sw - s.pw + q;
                    if (h >= 0 && h < s.H && v >= 0 && v < s.W)
                        acc += w[((o * s.Ci + c) * s.KH + p) * s.KW + q]      // (1)
                             * x[((nb * s.Ci + c) * s.H + h) * s.W + v];
                }
        y[e] = acc;
    }
}

extern "C" __global__ void conv2d_backward_data_naive(const float* __restrict__ dy,
                                                      const float* __restrict__ w,
                                                      float* __restrict__ dx, int N, int Ci, int H,
                                                      int W, int Co, int KH, int KW, int sh,
                                                      int sw, int ph, int pw, int n) {
    ConvShape s = conv_shape(N, Ci, H, W, Co, KH, KW, sh, sw, ph, pw);
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e < n) {
        int v = e % s.W, h = (e / s.W) % s.H, c = (e / (s.W * s.H)) % s.Ci;
        int nb = e / (s.W * s.H * s.Ci);
        float acc = 0.0f;
        for (int o = 0; o < s.Co; o++)
            for (int p = 0; p < s.KH; p++)
                for (int q = 0; q < s.KW; q++) {
                    int th = h + s.ph - p, tw = v + s.pw - q;           // = i sh, = j sw in (1)
                    if (th < 0 || tw < 0 || th % s.sh || tw % s.sw) continue;
                    int i = th / s.sh, j = tw / s.sw;
                    if (i < s.Ho && j < s.Wo)
                        acc += w[((o * s.Ci + c) * s.KH + p) * s.KW + q]      // adjoint of (1)
                             * dy[((nb * s.Co + o) * s.Ho + i) * s.Wo + j];
                }
        dx[e] = acc;
    }
}

extern "C" __global__ void conv2d_backward_weight_naive(const float* __restrict__ dy,
                                                        const float* __restrict__ x,
                                                        float* __restrict__ dw, int N, int Ci,
                                                        int H, int W, int Co, int KH, int KW,
                                                        int sh, int sw, int ph, int pw, int n) {
    ConvShape s = conv_shape(N, Ci, H, W, Co, KH, KW, sh, sw, ph, pw);
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e < n) {
        int q = e % s.KW, p = (e / s.KW) % s.KH, c = (e / (s.KW * s.KH)) % s.Ci;
        int o = e / (s.KW * s.KH * s.Ci);
        float acc = 0.0f;
        for (int nb = 0; nb < s.N; nb++)
            for (int i = 0; i < s.Ho; i++)
                for (int j = 0; j < s.Wo; j++) {
                    int h = i * s.sh - s.ph + p, v = j * s.sw - s.pw + q;
                    if (h >= 0 && h < s.H && v >= 0 && v < s.W)
                        acc += dy[((nb * s.Co + o) * s.Ho + i) * s.Wo + j]     // d(1)/dw
                             * x[((nb * s.Ci + c) * s.H + h) * s.W + v];
                }
        dw[e] = acc;
    }
}

// ---- the tiled implicit GEMM ------------------------------------------------------------------
#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define GEMM_THREADS 256        // 16 x 16 threads, each computes 4 x 4 outputs of the tile

// x[n, c, h, v] with zero padding outside the image.
__device__ __forceinline__ float x_at(const float* x, const ConvShape& s, int nb, int c, int h,
                                      int v) {
    if (h < 0 || h >= s.H || v < 0 || v >= s.W) return 0.0f;
    return x[((nb * s.Ci + c) * s.H + h) * s.W + v];
}

// im2col(x)[k = (c, p, q), col = (n, i, j)] = x[n, c, i sh - ph + p, j sw - pw + q]     (1)
__device__ __forceinline__ float im2col(const float* x, const ConvShape& s, int k, int col) {
    int q = k % s.KW, p = (k / s.KW) % s.KH, c = k / (s.KW * s.KH);
    int j = col % s.Wo, i = (col / s.Wo) % s.Ho, nb = col / (s.Wo * s.Ho);
    return x_at(x, s, nb, c, i * s.sh - s.ph + p, j * s.sw - s.pw + q);
}

struct FwdA {           // A[o, k] = w[o, k]: the weights as a (Co, Ci KH KW) matrix
    const float* w; int K;
    __device__ float operator()(int m, int k) const { return w[m * K + k]; }
};
struct FwdB {           // B[k, col] = im2col(x)
    const float* x; ConvShape s;
    __device__ float operator()(int k, int col) const { return im2col(x, s, k, col); }
};
struct FwdC {           // y[n, o, i, j] = C[o, col] + b[o]                                 (1)
    float* y; const float* b; ConvShape s;
    __device__ void operator()(int m, int col, float acc) const {
        int hw = s.Ho * s.Wo, nb = col / hw;
        y[(nb * s.Co + m) * hw + col % hw] = acc + b[m];
    }
};

struct DataA {          // A[c, k = (o, p, q)] = w[o, c, p, q]
    const float* w; ConvShape s;
    __device__ float operator()(int m, int k) const {
        int pq = s.KH * s.KW, o = k / pq;
        return w[(o * s.Ci + m) * pq + k % pq];
    }
};
struct DataB {          // B[k = (o, p, q), col = (n, h, v)] = dy[n, o, (h+ph-p)/sh, (v+pw-q)/sw]
    const float* dy; ConvShape s;
    __device__ float operator()(int k, int col) const {
        int q = k % s.KW, p = (k / s.KW) % s.KH, o = k / (s.KW * s.KH);
        int v = col % s.W, h = (col / s.W) % s.H, nb = col / (s.W * s.H);
        int th = h + s.ph - p, tw = v + s.pw - q;                       // = i sh, = j sw in (1)
        if (th < 0 || tw < 0 || th % s.sh || tw % s.sw) return 0.0f;
        int i = th / s.sh, j = tw / s.sw;
        if (i >= s.Ho || j >= s.Wo) return 0.0f;
        return dy[((nb * s.Co + o) * s.Ho + i) * s.Wo + j];             // adjoint of (1)
    }
};
struct DataC {          // dx[n, c, h, v] = C[c, col]
    float* dx; ConvShape s;
    __device__ void operator()(int m, int col, float acc) const {
        int hw = s.H * s.W, nb = col / hw;
        dx[(nb * s.Ci + m) * hw + col % hw] = acc;
    }
};

struct WgtA {           // A[o, k = (n, i, j)] = dy[n, o, i, j]
    const float* dy; ConvShape s;
    __device__ float operator()(int m, int k) const {
        int hw = s.Ho * s.Wo, nb = k / hw;
        return dy[(nb * s.Co + m) * hw + k % hw];
    }
};
struct WgtB {           // B[k = (n, i, j), col = (c, p, q)] = im2col(x)[col, k]           (1)
    const float* x; ConvShape s;
    __device__ float operator()(int k, int col) const { return im2col(x, s, col, k); }
};
struct WgtC {           // partial[z, o, col] = C[o, col] over this block's slice of K
    float* part; int M, Nc;
    __device__ void operator()(int m, int col, float acc) const {
        part[((long long)blockIdx.z * M + m) * Nc + col] = acc;
    }
};

// C[m, col] = sum_{k in [k0, k1)} A(m, k) B(k, col) for this block's 64 x 64 tile.
template <class LoadA, class LoadB, class Store>
__device__ __forceinline__ void gemm_tile(const LoadA& A, const LoadB& B, const Store& C,
                                          int M, int Nc, int k0, int k1) {
    __shared__ float As[TILE_K][TILE_M + 1];    // +1: the transposing store is conflict-free
    __shared__ float Bs[TILE_K][TILE_N];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
    float acc[4][4];
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) acc[a][b] = 0.0f;
    for (int kt = k0; kt < k1; kt += TILE_K) {
#pragma unroll
        for (int r = 0; r < TILE_M * TILE_K / GEMM_THREADS; r++) {
            int e = tid + r * GEMM_THREADS;
            int ka = e % TILE_K, ma = e / TILE_K;         // A: consecutive threads walk k
            int kb = e / TILE_N, nb = e % TILE_N;         // B: consecutive threads walk columns
            As[ka][ma] = (m0 + ma < M && kt + ka < k1) ? A(m0 + ma, kt + ka) : 0.0f;
            Bs[kb][nb] = (n0 + nb < Nc && kt + kb < k1) ? B(kt + kb, n0 + nb) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE_K; kk++) {
            float av[4], bv[4];
#pragma unroll
            for (int a = 0; a < 4; a++) av[a] = As[kk][ty + 16 * a];
#pragma unroll
            for (int b = 0; b < 4; b++) bv[b] = Bs[kk][tx + 16 * b];
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) acc[a][b] += av[a] * bv[b];
        }
        __syncthreads();                                  // before the next slice overwrites
    }
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            int m = m0 + ty + 16 * a, col = n0 + tx + 16 * b;
            if (m < M && col < Nc) C(m, col, acc[a][b]);
        }
}

extern "C" __global__ void conv2d_forward(const float* __restrict__ x,
                                          const float* __restrict__ w,
                                          const float* __restrict__ b, float* __restrict__ y,
                                          int N, int Ci, int H, int W, int Co, int KH,
                                          int KW, int sh, int sw, int ph, int pw) {
    ConvShape s = conv_shape(N, Ci, H, W, Co, KH, KW, sh, sw, ph, pw);
    int K = s.Ci * s.KH * s.KW;
    gemm_tile(FwdA{w, K}, FwdB{x, s}, FwdC{y, b, s}, s.Co, s.N * s.Ho * s.Wo, 0, K);
}

extern "C" __global__ void conv2d_backward_data(const float* __restrict__ dy,
                                                const float* __restrict__ w,
                                                float* __restrict__ dx, int N, int Ci, int H, int W,
                                                int Co, int KH, int KW, int sh, int sw,
                                                int ph, int pw) {
    ConvShape s = conv_shape(N, Ci, H, W, Co, KH, KW, sh, sw, ph, pw);
    gemm_tile(DataA{w, s}, DataB{dy, s}, DataC{dx, s}, s.Ci, s.N * s.H * s.W, 0,
              s.Co * s.KH * s.KW);
}

// k_chunk: how much of K = N Ho Wo each z-slice of the grid sums (a multiple of TILE_K).
extern "C" __global__ void conv2d_backward_weight(const float* __restrict__ dy,
                                                  const float* __restrict__ x,
                                                  float* __restrict__ partial, int N, int Ci,
                                                  int H, int W, int Co, int KH, int KW,
                                                  int sh, int sw, int ph, int pw, int k_chunk) {
    ConvShape s = conv_shape(N, Ci, H, W, Co, KH, KW, sh, sw, ph, pw);
    int K = s.N * s.Ho * s.Wo, Nc = s.Ci * s.KH * s.KW;
    int k0 = blockIdx.z * k_chunk, k1 = min(K, k0 + k_chunk);
    gemm_tile(WgtA{dy, s}, WgtB{x, s}, WgtC{partial, s.Co, Nc}, s.Co, Nc, k0, k1);
}
