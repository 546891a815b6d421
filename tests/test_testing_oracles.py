"""minidiff.testing.oracles tested on their own: each closed form against float64 quadrature
(the data are 1-d) or Monte Carlo, and each exact sampler law against the library's samplers.

Tolerances:
  * Quadrature: the trapezoid rule in log space on a grid h = (narrowest width)/20 that covers
    ±12 widths of every component's posterior. Its tolerance is its own error estimate: step
    doubling |Q_h - Q_2h| plus a bound on the cut tails, plus float64 round-off (log2(n) ulps
    for the pairwise sums, |u| ulps for exp(u) at the log joint's size u), never a constant.
  * Monte Carlo: 5 standard errors (P(|Z| > 5) = 6e-7 per check): σ/√N on means, √(p(1-p)/N)
    on probabilities, the sample std of r g over √N on orthogonality residuals E[r g].
  * The sampler laws: assert_normal at 5 standard errors plus atol 1e-8 of round-off: the
    library reconstructs x̂0 with gains up to 1/√ᾱ <= 1e5 (strategies.betas keeps ᾱ >= 1e-10),
    so u |x| 1e5 ~ 1e-10 per step over at most 12 steps is below 1e-8.
"""
import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import minidiff
from minidiff.diffusion import (GaussianDiffusion, ddim_sample_loop, flow_euler_sample,
                                get_beta_schedule)
from minidiff.testing import assert_close, assert_normal, formulas, oracles, strategies

N = 4000                     # draws per hypothesis example of a sampler law
ROUND_OFF = 1e-8             # see the docstring
MIXTURE = oracles.mixture((0.3, 0.7), (-0.5, 0.5), (0.1, 0.2))


@st.composite
def smooth_mixtures(draw):
    """Mixtures without atoms (their density exists), stds in [0.05, 1]."""
    w, m, s = draw(strategies.mixture_data())
    return oracles.mixture(w, m, [max(v, 0.05) for v in s])


def log_prior(data, x0):
    """log Σ_k w_k N(x0; m_k, s_k²) by log-sum-exp over k (finite wherever x0 is): (n,)."""
    w, m, s = (np.asarray(v) for v in data)
    z = (x0[:, None] - m) / s                                       # (n, K)
    log_k = np.log(w) - np.log(s) - 0.5 * math.log(2 * math.pi) - 0.5 * z ** 2
    top = log_k.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(log_k - top).sum(axis=1))


def quadrature(data, a, b, x):
    """The joint p(x0) N(x; a x0, b²) on a grid of x0, in log space: (x0, log joint, f, h),
    f = exp(log joint - its max), so f.max() = 1 and no normaliser underflows.

    Window: component k's posterior is a Gaussian whose mean lies between m_k and x/a and whose
    std is below τ_k = min(s_k, b/a) (a product of two Gaussians), so the window covers ±12 τ_k
    beyond [m_k, x/a] for every k; step h = min τ_k / 20.
    """
    w, m, s = (np.asarray(v) for v in data)
    tau = np.minimum(s, b / a)
    lo = (np.minimum(m, x / a) - 12 * tau).min()
    hi = (np.maximum(m, x / a) + 12 * tau).max()
    h = tau.min() / 20
    # lo + h i, not np.arange(lo, hi, h), whose step (lo + h) - lo is h rounded (2e-14 off)
    x0 = lo + h * np.arange(math.ceil((hi - lo) / h) + 1)           # (n,)
    log_joint = log_prior(data, x0) - 0.5 * ((x - a * x0) / b) ** 2 - math.log(b)
    return x0, log_joint, np.exp(log_joint - log_joint.max()), h


def round_off(x0, log_joint):
    """Relative round-off of a sum over the grid: NumPy's pairwise sums lose log2(n) ulps, and
    exp(u) carries u's rounding, |u| ulps, for exponents u of the size of the log joint at its
    mode (the library's Bayes weights exponentiate numbers of that size too)."""
    eps = np.finfo(np.float64).eps
    return (4 * math.log2(x0.size) + 2 * (abs(log_joint.max()) + 1)) * eps


