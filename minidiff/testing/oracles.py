"""Exact answers for diffusion on analytic data, to run and test any sampler with a perfect model.

Data: every coordinate independently x0 ~ Σ_k w_k N(m_k, s_k²), a `Mixture` (one Gaussian with
`gaussian(m, s)`; atoms when s_k = 0). Time is 0-based, as in the library: index t is the
paper's step t+1, and ᾱ[t] = Π_{s<=t} (1 - β_s).

    data = oracles.gaussian(0.3, 0.5)
    model = oracles.optimal_model(betas, data, "eps")        # plugs into any sampler
    law = oracles.ddim_output_law(betas, data, timesteps, eta=0.5)   # law.mean, law.std

What is exact here:
  * q(x_t) (Ho et al. 2020, Eq. 4): the mixture with means √ᾱ m_k, variances ᾱ s_k² + 1 - ᾱ.
  * E[x0 | x_t] by Bayes over the components, hence the MMSE predictors of every
    parameterisation: x0, ε (Ho et al. 2020, Eq. 4 solved for ε), v (Salimans & Ho 2022, §4),
    μ̃ (Ho et al. 2020, Eq. 7); and the flow velocity E[x1 - x0 | x_t] (Lipman et al. 2023).
  * For one Gaussian, every step of DDPM, DDIM and flow-matching Euler with the optimal model
    is affine in x plus independent Gaussian noise, x' = A x + B + σ z, so the law of the
    output is Gaussian and its mean and variance follow step by step in float64:
    mean' = A mean + B, var' = A² var + σ². Samplers run with clip_denoised=False.
"""
from typing import NamedTuple

import numpy as np

from .. import backend
from ..diffusion.schedules import check_betas
from ..tensor import Tensor

PARAMETERIZATIONS = ("eps", "x0", "v", "mu")


class Mixture(NamedTuple):
    """Σ_k weights[k] N(means[k], stds[k]²), per coordinate."""
    weights: tuple
    means: tuple
    stds: tuple


class Normal(NamedTuple):
    mean: float
    std: float


def mixture(weights, means, stds):
    """A checked Mixture: weights > 0 summing to 1, stds >= 0, one of each per component."""
    w, m, s = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (weights, means, stds))
    if not (w.ndim == m.ndim == s.ndim == 1 and w.size == m.size == s.size >= 1):
        raise ValueError(f"mixture: weights, means and stds must be 1-d of one length, got "
                         f"sizes {w.size}, {m.size}, {s.size}")
    if not (np.isfinite(w).all() and np.isfinite(m).all() and np.isfinite(s).all()):
        raise ValueError("mixture: weights, means and stds must be finite")
    if (w <= 0).any() or abs(w.sum() - 1) > 1e-9 or (s < 0).any():
        raise ValueError(f"mixture: weights must be > 0 and sum to 1, stds >= 0; got weights "
                         f"{w.tolist()}, stds {s.tolist()}")
    return Mixture(tuple(w.tolist()), tuple(m.tolist()), tuple(s.tolist()))


def gaussian(mean, std):
    """N(mean, std²) as a one-component Mixture."""
    return mixture((1.0,), (mean,), (std,))


def _arrays(data):
    data = mixture(*data)
    return tuple(np.asarray(a, dtype=np.float64) for a in data)


def _one_gaussian(data, who):
    w, m, s = _arrays(data)
    if w.size != 1:
        raise ValueError(f"{who}: the exact law needs one Gaussian, got {w.size} components")
    return float(m[0]), float(s[0])


def moments(data):
    """The data's mean and standard deviation."""
    w, m, s = _arrays(data)
    mean = (w * m).sum()
    return Normal(float(mean), float(np.sqrt(max((w * (s ** 2 + m ** 2)).sum() - mean ** 2, 0))))


def sample(data, shape, rng):
    """Draws of the data, float64 of the given shape, from a NumPy Generator."""
    w, m, s = _arrays(data)
    k = rng.choice(w.size, size=shape, p=w)
    return m[k] + s[k] * rng.standard_normal(shape)


def pdf(data, x):
    """The data's density at x (float64, elementwise)."""
    w, m, s = _arrays(data)
    if (s == 0).any():
        raise ValueError("pdf: the data has atoms (a std of 0), which have no density")
    x = np.asarray(x, dtype=np.float64)[..., None]
    return (w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))).sum(axis=-1)


# ---------------------------------------------------------------- the schedule, in float64
def alphas_cumprod(betas):
    """(ᾱ, 1 - ᾱ), float64 (T,), through log ᾱ = Σ log(1 - β): exact where ᾱ is near 1."""
    log_abar = np.cumsum(np.log1p(-check_betas(betas)))
    return np.exp(log_abar), -np.expm1(log_abar)


