"""The sinusoidal timestep embedding of Ho et al. 2020 (Appendix B), after Vaswani et al. 2017,
and the positional encoding of input coordinates (Mildenhall et al. 2020, Eq. 4)."""
import math
import numbers

import numpy as np

from .. import backend
from .. import functional as F
from ..tensor import Tensor


def _sinusoids(t, dim, flip_sin_to_cos, freq_shift):
    """(B, dim) float64 rows [sin(t·f_i), cos(t·f_i)] (cos first if flipped) for a (B,) array t."""
    xp = backend.xp()
    half = dim // 2
    i = xp.arange(half, dtype=np.float64)
    freqs = xp.exp(-math.log(10000.0) * i / (half - freq_shift))                     # (half,)
    args = t.astype(np.float64)[:, None] * freqs[None, :]                             # (B, half)
    pair = [xp.cos(args), xp.sin(args)] if flip_sin_to_cos else [xp.sin(args), xp.cos(args)]
    return xp.concatenate(pair, axis=1)                                                 # (B, dim)


# Integer timesteps repeat (every sampling step embeds one t for the whole batch), so their rows
# are computed once into a table per (dim, dtype, device) and gathered.
_TABLES = {}


def _table(dim, dtype, n, flip_sin_to_cos, freq_shift):
    key = (dim, np.dtype(dtype).str, backend.get_device(), flip_sin_to_cos, freq_shift)
    table = _TABLES.get(key)
    if table is None or len(table) < n:
        rows = max(n, 1024)
        table = _sinusoids(backend.xp().arange(rows), dim, flip_sin_to_cos,
                           freq_shift).astype(dtype)                                  # (rows, dim)
        _TABLES[key] = table
    return table


def as_time_array(name, t, batch):
    """Timesteps as an array (batch,) of finite numbers, however they were given.

    t may be an int or float (repeated over the batch), a list, an array or a Tensor, of shape
    () or (batch,). Integers are the diffusion's 0-based indices; floats come from flow
    matching's continuous time (1000·t). GaussianDiffusion requires integers in [0, T)
    (diffusion/_checks.py), the networks numbers >= 0 (`model_timesteps`).
    """
    xp = backend.xp()
    if isinstance(t, Tensor):
        t = t.data
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        t = [t]
    t = xp.asarray(t)
    if t.dtype.kind not in "iuf":
        raise ValueError(f"{name}: timesteps must be integers (or floats), got dtype {t.dtype}")
    if t.ndim == 0 or t.shape == (1,):
        t = xp.broadcast_to(t.reshape(1), (batch,))
    if t.shape != (batch,):
        raise ValueError(f"{name}: must have shape (B,) = ({batch},), one timestep per example, "
                         f"or be a single int; got shape {tuple(t.shape)} (t has {t.size} "
                         f"entries for a batch of {batch})")
    if t.dtype.kind == "f" and not bool(xp.isfinite(t).all()):
        raise ValueError(f"{name}: timesteps must be finite, got NaN or inf")
    return t


def model_timesteps(name, t, batch):
    """`as_time_array`, and >= 0: what UNet and MLPDenoiser check, once per call."""
    t = as_time_array(name, t, batch)
    if batch and float(t.min()) < 0:
        raise ValueError(f"{name}: timesteps must be >= 0 (0-based: index t is the paper's "
                         f"step t+1), got min {float(t.min()):g}")
    return t


def timestep_embedding(t, dim, dtype=np.float32, flip_sin_to_cos=False, freq_shift=1):
    """[sin(t·f_i), cos(t·f_i)] with f_i = 10000^(-i / (dim/2 - freq_shift)), i = 0 … dim/2 - 1.

    The defaults are Ho et al.'s `get_timestep_embedding` (sin first, i / (dim/2 - 1)), which is
    diffusers' flip_sin_to_cos=False, freq_shift=1; diffusers' own default puts cos first and
    divides by dim/2 (flip_sin_to_cos=True, freq_shift=0).
    t: (B,) integer (or float) timesteps, 0-based as everywhere in minidiff. Returns a constant
    (B, dim) Tensor: no gradient flows into t.
    """
    if dim % 2 != 0 or dim < 4:
        raise ValueError(f"timestep_embedding: dim must be even and >= 4, got {dim}")
    if freq_shift not in (0, 1):
        raise ValueError(f"timestep_embedding: freq_shift must be 0 or 1, got {freq_shift!r}")
    xp = backend.xp()
    t = xp.asarray(t)
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding: t must be 1-d (B,), got shape {t.shape}")
    if t.dtype.kind in "iu" and t.size and int(t.min()) >= 0:
        table = _table(dim, dtype, int(t.max()) + 1, bool(flip_sin_to_cos), freq_shift)
        return Tensor(table[t])                                                       # (B, dim)
    return Tensor(_sinusoids(t, dim, flip_sin_to_cos, freq_shift).astype(dtype))      # (B, dim)


def positional_encoding(x, levels):
    """[x, sin(2^k π x) for k < L, cos(2^k π x) for k < L] with L = levels: (B, D) ->
    (B, D (1 + 2L)), differentiable in x. Mildenhall et al. 2020, Eq. 4 pairs each sin with its
    cos; an MLP reads the same numbers in any order, and all L frequencies at once cost a
    handful of ops instead of 4L.

    An MLP fed raw coordinates learns low frequencies first and fine detail last, or never
    (Tancik et al. 2020, "Fourier features let networks learn high frequency functions"); fed
    these, a sharp edge in x is a smooth function of the features."""
    B, D = x.shape
    w = backend.xp().asarray(2.0 ** np.arange(levels) * math.pi, dtype=x.dtype)[:, None]  # 2^k π
    angles = F.unsqueeze(x, 1) * w                                       # (B, L, D)
    sin = F.reshape(F.sin(angles), (B, levels * D))                     # (B, L D)
    cos = F.reshape(F.cos(angles), (B, levels * D))                     # (B, L D)
    return F.concat([x, sin, cos], axis=1)                              # (B, D (1 + 2L))
