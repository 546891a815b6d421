"""Group normalisation (Wu & He 2018), the normaliser of Ho et al.'s U-Net.

The C channels are split into G groups of C/G channels. Each (sample, group) slice is
normalised to mean 0 and variance 1 over its channels and pixels, then every channel gets its
own scale γ (weight) and shift β (bias):

    μ = mean(x over the group)            σ² = mean((x - μ)² over the group)
    x̂ = (x - μ) / √(σ² + ε)               y = γ_c · x̂ + β_c

group_norm_reference is that algorithm line by line. Its backward is written in closed form
(not by chaining primitive ops); it keeps only μ and rstd = 1/√(σ² + ε) and rebuilds x̂ from
x. group_norm, the one the layers call, returns the same numbers faster: through groupnorm_fast.py
on the CPU, and on the GPU in one kernel launch each way (kernels/groupnorm.cu, through
minidiff.cuda). group_norm_silu is SiLU(group_norm(x)) as one op, the U-Net's usual pair.
tests/test_norm_fast.py holds the fast paths equal to the reference.
"""
import numbers

import numpy as np

from .. import backend, cuda
from ..tensor import Tensor, op
from . import groupnorm_fast
from ._util import as_tensor, same_dtype
from .elementwise import silu


def _check_group_norm(x, num_groups, weight, bias):
    if x.ndim < 2:
        raise ValueError(f"group_norm: input must be (B, C) or (B, C, H, W), got shape {x.shape}")
    C = x.shape[1]
    if not isinstance(num_groups, numbers.Integral) or isinstance(num_groups, bool) \
            or num_groups < 1:
        raise ValueError(f"group_norm: num_groups must be a positive int, got {num_groups!r}")
    if C % num_groups != 0:
        raise ValueError(f"group_norm: C={C} channels (input shape {x.shape}) are not "
                         f"divisible by num_groups={num_groups}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (C,):
            raise ValueError(f"group_norm: {name} must have shape ({C},) for input "
                             f"{x.shape}, got {t.shape}")
    same_dtype("group_norm", x, weight, bias)


def _group_norm_args(x, num_groups, weight, bias, eps):
    x = as_tensor(x)
    weight = None if weight is None else as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    _check_group_norm(x, num_groups, weight, bias)
    if not eps > 0:
        raise ValueError(f"group_norm: eps must be > 0, got {eps!r}")
    return x, weight, bias


@op
def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise x of shape (B, C) or (B, C, H, W) in num_groups groups of channels.

    weight and bias (γ, β) have shape (C,); None leaves that part out.
    """
    x, weight, bias = _group_norm_args(x, num_groups, weight, bias, eps)
    if cuda.use_kernels(x.data):
        return _group_norm_kernels(x, num_groups, weight, bias, eps)
    if isinstance(x.data, np.ndarray):
        return _group_norm_fast(x, num_groups, weight, bias, eps, silu=False)
    return _group_norm_math(x, num_groups, weight, bias, eps)


@op
def group_norm_silu(x, num_groups, weight=None, bias=None, eps=1e-5):
    """SiLU(group_norm(x)) (Elfwing et al. 2018 after Wu & He 2018), as one op: the
    normalised values are never stored; the backward rebuilds them from x, μ and rstd."""
    x, weight, bias = _group_norm_args(x, num_groups, weight, bias, eps)
    if isinstance(x.data, np.ndarray) and not cuda.use_kernels(x.data):
        return _group_norm_fast(x, num_groups, weight, bias, eps, silu=True)
    return silu(group_norm(x, num_groups, weight, bias, eps))     # GPU: the kernel, then SiLU


@op
def group_norm_reference(x, num_groups, weight=None, bias=None, eps=1e-5):
    """group_norm's arguments and result, computed as the algorithm reads, on any device."""
    x, weight, bias = _group_norm_args(x, num_groups, weight, bias, eps)
    return _group_norm_math(x, num_groups, weight, bias, eps)


def _group_norm_math(x, num_groups, weight, bias, eps):
    xp = backend.xp()
    B, C = x.shape[:2]
    G = num_groups
    per_channel = (1, C) + (1,) * (x.ndim - 2)                    # γ, β broadcast over pixels

    xg = x.data.reshape(B, G, -1)                                  # (B, G, C/G · H · W)
    mean = xg.mean(axis=2, keepdims=True)              # (B, G, 1) μ, Wu & He 2018, Eq. 2
    xc = xg - mean                                     # (B, G, M) x - μ
    var = (xc * xc).mean(axis=2, keepdims=True)        # (B, G, 1) σ², Wu & He 2018, Eq. 2
    rstd = 1.0 / xp.sqrt(var + eps)                    # (B, G, 1) 1/√(σ² + ε)
    x_hat = (xc * rstd).reshape(x.shape)               # (B, C, ...) x̂, Wu & He 2018, Eq. 1
    y = x_hat if weight is None else x_hat * weight.data.reshape(per_channel)
    if bias is not None:
        y = y + bias.data.reshape(per_channel)         # y = γ x̂ + β, Wu & He 2018, Eq. 4
    parents = tuple(t for t in (x, weight, bias) if t is not None)
    out = Tensor.make(y, parents)
    del xc, x_hat                                                  # only μ and rstd are kept

    def _backward():
        dy = out.grad.data                                         # (B, C, ...)
        x_hat = ((x.data.reshape(B, G, -1) - mean) * rstd).reshape(x.shape)
        reduce_axes = (0,) + tuple(range(2, x.ndim))               # all but the channel axis
        if weight is not None and weight.requires_grad:
            weight.accum_grad((dy * x_hat).sum(axis=reduce_axes))  # dγ_c = Σ dy · x̂
        if bias is not None and bias.requires_grad:
            bias.accum_grad(dy.sum(axis=reduce_axes))              # dβ_c = Σ dy
        if x.requires_grad:
            dx_hat = dy if weight is None else dy * weight.data.reshape(per_channel)
            dx_hat = dx_hat.reshape(B, G, -1)                      # (B, G, M)
            x_hat_g = x_hat.reshape(B, G, -1)                      # (B, G, M)
            # dx = rstd · (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)), means over each group
            dx = rstd * (dx_hat - dx_hat.mean(axis=2, keepdims=True)
                         - x_hat_g * (dx_hat * x_hat_g).mean(axis=2, keepdims=True))
            x.accum_grad(dx.reshape(x.shape))
    return out.set_backward(_backward)


def _gamma_beta(x, weight, bias):
    """γ and β as arrays of x's dtype: ones and zeros where the layer has none. (C,) each."""
    xp, C = backend.xp(), x.shape[1]
    gamma = xp.ones(C, x.dtype) if weight is None else weight.data
    beta = xp.zeros(C, x.dtype) if bias is None else bias.data
    return gamma, beta


def _accumulate(x, weight, bias, dx, dgamma, dbeta):
    """Hand a fused backward's three gradients to the tensors that want them."""
    if weight is not None and weight.requires_grad:
        weight.accum_grad(dgamma)                                      # dγ_c = Σ dh · x̂
    if bias is not None and bias.requires_grad:
        bias.accum_grad(dbeta)                                         # dβ_c = Σ dh
    if x.requires_grad:
        x.accum_grad(dx)                                               # (B, C, ...)


def _group_norm_fast(x, num_groups, weight, bias, eps, silu):
    """group_norm (silu=False) or group_norm_silu on the CPU, through groupnorm_fast.py."""
    gamma, beta = _gamma_beta(x, weight, bias)                         # (C,) γ, β
    y, mean, rstd = groupnorm_fast.forward(x.data, num_groups, gamma, beta, eps, silu)
    parents = tuple(t for t in (x, weight, bias) if t is not None)
    out = Tensor.make(y, parents)

    def _backward():
        grads = groupnorm_fast.backward(out.grad.data, x.data, mean, rstd, gamma, beta, silu)
        _accumulate(x, weight, bias, *grads)
    return out.set_backward(_backward)


def _group_norm_kernels(x, num_groups, weight, bias, eps):
    """group_norm on the GPU: the same math as above, one kernel each way (groupnorm.cu)."""
    gamma, beta = _gamma_beta(x, weight, bias)                         # (C,) γ, β
    y, mean, rstd = cuda.group_norm_forward(x.data, gamma, beta, num_groups, eps)  # μ, rstd (B, G)
    parents = tuple(t for t in (x, weight, bias) if t is not None)
    out = Tensor.make(y, parents)

    def _backward():
        grads = cuda.group_norm_backward(out.grad.data, x.data, mean, rstd, gamma, beta, num_groups)
        _accumulate(x, weight, bias, *grads)
    return out.set_backward(_backward)
