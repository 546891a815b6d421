"""The variance Σ_θ(x_t, t) = σ_t² I of p_θ(x_{t-1} | x_t) (Ho et al. 2020, Eq. 1).

Each choice is a function (diffusion, var_out, t, shape) -> (variance, log_variance), picked
once when GaussianDiffusion is built. var_out is the second half of the network's channels for
learned_range, None otherwise. Fixed choices return arrays shaped (B, 1, …) to broadcast.

    fixed_large    σ_t² = β_t        (Ho et al. 2020, §3.2; optimal for x0 ~ N(0, I))
    fixed_small    σ_t² = β̃_t        (Ho et al. 2020, §3.2; optimal for x0 a single point)
    learned_range  log σ_t² between log β̃_t and log β_t (Nichol & Dhariwal 2021, Eq. 15)
"""
from typing import Callable, NamedTuple

from .. import functional as F


class Variance(NamedTuple):
    name: str
    channels: int          # the network outputs channels × C channels for a C-channel x_t
    fn: Callable


def _fixed_large(d, var_out, t, shape):
    # σ_t² = β_t (Ho et al. 2020, §3.2); at index 0 Ho et al.'s code uses β̃ of index 1
    # instead, for a better decoder likelihood L_0 (see GaussianDiffusion.large_variance).
    return d.extract(d.large_variance, t, shape), d.extract(d.large_log_variance, t, shape)


def _fixed_small(d, var_out, t, shape):
    # σ_t² = β̃_t (Ho et al. 2020, §3.2 and Eq. 7); its log is clipped at index 0, where β̃ = 0.
    return (d.extract(d.posterior_variance, t, shape),
            d.extract(d.posterior_log_variance_clipped, t, shape))


def _learned_range(d, var_out, t, shape):
    # The network outputs v in [-1, 1] per dimension; frac = (v + 1)/2 in [0, 1].
    frac = var_out * 0.5 + 0.5
    min_log = d.extract(d.posterior_log_variance_clipped, t, shape)    # log β̃_t
    max_log = d.extract(d.log_betas, t, shape)                         # log β_t
    log_variance = frac * (max_log - min_log) + min_log     # Nichol & Dhariwal 2021, Eq. 15
    return F.exp(log_variance), log_variance


VARIANCES = {
    "fixed_large": Variance("fixed_large", 1, _fixed_large),
    "fixed_small": Variance("fixed_small", 1, _fixed_small),
    "learned_range": Variance("learned_range", 2, _learned_range),
}
