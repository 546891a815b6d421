"""The variational bound in bits per dimension (Ho et al. 2020, Eq. 3 and 5).

    L = L_T + Σ_{t>1} L_{t-1} + L_0                   Ho et al. 2020, Eq. 5
    L_T     = KL(q(x_T | x0) ‖ p(x_T))               prior_bpd
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) ‖ p_θ(x_{t-1} | x_t))
                                normal_kl; Ho et al. 2020, Eq. 6-7 against their Eq. 1
    L_0     = -log p_θ(x0 | x1)  discretized_gaussian_log_likelihood, Ho et al. 2020, Eq. 13

The building blocks take arrays or Tensors and return Tensors, so the same code gives the
training loss (differentiable) and the evaluation (under no_grad). Data x0 are integers
{0, …, 255} scaled linearly to [-1, 1] (Ho et al. 2020, §3.3). With 0-based time arrays, index
t holds the paper's step t+1, so index 0 is the decoder term L_0 and index t >= 1 is L_t.
"""
import math

import numpy as np

from .. import backend
from .. import functional as F
from ..functional._util import as_tensor
from ..tensor import Tensor, no_grad
from ._checks import as_data, check_batch

LN2 = math.log(2.0)


def _tensors(*xs):
    """Arrays, Tensors and numbers as Tensors; numbers take the dtype of the first array."""
    ref = next((x for x in xs if isinstance(x, Tensor)), None)
    if ref is None:
        ref = Tensor(next(x for x in xs if hasattr(x, "dtype")))
    return [as_tensor(x, like=ref) for x in xs]


