"""The sinusoidal timestep embedding of Ho et al. 2020 (Appendix B), after Vaswani et al. 2017."""
import math

import numpy as np

from .. import backend
from ..tensor import Tensor


def timestep_embedding(t, dim, dtype=np.float32):
    """[sin(t·f_i), cos(t·f_i)] with f_i = 10000^(-i / (dim/2 - 1)), i = 0 … dim/2 - 1.

    t: (B,) integer (or float) timesteps, 0-based as everywhere in minidiff. Returns a constant
    (B, dim) Tensor: no gradient flows into t.
    """
    if dim % 2 != 0 or dim < 4:
        raise ValueError(f"timestep_embedding: dim must be even and >= 4, got {dim}")
    xp = backend.xp()
    t = xp.asarray(t)
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding: t must be 1-d (B,), got shape {t.shape}")
    half = dim // 2
    freqs = xp.exp(-math.log(10000.0) * xp.arange(half, dtype=np.float64) / (half - 1))  # (half,)
    args = t.astype(np.float64)[:, None] * freqs[None, :]                             # (B, half)
    emb = xp.concatenate([xp.sin(args), xp.cos(args)], axis=1)                          # (B, dim)
    return Tensor(emb.astype(dtype))
