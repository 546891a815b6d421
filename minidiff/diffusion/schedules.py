"""Noise schedules β_1 … β_T, always float64 NumPy arrays of shape (T,).

Array index t holds the paper's β_{t+1} (0-based, as in Ho et al.'s code). Every schedule goes
through `check_betas`, so a bad one fails here with a clear message, not later as a NaN.

    betas = get_beta_schedule("linear", 1000)              # Ho et al. 2020, §4
    betas = get_beta_schedule("cosine", 100)               # Nichol & Dhariwal 2021, Eq. 17
"""
import math

import numpy as np

from ..validate import check_choice, check_int, check_number


def check_betas(betas):
    """β as a float64 (T,) array with every value strictly inside (0, 1)."""
    b = np.asarray(betas)
    if b.dtype.kind not in "iuf":
        raise ValueError(f"betas: must be real numbers, got dtype {b.dtype}")
    b = b.astype(np.float64)
    if b.ndim != 1 or b.shape[0] < 1:
        raise ValueError(f"betas: must be a 1-d array of T >= 1 values, got shape {b.shape}")
    if not np.isfinite(b).all():
        i = int(np.argmin(np.isfinite(b)))
        raise ValueError(f"betas: must be finite, got {b[i]} at index {i}")
    if not ((b > 0) & (b < 1)).all():
        i = int(np.argmin((b > 0) & (b < 1)))
        raise ValueError(f"betas: every β_t must lie strictly inside (0, 1), got {b[i]!r} "
                         f"at index {i}")
    return b


def _check_beta(name, value):
    return check_number(name, value, 0, 1, lo_open=True, hi_open=True)     # strictly in (0, 1)


def linear_beta_schedule(num_timesteps=1000, beta_start=1e-4, beta_end=0.02):
    """β_t rising linearly from beta_start to beta_end (Ho et al. 2020, §4: 1e-4 → 0.02)."""
    T = check_int("num_timesteps", num_timesteps, 1)
    b0, b1 = _check_beta("beta_start", beta_start), _check_beta("beta_end", beta_end)
    return check_betas(np.linspace(b0, b1, T))                      # Ho et al. 2020, §4


def quadratic_beta_schedule(num_timesteps=1000, beta_start=1e-4, beta_end=0.02):
    """√β_t rising linearly ('quad' in Ho et al. 2020's code)."""
    T = check_int("num_timesteps", num_timesteps, 1)
    b0, b1 = _check_beta("beta_start", beta_start), _check_beta("beta_end", beta_end)
    return check_betas(np.linspace(b0 ** 0.5, b1 ** 0.5, T) ** 2)  # Ho et al. 2020, code


def sigmoid_beta_schedule(num_timesteps=1000, beta_start=1e-4, beta_end=0.02):
    """β_t following a sigmoid from beta_start to beta_end (Xu et al. 2022, GeoDiff's code)."""
    T = check_int("num_timesteps", num_timesteps, 1)
    b0, b1 = _check_beta("beta_start", beta_start), _check_beta("beta_end", beta_end)
    s = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T)))          # sigmoid on [-6, 6]
    return check_betas(b0 + (b1 - b0) * s)                          # Xu et al. 2022 (GeoDiff)


def constant_beta_schedule(num_timesteps=1000, beta=0.02):
    """β_t = beta at every step ('const' in Ho et al. 2020's code)."""
    T = check_int("num_timesteps", num_timesteps, 1)
    return check_betas(np.full(T, _check_beta("beta", beta)))


def cosine_beta_schedule(num_timesteps=1000, s=0.008, max_beta=0.999):
    """ᾱ_t follows a squared cosine; β_t is clipped at max_beta (Nichol & Dhariwal 2021, §3.2)."""
    T = check_int("num_timesteps", num_timesteps, 1)
    s = check_number("s", s, 0, 1, hi_open=True)                   # the offset, in [0, 1)
    max_beta = _check_beta("max_beta", max_beta)
    steps = np.arange(T + 1, dtype=np.float64) / T            # t/T for t = 0 … T
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2      # Nichol & Dhariwal 2021, Eq. 17
    alphas_cumprod = f / f[0]                                 # ᾱ_t = f(t)/f(0), the same
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]      # β_t = 1 - ᾱ_t/ᾱ_{t-1}
    return check_betas(np.minimum(betas, max_beta))           # Nichol & Dhariwal 2021, §3.2


SCHEDULES = {
    "linear": linear_beta_schedule,
    "quadratic": quadratic_beta_schedule,
    "sigmoid": sigmoid_beta_schedule,
    "constant": constant_beta_schedule,
    "cosine": cosine_beta_schedule,
}


def get_beta_schedule(name, num_timesteps=1000, **kwargs):
    """One schedule by name: linear | quadratic | sigmoid | constant | cosine.

    Keyword arguments go to the schedule's function (beta_start, beta_end, beta, s, max_beta).
    A user-given array of β needs no name: pass it to GaussianDiffusion, or to check_betas.
    """
    return check_choice("name", name, SCHEDULES)(num_timesteps, **kwargs)
