"""The fast paths of group_norm, group_norm_silu and silu against their references.

Oracles: groupnorm.py's group_norm_reference (Wu & He's algorithm line by line), the closed form
x / (1 + e^-x) of SiLU in float64, and float64 central differences.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidiff
from minidiff import Tensor
from minidiff.functional import group_norm, group_norm_silu, silu
from minidiff.functional.groupnorm import group_norm_reference
from minidiff.testing import assert_close, gradcheck


@st.composite
def norm_cases(draw):
    """(x, G, weight, bias) with odd sizes, batch 1, 2-D (B, C) inputs, and offset data."""
    B, G, per_group = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(), (1, 1), (3, 5), (4, 4), (7, 2)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (B, G * per_group) + spatial
    offset, scale = draw(st.floats(-5, 5)), draw(st.floats(0.1, 10))
    x = offset + scale * rng.standard_normal(shape)
    w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    return x, G, w, b


DY_SEED = 1


def _fast_and_reference(x, G, w, b, with_silu, dtype):
    """Outputs and the gradients of sum(out * dy) for x, w, b, from both paths."""
    dy = np.random.default_rng(DY_SEED).standard_normal(x.shape).astype(np.float32)
    results = []
    for fast in (True, False):
        ts = [Tensor(a.astype(dtype), requires_grad=True) for a in (x, w, b)]
        if fast:
            out = (group_norm_silu if with_silu else group_norm)(ts[0], G, ts[1], ts[2])
        else:
            out = group_norm_reference(ts[0], G, ts[1], ts[2])
            out = silu_reference(out) if with_silu else out
        out.backward(dy.astype(dtype))
        results.append([out.data] + [t.grad for t in ts])
    return results


def silu_reference(t):
    """SiLU from the primitive ops (σ through the library's sigmoid, then a product)."""
    return minidiff.functional.mul(t, minidiff.functional.sigmoid(t))


def _tolerances(x, G, w, u):
    """How far two correct computations may differ, per output (y, dx, dγ, dβ).

    Both paths add the same terms in different orders, and a sum of n terms is off by at most
    n·u·Σ|terms| (Higham 2002, Eq. 4.4), plus a handful of roundings after it (16 covers
    them). n = x.size bounds every sum's length. The terms of y and dx are at most
    (1 + |γ|)(1 + |x̂|)·rstd·(1 + |dy|) (dx = rstd·(γ dy - mean(γ dy) - x̂·mean(γ dy x̂)),
    and rstd = 1/√(σ² + ε) reaches 1/√ε for a constant group); dγ and dβ add n of them."""
    groups = x.reshape(x.shape[0], G, -1)
    rstd = 1 / np.sqrt(groups.var(axis=2) + 1e-5)
    x_hat = np.abs(groups - groups.mean(axis=2, keepdims=True)) * rstd[..., None]
    dy = np.random.default_rng(DY_SEED).standard_normal(x.shape)
    term = (1 + np.abs(w).max()) * (1 + x_hat.max()) * rstd.max() * (1 + np.abs(dy).max())
    n = x.size
    one = 16 * n * u * term
    return {"y": one, "dx": one, "dweight": one * n, "dbias": one * n}


@given(norm_cases(), st.booleans())
def test_fast_group_norm_equals_reference_in_float64(case, with_silu):
    x, G, w, b = case
    fast, ref = _fast_and_reference(x, G, w, b, with_silu, np.float64)
    tol = _tolerances(x, G, w, np.finfo(np.float64).eps)
    for name, f, r in zip(("y", "dx", "dweight", "dbias"), fast, ref):
        assert_close(f, r, rtol=0, atol=tol[name], what=name)


@given(norm_cases(), st.booleans())
def test_fast_group_norm_in_float32_is_within_float32_rounding(case, with_silu):
    """float32 fast path against the float64 reference on the same (float32) numbers."""
    x, G, w, b = (np.float32(a).astype(np.float64) if isinstance(a, np.ndarray) else a
                  for a in case)
    fast, _ = _fast_and_reference(x, G, w, b, with_silu, np.float32)
    _, ref = _fast_and_reference(x, G, w, b, with_silu, np.float64)
    assert fast[0].dtype == np.float32 and fast[1].dtype == np.float32
    tol = _tolerances(x, G, w, np.finfo(np.float32).eps)
    for name, f, r in zip(("y", "dx", "dweight", "dbias"), fast, ref):
        assert_close(f, r, rtol=0, atol=tol[name], what=name)


@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_silu_backward_matches_finite_differences(affine):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 3, 4)) * 2 + 1
    if affine:
        w, b = rng.standard_normal(6), rng.standard_normal(6)
        gradcheck(lambda x, w, b: group_norm_silu(x, 3, w, b), x, w, b, atol=1e-6, rtol=1e-5)
    else:
        gradcheck(lambda x: group_norm_silu(x, 3), x, atol=1e-6, rtol=1e-5)


@given(st.lists(st.floats(-1e4, 1e4, width=32) | st.sampled_from([-100.0, -88.8, 0.0, 88.8]),
                min_size=1, max_size=300),
)
def test_silu_matches_the_closed_form(values):
    """SiLU(x) = x / (1 + e^-x) and its derivative σ(x)(1 + x(1 - σ(x))), computed in float64
    from the float32 inputs; float32 rounding of a few operations bounds the difference.
    Below x = -ln(float32 max) = -88.72, e^-x overflows and σ becomes 0: the true SiLU there
    is at most 88.72·e^-88.72 = 2.7e-37 in size, and so is its derivative."""
    x = np.array(values, np.float32)
    t = Tensor(x, requires_grad=True)
    g = np.linspace(-1, 1, x.size).astype(np.float32)
    y = silu(t)
    y.backward(g)
    xd = x.astype(np.float64)
    sig = np.exp(-np.logaddexp(0, -xd))                           # σ(x) without overflow
    u = np.finfo(np.float32).eps
    assert y.data.dtype == np.float32
    overflow = 2.7e-37
    assert_close(y.data, xd * sig, rtol=8 * u, atol=overflow, what="silu")
    dsilu = sig * (1 + xd * (1 - sig))
    # dx = g·(σ + y(1 - σ)): y(1 - σ) ~ |x|·σ(1-σ) is a difference of rounded terms near σ=1
    assert_close(t.grad, g * dsilu, rtol=8 * u, atol=8 * u * np.abs(xd * sig) + overflow,
                 what="d silu")
