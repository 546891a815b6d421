"""What the network predicts, and how its output becomes x̂0 and μ_θ.

Each parameterisation is three small functions, chosen once when GaussianDiffusion is built:

    predict_start   (d, out, x_t, t) → x̂0, the model's guess of the clean data
    predict_mean    (d, out, x_t, t) → μ_θ(x_t, t), the mean of p_θ(x_{t-1} | x_t)
                    (Ho et al. 2020, Eq. 1)
    target          (d, x0, x_t, t, noise) → what `out` should equal, for L_simple
                    (Ho et al. 2020, Eq. 14)

`out` is the network's output, a Tensor; x0, x_t and noise are arrays. They call the unchecked
twins of GaussianDiffusion's conversions (conversions.py), whose result is a Tensor when `out`
is one, so a loss built on them is differentiable. t holds 0-based indices: index t is the
paper's step t+1. A Prediction holds one network call's output and the x̂0 recovered from it.
"""
from typing import Callable, NamedTuple


class Prediction(NamedTuple):
    """What the network says at (x_t, t): Tensors of x_t's shape, (B, C, ...)."""
    out: object            # its prediction of ε, x0, μ or v (learned_range: the first C channels)
    var_out: object        # learned_range: the last C channels, v in [-1, 1]; else None
    pred_x0: object        # x̂0, recovered from `out` by the parameterisation, unclipped


class Parameterization(NamedTuple):
    name: str
    predict_start: Callable
    predict_mean: Callable
    target: Callable


# ---------------------------------------------------------------- ε: the network predicts noise
def _eps_start(d, eps, x_t, t):
    return d._predict_start_from_noise(x_t, t, eps)        # Ho et al. 2020, Eq. 15


def _eps_mean(d, eps, x_t, t):
    return d._p_mean_from_noise(x_t, t, eps)               # Ho et al. 2020, Eq. 11


def _eps_target(d, x0, x_t, t, noise):
    return noise                                           # Ho et al. 2020, Eq. 14


# ---------------------------------------------------------------- x0: the network predicts data
def _x0_start(d, x0_hat, x_t, t):
    return x0_hat


def _x0_mean(d, x0_hat, x_t, t):
    return d._q_posterior_mean_variance(x0_hat, x_t, t)[0]  # Ho et al. 2020, Eq. 7


def _x0_target(d, x0, x_t, t, noise):
    return x0


# ---------------------------------------------------------------- μ: the network predicts μ̃_t
def _mu_start(d, mu, x_t, t):
    return d._predict_start_from_mean(x_t, t, mu)          # Ho et al. 2020, Eq. 7


def _mu_mean(d, mu, x_t, t):
    return mu


def _mu_target(d, x0, x_t, t, noise):
    return d._q_posterior_mean_variance(x0, x_t, t)[0]     # Ho et al. 2020, Eq. 7


# ---------------------------------------------------------------- v = √ᾱ ε − √(1−ᾱ) x0
def _v_start(d, v, x_t, t):
    return d._predict_start_from_v(x_t, t, v)              # Salimans & Ho 2022, §4


def _v_mean(d, v, x_t, t):
    x0_hat = d._predict_start_from_v(x_t, t, v)            # Salimans & Ho 2022, §4
    return d._q_posterior_mean_variance(x0_hat, x_t, t)[0]  # Ho et al. 2020, Eq. 7


def _v_target(d, x0, x_t, t, noise):
    return d._get_v(x0, t, noise)                          # Salimans & Ho 2022, §4


PARAMETERIZATIONS = {
    "eps": Parameterization("eps", _eps_start, _eps_mean, _eps_target),
    "x0": Parameterization("x0", _x0_start, _x0_mean, _x0_target),
    "mu": Parameterization("mu", _mu_start, _mu_mean, _mu_target),
    "v": Parameterization("v", _v_start, _v_mean, _v_target),
}
