"""The forward process q, its posterior, and the conversions between ε, x0, μ and v.

Oracles: the iterated Markov chain (means multiply, variances add), Monte Carlo of q_step,
Bayes conditioning of the joint Gaussian (x_{t-1}, x_t) | x0, the product of two Gaussians,
and the paper's formulas written out in the tests. All in float64; index t of an array is the
paper's step t+1.
"""
from decimal import Decimal, getcontext

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minidiff
from minidiff.diffusion import GaussianDiffusion, get_beta_schedule
from minidiff.testing import formulas, strategies

EPS64 = 1e-12          # float64 round-off allowance, scaled by each formula's conditioning


def assert_within(actual, expected, tol):
    """|actual - expected| <= tol element by element (tol broadcasts); prints the worst."""
    err = np.abs(actual - expected)
    tol = np.broadcast_to(tol, err.shape)
    i = np.unravel_index(np.argmax(err - tol), err.shape)
    assert (err <= tol).all(), f"at {i}: expected {expected[i]!r}, got {actual[i]!r}, " \
                               f"error {err[i]:.3g} > tolerance {tol[i]:.3g}"


@st.composite
def problems(draw, max_T=100):
    """A float64 diffusion, a batch x0 in [-1, 1], noise, and timesteps t (0-based)."""
    d = GaussianDiffusion(draw(strategies.betas(max_T=max_T)), dtype=np.float64)
    B, D = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    x0 = draw(hnp.arrays(np.float64, (B, D), elements=st.floats(-1, 1)))
    noise = draw(hnp.arrays(np.float64, (B, D), elements=st.floats(-3, 3)))
    t = np.array(draw(st.lists(st.integers(0, d.num_timesteps - 1), min_size=B, max_size=B)))
    return d, x0, noise, t


def paper(d, t):
    """β_t, α_t, ᾱ_t, ᾱ_{t-1}, 1 - ᾱ_t and 1 - ᾱ_{t-1} at 0-based index t, shaped (B, 1).

    Recomputed from β with 40-digit decimals, so that 1 - ᾱ_t keeps its digits even when
    β_1 is tiny (1 - ∏(1 - β) in float64 would lose them to cancellation).
    """
    getcontext().prec = 40
    abar, abars = Decimal(1), []
    for beta in d.betas_float64:
        abar *= 1 - Decimal(float(beta))
        abars.append(abar)
    abars_prev = [Decimal(1)] + abars[:-1]
    col = (lambda values: np.array([float(values[i]) for i in t])[:, None])
    b = d.betas_float64[t][:, None]
    return (b, 1 - b, col(abars), col(abars_prev), col([1 - v for v in abars]),
            col([1 - v for v in abars_prev]))


