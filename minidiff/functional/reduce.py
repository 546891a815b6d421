"""Reductions over any axes, with keepdims, as NumPy reads axis: sum, mean, max, min, norm."""
from .. import backend
from ..tensor import Tensor, op
from ._util import as_tensor


def _axes(axis, ndim, op):
    """axis (None, int or tuple, negatives allowed) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a {ndim}-d tensor")
    return tuple(sorted(a % ndim for a in axes))


def _expand_back(g, shape, axes):
    """Broadcast a reduced gradient back over the axes it was reduced along."""
    xp = backend.xp()
    kept = list(shape)
    for a in axes:
        kept[a] = 1
    return xp.broadcast_to(g.reshape(kept), shape)


@op
def sum(x, axis=None, keepdims=False):
    """Σ of x over `axis` (an int, a tuple, or None: all axes); x's shape without those axes
    (kept as 1 with keepdims=True)."""
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, "sum")
    out = Tensor.make(x.data.sum(axis=axes, keepdims=keepdims), (x,))

    def _backward():                                   # every summand gets the output's grad
        x.accum_grad(_expand_back(out.grad.data, x.shape, axes).copy())
    return out.set_backward(_backward)


@op
def mean(x, axis=None, keepdims=False):
    """The mean of x over `axis` (an int, a tuple, or None: all axes): Σ / n, n the number of
    elements reduced; x's shape without those axes (kept as 1 with keepdims=True)."""
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, "mean")
    n = 1
    for a in axes:
        n *= x.shape[a]
    out = Tensor.make(x.data.mean(axis=axes, keepdims=keepdims), (x,))

    def _backward():                                   # each of the n summands gets grad / n
        x.accum_grad(_expand_back(out.grad.data, x.shape, axes) / n)
    return out.set_backward(_backward)


def _extreme(x, axis, keepdims, op, reduce):
    """max or min. The gradient goes to the elements that attain the extreme; k tied elements
    share it equally, 1/k each (as torch.amax and tf.reduce_max do)."""
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, op)
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"{op}: an axis it reduces over has length 0 in shape {x.shape}; "
                         f"an empty set has no {op}")
    m = reduce(x.data, axis=axes, keepdims=True)           # x's ndim, 1 along `axes`
    data = m if keepdims else m.reshape([n for i, n in enumerate(x.shape) if i not in axes])
    out = Tensor.make(data, (x,))

    def _backward():
        hit = (x.data == m).astype(x.dtype)                 # 1 where x attains the extreme
        share = hit / hit.sum(axis=axes, keepdims=True)     # ties split the gradient
        x.accum_grad(_expand_back(out.grad.data, x.shape, axes) * share)
    return out.set_backward(_backward)


@op
def max(x, axis=None, keepdims=False):
    """The largest element of x over `axis` (None: all axes); x's shape without those axes.
    Ties share the gradient equally (see _extreme)."""
    return _extreme(x, axis, keepdims, "max", backend.xp().max)


@op
def min(x, axis=None, keepdims=False):
    """The smallest element of x over `axis` (None: all axes); x's shape without those axes.
    Ties share the gradient equally (see _extreme)."""
    return _extreme(x, axis, keepdims, "min", backend.xp().min)


@op
def norm(x, p=2, axis=None, keepdims=False):
    """The 2-norm ‖x‖ = √(Σ x²) over `axis` (an int, a tuple, or None: all axes, so a matrix's
    Frobenius norm, as torch's x.norm()); x's shape without those axes (kept as 1 with
    keepdims=True). p: 2 ("fro" is the same norm); any other p is refused.
    Gradient: d‖x‖/dx = x / ‖x‖, and 0 where ‖x‖ = 0 (PyTorch's subgradient there).
    The squares are summed in float64: float32's range squared (1e±38 to 1e±76; subnormals to
    1e-90) lies inside float64's (1e±308), so no float32 input over- or underflows needlessly;
    the backward divides by that float64 norm, right even where ‖x‖ leaves float32's range."""
    x = as_tensor(x)
    if p != 2 and p != "fro":
        raise ValueError(f"norm: p={p!r} is not supported, only p=2; for another p write "
                         f"(x.abs() ** p).sum(axis) ** (1 / p), or x.abs().max(axis) for p=inf")
    axes = _axes(axis, x.ndim, "norm")
    xp = backend.xp()
    x64 = x.data.astype(xp.float64)                             # x's shape
    n64 = xp.sqrt((x64 * x64).sum(axis=axes, keepdims=True))    # x's ndim, 1 along `axes`
    n = n64.astype(x.dtype)
    data = n if keepdims else n.reshape([k for i, k in enumerate(x.shape) if i not in axes])
    out = Tensor.make(data, (x,))

    def _backward():                                   # d‖x‖/dx = x / ‖x‖, 0 where ‖x‖ = 0
        unit = x.data / xp.where(n64 == 0, 1.0, n64)   # x's shape, float64, |unit| <= 1
        g = _expand_back(out.grad.data, x.shape, axes)  # x's shape
        x.accum_grad((g * unit).astype(x.dtype))
    return out.set_backward(_backward)