def trapezoid_error(x0, f, h, integrand):
    """The error of the trapezoid sum of integrand·f, relative to Σ f: step doubling
    (|Q_h - Q_2h|, which bounds Q_h's error where Q_2h's is the larger) plus the tails cut at
    the window's ends (Gaussian tails beyond 12 τ: mass below f_end τ/12 < 2 h f_end)."""
    q_h = (integrand * f).sum() / f.sum()
    q_2h = (integrand * f)[::2].sum() / f[::2].sum()
    tails = 2 * (f[0] + f[-1]) / f.sum() * np.abs(integrand).max()
    return abs(q_h - q_2h) + tails


# ------------------------------------------------------------------ quadrature
@example(oracles.gaussian(0.0, 0.05), 0.99609375, 1.0)     # issue 20: the window missed the mass
@example(oracles.gaussian(0.0, 0.05), 0.99609375, 3.0)     # every weight underflowed: 0/0
@given(smooth_mixtures(), st.floats(1e-4, 0.999), st.floats(-3, 3))
def test_posterior_mean_is_the_quadrature_of_bayes_rule(data, abar, x):
    a, b = math.sqrt(abar), math.sqrt(1 - abar)
    x0, log_joint, f, h = quadrature(data, a, b, x)
    expected = (x0 * f).sum() / f.sum()                # h and the normalisations cancel
    spread = math.sqrt(((x0 - expected) ** 2 * f).sum() / f.sum())     # the posterior's std
    atol = (trapezoid_error(x0, f, h, x0)
            + round_off(x0, log_joint) * (abs(expected) + spread))
    assert_close(oracles.denoise(data, x, a, b), expected, rtol=0, atol=atol,
                 what="E[x0 | x_t]")


@example(oracles.gaussian(0.0, 0.05), 0.99609375, 3.0)
@given(smooth_mixtures(), st.floats(1e-4, 0.999), st.floats(-3, 3))
def test_the_marginal_density_is_the_convolution_by_quadrature(data, abar, x):
    a, b = math.sqrt(abar), math.sqrt(1 - abar)
    x0, log_joint, f, h = quadrature(data, a, b, x)
    log_expected = log_joint.max() + math.log(f.sum() * h / math.sqrt(2 * math.pi))
    rtol = trapezoid_error(x0, f, h, np.ones_like(x0)) + round_off(x0, log_joint)
    betas = np.array([1 - abar])                                  # one step with ᾱ = 1 - β
    got = oracles.pdf(oracles.marginal(betas, 0, data), x)
    assert_close(got / math.exp(log_expected), 1.0, rtol=0, atol=rtol, what="q(x_t) density")


# ------------------------------------------------------------------ Monte Carlo
def normal_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("t", [0, 5, 19])
def test_the_marginal_is_what_the_library_q_sample_draws(t):
    betas = get_beta_schedule("linear", 20, beta_start=1e-3, beta_end=0.3)
    d = GaussianDiffusion(betas, dtype=np.float64)
    rng = np.random.default_rng(t)
    n = 200000
    x_t = d.q_sample(oracles.sample(MIXTURE, (n, 1), rng), np.full(n, t))
    q = oracles.marginal(betas, t, MIXTURE)
    for c in (-1.0, -0.3, 0.0, 0.4, 1.2):
        p = sum(w * normal_cdf((c - m) / s) for w, m, s in zip(*q))
        assert abs((x_t < c).mean() - p) < 5 * math.sqrt(p * (1 - p) / n), (c, p)


def targets(betas, t, x0, eps):
    """x_t and what each parameterisation should predict, written out from the papers."""
    b = np.asarray(betas)
    abar = np.prod(1 - b[:t + 1])
    abar_prev = np.prod(1 - b[:t])
    x_t = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps                # Ho et al. 2020, Eq. 4
    mu = (math.sqrt(abar_prev) * b[t] / (1 - abar) * x0                    # Ho et al. 2020, Eq. 7
          + math.sqrt(1 - b[t]) * (1 - abar_prev) / (1 - abar) * x_t)
    v = math.sqrt(abar) * eps - math.sqrt(1 - abar) * x0                  # Salimans & Ho 2022, §4
    return x_t, {"eps": eps, "x0": x0, "v": v, "mu": mu}


