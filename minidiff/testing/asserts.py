"""Comparisons that say what went wrong: which elements, by how much, against what tolerance.

    assert_close(y, y_ref, rtol=1e-5, atol=1e-6, what="softmax")
    assert_normal(samples, mean, std)          # sample moments to sampling error

The tolerance of assert_close is derived, not widened: atol + rtol |expected| per element, where
atol and rtol may be arrays (a per-element bound, e.g. from a float32 error analysis).
"""
import numpy as np

from .. import backend
from ..tensor import Tensor


def _host(a):
    return np.asarray(backend.to_numpy(a.data if isinstance(a, Tensor) else a))


def assert_close(actual, expected, rtol, atol, what="array"):
    """|actual - expected| <= atol + rtol |expected| everywhere; NaN is never close. A failure
    names the first differing indices with the expected and actual values."""
    actual, expected = _host(actual), _host(expected)
    assert actual.shape == expected.shape, \
        f"{what}: shape {actual.shape}, expected {expected.shape}"
    err = np.abs(actual.astype(np.float64) - expected)
    tol = np.broadcast_to(atol + rtol * np.abs(expected), err.shape)
    bad = ~(err <= tol)
    if bad.any():
        a, r = (f"{v:g}" if np.ndim(v) == 0 else "(per element)" for v in (atol, rtol))
        lines = [f"{what}: {int(bad.sum())} of {bad.size} elements differ "
                 f"(tolerance atol {a} + rtol {r} |expected|)"]
        for idx in np.argwhere(bad)[:8]:
            i = tuple(int(v) for v in idx)
            lines.append(f"  at {i}: expected {expected[i].item()!r}, "
                         f"actual {actual[i].item()!r}, |diff| {err[i]:.3g} > {tol[i]:.3g}")
        raise AssertionError("\n".join(lines))


def assert_normal(samples, mean, std, sigmas=5.0, atol=0.0, what="samples"):
    """The mean and standard deviation of `samples` (all elements, n of them, independent draws
    of N(mean, std²)) must match within `sigmas` standard errors: std/√n for the mean and
    std/√(2(n-1)) for the standard deviation (the normal law's), plus atol for round-off.

    For a correct sampler each check fails with probability P(|Z| > sigmas): 6e-5 at 4,
    6e-7 at 5 (the default), so a hypothesis test of 25 examples stays below 3e-5.
    """
    x = _host(samples).astype(np.float64).ravel()
    n = x.size
    if n < 2 or not np.isfinite(x).all():
        raise AssertionError(f"{what}: need at least 2 finite samples, got {n} "
                             f"({int((~np.isfinite(x)).sum())} not finite)")
    got_mean, got_std = x.mean(), x.std(ddof=1)
    se_mean, se_std = std / np.sqrt(n), std / np.sqrt(2 * (n - 1))
    if not abs(got_mean - mean) <= sigmas * se_mean + atol:
        raise AssertionError(f"{what}: mean {got_mean:.6g}, expected {mean:.6g} within "
                             f"{sigmas:g} x {se_mean:.3g} (standard error, n = {n}) + {atol:g}")
    if not abs(got_std - std) <= sigmas * se_std + atol:
        raise AssertionError(f"{what}: standard deviation {got_std:.6g}, expected {std:.6g} "
                             f"within {sigmas:g} x {se_std:.3g} (standard error, n = {n}) "
                             f"+ {atol:g}")
