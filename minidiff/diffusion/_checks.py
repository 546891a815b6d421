"""The array checks of the diffusion code's public entry points.

Each check turns a user's input into the array the math expects, or raises a ValueError that
names the argument, the value it got and what is allowed. Scalar arguments are checked by
minidiff/validate.py. Only public entry points call these, once: a loop of T steps checks its
inputs before the loop, not T times.
"""
import numpy as np

from .. import backend
from ..models.embedding import as_time_array
from ..tensor import Tensor


def as_batch(name, x, dtype, min_ndim=1, like_name=None, like=None):
    """`x` (array, list or Tensor) as a finite array of the working dtype, shaped like the
    array `like` when one is given, else with a leading batch axis: (B, ...), B >= 1."""
    xp = backend.xp()
    if isinstance(x, Tensor):
        x = x.data
    x = xp.asarray(x, dtype=dtype)
    check_finite(name, x)
    if like is not None and tuple(x.shape) != tuple(like.shape):       # as check_same_shape
        raise ValueError(f"{name}: must have the shape of {like_name}, {tuple(like.shape)}, "
                         f"got {tuple(x.shape)}")
    if like is None and (x.ndim < min_ndim or x.shape[0] < 1):
        raise ValueError(f"{name}: must have a leading batch axis, shape (B, ...) with B >= 1, "
                         f"got shape {tuple(x.shape)}")
    return x


def check_finite(name, x):
    xp = backend.xp()
    bad = ~xp.isfinite(x)
    if bool(bad.any()):
        first = tuple(int(i) for i in np.argwhere(backend.to_numpy(bad))[0])
        raise ValueError(f"{name}: must be finite, got {int(bad.sum())} NaN/inf value(s), "
                         f"the first at index {first}")


def check_same_shape(name, x, ref_name, ref):
    if tuple(x.shape) != tuple(ref.shape):
        raise ValueError(f"{name}: must have the shape of {ref_name}, {tuple(ref.shape)}, "
                         f"got {tuple(x.shape)}")


def as_timesteps(t, num_timesteps, batch, name="t"):
    """0-based timestep indices as an int64 array of shape (batch,).

    t may be an int (repeated over the batch), a list, an array or a Tensor (whose floats must
    be whole numbers), as a model takes it (models.embedding.as_time_array). Index t holds the
    paper's step t+1 (Ho et al.'s code uses the same convention), so the allowed range is
    [0, T-1].
    """
    xp = backend.xp()
    t = as_time_array(name, t, batch)
    if t.dtype.kind == "f" and bool((t != xp.round(t)).any()):
        raise ValueError(f"{name}: must hold integer timestep indices, got fractional values "
                         f"such as {float(t[t != xp.round(t)][0]):g}")
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= num_timesteps:
        raise ValueError(f"{name}: indices must lie in [0, {num_timesteps - 1}] (0-based: index "
                         f"t is the paper's step t+1), got min {lo}, max {hi}")
    return t.astype(xp.int64)


def as_start(name, shape, x_start, dtype):
    """A sampler's start: the given array (checked), or N(0, I) of the given shape."""
    if x_start is not None:
        x_start = as_batch(name, x_start, dtype)
        if shape is not None and tuple(shape) != tuple(x_start.shape):
            raise ValueError(f"{name}: has shape {tuple(x_start.shape)}, but shape="
                             f"{tuple(shape)} was asked for")
        return x_start
    if shape is None or len(shape) < 1 or not all(
            isinstance(n, (int, np.integer)) and n >= 1 for n in shape):
        raise ValueError(f"shape: must be a tuple of ints >= 1 such as (B, C, H, W), "
                         f"got {shape!r}")
    return backend.rng().standard_normal(tuple(shape), dtype=dtype)
