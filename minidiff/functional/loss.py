"""The mean squared error of Ho et al.'s L_simple, and (inverted) dropout.

    mse_loss(ε_θ(x_t, t), ε)   is   L_simple = E ‖ε - ε_θ(x_t, t)‖²   (Ho et al. 2020, Eq. 14)

Dropout (Srivastava et al. 2014) is used in Ho et al.'s residual blocks (0.1 on CIFAR-10).
"""
import numbers

from .. import backend
from ..tensor import Tensor, op
from ._util import as_tensor, same_dtype

REDUCTIONS = ("mean", "sum", "none")


@op
def mse_loss(pred, target, reduction="mean"):
    """(pred - target)², averaged ("mean"), summed ("sum") or kept per element ("none").

    The shapes must be equal: a silent broadcast of (B, 1) against (B,) is a classic bug.
    """
    pred, target = as_tensor(pred), as_tensor(target, like=pred)
    if pred.shape != target.shape:
        raise ValueError(f"mse_loss: pred has shape {pred.shape} but target has shape "
                         f"{target.shape}; they must be equal")
    if reduction not in REDUCTIONS:
        raise ValueError(f"mse_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    same_dtype("mse_loss", pred, target)
    xp = backend.xp()
    d = pred.data - target.data                                # (...) pred - target
    sq = d * d                                                 # (...) (pred - target)²
    if reduction == "mean":
        n = max(d.size, 1)
        loss = xp.asarray(sq.sum() / n, dtype=d.dtype)         # () Σ (pred - target)² / n
    elif reduction == "sum":
        n = 1
        loss = xp.asarray(sq.sum(), dtype=d.dtype)             # () Σ (pred - target)²
    else:
        n = 1
        loss = sq                                              # (...) per element
    out = Tensor.make(loss, (pred, target))

    def _backward():
        g = (2.0 / n) * d * out.grad.data                      # d loss / d pred = 2 (pred - y) / n
        if pred.requires_grad:
            pred.accum_grad(g)
        if target.requires_grad:
            target.accum_grad(-g)                              # d loss / d target = -d / d pred
    return out.set_backward(_backward)


def check_dropout_p(p):
    """Raise a ValueError unless 0 <= p < 1 (p = 1 would drop everything and divide by 0)."""
    ok = isinstance(p, numbers.Real) and not isinstance(p, bool) and 0.0 <= p < 1.0
    if not ok:
        raise ValueError(f"dropout: p (the probability of zeroing an element) must be a number "
                         f"in [0, 1), got {p!r}")


@op
def dropout(x, p, training=True):
    """Zero each element with probability p and scale the survivors by 1/(1 - p).

    The scaling ("inverted dropout") keeps E[output] = x, so evaluation is the identity. The
    keep-mask is drawn from the library's generator, `backend.rng()`, and reused by backward.
    """
    check_dropout_p(p)
    x = as_tensor(x)
    if not training or p == 0:
        return x
    keep = backend.rng().random(x.shape, dtype=x.dtype) >= p  # (...) True with probability 1 - p
    mask = keep.astype(x.dtype) * (1.0 / (1.0 - p))            # (...) 0 or 1/(1 - p)
    out = Tensor.make(x.data * mask, (x,))

    def _backward():                                           # the same mask, no new draw
        x.accum_grad(out.grad.data * mask)
    return out.set_backward(_backward)
