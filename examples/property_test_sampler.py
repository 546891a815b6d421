"""Property-test your own sampler against the exact Gaussian oracle.

A user's sampler, written in plain NumPy, runs with the perfect ε-model of Gaussian data
N(m, s²). Every step is then affine in x plus Gaussian noise, so minidiff.testing.oracles knows
the exact law of the output, and the samples' mean and standard deviation must match it to
sampling error, on every schedule hypothesis draws: hostile ones too (T = 1, non-monotone β,
β near 0 and near 1). The same check fits DDIM: oracles.ddim_output_law(betas, data, τ, η).

    python examples/property_test_sampler.py    # the sampler passes; two broken copies fail

The broken copies carry the classic bugs: σ_t without its square root, and ᾱ_{t-1} read at
index t - 1 even at t = 0, where NumPy wraps round to ᾱ_T instead of ᾱ_0 = 1 (off by one).
tests/test_example_property_sampler.py runs this file; the README's guide quotes it.
"""
from functools import partial

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff.testing import assert_normal, oracles, strategies

N = 4000                     # samples per drawn case: the standard error of the mean is s/63


def my_sampler(betas, model, x, rng, bug=None):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) from x = x_T, with σ_t² = β̃_t."""
    abar = np.cumprod(1.0 - betas)
    for t in reversed(range(len(betas))):
        a = abar[t]
        a_prev = abar[t - 1] if t > 0 or bug == "off by one" else 1.0     # ᾱ_{t-1}; ᾱ_0 = 1
        x0 = (x - np.sqrt(1 - a) * model(x, t)) / np.sqrt(a)              # Ho et al. 2020, Eq. 15
        c1 = np.sqrt(a_prev) * betas[t] / (1 - a)                         # Ho et al. 2020, Eq. 7
        c2 = np.sqrt(1 - betas[t]) * (1 - a_prev) / (1 - a)               # Ho et al. 2020, Eq. 7
        var = (1 - a_prev) / (1 - a) * betas[t]                # β̃_t, Ho et al. 2020, Eq. 7
        sigma = var if bug == "no sqrt" else np.sqrt(var)
        x = c1 * x0 + c2 * x + sigma * rng.standard_normal(x.shape)       # Ho et al. 2020, Alg. 2
    return x


def check(sampler):
    """The property: with the perfect model, `sampler`'s output has the oracle's exact law."""
    @settings(max_examples=25, deadline=None, database=None, report_multiple_bugs=False)
    @given(strategies.betas(max_T=12), strategies.gaussian_data(), st.integers(0, 2**32 - 1))
    def test(betas, gauss, seed):
        rng = np.random.default_rng(seed)
        model = oracles.optimal_model(betas, gauss, "eps")              # E[ε | x_t], exactly
        x = sampler(betas, model, rng.standard_normal(N), rng)
        law = oracles.ddpm_output_law(betas, gauss, "fixed_small")      # exact mean and std
        assert_normal(x, law.mean, law.std, atol=1e-8)                  # 5 standard errors
    return test


test_my_sampler = check(my_sampler)
BROKEN = {bug: partial(my_sampler, bug=bug) for bug in ("no sqrt", "off by one")}

if __name__ == "__main__":
    test_my_sampler()
    print("my_sampler: passes against the exact law")
    for bug, sampler in BROKEN.items():
        try:
            check(sampler)()
        except AssertionError as e:
            print(f"my_sampler with {bug!r}: caught: {str(e).splitlines()[0]}")
        else:
            raise SystemExit(f"my_sampler with {bug!r}: NOT caught")
