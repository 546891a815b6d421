"""The launches of kernels/groupnorm.cu: Group Normalization (Wu & He 2018) forward and
backward (functional/groupnorm.py), one group (or channel) per thread (naive) or per block."""
import numpy as np

from .. import backend
from . import _core             # for _core._launch, looked up at each call (see _core.py)
from ._core import BLOCK, _blocks, _f32, _i32, _input, _reduce_block, _same_shape


def _group_shape(x, gamma, beta, num_groups, what):
    """(N, C, HW) of x (N, C, ...), after checking that C splits into groups and that gamma
    and beta have one value per channel."""
    if x.ndim < 2:
        raise ValueError(f"minidiff.cuda.{what}: x must be (N, C, ...), got {x.shape}")
    N, C = x.shape[:2]
    if num_groups < 1 or C % num_groups:
        raise ValueError(f"minidiff.cuda.{what}: {C} channels do not split into "
                         f"{num_groups} groups")
    for name, a in (("gamma", gamma), ("beta", beta)):
        if a.shape != (C,):
            raise ValueError(f"minidiff.cuda.{what}: {name} must have shape ({C},), "
                             f"got {a.shape}")
    return N, C, x.size // max(1, N * C)


def group_norm_forward(x, gamma, beta, num_groups, eps=1e-5, naive=False):
    """GroupNorm (Wu & He 2018): returns (y, mean, rstd), the last two of shape (N, G) for the
    backward pass."""
    x, gamma, beta = _input(x, "x"), _input(gamma, "gamma"), _input(beta, "beta")
    N, C, HW = _group_shape(x, gamma, beta, num_groups, "group_norm_forward")
    xp = backend.xp()
    y = xp.empty(x.shape, dtype=np.float32)
    mean = xp.empty((N, num_groups), dtype=np.float32)
    rstd = xp.empty((N, num_groups), dtype=np.float32)
    groups = N * num_groups
    if x.size:
        args = (x, gamma, beta, y, mean, rstd, _i32(groups), _i32(C), _i32(HW),
                _i32(num_groups), _f32(eps))
        if naive:
            _core._launch("groupnorm.cu", "group_norm_forward_naive", _blocks(groups),
                          (BLOCK,), args)
        else:
            _core._launch("groupnorm.cu", "group_norm_forward", (groups,),
                          _reduce_block(C // num_groups * HW), args)
    return y, mean, rstd


def group_norm_backward(dy, x, mean, rstd, gamma, beta, num_groups, naive=False):
    """The gradients (dx, dgamma, dbeta) of group_norm_forward, given its saved mean, rstd.

    beta is checked like the forward's but not read: no gradient depends on it (nor do dgamma
    and dbeta depend on gamma)."""
    dy, x = _input(dy, "dy"), _input(x, "x")
    gamma, beta = _input(gamma, "gamma"), _input(beta, "beta")
    mean, rstd = _input(mean, "mean"), _input(rstd, "rstd")
    _same_shape("group_norm_backward", x, ("dy", dy))
    N, C, HW = _group_shape(x, gamma, beta, num_groups, "group_norm_backward")
    for name, a in (("mean", mean), ("rstd", rstd)):
        if a.shape != (N, num_groups):
            raise ValueError(f"minidiff.cuda.group_norm_backward: {name} must have shape "
                             f"{(N, num_groups)}, got {a.shape}")
    xp = backend.xp()
    dx = xp.empty(x.shape, dtype=np.float32)
    dgamma = xp.empty((C,), dtype=np.float32)
    dbeta = xp.empty((C,), dtype=np.float32)
    groups = N * num_groups
    if x.size:
        args_in = (dy, x, mean, rstd, gamma, dx, _i32(groups), _i32(C), _i32(HW),
                   _i32(num_groups))
        args_par = (dy, x, mean, rstd, dgamma, dbeta, _i32(N), _i32(C), _i32(HW),
                    _i32(num_groups))
        if naive:
            _core._launch("groupnorm.cu", "group_norm_backward_input_naive", _blocks(groups),
                          (BLOCK,), args_in)
            _core._launch("groupnorm.cu", "group_norm_backward_params_naive", _blocks(C),
                          (BLOCK,), args_par)
        else:
            _core._launch("groupnorm.cu", "group_norm_backward_input", (groups,),
                          _reduce_block(C // num_groups * HW), args_in)
            _core._launch("groupnorm.cu", "group_norm_backward_params", (C,),
                          _reduce_block(N * HW), args_par)
    else:
        dgamma[...] = 0
        dbeta[...] = 0
    return dx, dgamma, dbeta
