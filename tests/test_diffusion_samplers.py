"""p_mean_variance, p_sample and p_sample_loop (Alg. 2), and DDIM.

Oracles: Algorithm 2 written out with NumPy from the paper; the posterior of Eq. 6-7;
Bayes conditioning of the forward process between two timesteps of a DDIM subsequence; DDIM
(Song et al., Eq. 12) written out by hand; and DDPM itself, which DDIM with η = 1 over every
timestep must reproduce draw for draw.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidiff
from minidiff.diffusion import (GaussianDiffusion, ddim_sample_loop,
                                ddim_sample_loop_progressive, ddim_step, ddim_timesteps,
                                get_beta_schedule)
from minidiff.testing import formulas

BETAS = get_beta_schedule("linear", 20, beta_start=1e-3, beta_end=0.2)
PARAMS = ["eps", "x0", "mu", "v"]
VARIANCES = ["fixed_large", "fixed_small", "learned_range"]


def toy_model(channels=1):
    """A fixed smooth function of (x_t, t); with channels=2 it adds variance outputs in [-1, 1]."""
    def model(x_t, t):
        x = x_t.data
        scale = (1.0 + t.astype(x.dtype)).reshape((-1,) + (1,) * (x.ndim - 1)) / 10.0
        out = np.tanh(x) * scale + 0.05
        if channels == 2:
            out = np.concatenate([out, np.sin(3 * x)], axis=1)
        return out.astype(x.dtype)
    return model


def diffusion(param="eps", variance="fixed_large", dtype=np.float64):
    loss = "kl" if variance == "learned_range" else "simple"
    return GaussianDiffusion(BETAS, parameterization=param, variance=variance, loss=loss,
                             dtype=dtype)


def paper(t):
    b = np.asarray(BETAS)
    abar = np.cumprod(1 - b)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    return b[t], 1 - b[t], abar[t], abar_prev[t]


# ------------------------------------------------------------------ one reverse step
@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("variance", VARIANCES)
@pytest.mark.parametrize("clip", [True, False])
def test_p_sample_is_the_mean_plus_sigma_z(param, variance, clip):
    d = diffusion(param, variance)
    model = toy_model(2 if d.variance == "learned_range" else 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3))
    z = rng.standard_normal((5, 2, 3))
    t = np.array([0, 1, 7, 13, 19])
    p = d.p_mean_variance(model, x, t, clip_denoised=clip)
    got = d.p_sample(model, x, t, clip_denoised=clip, z=z)
    nonzero = (t > 0)[:, None, None]
    expected = p["mean"] + nonzero * np.exp(0.5 * p["log_variance"]) * z     # Alg. 2, line 4
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_p_sample_is_algorithm_2_of_the_paper():
    """x_{t-1} = (x_t - (1-α_t)/√(1-ᾱ_t) ε_θ)/√α_t + σ_t z, σ_t = √β_t, z = 0 at t = 1.
    Note 002 writes √ᾱ_t for √α_t and σ_t² z for σ_t z: both would fail here."""
    d = diffusion("eps", "fixed_large")
    model = toy_model()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4))
    z = rng.standard_normal((6, 4))
    t = np.array([0, 1, 2, 9, 18, 19])
    b, a, abar, _ = (v[:, None] for v in paper(t))
    eps = model(minidiff.Tensor(x), t)
    sigma = np.where(t[:, None] > 0, np.sqrt(b), 0.0)
    expected = (x - (1 - a) / np.sqrt(1 - abar) * eps) / np.sqrt(a) + sigma * z    # Alg. 2
    got = d.p_sample(model, x, t, clip_denoised=False, z=z)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    typo_sqrt = (x - (1 - a) / np.sqrt(1 - abar) * eps) / np.sqrt(abar) + sigma * z
    typo_sigma2 = (x - (1 - a) / np.sqrt(1 - abar) * eps) / np.sqrt(a) + sigma ** 2 * z
    assert np.abs(got - typo_sqrt).max() > 1e-2 and np.abs(got - typo_sigma2).max() > 1e-2


@pytest.mark.parametrize("param", PARAMS)
def test_clip_denoised_makes_the_clipped_x0_form_the_mean(param):
    d = diffusion(param, "fixed_small")
    x = np.array([[3.0, -0.5], [-4.0, 0.2]])
    t = np.array([10, 19])

    def model(x_t, tt):                        # a network output whose x̂0 is far outside
        target_x0 = np.array([[2.5, -0.3], [-1.7, 0.9]])
        outs = {"eps": formulas.predict_noise_from_start(d, x, tt, target_x0), "x0": target_x0,
                "mu": d.q_posterior_mean_variance(target_x0, x, tt)[0],
                "v": formulas.get_v(d, target_x0, tt,
                                    formulas.predict_noise_from_start(d, x, tt, target_x0))}
        return outs[param]
    p = d.p_mean_variance(model, x, t, clip_denoised=True)
    clipped = np.array([[1.0, -0.3], [-1.0, 0.9]])
    np.testing.assert_allclose(p["pred_x0"], clipped, rtol=1e-9)
    np.testing.assert_allclose(p["mean"], d.q_posterior_mean_variance(clipped, x, t)[0],
                               rtol=1e-9)
    free = d.p_mean_variance(model, x, t, clip_denoised=False)
    assert np.abs(free["mean"] - p["mean"]).max() > 1e-3


def test_learned_range_interpolates_log_beta_tilde_and_log_beta():
    """Nichol & Dhariwal 2021, Eq. 15: v = -1 gives β̃_t, v = +1 gives β_t (in log space)."""
    d = diffusion("eps", "learned_range")
    x = np.zeros((3, 1, 2))
    t = np.array([2, 10, 19])
    for v, expected in [(-1.0, np.log(d.posterior_variance[t])), (1.0, np.log(d.betas[t])),
                        (0.0, 0.5 * np.log(d.posterior_variance[t] * d.betas[t]))]:
        model = (lambda x_t, tt, v=v: np.concatenate([x_t.data, np.full(x_t.shape, v)], 1))
        got = d.p_mean_variance(model, x, t)["log_variance"]
        np.testing.assert_allclose(got[:, 0, 0], expected, rtol=1e-12)


# ------------------------------------------------------------------ the loop
def test_progressive_yields_every_kth_state_and_ends_at_the_sample():
    d = diffusion()
    minidiff.manual_seed(5)
    states = list(d.p_sample_loop_progressive(toy_model(), (3, 2), every=6))
    assert [s for s, _ in states] == [20, 18, 12, 6, 0]
    minidiff.manual_seed(5)
    final = d.p_sample_loop(toy_model(), (3, 2))
    np.testing.assert_array_equal(states[-1][1], final)


def test_loop_from_a_given_x_T_is_the_chain_of_p_samples():
    d = diffusion()
    x_T = np.random.default_rng(2).standard_normal((4, 3))
    minidiff.manual_seed(9)
    got = d.p_sample_loop(toy_model(), x_T=x_T)
    minidiff.manual_seed(9)
    x = x_T
    for t in reversed(range(20)):                                  # Alg. 2, t = T … 1
        x = d.p_sample(toy_model(), x, np.full(4, t))
    np.testing.assert_array_equal(got, x)
    first = next(d.p_sample_loop_progressive(toy_model(), x_T=x_T))
    assert first[0] == 20 and np.array_equal(first[1], x_T)


@given(st.integers(0, 2 ** 31 - 1))
def test_sampling_is_deterministic_under_a_seed(seed):
    d = diffusion(dtype=np.float32)
    minidiff.manual_seed(seed)
    a = d.p_sample_loop(toy_model(), (2, 3))
    minidiff.manual_seed(seed)
    b = d.p_sample_loop(toy_model(), (2, 3))
    minidiff.manual_seed(seed + 1)
    c = d.p_sample_loop(toy_model(), (2, 3))
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sampling_calls_the_model_under_no_grad():
    from minidiff.autograd import is_grad_enabled
    seen = []

    def model(x_t, t):
        seen.append(is_grad_enabled())
        return x_t * 0.0
    d = diffusion()
    d.p_sample_loop(model, (2, 2))
    ddim_sample_loop(d, model, (2, 2), num_steps=3)
    assert seen and not any(seen)


# ------------------------------------------------------------------ DDIM
def test_ddim_with_eta_1_over_every_step_is_ddpm_with_beta_tilde():
    """Song et al. 2021, §4.1: η = 1 gives σ_t² = β̃_t and DDPM's posterior mean. Both loops
    draw x_T and one z per step in the same order, so with one seed they agree draw for draw."""
    d = diffusion("eps", "fixed_small")
    minidiff.manual_seed(4)
    ddpm = d.p_sample_loop(toy_model(), (6, 2), clip_denoised=True)
    minidiff.manual_seed(4)
    ddim = ddim_sample_loop(d, toy_model(), (6, 2), timesteps=np.arange(20), eta=1.0)
    np.testing.assert_allclose(ddim, ddpm, rtol=1e-9, atol=1e-9)


@given(st.integers(0, 18), st.integers(1, 19), st.floats(0, 1))
def test_ddim_step_with_eta_1_is_the_forward_posterior_between_two_timesteps(i, j, eta):
    """From τ to an earlier τ' with x̂0 fixed, η = 1 gives q(x_τ' | x_τ, x̂0): Bayes on the
    forward process, whose step from τ' to τ has ᾱ_τ/ᾱ_τ' as its α."""
    lo, hi = min(i, j), max(i, j) + (i == j)
    abar_all = np.cumprod(1 - np.asarray(BETAS))
    abar, abar_prev = abar_all[hi], abar_all[lo]
    rng = np.random.default_rng(i * 100 + j)
    x, x0, z = rng.standard_normal((3, 4))
    eps = (x - np.sqrt(abar) * x0) / np.sqrt(1 - abar)
    alpha = abar / abar_prev                                         # the skipped steps
    mean = np.sqrt(abar_prev) * x0 + np.sqrt(alpha) * (1 - abar_prev) / (1 - abar) * (
        x - np.sqrt(abar) * x0)
    var = (1 - abar_prev) - alpha * (1 - abar_prev) ** 2 / (1 - abar)
    got = ddim_step(x0, eps, abar, abar_prev, 1.0, z)
    np.testing.assert_allclose(got, mean + np.sqrt(var) * z, rtol=1e-9, atol=1e-12)
    sigma = eta * np.sqrt(var)                                       # Song et al., Eq. 16
    direction = np.sqrt(1 - abar_prev - sigma ** 2) * eps
    np.testing.assert_allclose(ddim_step(x0, eps, abar, abar_prev, eta, z),
                               np.sqrt(abar_prev) * x0 + direction + sigma * z, rtol=1e-9,
                               atol=1e-12)                          # Song et al., Eq. 12


def test_ddim_skipping_uses_the_previous_timestep_of_the_subsequence():
    d = diffusion("eps", "fixed_large")
    calls = []

    def model(x_t, t):
        calls.append(int(t[0]))
        return np.tanh(x_t.data) * 0.3
    taus = np.array([0, 4, 11, 19])
    x_T = np.random.default_rng(3).standard_normal((3, 2))
    got = ddim_sample_loop(d, model, x_T=x_T, timesteps=taus, eta=0.0, clip_denoised=False)
    assert calls == [19, 11, 4, 0]
    abar_all = np.cumprod(1 - np.asarray(BETAS))
    x = x_T
    for i in reversed(range(len(taus))):                             # by hand, Eq. 12
        abar = abar_all[taus[i]]
        abar_prev = abar_all[taus[i - 1]] if i > 0 else 1.0
        eps = np.tanh(x) * 0.3
        x0 = (x - np.sqrt(1 - abar) * eps) / np.sqrt(abar)
        x = np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * eps
    np.testing.assert_allclose(got, x, rtol=1e-9, atol=1e-12)
    states = [s for s, _ in ddim_sample_loop_progressive(d, model, x_T=x_T, timesteps=taus)]
    assert states == [20, 12, 5, 1, 0]


def test_ddim_eta_0_is_deterministic_given_x_T():
    d = diffusion()
    x_T = np.random.default_rng(4).standard_normal((3, 2))
    minidiff.manual_seed(1)
    a = ddim_sample_loop(d, toy_model(), x_T=x_T, num_steps=5)
    minidiff.manual_seed(2)
    b = ddim_sample_loop(d, toy_model(), x_T=x_T, num_steps=5)
    np.testing.assert_array_equal(a, b)


def test_ddim_timesteps_spread_evenly_and_keep_both_ends():
    np.testing.assert_array_equal(ddim_timesteps(1000, 5), [0, 250, 500, 749, 999])
    np.testing.assert_array_equal(ddim_timesteps(10, 10), np.arange(10))
    np.testing.assert_array_equal(ddim_timesteps(10, 1), [9])


@pytest.mark.parametrize("timesteps, fragment", [
    ([3, 3, 5], "increase strictly"), ([5, 2], "increase strictly"), ([0, 20], "[0, 19]"),
    ([-1, 4], "[0, 19]"), (np.array([0.0, 4.0]), "int"), ([], "1-d"),
])
def test_bad_ddim_timesteps_raise(timesteps, fragment):
    with pytest.raises(ValueError, match="^timesteps:") as e:
        ddim_sample_loop(diffusion(), toy_model(), (2, 2), timesteps=timesteps)
    assert fragment in str(e.value)


def test_bad_ddim_arguments_raise():
    with pytest.raises(ValueError, match="^num_steps:.*got 21"):
        ddim_sample_loop(diffusion(), toy_model(), (2, 2), num_steps=21)
    with pytest.raises(ValueError, match="^eta:"):
        ddim_sample_loop(diffusion(), toy_model(), (2, 2), eta=-0.5)
