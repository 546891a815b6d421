"""Property-testing the math: what minidiff's own tests use, public for yours.

    from minidiff.testing import gradcheck, assert_close, strategies, oracles

    gradient_check.py   gradcheck: every hand-written backward against float64 central
                        differences; numerical_grad, the differences alone
    asserts.py          assert_close (atol + rtol |expected|, naming the worst elements) and
                        assert_normal (sample moments against a law, to sampling error)
    strategies.py       hypothesis strategies: β schedules (hostile but valid ones too),
                        timesteps, finite arrays, conv configurations, broadcastable shapes
    oracles.py          exact answers for data N(μ, σ²) or a mixture of Gaussians: q(x_t), the
                        optimal ε-, x0-, v- and μ-predictors, the flow velocity, and the exact
                        law of every sampler's output for Gaussian data
    formulas.py         the paper's formulas the library does not need, checked: q_step (one
                        Markov step), ε, x0, μ and v from one another, the bound's ε weight

Nothing here is imported by `import minidiff`. hypothesis is needed by `strategies` alone; it
is in the `test` extra: pip install 'minidiff[test]'.
"""
import importlib

from .asserts import assert_close, assert_normal
from .gradient_check import gradcheck, numerical_grad

__all__ = ["gradcheck", "numerical_grad", "assert_close", "assert_normal", "strategies",
           "oracles"]


def __getattr__(name):
    """minidiff.testing.strategies and .oracles load when first asked for."""
    if name in ("strategies", "oracles"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