def marginal(betas, t, data):
    """q(x_t) as a Mixture: means √ᾱ_t m_k, stds √(ᾱ_t s_k² + 1 - ᾱ_t) (Ho et al. 2020, Eq. 4)."""
    abar, one_minus = alphas_cumprod(betas)
    w, m, s = _arrays(data)
    return mixture(w, np.sqrt(abar[t]) * m, np.sqrt(abar[t] * s ** 2 + one_minus[t]))


def denoise(data, x, a, b):
    """E[x0 | a x0 + b ε = x] for x0 ~ data, ε ~ N(0, 1): Bayes over the components (float64).
    x, a, b broadcast together; b > 0."""
    w, m, s = _arrays(data)
    x, a, b = (np.asarray(v, dtype=np.float64)[..., None] for v in (x, a, b))  # (..., 1) over k
    var = a ** 2 * s ** 2 + b ** 2                                  # Var(x | component k)
    log_r = np.log(w) - 0.5 * np.log(var) - 0.5 * (x - a * m) ** 2 / var
    r = np.exp(log_r - log_r.max(axis=-1, keepdims=True))
    r = r / r.sum(axis=-1, keepdims=True)                           # p(k | x)
    return (r * (m + a * s ** 2 / var * (x - a * m))).sum(axis=-1)  # Σ_k p(k|x) E[x0 | x, k]


def posterior_mean(betas, t, data, x_t):
    """E[x0 | x_t] under q (Ho et al. 2020, Eq. 4), t an index or an array broadcasting to x_t."""
    abar, one_minus = alphas_cumprod(betas)
    return denoise(data, x_t, np.sqrt(abar[t]), np.sqrt(one_minus[t]))


# ---------------------------------------------------------------- perfect models
def _call(x_t, t):
    """x_t as float64 on the host with t shaped to broadcast against it, and how to return."""
    x = backend.to_numpy(x_t.data if isinstance(x_t, Tensor) else x_t)
    t = np.asarray(backend.to_numpy(t))
    t = t.reshape(t.shape + (1,) * (x.ndim - t.ndim)) if t.ndim else t

    def back(out):
        out = out.astype(x.dtype)
        return backend.xp().asarray(out) if isinstance(x_t, Tensor) else out
    return x.astype(np.float64), t, back


