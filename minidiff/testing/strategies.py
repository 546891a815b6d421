"""Hypothesis strategies for the math: schedules, timesteps, arrays, conv shapes, broadcasting.

    from hypothesis import given
    from minidiff.testing import strategies

    @given(strategies.betas(max_T=50), strategies.gaussian_data())
    def test_my_sampler(betas, data): ...

Each draws small cases that shrink well, and includes the hostile but valid ones: a schedule
of T = 1, non-monotone β, β near 0 and near 1; batch 1, odd sizes, stride larger than the
kernel, padding wider than the image.
"""
from typing import NamedTuple

import numpy as np

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError:                                       # the one line a user sees
    raise ImportError("minidiff.testing.strategies needs hypothesis: "
                      "pip install 'minidiff[test]'") from None

from ..diffusion.schedules import SCHEDULES, check_betas
from ..tensor import Tensor
from . import oracles

NAMED = tuple(SCHEDULES)


# ---------------------------------------------------------------- β schedules and timesteps
def _hostile_beta():
    return st.one_of(st.floats(1e-9, 1e-6),                 # near 0
                     st.floats(0.9, 0.9999),                 # near 1
                     st.floats(1e-4, 0.5))                   # anything between


@st.composite
def betas(draw, max_T=200, hostile=True, min_alpha_bar=1e-10):
    """A valid β schedule (float64 (T,), every β strictly inside (0, 1)) with ᾱ_T >=
    min_alpha_bar: a named schedule with drawn parameters, an array in [1e-5, 0.2], or, with
    hostile=True, a non-monotone array mixing β near 0, near 1 and between, often with T <= 3.
    Where ᾱ_T would fall below min_alpha_bar, every α_t is raised to one power p < 1 (β stays
    in (0, 1), its order unchanged), so 1/√ᾱ stays finite in float32 and its round-off small."""
    kinds = NAMED + ("array",) + (("hostile",) if hostile else ())
    kind = draw(st.sampled_from(kinds))
    T = draw(st.one_of(st.integers(1, min(3, max_T)), st.integers(1, max_T)) if hostile
             else st.integers(1, max_T))
    if kind == "hostile":
        b = np.array(draw(st.lists(_hostile_beta(), min_size=T, max_size=T)))
    elif kind == "array":
        b = draw(hnp.arrays(np.float64, T, elements=st.floats(1e-5, 0.2)))
    elif kind == "constant":
        b = SCHEDULES[kind](T, beta=draw(st.floats(1e-5, 0.2)))
    elif kind == "cosine":
        b = SCHEDULES[kind](T, s=draw(st.floats(0.0, 0.1)))
    else:
        b0 = draw(st.floats(1e-6, 0.05))
        b = SCHEDULES[kind](T, beta_start=b0, beta_end=draw(st.floats(b0, 0.2)))
    log_alpha = np.log1p(-b)                                    # log α_t
    floor = np.log(min_alpha_bar)
    if log_alpha.sum() < floor:
        b = -np.expm1(log_alpha * (floor / log_alpha.sum()))   # α_t^p, p = log floor / log ᾱ_T
    return check_betas(b)


def timesteps(num_timesteps, batch):
    """0-based timestep indices, an int64 array (batch,) in [0, num_timesteps - 1]."""
    return hnp.arrays(np.int64, batch, elements=st.integers(0, num_timesteps - 1))


def timestep_subsequences(num_timesteps):
    """A strictly increasing int64 array of 0-based indices (DDIM's τ), the last often T - 1."""
    last = st.one_of(st.just(num_timesteps - 1), st.integers(0, num_timesteps - 1))
    return last.flatmap(lambda top: st.sets(st.integers(0, top), max_size=top).map(
        lambda rest: np.array(sorted(rest | {top}), dtype=np.int64)))


# ---------------------------------------------------------------- data for the oracles
def gaussian_data(min_std=1e-2, max_std=2.0, max_abs_mean=2.0):
    """oracles.gaussian(m, s): one Gaussian, s from tiny to wide."""
    return st.builds(oracles.gaussian, st.floats(-max_abs_mean, max_abs_mean),
                     st.floats(min_std, max_std))


