"""Small helpers shared by every op: turning inputs into Tensors, and checking them."""
import numbers

from .. import backend
from ..tensor import Tensor


def as_tensor(x, like=None):
    """x as a Tensor; a Python number takes the dtype of `like`, so 2 * x stays float32."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, numbers.Number) and like is not None:
        return Tensor(backend.xp().asarray(x, dtype=like.dtype))
    return Tensor(x)


def pair(a, b, op):
    """Two operands of a binary op as Tensors of one dtype whose shapes broadcast."""
    a = as_tensor(a, like=b if isinstance(b, Tensor) else None)
    b = as_tensor(b, like=a)
    if a.dtype != b.dtype:
        raise ValueError(f"{op}: dtype mismatch, {a.dtype} {a.shape} vs {b.dtype} {b.shape}")
    try:
        backend.xp().broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None
    return a, b


def check_ndim(x, ndim, op, what="input", layout=""):
    if x.ndim != ndim:
        hint = f" {layout}" if layout else ""
        raise ValueError(f"{op}: {what} must be {ndim}-d{hint}, got shape {x.shape}")


def same_dtype(op, *ts):
    dts = {t.dtype for t in ts if t is not None}
    if len(dts) > 1:
        desc = ", ".join(f"{t.dtype} {t.shape}" for t in ts if t is not None)
        raise ValueError(f"{op}: dtype mismatch between {desc}")