# ------------------------------------------------------------------ forward process
@given(problems())
def test_closed_form_equals_the_iterated_chain(problem):
    d, x0, _, t = problem
    mean, var, log_var = d.q_mean_variance(x0, t)
    for i in range(len(t)):                   # Eq. 2 step by step: means multiply, variances add
        m, v = x0[i], 0.0
        for k in range(t[i] + 1):
            a = 1 - d.betas_float64[k]
            m, v = np.sqrt(a) * m, a * v + d.betas_float64[k]
        np.testing.assert_allclose(mean[i], m, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(var[i, 0], v, rtol=1e-10)
        np.testing.assert_allclose(log_var[i, 0], np.log(v), rtol=1e-9, atol=1e-12)


def test_q_variance_keeps_its_digits_when_beta_is_tiny():
    """1 - ᾱ for β_1 = 1e-9 is β_1 itself; computed as 1 - ᾱ it would keep 8 of 16 digits
    (strategies.betas' hostile schedules found this)."""
    d = GaussianDiffusion(np.array([1e-9, 1e-9]), dtype=np.float64)
    var = d.q_mean_variance(np.zeros((2, 1)), np.array([0, 1]))[1][:, 0]
    np.testing.assert_allclose(var, [1e-9, 1e-9 * (2 - 1e-9)], rtol=1e-15)


@pytest.mark.parametrize("t", [0, 7, 29])
def test_iterated_q_step_matches_q_sample_by_monte_carlo(t):
    """Both chains, N draws each, against the closed form: 4 standard errors on the mean
    (σ/√N) and on the variance (σ²√(2/N)), so a correct sampler fails with p < 1e-4."""
    d = GaussianDiffusion(get_beta_schedule("linear", 30, beta_start=0.01, beta_end=0.2),
                          dtype=np.float64)
    N = 20000
    x0 = np.full((N, 1), 0.7)
    tt = np.full(N, t)
    x = x0
    for k in range(t + 1):
        x = formulas.q_step(d, x, np.full(N, k))                             # Eq. 2
    direct = d.q_sample(x0, tt)                                    # Eq. 4
    abar = np.prod(1 - d.betas_float64[: t + 1])
    om = 1 - abar                                                  # β >= 0.01: no cancellation
    for sample in (x, direct):
        assert abs(sample.mean() - np.sqrt(abar) * 0.7) < 4 * np.sqrt(om / N)
        assert abs(sample.var() - om) < 4 * om * np.sqrt(2 / N)


@given(problems())
def test_q_sample_is_the_reparameterised_closed_form(problem):
    d, x0, noise, t = problem
    _, _, abar, _, om, _ = paper(d, t)
    expected = np.sqrt(abar) * x0 + np.sqrt(om) * noise            # Eq. 4
    np.testing.assert_allclose(d.q_sample(x0, t, noise), expected, rtol=1e-12, atol=1e-14)
    b, a, _, _, _, _ = paper(d, t)
    np.testing.assert_allclose(formulas.q_step(d, x0, t, noise),
                               np.sqrt(a) * x0 + np.sqrt(b) * noise,
                               rtol=1e-12, atol=1e-14)                # Eq. 2


# ------------------------------------------------------------------ posterior
@given(problems())
def test_posterior_is_bayes_conditioning_of_the_joint_gaussian(problem):
    d, x0, x_t, t = problem
    # (x_{t-1}, x_t) | x0 is jointly Gaussian: x_{t-1} ~ N(√ᾱ_{t-1} x0, 1 - ᾱ_{t-1}) and
    # x_t = √α_t x_{t-1} + √β_t ε, so Cov = √α_t (1 - ᾱ_{t-1}), Var(x_t) = 1 - ᾱ_t. Conditioning
    # subtracts two nearly equal numbers when β_t is tiny, so it runs in 40-digit decimals: in
    # float64 this oracle itself was off by 8e-8 relative at a variance of 1e-9.
    getcontext().prec = 40
    abar = [Decimal(1)]                                             # ᾱ_{t-1} at index t
    for beta in d.betas_float64:
        abar.append(abar[-1] * (1 - Decimal(float(beta))))
    mean, var = np.empty_like(x0), np.empty((len(t), 1))                # var: (B, 1)
    for i, s in enumerate(t):
        a, om, om_prev = 1 - abar[s + 1] / abar[s], 1 - abar[s + 1], 1 - abar[s]
        cov = (1 - a).sqrt() * om_prev
        var[i, 0] = float(om_prev - cov * cov / om)
        for j in range(x0.shape[1]):
            x0_, xt_ = Decimal(float(x0[i, j])), Decimal(float(x_t[i, j]))
            mean[i, j] = float(abar[s].sqrt() * x0_ + cov / om * (xt_ - abar[s + 1].sqrt() * x0_))
    got_mean, got_var, got_log_var = d.q_posterior_mean_variance(x0, x_t, t)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_var, var, rtol=1e-12, atol=1e-15)
    inner = t > 0
    np.testing.assert_allclose(got_log_var[inner], np.log(var[inner]), rtol=1e-12, atol=1e-12)


