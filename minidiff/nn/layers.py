"""The layers of Ho et al.'s networks and their initialisation, plus the small modules a
PyTorch user reaches for (ReLU, Identity).

Initialisation follows Ho et al.'s code (diffusion_tf/nn.py, `default_init`): weights are
variance-scaling uniform, mode "fan_avg", biases are zero. A layer made with `init_scale=0`
gets scale 1e-10 instead, as in their code; that is how they start output layers at
(almost) zero so each residual block begins as the identity. `zero_init(module)` sets every
parameter of a module to exactly zero, for when exact zeros are wanted.
"""
import math

import numpy as np

from .. import backend
from .. import functional as F
from ..functional.conv import conv2d
from ..functional.loss import check_dropout_p, dropout
from ..functional.groupnorm import group_norm, group_norm_silu
from ..validate import check_int, check_number
from .module import Module, Parameter


def variance_scaling_uniform(shape, fan_in, fan_out, scale=1.0, dtype=np.float32):
    """U(-limit, limit) with Var = scale / fan_avg: limit = √(3 · scale / ((fan_in + fan_out)/2)).

    The variance of U(-L, L) is L²/3, so this limit gives the variance scale / fan_avg
    (Glorot & Bengio 2010 when scale = 1). As in Ho et al.'s `default_init`, scale 0 means 1e-10.
    """
    scale = check_number("variance_scaling_uniform: scale", scale, 0)
    scale = 1e-10 if scale == 0 else scale
    fan_avg = (fan_in + fan_out) / 2.0
    limit = math.sqrt(3.0 * scale / fan_avg)
    u = backend.rng().random(shape, dtype=np.float64)          # U[0, 1), the library generator
    return ((2.0 * u - 1.0) * limit).astype(dtype)             # U[-limit, limit)


def zero_init(module):
    """Set every parameter of `module` to exactly zero, in place; returns the module."""
    for p in module.parameters():
        p.data[...] = 0
    return module


# ---------------------------------------------------------------------------- layers
class Linear(Module):
    """y = x Wᵀ + b, W of shape (out_features, in_features). Ho et al.'s `dense`."""

    def __init__(self, in_features, out_features, bias=True, init_scale=1.0, dtype=np.float32):
        super().__init__()
        self.in_features = check_int("Linear: in_features", in_features, 1)
        self.out_features = check_int("Linear: out_features", out_features, 1)
        w = variance_scaling_uniform((out_features, in_features), in_features, out_features,
                                     init_scale, dtype)
        self.weight = Parameter(w)                                   # (out, in)
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None   # (out,)

    def forward(self, x):                                            # (..., in) -> (..., out)
        """x Wᵀ + b over the last axis: (..., in_features) -> (..., out_features)."""
        return F.linear(x, self.weight, self.bias)


class Conv2d(Module):
    """2-d convolution, weight (out, in, kh, kw), NCHW. Ho et al.'s `conv2d`."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init_scale=1.0, dtype=np.float32):
        super().__init__()
        self.in_channels = check_int("Conv2d: in_channels", in_channels, 1)
        self.out_channels = check_int("Conv2d: out_channels", out_channels, 1)
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        self.kernel_size = (check_int("Conv2d: kernel_size", kh, 1),
                            check_int("Conv2d: kernel_size", kw, 1))
        self.stride, self.padding = stride, padding
        fan_in, fan_out = in_channels * kh * kw, out_channels * kh * kw
        w = variance_scaling_uniform((out_channels, in_channels, kh, kw), fan_in, fan_out,
                                     init_scale, dtype)
        self.weight = Parameter(w)                                   # (out, in, kh, kw)
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None   # (out,)

    def forward(self, x):                                            # (B, in, H, W)
        """(B, in, H, W) -> (B, out, H', W'), H' = (H + 2 padding - kh) // stride + 1."""
        return conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)


class GroupNorm(Module):
    """Group normalisation with a per-channel scale (ones) and shift (zeros)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.num_groups = check_int("GroupNorm: num_groups", num_groups, 1)
        self.num_channels = check_int("GroupNorm: num_channels", num_channels, 1)
        if num_channels % num_groups != 0:
            raise ValueError(f"GroupNorm: num_channels={num_channels} is not divisible by "
                             f"num_groups={num_groups}")
        self.eps = eps
        self.weight = Parameter(np.ones(num_channels, dtype))        # (C,) γ
        self.bias = Parameter(np.zeros(num_channels, dtype))         # (C,) β

    def forward(self, x):                                            # (B, C, ...) -> same
        """(x - mean) / √(var + eps) over each group of C/G channels (and all
        positions), then the per-channel scale and shift: (B, C, ...) -> (B, C, ...)."""
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class GroupNormSiLU(GroupNorm):
    """SiLU(GroupNorm(x)), computed as one op (functional.group_norm_silu): the pair that
    opens every residual block of Ho et al.'s U-Net. Same parameters as GroupNorm."""

    def forward(self, x):                                            # (B, C, ...) -> same
        """SiLU(GroupNorm(x)) in one op: (B, C, ...) -> (B, C, ...)."""
        return group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps)


class Dropout(Module):
    """Inverted dropout while training, the identity in eval mode."""

    def __init__(self, p=0.1):
        super().__init__()
        check_dropout_p(p)
        self.p = p

    def forward(self, x):
        """Training: each element zeroed with probability p, the rest scaled by 1/(1-p)
        (inverted dropout, so eval needs no rescaling); eval: x. Shape unchanged."""
        return dropout(x, self.p, training=self.training)


class SiLU(Module):
    """x · σ(x), the nonlinearity of Ho et al.'s U-Net."""

    def forward(self, x):
        """x · σ(x) elementwise, shape unchanged."""
        return F.silu(x)


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x):
        """max(x, 0) elementwise, shape unchanged."""
        return F.relu(x)


class Identity(Module):
    """Returns its input unchanged: a placeholder where a layer is optional."""

    def forward(self, x):
        """x itself."""
        return x
