// diffusion.cu: the per-element math of a diffusion step, each fused into one pass that reads
// its inputs once and writes its outputs once (Ho et al. 2020; DDIM: Song et al. 2021).
//
// Kernels (one thread per element):
//   q_sample        x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps    (Ho et al. 2020, Eq. 4)
//   posterior_mean  mu~_t(x_t, x0) = c1_t x0 + c2_t x_t: mu's target (Ho et al. 2020, Eq. 7)
//   reverse_step    x0^ (the caller's, from any parameterisation), optionally clipped to
//                   [-1, 1]; mu = mu~_t(x_t, x0^); x_{t-1} = mu + sigma_b z, z unused at t = 0
//                   (Ho et al. 2020, Eq. 6-7; Algorithm 2)
//   ddim_step       model output (eps | x0) -> x0^ (clipped), eps^ from x0^;
//                   x_prev = sqrt(abar_prev) x0^ + sqrt(1 - abar_prev - s^2) eps^ + s z
//                   (Song et al. 2021, Eq. 12 and 16)
//
// Layout: every image array is (B, D) flattened, D = per_sample elements; element i belongs
// to sample b = i / per_sample and reads the per-timestep buffers (length T) at t[b], and the
// per-sample ones (length B) at b.
// Time index: arrays are 0-based, index t holds the paper's step t + 1 (as in Ho et al.'s
// code), so the last reverse step is t = 0.
// No #include: NVRTC compiles this without any header.

// ddim_step's `param`: what the network predicts.
#define PARAM_EPS 0     // the noise eps                     (Ho et al. 2020, Eq. 11)
#define PARAM_X0 1      // x0

__device__ __forceinline__ float clip_unit(float x) {
    return fminf(fmaxf(x, -1.0f), 1.0f);                      // Ho et al. 2020, Sec. 3.3
}

extern "C" __global__ void q_sample(const float* __restrict__ x0,
                                    const float* __restrict__ eps,
                                    const int* __restrict__ t,
                                    const float* __restrict__ sqrt_abar,
                                    const float* __restrict__ sqrt_1m_abar,
                                    float* __restrict__ x_t, int n, int per_sample) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        int ti = t[i / per_sample];
        x_t[i] = sqrt_abar[ti] * x0[i] + sqrt_1m_abar[ti] * eps[i];   // Ho et al. 2020, Eq. 4
    }
}

extern "C" __global__ void posterior_mean(const float* __restrict__ x0,
                                          const float* __restrict__ x_t,
                                          const int* __restrict__ t,
                                          const float* __restrict__ coef1,
                                          const float* __restrict__ coef2,
                                          float* __restrict__ mean, int n, int per_sample) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        int ti = t[i / per_sample];
        mean[i] = coef1[ti] * x0[i] + coef2[ti] * x_t[i];            // Ho et al. 2020, Eq. 7
    }
}

// x0_hat: the model's prediction of x0; coef1, coef2: the posterior mean's coefficients
// (Ho et al. 2020, Eq. 7), of length T; sigma (length B): each sample's standard deviation sigma_t,
// sqrt(beta_t) or sqrt(beta~_t) (Ho et al. 2020, Sec. 3.2), gathered by the caller from the
// variance it chose.
extern "C" __global__ void reverse_step(const float* __restrict__ x0_hat,
                                        const float* __restrict__ x_t,
                                        const int* __restrict__ t,
                                        const float* __restrict__ z,
                                        const float* __restrict__ coef1,
                                        const float* __restrict__ coef2,
                                        const float* __restrict__ sigma,
                                        float* __restrict__ x_prev,
                                        int clip, int n, int per_sample) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        int b = i / per_sample, ti = t[b];
        float x0 = clip ? clip_unit(x0_hat[i]) : x0_hat[i];           // x0^ in the data range
        float mu = coef1[ti] * x0 + coef2[ti] * x_t[i];               // Ho et al. 2020, Eq. 7
        float s = ti > 0 ? sigma[b] : 0.0f;                          // Ho et al. 2020, Alg. 2, l. 3
        x_prev[i] = mu + s * z[i];                                   // Ho et al. 2020, Alg. 2, l. 4
    }
}

// abar: the cumulative products (length T); t_prev[b] = -1 means the step to x0 (abar = 1).
extern "C" __global__ void ddim_step(const float* __restrict__ out,
                                     const float* __restrict__ x_t,
                                     const int* __restrict__ t,
                                     const int* __restrict__ t_prev,
                                     const float* __restrict__ z,
                                     const float* __restrict__ abar,
                                     float* __restrict__ x_prev,
                                     float* __restrict__ x0_hat,
                                     int param, int clip, float eta, int n, int per_sample) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        int b = i / per_sample, tp = t_prev[b];
        float a = abar[t[b]], ap = tp >= 0 ? abar[tp] : 1.0f;
        float xt = x_t[i], o = out[i];
        float x0 = param == PARAM_EPS
            ? (xt - sqrtf(1.0f - a) * o) / sqrtf(a)                    // Song et al. 2021, Eq. 12
            : o;
        if (clip) x0 = clip_unit(x0);
        float e = (xt - sqrtf(a) * x0) / sqrtf(1.0f - a);           // Ho et al. 2020, Eq. 4 for eps
        float s = eta * sqrtf((1.0f - ap) / (1.0f - a)                  // Song et al. 2021, Eq. 16
                              * fmaxf(1.0f - a / ap, 0.0f));
        float dir = sqrtf(fmaxf(1.0f - ap - s * s, 0.0f));           // Song et al. 2021, Eq. 12
        x_prev[i] = sqrtf(ap) * x0 + dir * e + s * z[i];              // Song et al. 2021, Eq. 12
        x0_hat[i] = x0;
    }
}
