"""Samplers driven by the exact optimal predictor of analytic data.

For data x0 ~ Σ_k w_k N(m_k, s_k²) (one Gaussian, a two-Gaussian mixture, or atoms when
s_k = 0), E[x0 | x_t] has a closed form, and so has the MMSE ε-predictor
ε*(x_t) = (x_t - √ᾱ_t E[x0 | x_t]) / √(1 - ᾱ_t). With it, the samplers should reproduce the
data distribution up to the discretisation of time.

Oracles and tolerances:
  * For Gaussian data every sampler is a linear-Gaussian chain, so the exact moments of its
    output follow from a recursion written here from the paper's formulas. The Monte Carlo
    moments must match them within 4 standard errors (σ/√N for the mean, σ/√(2N) for the
    standard deviation), so a correct sampler fails with probability < 1e-4.
  * The exact moments, in turn, must match the data within the discretisation error of a
    finite T: 5% of s for T = 200 steps or 50 DDIM steps (the recursion gives +0.4% for
    σ² = β, -1.9% for σ² = β̃ and -3.0% for DDIM; with note 002's σ_t² z it gives -89%).
  * The mixture has no exact recursion: there the sample mean, standard deviation and the
    mass of the left component must match the data within 4 standard errors plus the same
    5% discretisation allowance.
"""
import numpy as np
import pytest

import minidiff
from minidiff.diffusion import (GaussianDiffusion, ddim_sample_loop, ddim_timesteps,
                                get_beta_schedule)

N = 20000                    # samples per Monte Carlo test
DISCRETISATION = 0.05        # relative allowance for a finite number of steps (see above)
GAUSS = ((1.0,), (0.3,), (0.5,))                       # w, m, s: N(0.3, 0.5²)
MIXTURE = ((0.3, 0.7), (-0.5, 0.5), (0.1, 0.2))        # 0.3 N(-0.5, 0.1²) + 0.7 N(0.5, 0.2²)


def posterior_mean_x0(x, abar, w, m, s):
    """E[x0 | x_t = x] for x0 ~ Σ_k w_k N(m_k, s_k²), x_t = √ᾱ x0 + √(1-ᾱ) ε (float64)."""
    w, m, s = (np.asarray(a, dtype=np.float64) for a in (w, m, s))
    x, abar = x[..., None], abar[..., None]                       # (..., 1): broadcast over k
    var = abar * s ** 2 + 1 - abar                                 # Var(x_t | k)
    log_r = np.log(w) - 0.5 * np.log(var) - 0.5 * (x - np.sqrt(abar) * m) ** 2 / var
    r = np.exp(log_r - log_r.max(axis=-1, keepdims=True))
    r /= r.sum(axis=-1, keepdims=True)                             # p(k | x_t)
    mean_k = m + np.sqrt(abar) * s ** 2 / var * (x - np.sqrt(abar) * m)   # E[x0 | x_t, k]
    return (r * mean_k).sum(axis=-1)


def optimal_eps_model(betas, w, m, s):
    """model(x_t, t) returning the MMSE ε for the data Σ w_k N(m_k, s_k²)."""
    abar_all = np.cumprod(1 - np.asarray(betas, dtype=np.float64))

    def model(x_t, t):
        x = x_t.data.astype(np.float64)
        abar = abar_all[t].reshape((-1,) + (1,) * (x.ndim - 1))
        x0 = posterior_mean_x0(x, np.broadcast_to(abar, x.shape), w, m, s)
        return ((x - np.sqrt(abar) * x0) / np.sqrt(1 - abar)).astype(x_t.dtype)
    return model


def mixture_moments(w, m, s):
    w, m, s = (np.asarray(a) for a in (w, m, s))
    mean = (w * m).sum()
    return mean, np.sqrt((w * (s ** 2 + m ** 2)).sum() - mean ** 2)


# ------------------------------------------------------------------ exact Gaussian recursions
def ddpm_moments(betas, m, s, variance):
    """Mean and sd of Alg. 2's output for N(m, s²) data and the optimal predictor."""
    b = np.asarray(betas, dtype=np.float64)
    abar = np.cumprod(1 - b)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    mean, var = 0.0, 1.0                                           # x_T ~ N(0, 1)
    for t in reversed(range(len(b))):
        k = np.sqrt(abar[t]) * s ** 2 / (abar[t] * s ** 2 + 1 - abar[t])  # E[x0|x] = m + k(x - √ᾱm)
        c1 = np.sqrt(abar_prev[t]) * b[t] / (1 - abar[t])          # Eq. 7
        c2 = np.sqrt(1 - b[t]) * (1 - abar_prev[t]) / (1 - abar[t])  # Eq. 7
        A, B = c1 * k + c2, c1 * (m - k * np.sqrt(abar[t]) * m)
        beta_tilde = (1 - abar_prev[t]) / (1 - abar[t]) * b[t]
        sigma2 = 0.0 if t == 0 else (b[t] if variance == "fixed_large" else beta_tilde)
        mean, var = A * mean + B, A ** 2 * var + sigma2            # Alg. 2, line 4
    return mean, np.sqrt(var)


