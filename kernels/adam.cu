// adam.cu: the optimizer's per-parameter updates, each one pass over its arrays, in place.
//
// Kernels (one thread per element):
//   adam_step   Adam (Kingma & Ba 2015, Algorithm 1) with both kinds of weight decay:
//               l2_decay adds lambda p to the gradient (Adam); decoupled_decay subtracts
//               lr lambda p from p (AdamW, Loshchilov & Hutter 2019, Algorithm 2).
//               1 - beta1, 1 - beta2, bias_c1 = 1 - beta1^t and bias_c2 = 1 - beta2^t come
//               from the host, computed in float64: 1 - (float)0.999 is off by 1e-5 relative.
//   ema_update  shadow <- shadow - (1 - decay) (shadow - p), the parameters' moving average
//               that Ho et al. 2020 sample with (Appendix B, decay 0.9999).

extern "C" __global__ void adam_step(float* __restrict__ p, const float* __restrict__ grad,
                                     float* __restrict__ m, float* __restrict__ v,
                                     float lr, float beta1, float beta2,
                                     float one_minus_beta1, float one_minus_beta2, float eps,
                                     float l2_decay, float decoupled_decay,
                                     float bias_c1, float bias_c2, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float pi = p[i];
        float g = grad[i] + l2_decay * pi;                    // L2 penalty in the gradient
        float mi = beta1 * m[i] + one_minus_beta1 * g;          // Kingma & Ba 2015, Alg. 1: m_t
        float vi = beta2 * v[i] + one_minus_beta2 * g * g;      // Kingma & Ba 2015, Alg. 1: v_t
        float m_hat = mi / bias_c1;                           // m^_t = m_t / (1 - beta1^t)
        float v_hat = vi / bias_c2;                           // v^_t = v_t / (1 - beta2^t)
        pi -= lr * decoupled_decay * pi;                      // Loshchilov & Hutter 2019, Alg. 2
        p[i] = pi - lr * m_hat / (sqrtf(v_hat) + eps);        // Kingma & Ba 2015, Alg. 1
        m[i] = mi;
        v[i] = vi;
    }
}

extern "C" __global__ void ema_update(float* __restrict__ shadow, const float* __restrict__ p,
                                      float one_minus_decay, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float s = shadow[i];
        shadow[i] = s - one_minus_decay * (s - p[i]);         // Ho et al. 2020, App. B (EMA)
    }
}
