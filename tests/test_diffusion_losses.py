"""training_losses: L_simple (Eq. 14), the posterior-mean MSE (Eq. 8), the bound (Eq. 5, 12,
13) and the hybrid loss; their values and their gradients w.r.t. the model's parameters.

Oracles: the losses written out with NumPy from the paper's formulas; Eq. 12's ε-weighting
and the Gaussian KL in closed form; Φ from math.erf for the decoder; and float64 central
differences (gradcheck) for every gradient.
"""
import math

import numpy as np
import pytest

import minidiff
from minidiff import Tensor
from minidiff import functional as F
from minidiff.diffusion import GaussianDiffusion, get_beta_schedule
from minidiff.testing import formulas
from minidiff.testing import gradcheck

BETAS = get_beta_schedule("linear", 30, beta_start=1e-3, beta_end=0.15)
LN2 = math.log(2.0)
GRID = np.arange(256) / 127.5 - 1.0


def paper(t):
    b = np.asarray(BETAS)
    abar = np.cumprod(1 - b)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    col = (lambda a: a[t][:, None])
    return col(b), col(1 - b), col(abar), col(abar_prev)


def batch(seed=0, B=6, D=3):
    rng = np.random.default_rng(seed)
    x0 = GRID[rng.integers(0, 256, size=(B, D))]                   # data on the 256-level grid
    noise = rng.standard_normal((B, D))
    t = np.array([0, 1, 5, 12, 28, 29])[:B]
    return x0, noise, t


def affine_model(w, b):
    """out = x_t · w + b, with w, b Tensors: the smallest model with parameters."""
    return lambda x_t, t: x_t * w + b


def fixed_model(out):
    return lambda x_t, t: Tensor(out)


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("param", ["eps", "x0", "mu", "v"])
def test_simple_loss_is_the_mse_to_each_parameterisations_target(param):
    d = GaussianDiffusion(BETAS, parameterization=param, dtype=np.float64)
    x0, noise, t = batch()
    b, a, abar, abar_prev = paper(t)
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise                    # Eq. 4
    target = {"eps": noise,                                                 # Eq. 14
              "x0": x0,
              "mu": (np.sqrt(abar_prev) * b * x0 + np.sqrt(a) * (1 - abar_prev) * x_t)
              / (1 - abar),                                                 # Eq. 7
              "v": np.sqrt(abar) * noise - np.sqrt(1 - abar) * x0}[param]   # Salimans & Ho
    out = np.random.default_rng(1).standard_normal(x0.shape)
    loss = d.training_losses(fixed_model(out), x0, t=t, noise=noise)
    assert loss.shape == (6,)
    np.testing.assert_allclose(loss.numpy(), ((target - out) ** 2).mean(axis=1), rtol=1e-10)


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_mu_mse_unweighted_and_weighted_by_eq_8(variance):
    x0, noise, t = batch()
    b, a, abar, abar_prev = paper(t)
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise
    mu_true = (np.sqrt(abar_prev) * b * x0 + np.sqrt(a) * (1 - abar_prev) * x_t) / (1 - abar)
    out = np.random.default_rng(2).standard_normal(x0.shape)
    mse = ((mu_true - out) ** 2).mean(axis=1)
    beta_tilde = np.concatenate([[0.0], (1 - abar_prev[1:, 0]) / (1 - abar[1:, 0]) * b[1:, 0]])
    all_b = np.asarray(BETAS)
    all_abar = np.cumprod(1 - all_b)
    bt1 = (1 - all_abar[0]) / (1 - all_abar[1]) * all_b[1]                  # β̃ of index 1
    sigma2 = b[:, 0].copy() if variance == "fixed_large" else beta_tilde
    sigma2[t == 0] = bt1                                                    # both: index 0
    for weight, expected in [("none", mse), ("bound", mse / (2 * sigma2))]:  # Eq. 8
        d = GaussianDiffusion(BETAS, parameterization="mu", variance=variance, loss="mu_mse",
                              mu_mse_weight=weight, dtype=np.float64)
        loss = d.training_losses(fixed_model(out), x0, t=t, noise=noise)
        np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-10)