def optimal_model(betas, data, parameterization="eps"):
    """model(x_t, t): the MMSE prediction of ε, x0, v or μ̃ for this data, as GaussianDiffusion
    calls it (x_t a Tensor (B, ...), t an int array (B,)) or on plain arrays (t an int or (B,))."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization: must be one of {PARAMETERIZATIONS}, "
                         f"got {parameterization!r}")
    b = check_betas(betas)
    abar, one_minus = alphas_cumprod(b)
    abar_prev, one_minus_prev = np.append(1.0, abar[:-1]), np.append(0.0, one_minus[:-1])
    data = mixture(*data)

    def model(x_t, t):
        x, t, back = _call(x_t, t)
        a, c = np.sqrt(abar[t]), np.sqrt(one_minus[t])
        x0 = denoise(data, x, a, c)                                 # E[x0 | x_t]
        eps = (x - a * x0) / c                                      # Ho et al. 2020, Eq. 4
        if parameterization == "x0":
            return back(x0)
        if parameterization == "v":
            return back(a * eps - c * x0)                           # Salimans & Ho 2022, §4
        if parameterization == "mu":                                # Ho et al. 2020, Eq. 7
            return back(b[t] * np.sqrt(abar_prev[t]) / one_minus[t] * x0
                        + one_minus_prev[t] * np.sqrt(1 - b[t]) / one_minus[t] * x)
        return back(eps)
    return model


def flow_velocity_model(data):
    """model(x_t, t) = E[x1 - x0 | x_t] = (x_t - E[x0 | x_t]) / t on the straight path
    x_t = (1 - t) x0 + t x1 (Lipman et al. 2023, §4.1), t a float in (0, 1]."""
    data = mixture(*data)

    def model(x_t, t):
        x, t, back = _call(x_t, t)
        return back((x - denoise(data, x, 1 - t, t)) / t)
    return model


# ---------------------------------------------------------------- exact laws of the samplers
def _gain(abar_t, s):
    """k with E[x0 | x_t] = m + k (x_t - √ᾱ m), for N(m, s²) data."""
    return np.sqrt(abar_t) * s ** 2 / (abar_t * s ** 2 + 1 - abar_t)


def ddpm_output_law(betas, data, variance="fixed_large", start=Normal(0.0, 1.0)):
    """The law of Algorithm 2's output (Ho et al. 2020), x_T ~ `start`, with the optimal model
    for Gaussian data, clip_denoised=False. variance: fixed_large (σ_t² = β_t), fixed_small
    (β̃_t) or an array (T,) of σ_t²; no noise is added at index 0, as in the library."""
    m, s = _one_gaussian(data, "ddpm_output_law")
    b = check_betas(betas)
    abar, one_minus = alphas_cumprod(b)
    abar_prev, one_minus_prev = np.append(1.0, abar[:-1]), np.append(0.0, one_minus[:-1])
    if isinstance(variance, str):
        if variance not in ("fixed_large", "fixed_small"):
            raise ValueError(f"variance: must be fixed_large, fixed_small or an array of σ_t², "
                             f"got {variance!r}")
        var_t = b if variance == "fixed_large" else one_minus_prev / one_minus * b
    else:
        var_t = np.asarray(variance, dtype=np.float64)
        if var_t.shape != b.shape or (var_t < 0).any():
            raise ValueError(f"variance: an array of σ_t² >= 0 must have shape {b.shape}")
    mean, var = start.mean, start.std ** 2
    for t in reversed(range(b.size)):
        k = _gain(abar[t], s)
        c1 = np.sqrt(abar_prev[t]) * b[t] / one_minus[t]            # Ho et al. 2020, Eq. 7
        c2 = np.sqrt(1 - b[t]) * one_minus_prev[t] / one_minus[t]   # Ho et al. 2020, Eq. 7
        A, B = c1 * k + c2, c1 * (1 - k * np.sqrt(abar[t])) * m
        sigma2 = var_t[t] if t > 0 else 0.0
        mean, var = A * mean + B, A ** 2 * var + sigma2             # Ho et al. 2020, Alg. 2
    return Normal(float(mean), float(np.sqrt(var)))


def ddim_output_law(betas, data, timesteps, eta=0.0, start=Normal(0.0, 1.0)):
    """The law of DDIM's output (Song et al. 2021, Eq. 12 and 16) over the increasing 0-based
    `timesteps`, x_T ~ `start`, with the optimal model for Gaussian data, clip_denoised=False.
    After the first timestep the step goes to ᾱ = 1, as in the library."""
    m, s = _one_gaussian(data, "ddim_output_law")
    abar, one_minus = alphas_cumprod(betas)
    ts = np.asarray(timesteps)
    if ts.ndim != 1 or ts.size < 1 or (np.diff(ts) <= 0).any() or ts[0] < 0 \
            or ts[-1] >= abar.size:
        raise ValueError(f"timesteps: must increase strictly inside [0, {abar.size - 1}], "
                         f"got {ts.tolist()}")
    mean, var = start.mean, start.std ** 2
    for i in reversed(range(ts.size)):
        a, c = abar[ts[i]], one_minus[ts[i]]
        a_prev, c_prev = (abar[ts[i - 1]], one_minus[ts[i - 1]]) if i > 0 else (1.0, 0.0)
        # σ² = η² (1 - ᾱ')/(1 - ᾱ) (1 - ᾱ/ᾱ'), Song et al. 2021, Eq. 16
        sigma2 = eta ** 2 * c_prev / c * -np.expm1(np.log(a) - np.log(a_prev))
        direction = np.sqrt(max(c_prev - sigma2, 0.0))
        k = _gain(a, s)                                 # x̂0 = k x + (1 - k √ᾱ) m
        A = np.sqrt(a_prev) * k + direction * (1 - np.sqrt(a) * k) / np.sqrt(c)
        B = (np.sqrt(a_prev) - direction * np.sqrt(a) / np.sqrt(c)) * (1 - k * np.sqrt(a)) * m
        mean, var = A * mean + B, A ** 2 * var + sigma2     # Song et al. 2021, Eq. 12
    return Normal(float(mean), float(np.sqrt(var)))


def flow_euler_output_law(data, num_steps, start=Normal(0.0, 1.0)):
    """The law of flow_euler_sample's output (x ← x - Δt v(x, t), t = 1 … Δt) with the exact
    velocity for Gaussian data (Lipman et al. 2023, §4.1)."""
    m, s = _one_gaussian(data, "flow_euler_output_law")
    mean, var, dt = start.mean, start.std ** 2, 1.0 / num_steps
    for k in range(num_steps):
        t = 1.0 - k * dt
        kappa = (1 - t) * s ** 2 / ((1 - t) ** 2 * s ** 2 + t ** 2)    # E[x0|x] = m + κ(x-(1-t)m)
        A = 1 - dt * (1 - kappa) / t
        B = dt * m * (1 - kappa * (1 - t)) / t
        mean, var = A * mean + B, A ** 2 * var
    return Normal(float(mean), float(np.sqrt(var)))
