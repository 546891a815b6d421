"""Formulas of the diffusion papers that the library itself does not need, for the tests.

GaussianDiffusion computes what Algorithms 1 and 2 use, inline, where they use it. The tests
also need the other directions of the same equations, written here once as checked functions
of a GaussianDiffusion `d` and its buffers:

    q_step                     one Markov step x_{t-1} -> x_t      Ho et al. 2020, Eq. 2
    predict_start_from_noise   x̂0 from ε                           Ho et al. 2020, Eq. 15
    predict_noise_from_start   ε from x0                           Ho et al. 2020, Eq. 4
    predict_start_from_mean    x0 from μ̃                           Ho et al. 2020, Eq. 7
    p_mean_from_noise          μ_θ from ε                          Ho et al. 2020, Eq. 11
    get_v, predict_start_from_v, predict_noise_from_v  v and back  Salimans & Ho 2022, §4
    true_bound_eps_weight      the weight of ‖ε - ε_θ‖² in L_{t-1} Ho et al. 2020, Eq. 12

t holds 0-based indices (index t is the paper's step t+1). Each function checks its arrays as
the library's public methods do (finite, of d's dtype, matching shapes, t in range).
"""
import numpy as np

from .. import backend
from ..diffusion._checks import as_batch, as_timesteps, check_same_shape
from ..diffusion.gaussian_diffusion import extract


def _x_t_and(d, name, a, x_t, t):
    """x_t, its timesteps and a second array of x_t's shape, checked: (x_t, t, a)."""
    x_t, a = as_batch("x_t", x_t, d.dtype), as_batch(name, a, d.dtype)
    check_same_shape("x_t", x_t, name, a)
    return x_t, as_timesteps(t, d.num_timesteps, x_t.shape[0]), a


def _buffer(d, values):
    """A float64 per-step array as a buffer of d's dtype, like the class's own."""
    return backend.xp().asarray(values, dtype=d.dtype)


def q_step(d, x_prev, t, noise=None):
    """One Markov transition x_t = √(1 - β_t) x_{t-1} + √β_t ε (Ho et al. 2020, Eq. 2).

    0-based: index t applies β[t], the paper's β_{t+1}, taking x_t to x_{t+1} in the paper's
    numbering. Iterating q_step over t = 0 … k equals q_sample(x0, k) in distribution.
    """
    x_prev = as_batch("x_prev", x_prev, d.dtype)
    t = as_timesteps(t, d.num_timesteps, x_prev.shape[0])
    noise = (backend.rng().standard_normal(x_prev.shape, dtype=d.dtype) if noise is None
             else as_batch("noise", noise, d.dtype, like_name="x_prev", like=x_prev))
    sqrt_alphas = _buffer(d, np.sqrt(1.0 - d.betas_float64))
    sqrt_betas = _buffer(d, np.sqrt(d.betas_float64))
    return (x_prev * extract(sqrt_alphas, t, x_prev.shape)             # Ho et al. 2020, Eq. 2
            + noise * extract(sqrt_betas, t, x_prev.shape))


def predict_start_from_noise(d, x_t, t, eps):
    """x̂0 = (x_t - √(1 - ᾱ_t) ε) / √ᾱ_t (Ho et al. 2020, Eq. 15)."""
    x_t, t, eps = _x_t_and(d, "eps", eps, x_t, t)
    return (x_t * extract(d.sqrt_recip_alphas_cumprod, t, x_t.shape)
            - eps * extract(d.sqrt_recipm1_alphas_cumprod, t, x_t.shape))


def predict_noise_from_start(d, x_t, t, x0):
    """ε = (x_t - √ᾱ_t x0) / √(1 - ᾱ_t) (Ho et al. 2020, Eq. 4 solved for ε)."""
    x_t, t, x0 = _x_t_and(d, "x0", x0, x_t, t)
    return ((x_t * extract(d.sqrt_recip_alphas_cumprod, t, x_t.shape) - x0)
            / extract(d.sqrt_recipm1_alphas_cumprod, t, x_t.shape))


def predict_start_from_mean(d, x_t, t, mean):
    """x0 = (μ̃ - coef2 · x_t) / coef1 (Ho et al. 2020, Eq. 7 solved for x0)."""
    x_t, t, mean = _x_t_and(d, "mean", mean, x_t, t)
    return ((mean - x_t * extract(d.posterior_mean_coef2, t, x_t.shape))
            / extract(d.posterior_mean_coef1, t, x_t.shape))


def p_mean_from_noise(d, x_t, t, eps):
    """μ_θ = (x_t - β_t/√(1 - ᾱ_t) · ε) / √α_t (Ho et al. 2020, Eq. 11; with the true ε it is
    μ̃_t, Ho et al. 2020, Eq. 10)."""
    x_t, t, eps = _x_t_and(d, "eps", eps, x_t, t)
    return ((x_t - eps * extract(d.eps_coef, t, x_t.shape))
            * extract(d.recip_sqrt_alphas, t, x_t.shape))


def get_v(d, x0, t, noise):
    """v = √ᾱ_t ε - √(1 - ᾱ_t) x0 (Salimans & Ho 2022, §4)."""
    x0, noise = as_batch("x0", x0, d.dtype), as_batch("noise", noise, d.dtype)
    check_same_shape("x0", x0, "noise", noise)
    t = as_timesteps(t, d.num_timesteps, x0.shape[0])
    return (noise * extract(d.sqrt_alphas_cumprod, t, x0.shape)
            - x0 * extract(d.sqrt_one_minus_alphas_cumprod, t, x0.shape))


def predict_start_from_v(d, x_t, t, v):
    """x0 = √ᾱ_t x_t - √(1 - ᾱ_t) v (Salimans & Ho 2022, §4)."""
    x_t, t, v = _x_t_and(d, "v", v, x_t, t)
    return (x_t * extract(d.sqrt_alphas_cumprod, t, x_t.shape)
            - v * extract(d.sqrt_one_minus_alphas_cumprod, t, x_t.shape))


def predict_noise_from_v(d, x_t, t, v):
    """ε = √(1 - ᾱ_t) x_t + √ᾱ_t v (Salimans & Ho 2022, §4)."""
    x_t, t, v = _x_t_and(d, "v", v, x_t, t)
    return (x_t * extract(d.sqrt_one_minus_alphas_cumprod, t, x_t.shape)
            + v * extract(d.sqrt_alphas_cumprod, t, x_t.shape))


def true_bound_eps_weight(d, t):
    """β_t² / (2σ_t² α_t (1 - ᾱ_t)), the weight of ‖ε - ε_θ‖² in L_{t-1} (Ho et al. 2020,
    Eq. 12), which L_simple (Ho et al. 2020, Eq. 14) sets to 1. σ_t² is d's fixed variance."""
    t = backend.xp().asarray(t)
    t = as_timesteps(t, d.num_timesteps, t.shape[0] if t.ndim == 1 else -1)
    if d.variance == "learned_range":
        raise ValueError(f"true_bound_eps_weight: needs a fixed variance, got {d.variance!r}")
    log_variance = (d.large_log_variance if d.variance == "fixed_large"
                    else d.posterior_log_variance_clipped)
    sigma2 = backend.xp().exp(log_variance[t])
    alphas = _buffer(d, 1.0 - d.betas_float64)
    return d.betas[t] ** 2 / (2.0 * sigma2 * alphas[t] * (1.0 - d.alphas_cumprod[t]))