@given(problems())
def test_posterior_is_the_product_of_two_gaussians(problem):
    d, x0, x_t, t = problem
    if d.num_timesteps == 1:
        return                                                     # no index >= 1
    t = np.maximum(t, 1)                        # at index 0, 1 - ᾱ_{t-1} = 0: x_{t-1} = x0
    b, a, _, abar_prev, _, om_prev = paper(d, t)
    # N(x_{t-1}; x_t/√α_t, β_t/α_t) · N(x_{t-1}; √ᾱ_{t-1} x0, 1 - ᾱ_{t-1})
    v1, m1 = b / a, x_t / np.sqrt(a)
    v2, m2 = om_prev, np.sqrt(abar_prev) * x0
    var = 1 / (1 / v1 + 1 / v2)
    mean = var * (m1 / v1 + m2 / v2)
    got_mean, got_var, _ = d.q_posterior_mean_variance(x0, x_t, t)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(got_var, var, rtol=1e-8)


def test_posterior_at_index_0_returns_x0():
    d = GaussianDiffusion(get_beta_schedule("linear", 10), dtype=np.float64)
    x0, x1 = np.array([[0.3, -0.2]]), np.array([[1.5, 0.1]])
    mean, var, _ = d.q_posterior_mean_variance(x0, x1, np.array([0]))
    np.testing.assert_allclose(mean, x0, rtol=1e-12)
    assert var[0, 0] == 0.0


def test_posterior_mean_pins_the_paper_not_the_notes_typos():
    """Eq. 7: coef1 = √ᾱ_{t-1} β_t/(1-ᾱ_t), coef2 = √α_t (1-ᾱ_{t-1})/(1-ᾱ_t). Note 000 writes
    √ᾱ_t in coef1, and note 002's algorithm √ᾱ_t in coef2; this test fails for either."""
    d = GaussianDiffusion(get_beta_schedule("linear", 50, beta_end=0.2), dtype=np.float64)
    t = np.arange(1, 50)
    b, a, abar, abar_prev, om, om_prev = (c[:, 0] for c in paper(d, t))
    coef1 = np.sqrt(abar_prev) * b / om
    coef2 = np.sqrt(a) * om_prev / om
    np.testing.assert_allclose(d.posterior_mean_coef1[t], coef1, rtol=1e-12)
    np.testing.assert_allclose(d.posterior_mean_coef2[t], coef2, rtol=1e-12)
    typo1 = np.sqrt(abar) * b / om                                 # note 000
    typo2 = np.sqrt(abar) * om_prev / om                           # note 002, Alg. line 5
    assert np.abs(d.posterior_mean_coef1[t] - typo1).max() > 1e-3 * coef1.max()
    assert np.abs(d.posterior_mean_coef2[t] - typo2).max() > 1e-2


# ------------------------------------------------------------------ conversions
@given(problems())
def test_eps_and_x0_round_trip(problem):
    d, x0, noise, t = problem
    _, _, abar, _, om, _ = paper(d, t)
    x_t = d.q_sample(x0, t, noise)
    scale = 1 + np.abs(x_t) + np.abs(noise)                        # magnitudes involved
    assert_within(formulas.predict_start_from_noise(d, x_t, t, noise), x0,
                  EPS64 * scale / np.sqrt(abar))                                   # Eq. 15
    assert_within(formulas.predict_noise_from_start(d, x_t, t, x0), noise,
                  EPS64 * scale / np.sqrt(abar * om))


@given(problems())
def test_v_and_eps_round_trip(problem):
    d, x0, noise, t = problem
    _, _, abar, _, om, _ = paper(d, t)
    v = formulas.get_v(d, x0, t, noise)
    np.testing.assert_allclose(v, np.sqrt(abar) * noise - np.sqrt(om) * x0,
                               rtol=1e-12, atol=1e-14)              # Salimans & Ho 2022
    x_t = d.q_sample(x0, t, noise)
    np.testing.assert_allclose(formulas.predict_noise_from_v(d, x_t, t, v), noise, rtol=0,
                               atol=1e-12)
    np.testing.assert_allclose(formulas.predict_start_from_v(d, x_t, t, v), x0, rtol=0, atol=1e-12)


