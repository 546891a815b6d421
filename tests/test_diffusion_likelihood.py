"""normal_kl, the discretized Gaussian decoder (Eq. 13), and bits/dim (Eq. 5).

Oracles: numerical integration of the KL on a fine grid; Φ from math.erf; float64 central
differences for gradients; closed forms of L_T and L_0 for one-point data; and the entropy of
discrete data, which the bound approaches from above as T grows.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff.diffusion import (GaussianDiffusion, approx_standard_normal_cdf,
                                discretized_gaussian_log_likelihood, get_beta_schedule,
                                normal_kl)
from minidiff.testing import gradcheck, oracles

GRID = np.arange(256) / 127.5 - 1.0                  # the 256 data values scaled to [-1, 1]
CDF_APPROX_ERROR = 1.8e-4    # max |tanh approximation - Φ| over the real line, measured below


def phi(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


means = st.floats(-2, 2)
logvars = st.floats(-4, 2)


# ------------------------------------------------------------------ normal_kl
@given(means, logvars, means, logvars)
def test_kl_matches_numerical_integration(m1, lv1, m2, lv2):
    s1 = math.exp(0.5 * lv1)
    x = np.linspace(m1 - 12 * s1, m1 + 12 * s1, 200001)
    log_p = -0.5 * (x - m1) ** 2 / math.exp(lv1) - 0.5 * lv1 - 0.5 * math.log(2 * math.pi)
    log_q = -0.5 * (x - m2) ** 2 / math.exp(lv2) - 0.5 * lv2 - 0.5 * math.log(2 * math.pi)
    integral = np.trapezoid(np.exp(log_p) * (log_p - log_q), x)
    got = normal_kl(np.float64(m1), np.float64(lv1), np.float64(m2), np.float64(lv2)).item()
    assert got == pytest.approx(integral, rel=1e-6, abs=1e-9)


@given(means, logvars, means, logvars)
def test_kl_is_nonnegative_and_zero_only_for_equal_gaussians(m1, lv1, m2, lv2):
    kl = normal_kl(np.float64(m1), np.float64(lv1), np.float64(m2), np.float64(lv2)).item()
    assert kl >= 0
    assert normal_kl(np.float64(m1), np.float64(lv1), np.float64(m1),
                     np.float64(lv1)).item() == 0.0
    # The KL splits into a mean part ½(Δm)²/σ2² and a variance part ½(r - 1 - log r) with
    # r = σ1²/σ2²; both are >= 0, and zero only at Δm = 0 and r = 1.
    r = math.exp(lv1 - lv2)
    split = 0.5 * (m1 - m2) ** 2 * math.exp(-lv2) + 0.5 * (r - 1 - math.log(r))
    assert kl == pytest.approx(split, rel=1e-9, abs=1e-12)
    if abs(m1 - m2) > 1e-3 or abs(lv1 - lv2) > 1e-3:
        assert kl > 0


def test_kl_gradients():
    rng = np.random.default_rng(0)
    gradcheck(normal_kl, rng.standard_normal(5), rng.standard_normal(5),
              rng.standard_normal(5), rng.standard_normal(5))


# ------------------------------------------------------------------ the decoder
def test_approx_cdf_is_close_to_erf():
    x = np.linspace(-8, 8, 20001)
    exact = np.array([phi(v) for v in x])
    err = np.abs(approx_standard_normal_cdf(x).numpy() - exact)
    assert err.max() <= CDF_APPROX_ERROR, err.max()
    assert err.max() > CDF_APPROX_ERROR / 2      # it is an approximation, not erf itself


@given(st.floats(-1.5, 1.5), st.floats(-7, 1))
def test_decoder_probabilities_over_the_256_bins_sum_to_one(mean, log_scale):
    log_p = discretized_gaussian_log_likelihood(GRID[None, :], np.full((1, 256), mean),
                                                np.full((1, 256), log_scale)).numpy()
    # Neighbouring bins share their edges, so the masses telescope to 1; each clamp at 1e-12
    # can add at most 1e-12.
    assert abs(np.exp(log_p).sum() - 1.0) < 1e-9 + 256e-12


@given(st.floats(-1.2, 1.2), st.floats(-6, 0))
def test_decoder_bin_masses_match_erf(mean, log_scale):
    """Eq. 13: the mass of each bin [x - 1/255, x + 1/255], the edge bins open to ±∞."""
    sd = math.exp(log_scale)
    lo = [-math.inf] + list(GRID[1:] - 1 / 255)
    hi = list(GRID[:-1] + 1 / 255) + [math.inf]
    exact = np.array([(phi((h - mean) / sd) if h < math.inf else 1.0)
                      - (phi((l - mean) / sd) if l > -math.inf else 0.0)
                      for l, h in zip(lo, hi)])
    got = np.exp(discretized_gaussian_log_likelihood(
        GRID[None, :], np.full((1, 256), mean), np.full((1, 256), log_scale)).numpy()[0])
    np.testing.assert_allclose(got, exact, rtol=0, atol=2 * CDF_APPROX_ERROR + 1e-12)


def test_decoder_gradients():
    rng = np.random.default_rng(1)
    x = GRID[[0, 3, 100, 128, 200, 255]][None, :]
    means = x + 0.02 * rng.standard_normal(x.shape)
    log_scales = np.full(x.shape, -3.0) + 0.3 * rng.standard_normal(x.shape)
    gradcheck(lambda m, s: discretized_gaussian_log_likelihood(x, m, s), means, log_scales,
              atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ bits per dim
def test_prior_bpd_is_the_closed_form_kl_in_bits():
    d = GaussianDiffusion(get_beta_schedule("linear", 50, beta_end=0.1), dtype=np.float64)
    x0 = np.array([[0.5, -1.0, 0.0], [1.0, 1.0, 1.0]])
    abar = np.prod(1 - d.betas_float64)
    kl = 0.5 * (-np.log(1 - abar) - 1 + (1 - abar) + abar * x0 ** 2)   # KL(N(√ᾱx0, 1-ᾱ)‖N(0,1))
    np.testing.assert_allclose(d.prior_bpd(x0), kl.mean(axis=1) / math.log(2), rtol=1e-10)


def test_bpd_of_one_point_is_prior_plus_decoder_in_closed_form():
    """One-point data and σ_t² = β̃_t: p_θ equals q's posterior, so every L_t (t >= 1) is 0
    and the bound is L_T + L_0. L_0 is -log2 of the bin mass of N(c, β̃ at index 1)."""
    betas = get_beta_schedule("linear", 200, beta_end=0.05)
    d = GaussianDiffusion(betas, variance="fixed_small", dtype=np.float64)
    c = GRID[170]
    x0 = np.full((8, 2), c)
    out = d.calc_bpd_loop(oracles.optimal_model(betas, oracles.gaussian(c, 0.0)), x0)
    b = np.asarray(betas)
    abar = np.cumprod(1 - b)
    sd = math.sqrt((1 - abar[0]) / (1 - abar[1]) * b[1])                # √β̃ of index 1
    l0 = -math.log2(phi(1 / 255 / sd) - phi(-1 / 255 / sd))
    lt = 0.5 * (-math.log(1 - abar[-1]) - 1 + (1 - abar[-1]) + abar[-1] * c * c) / math.log(2)
    np.testing.assert_allclose(out["terms_bpd"][:, 1:], 0.0, atol=1e-9)
    np.testing.assert_allclose(out["distortion_bpd"], l0, atol=3 * CDF_APPROX_ERROR)
    np.testing.assert_allclose(out["prior_bpd"], lt, rtol=1e-9)
    np.testing.assert_allclose(out["total_bpd"], lt + l0, atol=3 * CDF_APPROX_ERROR)
    np.testing.assert_allclose(out["rate_bpd"] + out["distortion_bpd"], out["total_bpd"],
                               rtol=1e-12)
    assert out["xstart_mse"].max() < 1e-20 and out["eps_mse"].shape == (8, 200)


def test_bpd_approaches_the_entropy_of_discrete_data():
    """Four atoms on the grid with entropy H bits. The bound is >= the model's NLL >= H, and
    with the optimal predictor its gap to H is the discretisation of time, which shrinks as
    T grows. Tolerance: 4 standard errors of the Monte Carlo mean below H; at T = 1000 the
    gap must be under 0.1 bit (measured 0.03), and smaller than at T = 200 (measured 0.23)."""
    atoms, probs = GRID[[10, 100, 128, 250]], np.array([0.1, 0.2, 0.3, 0.4])
    H = -(probs * np.log2(probs)).sum()
    x0 = np.random.default_rng(1).choice(atoms, size=(2000, 1), p=probs)
    gaps = {}
    for T, beta_end in [(200, 0.1), (1000, 0.02)]:
        betas = get_beta_schedule("linear", T, beta_start=1e-6, beta_end=beta_end)
        d = GaussianDiffusion(betas, variance="fixed_small", dtype=np.float64)
        model = oracles.optimal_model(betas, oracles.mixture(probs, atoms, 0 * probs))
        total = d.calc_bpd_loop(model, x0)["total_bpd"]
        se = total.std() / np.sqrt(total.size)
        assert total.mean() > H - 4 * se, (T, total.mean(), H)
        gaps[T] = total.mean() - H
    assert gaps[1000] < 0.1, gaps
    assert gaps[1000] < gaps[200], gaps
