"""The array checks of the diffusion code's public entry points.

Each check turns a user's input into the array the math expects, or raises a ValueError that
names the argument, the value it got and what is allowed. Scalar arguments are checked by
minidiff/validate.py. Only public methods call these: the package's own calls skip them.
"""
import numbers

import numpy as np

from .. import backend
from ..tensor import Tensor


def as_data(name, x, dtype):
    """`x` (array, list or Tensor) as an array of the working dtype; it must be finite."""
    xp = backend.xp()
    if isinstance(x, Tensor):
        x = x.data
    x = xp.asarray(x, dtype=dtype)
    check_finite(name, x)
    return x


def check_finite(name, x):
    xp = backend.xp()
    bad = ~xp.isfinite(x)
    if bool(bad.any()):
        first = tuple(int(i) for i in np.argwhere(backend.to_numpy(bad))[0])
        raise ValueError(f"{name}: must be finite, got {int(bad.sum())} NaN/inf value(s), "
                         f"the first at index {first}")


def check_batch(name, x, min_ndim=1):
    """x must have a batch axis first: shape (B, ...), B >= 1."""
    if x.ndim < min_ndim or x.shape[0] < 1:
        raise ValueError(f"{name}: must have a leading batch axis, shape (B, ...) with B >= 1, "
                         f"got shape {tuple(x.shape)}")


def check_same_shape(name, x, ref_name, ref):
    if tuple(x.shape) != tuple(ref.shape):
        raise ValueError(f"{name}: must have the shape of {ref_name}, {tuple(ref.shape)}, "
                         f"got {tuple(x.shape)}")


def as_timesteps(t, num_timesteps, batch, name="t"):
    """0-based timestep indices as an int64 array of shape (batch,).

    Index t holds the paper's step t+1 (Ho et al.'s code uses the same convention), so the
    allowed range is [0, T-1]. A Python int is repeated over the batch.
    """
    xp = backend.xp()
    if isinstance(t, numbers.Integral) and not isinstance(t, bool):
        t = xp.full((batch,), int(t), dtype=xp.int64)
    t = xp.asarray(t)
    if t.dtype.kind not in "iu":
        raise ValueError(f"{name}: must hold integer timestep indices, got dtype {t.dtype}")
    if t.shape != (batch,):
        raise ValueError(f"{name}: must have shape (B,) = ({batch},), one index per example "
                         f"of the batch, got shape {tuple(t.shape)}")
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= num_timesteps:
        raise ValueError(f"{name}: indices must lie in [0, {num_timesteps - 1}] (0-based: index "
                         f"t is the paper's step t+1), got min {lo}, max {hi}")
    return t.astype(xp.int64)
