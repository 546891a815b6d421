"""kernels/diffusion.cu through minidiff.cuda, against float64 NumPy written from the papers'
equations (Ho et al. 2020, Eq. 4, 6-7, Algorithm 2; Song et al. 2021, Eq. 12, 16)."""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff import cuda
from cuda_emu.testing import RUNNERS, assert_close, on

# Tolerances come from a forward error bound: each float32 operation rounds by at most EPS
# relative, so a result built from terms of sizes |a|, |b|, ... is within C * EPS * (|a| + |b|
# + ...) of the exact value, plus what its inputs' errors carry through. C counts roundings.
EPS = float(np.finfo(np.float32).eps)
C = 8
RTOL = 1e-6


@st.composite
def step_case(draw):
    """A batch (B, *dims) with sizes that are not multiples of the 256-thread block, a linear
    schedule of T steps (Ho et al. 2020, Sec. 4) and per-sample timesteps t (0-based)."""
    B = draw(st.integers(1, 5))
    dims = tuple(draw(st.lists(st.integers(1, 13), min_size=1, max_size=3)))
    T = draw(st.sampled_from([1, 2, 7, 100, 1000]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    t = rng.integers(0, T, size=B)
    if draw(st.booleans()):
        t[0] = 0                                     # the last reverse step: no noise
    return B, dims, T, t, rng


def schedule(T):
    """Every buffer of the process in float64 (Ho et al. 2020, Eq. 4, 7)."""
    betas = np.linspace(1e-4, 0.02, T) if T > 1 else np.array([1e-4])
    abar = np.cumprod(1.0 - betas)                                   # abar_t = prod (1 - beta)
    abar_prev = np.append(1.0, abar[:-1])
    return {
        "betas": betas, "abar": abar,
        "sqrt_abar": np.sqrt(abar), "sqrt_1m_abar": np.sqrt(1.0 - abar),
        "sqrt_recip_abar": np.sqrt(1.0 / abar), "sqrt_recipm1_abar": np.sqrt(1.0 / abar - 1),
        "coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),           # Eq. 7
        "coef2": (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar),   # Eq. 7
        "sigma_small": np.sqrt(betas * (1.0 - abar_prev) / (1.0 - abar)),  # beta~_t, Eq. 7
        "sigma_large": np.sqrt(betas),                                # beta_t
    }


def f32(*arrays):
    return tuple(np.asarray(a, dtype=np.float32) for a in arrays)


def per_sample(buf, t, x):
    return buf[t].reshape((-1,) + (1,) * (x.ndim - 1))


@pytest.mark.parametrize("runner", RUNNERS)
@given(case=step_case())
def test_q_sample(runner, case):
    B, dims, T, t, rng = case
    s = schedule(T)
    x0, eps = f32(rng.uniform(-1, 1, (B, *dims)), rng.standard_normal((B, *dims)))
    sa, s1 = f32(s["sqrt_abar"], s["sqrt_1m_abar"])
    a, b = per_sample(sa, t, x0).astype(np.float64), per_sample(s1, t, x0).astype(np.float64)
    ref = a * x0 + b * eps                                                # Eq. 4
    with on(runner) as dev:
        got = dev.get(cuda.q_sample(*dev.put(x0, eps, t, sa, s1)))
    assert_close(got, ref, atol=C * EPS * (np.abs(a * x0) + np.abs(b * eps)), rtol=RTOL,
                 what="q_sample")


@pytest.mark.parametrize("runner", RUNNERS)
@given(case=step_case())
def test_posterior_mean(runner, case):
    B, dims, T, t, rng = case
    s = schedule(T)
    x0, x_t = f32(rng.uniform(-1, 1, (B, *dims)), rng.standard_normal((B, *dims)))
    c1, c2 = f32(s["coef1"], s["coef2"])
    a, b = per_sample(c1, t, x0).astype(np.float64), per_sample(c2, t, x0).astype(np.float64)
    ref = a * x0 + b * x_t                                                # Eq. 7
    with on(runner) as dev:
        got = dev.get(cuda.posterior_mean(*dev.put(x0, x_t, t, c1, c2)))
    assert_close(got, ref, atol=C * EPS * (np.abs(a * x0) + np.abs(b * x_t)), rtol=RTOL,
                 what="posterior_mean")


def reverse_step_ref(x0, x_t, t, z, s, clip, sigma):
    """Algorithm 2 in float64 from the model's x0^, as in Ho et al.'s code; with its error
    bound."""
    x0, x_t, z = (a.astype(np.float64) for a in (x0, x_t, z))
    c = {k: per_sample(v.astype(np.float64), t, x_t) for k, v in s.items()}
    x0 = np.clip(x0, -1, 1) if clip else x0                           # Sec. 3.3
    mean = c["coef1"] * x0 + c["coef2"] * x_t                         # Eq. 7
    err_mean = C * EPS * (np.abs(c["coef1"] * x0) + np.abs(c["coef2"] * x_t))
    std = (t.reshape(c[sigma].shape) > 0) * c[sigma]                  # Algorithm 2, line 3
    x_prev = mean + std * z                                           # Algorithm 2, line 4
    return x_prev, err_mean + C * EPS * (np.abs(mean) + np.abs(std * z))


@pytest.mark.parametrize("runner", RUNNERS)
@given(case=step_case(), clip=st.booleans(), sigma=st.sampled_from(["sigma_small",
                                                                     "sigma_large"]))
def test_reverse_step(runner, case, clip, sigma):
    B, dims, T, t, rng = case
    s = {k: v.astype(np.float32) for k, v in schedule(T).items()}
    x0, x_t, z = f32(*(rng.standard_normal((B, *dims)) for _ in range(3)))   # x0^ beyond +-1
    want_prev, err_prev = reverse_step_ref(x0, x_t, t, z, s, clip, sigma)
    with on(runner) as dev:
        kw = {k: dev.put(s[k])[0] for k in ("coef1", "coef2")}
        sigma_b = dev.put(s[sigma][t])[0]                             # sigma_t per sample
        got = dev.get(cuda.reverse_step(*dev.put(x0, x_t, t, z), clip=clip, sigma=sigma_b,
                                        **kw))                        # as diffusion/ calls it
    assert_close(got, want_prev, atol=err_prev, rtol=RTOL, what="x_prev")


def ddim_ref(out, x_t, t, t_prev, z, abar, param, clip, eta):
    """Song et al. 2021, Eq. 12 and 16, in float64; with each result's error bound."""
    out, x_t, z, abar = (a.astype(np.float64) for a in (out, x_t, z, abar))
    a = per_sample(abar, t, x_t)
    ap = per_sample(np.append(abar, 1.0), t_prev, x_t)               # index -1 -> abar = 1
    if param == "eps":
        x0 = (x_t - np.sqrt(1 - a) * out) / np.sqrt(a)                # Eq. 12, predicted x0
        err_x0 = C * EPS * (np.abs(x_t) + np.sqrt(1 - a) * np.abs(out)) / np.sqrt(a)
    else:
        x0, err_x0 = out, 0.0
    x0 = np.clip(x0, -1, 1) if clip else x0
    eps = (x_t - np.sqrt(a) * x0) / np.sqrt(1 - a)                    # Eq. 4 solved for eps
    err_eps = (C * EPS * (np.abs(x_t) + np.abs(np.sqrt(a) * x0)) + np.sqrt(a) * err_x0) \
        / np.sqrt(1 - a)
    gap = np.maximum(1 - a / ap, 0)
    sig = eta * np.sqrt((1 - ap) / (1 - a) * gap)                     # Eq. 16
    err_sig = sig * C * EPS * (1 + 1 / np.maximum(gap, EPS))          # 1 - a/ap cancels
    d2 = np.maximum(1 - ap - sig**2, 0)
    dirn = np.sqrt(d2)                                                # Eq. 12, direction
    delta = C * EPS * (1 + sig**2) + 2 * sig * err_sig                # error of d2
    err_dir = np.minimum(np.sqrt(delta), delta / np.maximum(dirn, EPS))
    x_prev = np.sqrt(ap) * x0 + dirn * eps + sig * z                  # Eq. 12
    err_prev = C * EPS * (np.abs(np.sqrt(ap) * x0) + np.abs(dirn * eps) + np.abs(sig * z)) \
        + np.sqrt(ap) * err_x0 + dirn * err_eps + err_dir * np.abs(eps) + err_sig * np.abs(z)
    return x_prev, x0, err_prev, err_x0


@pytest.mark.parametrize("runner", RUNNERS)
@given(case=step_case(), param=st.sampled_from(["eps", "x0"]), clip=st.booleans(),
       eta=st.sampled_from([0.0, 0.5, 1.0]), skip=st.integers(1, 50))
def test_ddim_step(runner, case, param, clip, eta, skip):
    B, dims, T, t, rng = case
    abar = schedule(T)["abar"].astype(np.float32)
    t_prev = t - skip
    t_prev[t_prev < 0] = -1                                          # the step to x0
    out, x_t, z = f32(*(rng.standard_normal((B, *dims)) for _ in range(3)))
    want_prev, want_x0, err_prev, err_x0 = ddim_ref(out, x_t, t, t_prev, z, abar, param, clip,
                                                    eta)
    with on(runner) as dev:
        got_prev, got_x0 = dev.get(cuda.ddim_step(*dev.put(out, x_t, t, t_prev, z, abar),
                                                  eta=eta, param=param, clip=clip))
    assert_close(got_x0, want_x0, atol=err_x0, rtol=RTOL, what=f"ddim x0^ ({param})")
    assert_close(got_prev, want_prev, atol=err_prev, rtol=RTOL, what=f"ddim x_prev ({param})")


def test_param_codes_match_the_kernel_source():
    defined = dict(re.findall(r"#define PARAM_(\w+) (\d+)", cuda.source("diffusion.cu")))
    assert {k.lower(): int(v) for k, v in defined.items()} == cuda.PARAMS, \
        f"PARAM_* in diffusion.cu {defined} != cuda.PARAMS {cuda.PARAMS}"


def test_rejects_bad_arguments():
    x = np.zeros((2, 3), np.float32)
    buf = np.ones(5, np.float32)
    with on("ascending"):
        with pytest.raises(TypeError, match="float32"):
            cuda.q_sample(x.astype(np.float64), x, np.array([0, 1]), buf, buf)
        with pytest.raises(ValueError, match=r"\[0, 5\)"):
            cuda.q_sample(x, x, np.array([0, 5]), buf, buf)
        with pytest.raises(ValueError, match="shape"):
            cuda.q_sample(x, x[:1], np.array([0, 1]), buf, buf)
        with pytest.raises(ValueError, match="one per sample"):
            cuda.reverse_step(x, x, np.array([0, 1]), x, clip=True, coef1=buf, coef2=buf,
                              sigma=buf)
        with pytest.raises(ValueError, match="param"):
            cuda.ddim_step(x, x, np.array([0, 1]), np.array([-1, 0]), x, buf, param="mu")
