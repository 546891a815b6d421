"""Samplers driven by the exact optimal predictor of analytic data.

For data x0 ~ Σ_k w_k N(m_k, s_k²) (one Gaussian, a two-Gaussian mixture, or atoms when
s_k = 0), E[x0 | x_t] has a closed form, and so has the MMSE ε-predictor
ε*(x_t) = (x_t - √ᾱ_t E[x0 | x_t]) / √(1 - ᾱ_t) (minidiff.testing.oracles.optimal_model).
With it, the samplers should reproduce the data distribution up to the discretisation of time.

Oracles and tolerances:
  * For Gaussian data every sampler is a linear-Gaussian chain, so the exact moments of its
    output follow from a recursion (minidiff.testing.oracles, written from the paper's
    formulas; tests/test_testing_oracles.py checks it independently). The Monte Carlo
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
from minidiff.testing import assert_normal, oracles

N = 20000                    # samples per Monte Carlo test
DISCRETISATION = 0.05        # relative allowance for a finite number of steps (see above)
GAUSS = oracles.gaussian(0.3, 0.5)                                  # N(0.3, 0.5²)
MIXTURE = oracles.mixture((0.3, 0.7), (-0.5, 0.5), (0.1, 0.2))      # 0.3 N(-0.5, 0.1²) + ...
BETAS = get_beta_schedule("cosine", 200)


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_ddpm_on_gaussian_data_matches_exact_moments(variance):
    w, (m,), (s,) = GAUSS
    d = GaussianDiffusion(BETAS, variance=variance, dtype=np.float64)
    x = d.p_sample_loop(oracles.optimal_model(BETAS, GAUSS), (N, 1), clip_denoised=False)
    exact_mean, exact_sd = oracles.ddpm_output_law(BETAS, GAUSS, variance)
    assert_normal(x, exact_mean, exact_sd, sigmas=4, what=variance)    # code == the chain
    assert abs(exact_mean - m) < DISCRETISATION * s                     # chain ≈ the data
    assert abs(exact_sd - s) < DISCRETISATION * s


def test_ddim_on_gaussian_data_matches_exact_moments():
    w, (m,), (s,) = GAUSS
    d = GaussianDiffusion(BETAS, dtype=np.float64)
    x = ddim_sample_loop(d, oracles.optimal_model(BETAS, GAUSS), (N, 1), num_steps=50, eta=0.0,
                         clip_denoised=False)
    exact_mean, exact_sd = oracles.ddim_output_law(BETAS, GAUSS, ddim_timesteps(len(BETAS), 50))
    assert_normal(x, exact_mean, exact_sd, sigmas=4, what="ddim")
    assert abs(exact_mean - m) < DISCRETISATION * s
    assert abs(exact_sd - s) < DISCRETISATION * s


def check_mixture(x):
    w, m, s = MIXTURE
    mean, sd = oracles.moments(MIXTURE)
    n = x.size
    assert abs(x.mean() - mean) < 4 * sd / np.sqrt(n) + DISCRETISATION * sd, x.mean()
    assert abs(x.std() - sd) < 4 * sd / np.sqrt(2 * n) + DISCRETISATION * sd, x.std()
    left = (x < 0).mean()                                # mass of the N(-0.5, 0.1²) mode
    assert abs(left - w[0]) < 4 * np.sqrt(w[0] * w[1] / n) + DISCRETISATION * w[0], left


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_ddpm_on_a_two_gaussian_mixture(variance):
    d = GaussianDiffusion(BETAS, variance=variance, dtype=np.float64)
    check_mixture(d.p_sample_loop(oracles.optimal_model(BETAS, MIXTURE), (N, 1)))


def test_ddim_on_a_two_gaussian_mixture():
    d = GaussianDiffusion(BETAS, dtype=np.float64)
    check_mixture(ddim_sample_loop(d, oracles.optimal_model(BETAS, MIXTURE), (N, 1),
                                   num_steps=50, eta=0.0))


# ------------------------------------------------------------------ one data point
POINT = 0.4


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_on_one_point_returns_the_point(variance, clip):
    minidiff.manual_seed(3)
    betas = get_beta_schedule("linear", 100, beta_end=0.1)
    d = GaussianDiffusion(betas, variance=variance)                    # float32
    x = d.p_sample_loop(oracles.optimal_model(betas, oracles.gaussian(POINT, 0.0)), (64, 3),
                        clip_denoised=clip)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, POINT, rtol=0, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("steps", [1, 7, 100])
def test_ddim_on_one_point_returns_the_point(eta, steps):
    betas = get_beta_schedule("linear", 100, beta_end=0.1)
    d = GaussianDiffusion(betas)
    x = ddim_sample_loop(d, oracles.optimal_model(betas, oracles.gaussian(POINT, 0.0)), (64, 3),
                         num_steps=steps, eta=eta)
    np.testing.assert_allclose(x, POINT, rtol=0, atol=1e-5)