def ddim_moments(betas, m, s, timesteps):
    """Mean and sd of DDIM's (η = 0) output for N(m, s²) data and the optimal predictor."""
    abar_all = np.cumprod(1 - np.asarray(betas, dtype=np.float64))
    abar_seq = abar_all[timesteps]
    mean, var = 0.0, 1.0
    for i in reversed(range(len(timesteps))):
        abar, abar_prev = abar_seq[i], (abar_seq[i - 1] if i > 0 else 1.0)
        k = np.sqrt(abar) * s ** 2 / (abar * s ** 2 + 1 - abar)
        # x̂0 = m + k(x - √ᾱ m); ε̂ = (x - √ᾱ x̂0)/√(1-ᾱ); x' = √ᾱ' x̂0 + √(1-ᾱ') ε̂ (DDIM Eq. 12)
        r = np.sqrt(1 - abar_prev) / np.sqrt(1 - abar)
        A = np.sqrt(abar_prev) * k + r * (1 - np.sqrt(abar) * k)
        B = (np.sqrt(abar_prev) - r * np.sqrt(abar)) * (m - k * np.sqrt(abar) * m)
        mean, var = A * mean + B, A ** 2 * var
    return mean, np.sqrt(var)


def check_moments(x, mean, sd, what):
    n = x.size
    assert abs(x.mean() - mean) < 4 * sd / np.sqrt(n), (what, x.mean(), mean)
    assert abs(x.std() - sd) < 4 * sd / np.sqrt(2 * n), (what, x.std(), sd)


BETAS = get_beta_schedule("cosine", 200)


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_ddpm_on_gaussian_data_matches_exact_moments(variance):
    w, (m,), (s,) = GAUSS
    d = GaussianDiffusion(BETAS, variance=variance, dtype=np.float64)
    x = d.p_sample_loop(optimal_eps_model(BETAS, *GAUSS), (N, 1), clip_denoised=False)
    exact_mean, exact_sd = ddpm_moments(BETAS, m, s, variance)
    check_moments(x, exact_mean, exact_sd, variance)                    # code == the chain
    assert abs(exact_mean - m) < DISCRETISATION * s                     # chain ≈ the data
    assert abs(exact_sd - s) < DISCRETISATION * s


def test_ddim_on_gaussian_data_matches_exact_moments():
    w, (m,), (s,) = GAUSS
    d = GaussianDiffusion(BETAS, dtype=np.float64)
    x = ddim_sample_loop(d, optimal_eps_model(BETAS, *GAUSS), (N, 1), num_steps=50, eta=0.0,
                         clip_denoised=False)
    exact_mean, exact_sd = ddim_moments(BETAS, m, s, ddim_timesteps(len(BETAS), 50))
    check_moments(x, exact_mean, exact_sd, "ddim")
    assert abs(exact_mean - m) < DISCRETISATION * s
    assert abs(exact_sd - s) < DISCRETISATION * s


def check_mixture(x):
    w, m, s = MIXTURE
    mean, sd = mixture_moments(*MIXTURE)
    n = x.size
    assert abs(x.mean() - mean) < 4 * sd / np.sqrt(n) + DISCRETISATION * sd, x.mean()
    assert abs(x.std() - sd) < 4 * sd / np.sqrt(2 * n) + DISCRETISATION * sd, x.std()
    left = (x < 0).mean()                                # mass of the N(-0.5, 0.1²) mode
    assert abs(left - w[0]) < 4 * np.sqrt(w[0] * w[1] / n) + DISCRETISATION * w[0], left


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_ddpm_on_a_two_gaussian_mixture(variance):
    d = GaussianDiffusion(BETAS, variance=variance, dtype=np.float64)
    check_mixture(d.p_sample_loop(optimal_eps_model(BETAS, *MIXTURE), (N, 1)))


def test_ddim_on_a_two_gaussian_mixture():
    d = GaussianDiffusion(BETAS, dtype=np.float64)
    check_mixture(ddim_sample_loop(d, optimal_eps_model(BETAS, *MIXTURE), (N, 1),
                                   num_steps=50, eta=0.0))


# ------------------------------------------------------------------ one data point
POINT = 0.4


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_on_one_point_returns_the_point(variance, clip):
    minidiff.manual_seed(3)
    betas = get_beta_schedule("linear", 100, beta_end=0.1)
    d = GaussianDiffusion(betas, variance=variance)                    # float32
    x = d.p_sample_loop(optimal_eps_model(betas, (1.0,), (POINT,), (0.0,)), (64, 3),
                        clip_denoised=clip)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, POINT, rtol=0, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("steps", [1, 7, 100])
def test_ddim_on_one_point_returns_the_point(eta, steps):
    betas = get_beta_schedule("linear", 100, beta_end=0.1)
    d = GaussianDiffusion(betas)
    x = ddim_sample_loop(d, optimal_eps_model(betas, (1.0,), (POINT,), (0.0,)), (64, 3),
                         num_steps=steps, eta=eta)
    np.testing.assert_allclose(x, POINT, rtol=0, atol=1e-5)
