"""Sample-quality distances against closed forms."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff.metrics import (FLOOR_PAIRS, distances_2d, format_distances, mmd_rbf, noise_floor,
                              quantiles, sliced_wasserstein)


@settings(max_examples=8)               # each example projects on 4096 directions
@given(mx=st.floats(-3, 3), my=st.floats(-3, 3), seed=st.integers(0, 1000))
def test_sliced_w1_of_a_shift_is_two_over_pi_times_its_length(mx, my, seed):
    # Shifting a cloud by m shifts each projection on θ by m·θ, so W1 = |m·θ| exactly, and
    # E_θ |m·θ| = |m| E|cos φ| = 2|m|/π for uniform directions in 2-D. With 4096 directions
    # the Monte Carlo error of the mean has sd 0.31|m|/64 (|cos φ| has sd √(1/2 - 4/π²) = 0.31);
    # the tolerance is 5 of those, so 8 examples pass by chance with probability > 0.9999.
    a = np.random.default_rng(seed).standard_normal((300, 2))
    m = np.array([mx, my])
    sw = sliced_wasserstein(a, a + m, n_projections=4096, seed=seed)
    assert abs(sw - 2 * np.linalg.norm(m) / np.pi) <= 0.024 * np.linalg.norm(m) + 1e-9


def test_sliced_wasserstein_is_zero_for_the_same_set_and_symmetric():
    a = np.random.default_rng(0).standard_normal((200, 2))
    b = np.random.default_rng(1).standard_normal((150, 2)) * 2
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, b) == pytest.approx(sliced_wasserstein(b, a), rel=1e-12)


def test_mmd_of_two_gaussians_matches_its_closed_form():
    # For P = N(0, I), Q = N(μ, I) in d dims and k = exp(-|x-y|²/(2s²)):
    # MMD² = 2 (s²/(s²+2))^(d/2) (1 - exp(-|μ|²/(2(s²+2)))) = 0.1254 here. One unbiased
    # estimate from 1000 points a side has sd 0.0106 (measured over 10 seeds); the mean of 4
    # estimates from 2000 points has sd about 0.0106 / √2 / √4 = 0.0037; tolerance 4 sd.
    rng = np.random.default_rng(0)
    s, mu = 1.0, np.array([1.0, 0.5])
    expected = 2 * (s**2 / (s**2 + 2)) * (1 - np.exp(-(mu @ mu) / (2 * (s**2 + 2))))
    est = [mmd_rbf(rng.standard_normal((2000, 2)), rng.standard_normal((2000, 2)) + mu,
                   bandwidth=s) for _ in range(4)]
    assert np.mean(est) == pytest.approx(expected, abs=0.015)
    same = [mmd_rbf(rng.standard_normal((2000, 2)), rng.standard_normal((2000, 2)),
                    bandwidth=s) for _ in range(4)]
    assert abs(np.mean(same)) < 0.015


def test_noise_floor_is_the_median_of_independent_pairs():
    rng = np.random.default_rng(0)
    vals = []

    def metric(x, y):
        vals.append(float(np.abs(x.mean() - y.mean())))
        return vals[-1]
    floor = noise_floor(lambda n: rng.standard_normal((n, 2)), 100, metric, repeats=5)
    assert floor == float(np.median(vals)) and len(vals) == 5


def test_distances_2d_floors_take_the_median_of_their_own_number_of_pairs():
    """Sliced W1's floor is the median over FLOOR_PAIRS["sw"] pairs of fresh draws, MMD²'s
    over FLOOR_PAIRS["mmd"]; `repeats` sets both. Counted through the draws: one reference,
    then two draws a pair. The sliced W1 floor is recomputed from the same generator."""
    calls = []

    def draw(n, g):
        calls.append(n)
        return g.standard_normal((n, 2))
    samples = np.random.default_rng(1).standard_normal((40, 2))
    d = distances_2d(samples, draw, seed=7)
    assert len(calls) == 1 + 2 * (FLOOR_PAIRS["sw"] + FLOOR_PAIRS["mmd"]) and set(calls) == {40}
    assert FLOOR_PAIRS["sw"] >= 25
    g = np.random.default_rng(7)
    g.standard_normal((40, 2))                                  # the N(0, I) comparison set
    g.standard_normal((40, 2))                                  # the reference
    pairs = [sliced_wasserstein(g.standard_normal((40, 2)), g.standard_normal((40, 2)))
             for _ in range(FLOOR_PAIRS["sw"])]
    assert d["sw_floor"] == float(np.median(pairs))
    assert d["sw_floor_band"] == tuple(np.percentile(pairs, [10, 90]))
    lo, hi = sorted(pairs)[2], sorted(pairs)[-3]              # the 3rd from each end of 25
    assert lo <= d["sw_floor_band"][0] <= sorted(pairs)[3]
    assert sorted(pairs)[-4] <= d["sw_floor_band"][1] <= hi
    assert f"80% of data-vs-data pairs {d['sw_floor_band'][0]:.4f}-" in format_distances(d)
    calls.clear()
    distances_2d(samples, draw, seed=7, repeats=4)
    assert len(calls) == 1 + 2 * (4 + 4)


def test_bad_point_sets_are_refused():
    with pytest.raises(ValueError, match=r"sliced_wasserstein: need two \(n, d\) point sets"):
        sliced_wasserstein(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        mmd_rbf(np.full((5, 2), np.nan), np.zeros((5, 2)))


@given(n=st.integers(1, 60), cols=st.integers(1, 4), k=st.integers(1, 80),
       seed=st.integers(0, 2**32 - 1), ties=st.booleans())
def test_quantiles_are_numpys_linear_quantiles(n, cols, k, seed, ties):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, cols))
    if ties:
        x = np.round(x)                                      # repeated values
    levels = np.concatenate([[0.0, 1.0], g.random(k)])       # the ends and anywhere between
    want = np.quantile(x, levels, axis=0)                    # the oracle: NumPy's own
    np.testing.assert_allclose(quantiles(x, levels), want, rtol=0, atol=4e-16 * (1 + abs(x).max()))