@pytest.mark.parametrize("param", oracles.PARAMETERIZATIONS)
@pytest.mark.parametrize("t", [0, 7, 19])
def test_each_predictor_is_orthogonal_to_functions_of_x_t(param, t):
    """The MMSE predictor f*(x_t) = E[target | x_t] leaves a residual orthogonal to every g(x_t):
    E[(target - f*) g] = 0, for g = 1, x, x², tanh(3x). A predictor that is only right on
    average (the best linear one) fails for g = x² or tanh(3x) on this bimodal data."""
    betas = get_beta_schedule("linear", 20, beta_start=1e-3, beta_end=0.3)
    rng = np.random.default_rng(100 + t)
    n = 400000
    x0, eps = oracles.sample(MIXTURE, n, rng), rng.standard_normal(n)
    x_t, target = targets(betas, t, x0, eps)
    residual = target[param] - oracles.optimal_model(betas, MIXTURE, param)(x_t, t)
    for g in (np.ones_like(x_t), x_t, x_t ** 2, np.tanh(3 * x_t)):
        rg = residual * g
        assert abs(rg.mean()) < 5 * rg.std() / math.sqrt(n), (param, rg.mean())


def test_orthogonality_catches_a_predictor_that_is_only_linear():
    betas = get_beta_schedule("linear", 20, beta_start=1e-3, beta_end=0.3)
    rng = np.random.default_rng(7)
    n = 400000
    x0, eps = oracles.sample(MIXTURE, n, rng), rng.standard_normal(n)
    x_t, target = targets(betas, 7, x0, eps)
    linear = np.polyval(np.polyfit(x_t, x0, 1), x_t)          # the best linear x0-predictor
    rg = (target["x0"] - linear) * np.tanh(3 * x_t)
    assert abs(rg.mean()) > 5 * rg.std() / math.sqrt(n)


@pytest.mark.parametrize("param, convert", [
    ("eps", "predict_start_from_noise"), ("v", "predict_start_from_v"),
    ("mu", "predict_start_from_mean")])
def test_the_predictors_agree_through_the_library_conversions(param, convert):
    """Each predictor, turned into x̂0 by the library's own conversion, is the x0-predictor:
    float64 round-off amplified by at most 1/√ᾱ_T = 30 here (and 1/coef1 <= 1e3 for μ)."""
    betas = get_beta_schedule("linear", 20, beta_start=1e-3, beta_end=0.3)
    d = GaussianDiffusion(betas, dtype=np.float64)
    x_t = np.random.default_rng(3).standard_normal((20, 5)) * 2
    t = np.arange(20)
    pred = oracles.optimal_model(betas, MIXTURE, param)(minidiff.Tensor(x_t), t)
    want = oracles.optimal_model(betas, MIXTURE, "x0")(x_t, t[:, None])
    assert_close(getattr(formulas, convert)(d, x_t, t, pred), want, rtol=0, atol=1e-10, what=param)


# ------------------------------------------------------------------ sampler laws
@given(strategies.betas(max_T=12), strategies.gaussian_data(),
       st.sampled_from(["fixed_large", "fixed_small"]), st.sampled_from(oracles.PARAMETERIZATIONS),
       st.integers(0, 2**31 - 1))
def test_ddpm_law_is_what_the_library_sampler_draws(betas, data, variance, param, seed):
    d = GaussianDiffusion(betas, parameterization=param, variance=variance, dtype=np.float64)
    minidiff.manual_seed(seed)
    x = d.p_sample_loop(oracles.optimal_model(betas, data, param), (N, 1), clip_denoised=False)
    law = oracles.ddpm_output_law(betas, data, variance)
    assert_normal(x, law.mean, law.std, atol=ROUND_OFF, what=f"ddpm {variance} {param}")


