"""minidiff.testing.assert_close and assert_normal: each passes at its bound, fails past it, and
says where.

Oracles: hand-made arrays at and just past atol + rtol |expected|; draws of a known normal
law (seeded) and of a law 10% wider, against the standard errors the docstring states.
"""
import numpy as np
import pytest

from minidiff import Tensor
from minidiff.testing import assert_close, assert_normal


def test_assert_close_passes_at_the_bound_and_fails_past_it():
    expected = np.array([1.0, -2.0, 4.0])
    tol = 1e-3 + 1e-2 * np.abs(expected)                      # 0.011, 0.021, 0.041
    assert_close(expected + tol * 0.999, expected, rtol=1e-2, atol=1e-3)
    assert_close(Tensor(expected - tol * 0.999), expected, rtol=1e-2, atol=1e-3)
    bumped = expected.copy()
    bumped[2] += tol[2] * 1.01
    with pytest.raises(AssertionError) as e:
        assert_close(bumped, expected, rtol=1e-2, atol=1e-3, what="y")
    lines = str(e.value).splitlines()
    assert lines[0] == "y: 1 of 3 elements differ (tolerance atol 0.001 + rtol 0.01 |expected|)"
    assert lines[1].startswith("  at (2,): expected 4.0, actual 4.04141") and "> 0.041" in lines[1]


def test_assert_close_nan_is_never_close_and_shapes_must_match():
    with pytest.raises(AssertionError, match="1 of 2 elements differ"):
        assert_close(np.array([1.0, np.nan]), np.array([1.0, np.nan]), rtol=1, atol=1)
    with pytest.raises(AssertionError, match=r"^x: shape \(2,\), expected \(3,\)$"):
        assert_close(np.zeros(2), np.zeros(3), rtol=0, atol=1, what="x")


def test_assert_close_takes_a_per_element_tolerance():
    atol = np.array([0.0, 0.5])
    assert_close([1.0, 1.4], [1.0, 1.0], rtol=0, atol=atol)
    with pytest.raises(AssertionError, match=r"atol \(per element\)"):
        assert_close([1.1, 1.0], [1.0, 1.0], rtol=0, atol=atol)


def test_assert_normal_passes_the_law_and_catches_a_wider_one():
    """n = 40000 draws: the standard error of the std is 1/√(2n) = 0.0035 of it, so a 10% wider
    law is 28 standard errors off, far past 5; the true law fails with p < 1e-6 per check."""
    rng = np.random.default_rng(0)
    assert_normal(0.3 + 0.5 * rng.standard_normal(40000), 0.3, 0.5)
    wider = r"^samples: standard deviation 0\.5[45]\d*, expected 0\.5 "
    with pytest.raises(AssertionError, match=wider):
        assert_normal(0.3 + 0.55 * rng.standard_normal(40000), 0.3, 0.5)
    with pytest.raises(AssertionError, match=r"^x: mean 0\.3[23]\d*, expected 0\.3 within 5 x"):
        assert_normal(0.33 + 0.5 * rng.standard_normal(40000), 0.3, 0.5, what="x")


def test_assert_normal_false_alarm_rate_is_what_it_says():
    """At sigmas = 1 the mean check alone fails with P(|Z| > 1) = 0.317; over 2000 seeded runs
    of n = 50 the rate must lie within 4 binomial standard errors (0.042) of that (the std
    check adds failures, so only a lower bound on the total is asserted for it)."""
    rng = np.random.default_rng(1)
    mean_fails = total_fails = 0
    for _ in range(2000):
        x = rng.standard_normal(50)
        mean_fails += abs(x.mean()) > 1 / np.sqrt(50)
        try:
            assert_normal(x, 0.0, 1.0, sigmas=1)
        except AssertionError:
            total_fails += 1
    se = np.sqrt(0.317 * 0.683 / 2000)
    assert abs(mean_fails / 2000 - 0.317) < 4 * se, mean_fails
    assert total_fails >= mean_fails


def test_assert_normal_refuses_too_few_or_non_finite_samples():
    with pytest.raises(AssertionError, match="need at least 2 finite samples"):
        assert_normal([1.0], 0.0, 1.0)
    with pytest.raises(AssertionError, match=r"got 3 \(1 not finite\)"):
        assert_normal([1.0, np.inf, 0.0], 0.0, 1.0)
