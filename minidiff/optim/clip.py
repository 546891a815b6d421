"""Clipping all gradients together by their global norm (Pascanu et al. 2013)."""
import math

from .. import backend
from ..nn import Module
from ..validate import check_number
from .optimizer import refuse_one_tensor


def clip_grad_norm_(params, max_norm):
    """Scale all gradients together so their global L2 norm is at most max_norm; returns ‖g‖
    before clipping, a float. (PyTorch's name; the trailing _ says the .grads change.)

    g ← g · max_norm / max(‖g‖, max_norm), with ‖g‖ over every gradient at once (TF's
    clip_by_global_norm, as in Ho et al.'s code; PyTorch divides by ‖g‖ + 1e-6). Parameters
    whose .grad is None are skipped.
    """
    if isinstance(params, Module):
        raise ValueError("clip_grad_norm_: pass module.parameters(), not the module itself")
    refuse_one_tensor(params, "clip_grad_norm_")
    max_norm = check_number("clip_grad_norm_: max_norm", max_norm, 0.0)
    if max_norm == 0:
        raise ValueError("clip_grad_norm_: max_norm must be > 0, got 0")
    xp = backend.xp()
    params = [p for p in params if p.grad is not None]
    sq = 0.0
    for p in params:
        g = p.grad.data.astype(xp.float64)                     # summed in float64
        sq = sq + (g * g).sum()
    total = math.sqrt(float(sq))                               # ‖g‖ = √(Σ_i Σ g_i²)
    if total > max_norm:
        coef = max_norm / total
        for p in params:
            g = p.grad.data                    # a new array: one set by hand may be shared
            p.grad.data = g * g.dtype.type(coef)               # g ← g · max_norm / ‖g‖
    return total


clip_grad_norm = clip_grad_norm_        # the older name, which minidiff.train still uses