@given(st.data(), strategies.betas(max_T=12), strategies.gaussian_data(), st.floats(0, 1),
       st.sampled_from(oracles.PARAMETERIZATIONS), st.integers(0, 2**31 - 1))
def test_ddim_law_is_what_the_library_sampler_draws(data, betas, gauss, eta, param, seed):
    ts = data.draw(strategies.timestep_subsequences(betas.size))
    d = GaussianDiffusion(betas, parameterization=param, dtype=np.float64)
    minidiff.manual_seed(seed)
    x = ddim_sample_loop(d, oracles.optimal_model(betas, gauss, param), (N, 1), timesteps=ts,
                         eta=eta, clip_denoised=False)
    law = oracles.ddim_output_law(betas, gauss, ts, eta)
    assert_normal(x, law.mean, law.std, atol=ROUND_OFF, what=f"ddim eta={eta} {param}")


@given(strategies.gaussian_data(), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_flow_euler_law_is_what_the_library_sampler_draws(data, steps, seed):
    minidiff.manual_seed(seed)
    x = flow_euler_sample(oracles.flow_velocity_model(data), (N, 1), num_steps=steps,
                          dtype=np.float64)
    law = oracles.flow_euler_output_law(data, steps)
    assert_normal(x, law.mean, law.std, atol=ROUND_OFF, what=f"euler {steps} steps")


# ------------------------------------------------------------------ the laws by hand
@given(st.floats(1e-3, 0.999), st.floats(-2, 2), st.floats(0.01, 2))
def test_one_step_laws_by_hand(beta, m, s):
    """T = 1, or DDIM's single jump: the output is x̂0 = m + k (x_T - √ᾱ m) with no noise,
    k = √ᾱ s² / (ᾱ s² + 1 - ᾱ); so mean m (1 - k √ᾱ) and std k for x_T ~ N(0, 1)."""
    abar = 1 - beta
    k = math.sqrt(abar) * s * s / (abar * s * s + 1 - abar)
    want = (m * (1 - k * math.sqrt(abar)), k)
    data = oracles.gaussian(m, s)
    for law in (oracles.ddpm_output_law([beta], data), oracles.ddim_output_law([beta], data, [0]),
                oracles.ddim_output_law([beta], data, [0], eta=1.0)):
        assert_close(np.array(law), np.array(want), rtol=1e-12, atol=1e-15, what="one step")
    assert oracles.flow_euler_output_law(data, 1) == (m, 0.0)          # κ(t = 1) = 0: x̂0 = m


@given(strategies.betas(max_T=30), strategies.gaussian_data())
def test_ddim_with_eta_1_over_every_step_is_ddpm_with_beta_tilde(betas, data):
    every = np.arange(betas.size)
    assert_close(np.array(oracles.ddim_output_law(betas, data, every, eta=1.0)),
                 np.array(oracles.ddpm_output_law(betas, data, "fixed_small")),
                 rtol=1e-9, atol=1e-12, what="DDIM η = 1 vs DDPM β̃")
    assert oracles.ddpm_output_law(betas, data, betas) == oracles.ddpm_output_law(betas, data)


@pytest.mark.parametrize("call, match", [
    (lambda: oracles.mixture((0.5, 0.6), (0, 1), (1, 1)), "sum to 1"),
    (lambda: oracles.mixture((1.0,), (0, 1), (1,)), "one length"),
    (lambda: oracles.gaussian(0.0, -1.0), "stds >= 0"),
    (lambda: oracles.ddpm_output_law([0.1], MIXTURE), "needs one Gaussian, got 2"),
    (lambda: oracles.ddpm_output_law([0.1], oracles.gaussian(0, 1), "big"), "variance: must"),
    (lambda: oracles.ddim_output_law([0.1, 0.2], oracles.gaussian(0, 1), [1, 0]), "timesteps"),
    (lambda: oracles.optimal_model([0.1], MIXTURE, "score"), "parameterization"),
    (lambda: oracles.pdf(oracles.gaussian(0, 0), 0.0), "atoms"),
])
def test_bad_input_gets_one_clear_line(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