@st.composite
def mixture_data(draw, max_components=3, max_abs_mean=2.0, max_std=1.0):
    """oracles.mixture: 1 to max_components Gaussians (stds may be 0: atoms)."""
    n = draw(st.integers(1, max_components))
    raw = draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n))
    means = draw(st.lists(st.floats(-max_abs_mean, max_abs_mean), min_size=n, max_size=n))
    stds = draw(st.lists(st.one_of(st.just(0.0), st.floats(0.01, max_std)), min_size=n,
                         max_size=n))
    w = np.array(raw) / sum(raw)
    return oracles.mixture(w, means, stds)


# ---------------------------------------------------------------- arrays and shapes
def arrays(shape, dtype=np.float64, min_value=-2.0, max_value=2.0):
    """Finite float32 or float64 arrays of `shape` with values in [min_value, max_value]."""
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"arrays: dtype must be float32 or float64, got {dtype}")
    lo, hi = dtype.type(min_value), dtype.type(max_value)           # the bounds in that dtype,
    lo = lo if lo >= min_value else np.nextafter(lo, dtype.type(np.inf))     # rounded inwards
    hi = hi if hi <= max_value else np.nextafter(hi, dtype.type(-np.inf))
    elements = st.floats(float(lo), float(hi), allow_nan=False, allow_infinity=False,
                         width=dtype.itemsize * 8)
    return hnp.arrays(dtype, shape, elements=elements)


def tensors(shape, dtype=np.float64, min_value=-2.0, max_value=2.0):
    """Tensors holding `arrays(shape, dtype, min_value, max_value)`."""
    return arrays(shape, dtype, min_value, max_value).map(Tensor)


def shapes(max_dims=3, max_side=4):
    """Shapes of 1 to max_dims axes, each of size 1 to max_side."""
    return st.lists(st.integers(1, max_side), min_size=1, max_size=max_dims).map(tuple)


@st.composite
def broadcastable_shapes(draw, max_dims=3, max_side=4):
    """Two shapes that broadcast, in either direction (a size 1 on either side, or missing)."""
    nd = draw(st.integers(1, max_dims))
    base = draw(st.lists(st.integers(1, max_side), min_size=nd, max_size=nd))
    a, b = list(base), list(base)
    for i in range(nd):
        r = draw(st.integers(0, 2))
        if r == 1:
            a[i] = 1
        elif r == 2:
            b[i] = 1
    a = a[draw(st.integers(0, nd - 1)):]             # drop leading axes of one side
    if draw(st.booleans()):
        a, b = b, a
    return tuple(a), tuple(b)


class ConvConfig(NamedTuple):
    """One conv2d problem: x (batch, in_channels, height, width), w (out_channels, in_channels,
    *kernel); stride, padding and kernel are (h, w) pairs."""
    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: tuple
    stride: tuple
    padding: tuple
    bias: bool

    @property
    def x_shape(self):
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def w_shape(self):
        return (self.out_channels, self.in_channels) + self.kernel

    @property
    def out_shape(self):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return (self.batch, self.out_channels, (self.height + 2 * ph - kh) // sh + 1,
                (self.width + 2 * pw - kw) // sw + 1)


@st.composite
def conv_configs(draw, max_size=7, max_kernel=3, max_stride=2, max_padding=2, max_batch=2,
                 max_channels=3):
    """A ConvConfig whose kernel fits the padded input: batch 1 often, odd and even sizes,
    non-square kernels and strides, padding up to and past the kernel."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    ph, pw = draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding))
    H = draw(st.integers(max(1, kh - 2 * ph), max(max_size, kh)))
    W = draw(st.integers(max(1, kw - 2 * pw), max(max_size, kw)))
    B = draw(st.one_of(st.just(1), st.integers(1, max_batch)))
    C, Cout = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    return ConvConfig(B, C, Cout, H, W, (kh, kw), (sh, sw), (ph, pw), draw(st.booleans()))