@given(problems())
def test_mu_and_x0_round_trip(problem):
    d, x0, noise, t = problem
    x_t = d.q_sample(x0, t, noise)
    mean = d.q_posterior_mean_variance(x0, x_t, t)[0]
    coef1 = d.posterior_mean_coef1[t][:, None]
    assert_within(formulas.predict_start_from_mean(d, x_t, t, mean), x0,
                  EPS64 * (1 + np.abs(x_t) + np.abs(mean)) / coef1)


@given(problems())
def test_mu_from_eps_is_the_posterior_mean_at_the_predicted_x0(problem):
    """Eq. 11 equals Eq. 7 evaluated at x̂0 from Eq. 15; with the true ε, it is μ̃_t (Eq. 10).
    Note 004 writes the ε coefficient β_t√(1-ᾱ_t)/√(1-ᾱ_t); the paper's β_t/√(1-ᾱ_t) is used."""
    d, x0, eps_theta, t = problem
    b, a, abar, _, om, _ = paper(d, t)
    x_t = d.q_sample(x0, t, np.zeros_like(x0)) + eps_theta * 0.5
    mu = formulas.p_mean_from_noise(d, x_t, t, eps_theta)
    paper_eq11 = (x_t - b / np.sqrt(om) * eps_theta) / np.sqrt(a)
    via_x0 = d.q_posterior_mean_variance(formulas.predict_start_from_noise(d, x_t, t, eps_theta),
                                         x_t, t)
    scale = (1 + np.abs(x_t) + np.abs(eps_theta)) / np.sqrt(abar)
    np.testing.assert_allclose(mu, paper_eq11, rtol=1e-11, atol=1e-14)
    assert_within(mu, via_x0[0], 10 * EPS64 * scale)
    noise = eps_theta
    x_t = d.q_sample(x0, t, noise)
    true_mu = d.q_posterior_mean_variance(x0, x_t, t)[0]
    assert_within(formulas.p_mean_from_noise(d, x_t, t, noise), true_mu,
                  10 * EPS64 * scale)                                               # Eq. 10


def test_eq11_pins_the_paper_not_note_004():
    """Note 004 writes Eq. 11's ε coefficient as β_t√(1-ᾱ_t)/√(1-ᾱ_t); the paper has
    β_t/√(1-ᾱ_t). Only the paper's form gives the true posterior mean with the true ε."""
    d = GaussianDiffusion(get_beta_schedule("linear", 50, beta_end=0.2), dtype=np.float64)
    t = np.arange(50)
    x0 = np.linspace(-1, 1, 50)[:, None]
    noise = np.cos(np.arange(50.0))[:, None]
    b, a, abar, _, om, _ = paper(d, t)
    x_t = d.q_sample(x0, t, noise)
    true_mu = d.q_posterior_mean_variance(x0, x_t, t)[0]
    np.testing.assert_allclose(formulas.p_mean_from_noise(d, x_t, t, noise), true_mu, rtol=1e-10,
                               atol=1e-12)
    typo_004 = (x_t - b * np.sqrt(om) / np.sqrt(om) * noise) / np.sqrt(a)
    assert np.abs(typo_004 - true_mu).max() > 1e-2


# ------------------------------------------------------------------ float32 on the device
def test_float32_diffusion_stays_float32():
    minidiff.manual_seed(0)
    d = GaussianDiffusion(get_beta_schedule("cosine", 20))
    x0 = np.linspace(-1, 1, 12).reshape(3, 4)                     # float64 input is cast
    t = np.array([0, 5, 19])
    assert d.q_sample(x0, t).dtype == np.float32
    m, v, lv = d.q_posterior_mean_variance(x0, d.q_sample(x0, t), t)
    assert m.dtype == v.dtype == lv.dtype == np.float32