def test_kl_loss_with_beta_tilde_is_eq_12():
    """With σ_t² = β̃_t the variances match, so L_{t-1} = β_t²/(2σ_t²α_t(1-ᾱ_t))‖ε - ε_θ‖²
    (Eq. 12), here averaged over dims and in bits."""
    d = GaussianDiffusion(BETAS, variance="fixed_small", loss="kl", dtype=np.float64)
    x0, noise, t = batch()
    t = np.array([1, 2, 5, 12, 28, 29])
    b, a, abar, abar_prev = paper(t)
    eps_theta = noise + np.random.default_rng(3).standard_normal(noise.shape) * 0.3
    loss = d.training_losses(fixed_model(eps_theta), x0, t=t, noise=noise).numpy()
    sigma2 = (1 - abar_prev) / (1 - abar) * b
    weight = b ** 2 / (2 * sigma2 * a * (1 - abar))                        # Eq. 12
    expected = (weight * (noise - eps_theta) ** 2).mean(axis=1) / LN2
    np.testing.assert_allclose(loss, expected, rtol=1e-8)
    np.testing.assert_allclose(formulas.true_bound_eps_weight(d, t), weight[:, 0], rtol=1e-10)


def test_kl_loss_with_beta_is_the_gaussian_kl():
    """With σ_t² = β_t the bound adds the variance mismatch ½(log(β/β̃) - 1 + β̃/β)."""
    d = GaussianDiffusion(BETAS, variance="fixed_large", loss="kl", dtype=np.float64)
    x0, noise, t = batch()
    t = np.array([1, 2, 5, 12, 28, 29])
    b, a, abar, abar_prev = paper(t)
    eps_theta = np.random.default_rng(4).standard_normal(noise.shape)
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise
    mu = (x_t - b / np.sqrt(1 - abar) * eps_theta) / np.sqrt(a)            # Eq. 11
    mu_true = (x_t - b / np.sqrt(1 - abar) * noise) / np.sqrt(a)           # Eq. 10
    bt = (1 - abar_prev) / (1 - abar) * b
    kl = 0.5 * (np.log(b / bt) - 1 + bt / b) + (mu - mu_true) ** 2 / (2 * b)
    loss = d.training_losses(fixed_model(eps_theta), x0, t=t, noise=noise).numpy()
    np.testing.assert_allclose(loss, kl.mean(axis=1) / LN2, rtol=1e-8)


def test_kl_loss_at_index_0_is_the_decoder_nll():
    """Index 0 is the paper's t = 1: L_0 = -log p_θ(x0 | x1), Eq. 13, with Φ from erf."""
    d = GaussianDiffusion(BETAS, variance="fixed_large", loss="kl", dtype=np.float64)
    x0 = GRID[[[0, 100, 255], [5, 128, 250]]]
    noise = np.array([[0.3, -1.0, 0.5], [2.0, 0.1, -0.7]])
    t = np.zeros(2, dtype=np.int64)
    eps_theta = noise * 0.9
    b, a, abar, _ = paper(t)
    x1 = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise
    mu = (x1 - b / np.sqrt(1 - abar) * eps_theta) / np.sqrt(a)             # Eq. 11
    sd = math.sqrt(d.large_variance[0])
    phi = np.vectorize(lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2))))
    upper = np.where(x0 > 0.999, 1.0, phi((x0 + 1 / 255 - mu) / sd))      # δ+, Eq. 13
    lower = np.where(x0 < -0.999, 0.0, phi((x0 - 1 / 255 - mu) / sd))     # δ-, Eq. 13
    expected = -np.log2(upper - lower).mean(axis=1)
    loss = d.training_losses(fixed_model(eps_theta), x0, t=t, noise=noise).numpy()
    np.testing.assert_allclose(loss, expected, rtol=2e-3)     # the tanh approximation of Φ


