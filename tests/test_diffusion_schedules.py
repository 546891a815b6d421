"""β schedules and the buffers of GaussianDiffusion.

Oracles: each schedule's closed form written as a naive per-step loop with the math module;
the schedule invariants (β̃_t <= β_t, ᾱ strictly decreasing inside (0, 1)) as properties over
schedules drawn by hypothesis (minidiff.testing.strategies.betas: hostile ones too).
"""
import math

import numpy as np
import pytest
from hypothesis import given

from minidiff.diffusion import GaussianDiffusion, check_betas, get_beta_schedule
from minidiff.testing import strategies


# ------------------------------------------------------------------ the schedules' formulas
def test_linear_default_is_ho_et_al():
    b = get_beta_schedule("linear")
    assert b.dtype == np.float64 and b.shape == (1000,)
    assert b[0] == 1e-4 and abs(b[-1] - 0.02) < 1e-15            # Ho et al. 2020, §4


@pytest.mark.parametrize("T", [1, 2, 7, 100])
def test_schedules_match_naive_loops(T):
    b0, b1 = 1e-4, 0.05
    lin, quad, sig, cos = [], [], [], []
    f = [math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
    for t in range(T):                                # paper step t+1
        frac = t / (T - 1) if T > 1 else 0.0
        lin.append(b0 + (b1 - b0) * frac)
        quad.append((math.sqrt(b0) + (math.sqrt(b1) - math.sqrt(b0)) * frac) ** 2)
        x = -6.0 + 12.0 * frac if T > 1 else -6.0
        sig.append(b0 + (b1 - b0) / (1.0 + math.exp(-x)))
        cos.append(min(1.0 - f[t + 1] / f[t], 0.999))
    kw = dict(beta_start=b0, beta_end=b1)
    np.testing.assert_allclose(get_beta_schedule("linear", T, **kw), lin, rtol=1e-12)
    np.testing.assert_allclose(get_beta_schedule("quadratic", T, **kw), quad, rtol=1e-12)
    np.testing.assert_allclose(get_beta_schedule("sigmoid", T, **kw), sig, rtol=1e-12)
    np.testing.assert_allclose(get_beta_schedule("cosine", T), cos, rtol=1e-12)
    np.testing.assert_array_equal(get_beta_schedule("constant", T, beta=0.3), [0.3] * T)


def test_cosine_is_clipped_at_0999_and_alphabar_follows_the_cosine():
    b = get_beta_schedule("cosine", 1000)
    assert b.max() == 0.999                                       # the last step is clipped
    abar = np.cumprod(1 - b)
    t = np.arange(1, 1001)
    f0 = math.cos(0.008 / 1.008 * np.pi / 2) ** 2
    f = np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2 / f0
    np.testing.assert_allclose(abar[:-1], f[:-1], rtol=1e-9)     # Nichol & Dhariwal, Eq. 17


# ------------------------------------------------------------------ invariants
@given(strategies.betas())
def test_posterior_variance_below_beta_and_alphabar_decreasing(betas):
    d = GaussianDiffusion(betas, dtype=np.float64)
    abar = d.alphas_cumprod
    assert (d.posterior_variance <= d.betas).all()               # β̃_t <= β_t
    assert d.posterior_variance[0] == 0.0                         # x_0 is known at index 0
    assert ((abar > 0) & (abar < 1)).all()
    assert (np.diff(abar) < 0).all()                              # strictly decreasing
    assert d.alphas_cumprod_prev[0] == 1.0
    np.testing.assert_allclose(d.alphas_cumprod_prev[1:], abar[:-1], rtol=0)
    assert np.isfinite(d.posterior_log_variance_clipped).all()
    assert np.isfinite(d.large_log_variance).all()


@given(strategies.betas(max_T=50))
def test_buffers_are_computed_in_float64_and_cast_once(betas):
    d32 = GaussianDiffusion(betas)                                # float32 is the default
    d64 = GaussianDiffusion(betas, dtype=np.float64)
    names = ["betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
             "sqrt_one_minus_alphas_cumprod", "posterior_variance", "posterior_mean_coef1",
             "posterior_mean_coef2", "posterior_log_variance_clipped", "eps_coef"]
    for name in names:
        a32, a64 = getattr(d32, name), getattr(d64, name)
        assert a32.dtype == np.float32 and a64.dtype == np.float64, name
        np.testing.assert_array_equal(a32, a64.astype(np.float32), err_msg=name)


def test_buffers_match_the_paper_at_one_step():
    b = get_beta_schedule("linear", 10, beta_start=0.01, beta_end=0.2)
    d = GaussianDiffusion(b, dtype=np.float64)
    t = 4                                                         # the paper's step 5
    abar = np.prod(1 - b[: t + 1])
    abar_prev = np.prod(1 - b[:t])
    assert d.alphas_cumprod[t] == pytest.approx(abar, rel=1e-14)
    assert d.posterior_variance[t] == pytest.approx((1 - abar_prev) / (1 - abar) * b[t],
                                                    rel=1e-13)   # Eq. 7
    assert d.posterior_mean_coef1[t] == pytest.approx(math.sqrt(abar_prev) * b[t] / (1 - abar),
                                                      rel=1e-13)  # Eq. 7
    assert d.posterior_mean_coef2[t] == pytest.approx(
        math.sqrt(1 - b[t]) * (1 - abar_prev) / (1 - abar), rel=1e-13)  # Eq. 7
    # fixed_large: β_t, except index 0, which takes β̃ of index 1 (Ho et al.'s code)
    assert d.large_variance[t] == b[t]
    assert d.large_variance[0] == pytest.approx(d.posterior_variance[1], rel=1e-14)


def test_single_step_schedule_works():
    d = GaussianDiffusion(np.array([0.5]), dtype=np.float64)
    assert d.num_timesteps == 1
    assert np.isfinite(d.posterior_log_variance_clipped).all()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("betas, fragment", [
    ([0.1, 0.0, 0.2], "strictly inside (0, 1)"),
    ([0.1, 1.0], "strictly inside (0, 1)"),
    ([-0.1], "strictly inside (0, 1)"),
    ([0.1, np.nan], "finite"),
    ([0.1, np.inf], "finite"),
    ([], "T >= 1"),
    ([[0.1, 0.2]], "1-d"),
    (["a", "b"], "real numbers"),
])
def test_bad_betas_raise_with_the_value(betas, fragment):
    with pytest.raises(ValueError, match="betas") as e:
        check_betas(betas)
    assert fragment in str(e.value)
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion(betas)


@pytest.mark.parametrize("args, kwargs, name", [
    (("linear", 0), {}, "num_timesteps"),
    (("linear", 2.5), {}, "num_timesteps"),
    (("linear", True), {}, "num_timesteps"),
    (("linear", 10), {"beta_start": 0.0}, "beta_start"),
    (("quadratic", 10), {"beta_end": 1.5}, "beta_end"),
    (("constant", 10), {"beta": float("nan")}, "beta"),
    (("cosine", 10), {"s": -0.1}, "s"),
    (("warmup", 10), {}, "name"),
])
def test_bad_schedule_arguments_name_the_argument(args, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        get_beta_schedule(*args, **kwargs)
