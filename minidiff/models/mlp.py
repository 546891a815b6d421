"""MLPDenoiser: the network for 2-D data (the 2-D experiment's `Denoising` network).

    [x_t, sinusoid(t)] -> depth x (Linear(hidden), SiLU) -> Linear(data_dim)

With fourier_levels = L > 0, x_t enters as its positional encoding [x_t, sin(2^k π x_t),
cos(2^k π x_t) for k < L] (Mildenhall et al. 2020, Eq. 4) instead: (1 + 2L) numbers a coordinate,
which lets the MLP draw sharp edges (Tancik et al. 2020).

Its output has the shape of x_t. What it means (ε, x0, the posterior mean μ, or v) is chosen by
GaussianDiffusion's parameterisation, not by the network. With learn_sigma=True it is twice as
wide, (B, 2 data_dim): the prediction, then v, which sets log σ_t² between log β̃_t and log β_t
(Nichol & Dhariwal 2021, Eq. 15; GaussianDiffusion's variance="learned_range").
"""
import numpy as np

from .. import functional as F
from ..functional._util import as_tensor
from ..nn import Linear, Module
from .embedding import model_timesteps, positional_encoding, timestep_embedding


class MLPDenoiser(Module):
    """The 2-D denoiser ε_θ(x_t, t) (or x0, μ, v: the diffusion's parameterisation says which):
    [x_t, sinusoid(t)] -> depth x (Linear(hidden), SiLU) -> Linear(data_dim); see the module doc.
    data_dim: coordinates a point; time_dim: the width of the timestep embedding; hidden, depth:
    the MLP's width and number of hidden layers; fourier_levels: L of the positional encoding
    (0: none); learn_sigma: also output v (twice as wide)."""
    def __init__(self, data_dim=2, time_dim=128, hidden=256, depth=3, learn_sigma=False,
                 fourier_levels=0, dtype=np.float32):
        super().__init__()
        if min(data_dim, hidden, depth) < 1:
            raise ValueError(f"MLPDenoiser: data_dim, hidden and depth must be >= 1, got "
                             f"{data_dim}, {hidden}, {depth}")
        if fourier_levels < 0:
            raise ValueError(f"MLPDenoiser: fourier_levels must be >= 0, got {fourier_levels}")
        self.data_dim, self.time_dim, self.learn_sigma = data_dim, time_dim, bool(learn_sigma)
        self.fourier_levels, self.dtype = fourier_levels, dtype
        x_width = data_dim * (1 + 2 * fourier_levels)                # x_t, or its encoding
        widths = [x_width + time_dim] + [hidden] * depth
        self.layers = [Linear(a, b, dtype=dtype) for a, b in zip(widths[:-1], widths[1:])]
        self.out = Linear(hidden, data_dim * (2 if learn_sigma else 1), dtype=dtype)

    def forward(self, x, t):
        """x_t (B, data_dim) and t (an int, or B timesteps: a list, an array or a Tensor,
        numbers >= 0) -> (B, data_dim), or (B, 2 data_dim) with learn_sigma."""
        x = as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"MLPDenoiser: x must be (B, {self.data_dim}), got {x.shape}")
        t = model_timesteps("MLPDenoiser: t", t, x.shape[0])             # (B,)
        temb = timestep_embedding(t, self.time_dim, self.dtype)           # (B, time_dim)
        if self.fourier_levels:
            x = positional_encoding(x, self.fourier_levels)     # Mildenhall et al. 2020, Eq. 4
        h = F.concat([x, temb], axis=1)                                   # (B, x_width + time_dim)
        for layer in self.layers:
            h = F.silu(layer(h))                                          # (B, hidden)
        return self.out(h)                                   # (B, data_dim), or (B, 2 data_dim)