def test_t_and_noise_are_drawn_from_the_library_generator():
    d = GaussianDiffusion(BETAS)
    x0 = np.zeros((64, 2), dtype=np.float32)
    seen = []

    def model(x_t, t):
        seen.append(t.copy())
        return x_t * 0.0
    minidiff.manual_seed(11)
    a = d.training_losses(model, x0).numpy()
    minidiff.manual_seed(11)
    b = d.training_losses(model, x0).numpy()
    np.testing.assert_array_equal(a, b)
    assert seen[0].min() >= 0 and seen[0].max() <= 29 and len(set(seen[0].tolist())) > 10
    assert seen[0].dtype == np.int64 and seen[0].shape == (64,)


# ------------------------------------------------------------------ gradients
CASES = [("simple", "eps", "fixed_large"), ("simple", "x0", "fixed_small"),
         ("simple", "v", "fixed_large"), ("mu_mse", "mu", "fixed_small"),
         ("mu_mse", "eps", "fixed_large"), ("kl", "eps", "fixed_small"),
         ("kl", "mu", "fixed_large"), ("kl", "eps", "learned_range"),
         ("hybrid", "eps", "learned_range")]


@pytest.mark.parametrize("loss, param, variance", CASES)
def test_losses_are_differentiable_in_the_model_parameters(loss, param, variance):
    weight = "bound" if loss == "mu_mse" and variance == "fixed_small" else "none"
    d = GaussianDiffusion(BETAS, parameterization=param, variance=variance, loss=loss,
                          mu_mse_weight=weight, dtype=np.float64)
    x0, noise, t = batch(seed=5, D=2)
    x0, noise = x0.reshape(6, 1, 2), noise.reshape(6, 1, 2)
    rng = np.random.default_rng(6)

    def op(w, b, w2):
        def model(x_t, tt):
            mean = x_t * w + b
            if variance != "learned_range":
                return mean
            return F.concat([mean, F.tanh(x_t * w2)], axis=1)       # (B, 2, 2)
        return d.training_losses(model, x0, t=t, noise=noise)
    # hybrid stops the bound's gradient to the mean (w, b), so finite differences of the
    # forward value only check its variance parameter w2; the next test checks w and b.
    wrt = {"fixed_large": (0, 1), "fixed_small": (0, 1), "learned_range": (0, 1, 2)}[variance]
    gradcheck(op, 0.5 + 0.1 * rng.standard_normal(2), 0.1 * rng.standard_normal(2),
              rng.standard_normal(2), wrt=(2,) if loss == "hybrid" else wrt)


def test_hybrid_trains_the_mean_only_through_l_simple():
    """Nichol & Dhariwal 2021, Eq. 16: the bound term sees the mean detached."""
    d = GaussianDiffusion(BETAS, variance="learned_range", loss="hybrid", dtype=np.float64)
    simple = GaussianDiffusion(BETAS, dtype=np.float64)
    x0, noise, t = batch(seed=7, D=2)
    x0, noise = x0.reshape(6, 1, 2), noise.reshape(6, 1, 2)
    grads = []
    for diff, learned in [(d, True), (simple, False)]:
        w = Tensor(np.array([0.4, -0.2]), requires_grad=True)

        def model(x_t, tt, learned=learned):
            mean = x_t * w
            return F.concat([mean, F.tanh(x_t)], axis=1) if learned else mean
        diff.training_losses(model, x0, t=t, noise=noise).sum().backward()
        grads.append(w.grad)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


# ------------------------------------------------------------------ the bound's value, pinned
def approx_phi(v):
    """Ho et al.'s tanh approximation of Φ, written out (the erf test above bounds its error)."""
    return 0.5 * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))