def mean_flat(x):
    """Mean over every axis but the batch axis: (B, ...) -> (B,)."""
    return x.mean(axis=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) per element, in nats.

    The KL terms of Ho et al. 2020, Eq. 5 compare Gaussians, so they have this closed form
    (Ho et al. 2020, §2).
    """
    mean1, logvar1, mean2, logvar2 = _tensors(mean1, logvar1, mean2, logvar2)
    return 0.5 * (logvar2 - logvar1 - 1.0                   # log(σ2²/σ1²) - 1
                  + F.exp(logvar1 - logvar2)                # + σ1²/σ2²
                  + (mean1 - mean2) ** 2 * F.exp(-logvar2))  # + (μ1 - μ2)²/σ2²


def approx_standard_normal_cdf(x):
    """Φ(x) ≈ ½(1 + tanh(√(2/π)(x + 0.044715 x³))), the approximation of Ho et al.'s code."""
    (x,) = _tensors(x)
    return 0.5 * (1.0 + F.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log p(x) per element, for x on the 256-level grid of [-1, 1] (Ho et al. 2020, Eq. 13).

    p(x) is the mass of N(means, e^(2·log_scales)) on x's bin [x - 1/255, x + 1/255]; the
    first bin extends to -∞ and the last to +∞, so the 256 masses sum to one.
    """
    x, means, log_scales = _tensors(x, means, log_scales)
    xp = backend.xp()
    centered = x - means
    inv_stdv = F.exp(-log_scales)
    # Ho et al. 2020, Eq. 13: δ+ and δ- are the bin's edges, ±∞ at the first and last bins
    cdf_plus = approx_standard_normal_cdf((centered + 1.0 / 255) * inv_stdv)   # at δ+
    cdf_min = approx_standard_normal_cdf((centered - 1.0 / 255) * inv_stdv)    # at δ-
    log_cdf_plus = F.log(F.maximum(cdf_plus, 1e-12))                # x = -1: ∫ from -∞
    log_one_minus_cdf_min = F.log(F.maximum(1.0 - cdf_min, 1e-12))  # x = 1: ∫ to +∞
    log_cdf_delta = F.log(F.maximum(cdf_plus - cdf_min, 1e-12))     # the inner bins
    # Choose the edge or inner form per element with 0/1 masks (all three are finite).
    first = (x.data < -0.999).astype(x.dtype)
    last = (x.data > 0.999).astype(x.dtype)
    inner = xp.ones_like(x.data) - first - last
    return log_cdf_plus * first + log_one_minus_cdf_min * last + log_cdf_delta * inner


def vb_terms_bpd(d, model_mean, model_log_variance, x0, x_t, t):
    """The bound's term for each example's timestep, in bits/dim, shape (B,).

    Index t >= 1 (the paper's L_t, from step t+1): KL(q(x_t | x_{t+1}, x0) ‖ p_θ)
    (Ho et al. 2020, Eq. 5). Index 0 (the paper's L_0): the discretized decoder's negative
    log-likelihood (Ho et al. 2020, Eq. 13). x0 and x_t are arrays; the model's mean and
    log-variance arrays or Tensors.
    """
    # q(x_{t-1} | x_t, x0) against p_θ(x_{t-1} | x_t): Ho et al. 2020, Eq. 6-7 and 1
    true_mean, _, true_log_variance = d._q_posterior_mean_variance(x0, x_t, t)
    kl = normal_kl(true_mean, true_log_variance, model_mean, model_log_variance)
    kl = mean_flat(kl) * (1.0 / LN2)                                # (B,) Ho et al. 2020, Eq. 5
    log_scales = model_log_variance * 0.5
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, log_scales)
    nll = mean_flat(nll) * (1.0 / LN2)                              # (B,) Ho et al. 2020, Eq. 13
    is_decoder = (t == 0).astype(d.dtype)                           # (B,)
    return nll * is_decoder + kl * (1.0 - is_decoder)               # Ho et al. 2020, Eq. 5


def prior_bpd(d, x0):
    """L_T = KL(q(x_T | x0) ‖ N(0, I)) in bits/dim, shape (B,) (Ho et al. 2020, Eq. 5)."""
    x0 = as_data("x0", x0, d.dtype)
    check_batch("x0", x0)
    return _prior_bpd(d, x0)


def _prior_bpd(d, x0):
    t = backend.xp().full((x0.shape[0],), d.num_timesteps - 1, dtype=np.int64)
    mean, _, log_variance = d._q_mean_variance(x0, t)               # Ho et al. 2020, Eq. 4
    with no_grad():
        kl = normal_kl(mean, log_variance, 0.0, 0.0)                # Ho et al. 2020, Eq. 5
    return backend.to_numpy(mean_flat(kl).data) / LN2


def calc_bpd_loop(d, model, x0, clip_denoised=True):
    """Every term of the bound (Ho et al. 2020, Eq. 5) for each example of x0, by one draw of
    x_t per step. x0 is checked once; the T steps call the unchecked methods.

    Returns NumPy arrays (bits/dim):
        total_bpd (B,)          L_T + Σ L_t + L_0, the bound on -log2 p(x0) per dim
                                (Ho et al. 2020, Eq. 3)
        prior_bpd (B,)          L_T
        terms_bpd (B, T)        column t holds L_t (column 0 the decoder L_0)
        rate_bpd (B,)           L_1 + … + L_T (Ho et al. 2020, §4.3, Table 4)
        distortion_bpd (B,)     L_0
        xstart_mse, eps_mse (B, T)   errors of x̂0 and ε̂ at each step
    """
    x0 = as_data("x0", x0, d.dtype)
    check_batch("x0", x0, min_ndim=2)
    xp = backend.xp()
    B, T = x0.shape[0], d.num_timesteps
    terms = np.zeros((B, T))
    xstart_mse = np.zeros((B, T))
    eps_mse = np.zeros((B, T))
    for t in reversed(range(T)):
        t_b = xp.full((B,), t, dtype=np.int64)
        noise = backend.rng().standard_normal(x0.shape, dtype=d.dtype)
        x_t = d._q_sample(x0, t_b, noise)                           # Ho et al. 2020, Eq. 4
        p = d._p_mean_variance(model, x_t, t_b, clip_denoised)      # Ho et al. 2020, Eq. 1
        with no_grad():
            vb = vb_terms_bpd(d, p["mean"], p["log_variance"], x0, x_t, t_b)
        terms[:, t] = backend.to_numpy(vb.data)
        xstart_mse[:, t] = backend.to_numpy(mean_flat((p["pred_x0"] - x0) ** 2))
        eps = d._predict_noise_from_start(x_t, t_b, p["pred_x0"])  # ε̂ from the (clipped) x̂0
        eps_mse[:, t] = backend.to_numpy(mean_flat((eps - noise) ** 2))
    prior = _prior_bpd(d, x0)
    return {
        "total_bpd": terms.sum(axis=1) + prior,                     # Ho et al. 2020, Eq. 5
        "prior_bpd": prior,
        "terms_bpd": terms,
        "rate_bpd": terms[:, 1:].sum(axis=1) + prior,
        "distortion_bpd": terms[:, 0],
        "xstart_mse": xstart_mse,
        "eps_mse": eps_mse,
    }