def learned_bound_by_hand(x0, noise, t, eps_theta, v):
    """L_t in bits/dim (B,) for a learned σ², from the papers in float64: x_t (Eq. 4), μ_θ
    (Eq. 11), log σ² = frac log β + (1 - frac) log β̃ (Nichol & Dhariwal 2021, Eq. 15), the
    Gaussian KL against q(x_{t-1} | x_t, x0) (Eq. 6-7) for t >= 1, the decoder (Eq. 13) at 0."""
    b, a, abar, abar_prev = paper(t)
    all_b, all_abar = np.asarray(BETAS), np.cumprod(1 - np.asarray(BETAS))
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise                    # Eq. 4
    mu = (x_t - b / np.sqrt(1 - abar) * eps_theta) / np.sqrt(a)             # Eq. 11
    mu_true = (np.sqrt(abar_prev) * b * x0 + np.sqrt(a) * (1 - abar_prev) * x_t) / (1 - abar)
    bt = (1 - abar_prev) / (1 - abar) * b                                   # β̃, Eq. 7
    bt[t == 0] = (1 - all_abar[0]) / (1 - all_abar[1]) * all_b[1]           # clipped at 0
    frac = (v + 1) / 2
    log_var = frac * np.log(b) + (1 - frac) * np.log(bt)                    # N&D 2021, Eq. 15
    kl = 0.5 * (log_var - np.log(bt) - 1 + bt / np.exp(log_var)
                + (mu_true - mu) ** 2 / np.exp(log_var))
    sd = np.exp(0.5 * log_var)
    upper = np.where(x0 > 0.999, 1.0, approx_phi((x0 + 1 / 255 - mu) / sd))    # Eq. 13
    lower = np.where(x0 < -0.999, 0.0, approx_phi((x0 - 1 / 255 - mu) / sd))
    nll = -np.log(upper - lower)
    per_dim = np.where((t == 0)[:, None], nll, kl)
    return per_dim.mean(axis=1) / LN2


@pytest.mark.parametrize("lam", [0.001, 0.02])
def test_hybrid_loss_value_is_l_simple_plus_lambda_t_times_the_bound(lam):
    """Nichol & Dhariwal 2021, Eq. 16: L_hybrid = L_simple + λ L_vlb, with L_vlb = Σ_t L_t
    estimated by T L_t at the sampled t (their code: vb *= T / 1000, λ = 1/1000). Term by term,
    at fixed t (index 0, the decoder, through T - 1) and fixed noise and network output."""
    x0, noise, t = batch(seed=8)                          # t = 0, 1, 5, 12, 28, 29 (T = 30)
    rng = np.random.default_rng(9)
    eps_theta = noise + 0.5 * rng.standard_normal(noise.shape)
    v = rng.uniform(-1, 1, noise.shape)                   # the variance channels
    out = np.concatenate([eps_theta, v], axis=1)[:, :, None]     # (B, 2C, 1), C = 3
    simple = ((noise - eps_theta) ** 2).mean(axis=1)                        # Eq. 14
    bound = learned_bound_by_hand(x0, noise, t, eps_theta, v)

    def loss(kind, lam):
        d = GaussianDiffusion(BETAS, variance="learned_range", loss=kind, hybrid_lambda=lam,
                              dtype=np.float64)
        got = d.training_losses(fixed_model(out), x0[:, :, None], t=t, noise=noise[:, :, None])
        return got.numpy()
    np.testing.assert_allclose(loss("kl", lam), bound, rtol=1e-10)           # L_t itself
    np.testing.assert_allclose(loss("hybrid", 0.0), simple, rtol=1e-12)     # L_simple alone
    np.testing.assert_allclose(loss("hybrid", lam), simple + lam * 30 * bound, rtol=1e-10)


def test_t_is_uniform_over_every_index_including_the_decoders():
    """Ho et al. 2020, Alg. 1, line 3: t ~ Uniform({1, …, T}), 0-based {0, …, T-1}. Each of the
    T = 5 indices gets 1/5 of n = 20000 draws within 5 standard errors √(p(1-p)/n) = 0.0028;
    index 0 (the decoder's L_0) and T-1 included."""
    d = GaussianDiffusion(get_beta_schedule("linear", 5, beta_start=1e-3, beta_end=0.2))
    seen = []

    def model(x_t, t):
        seen.append(t.copy())
        return x_t * 0.0
    n = 20000
    d.training_losses(model, np.zeros((n, 1), dtype=np.float32))
    freq = np.bincount(seen[0], minlength=5) / n
    assert freq.shape == (5,) and np.abs(freq - 0.2).max() < 5 * math.sqrt(0.2 * 0.8 / n), freq
