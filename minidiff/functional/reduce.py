"""Reductions over any axes, with keepdims, as NumPy reads axis: sum, mean, max, min."""
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
        x.accum_grad(_expand_back(out.grad, x.shape, axes).copy())
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
        x.accum_grad(_expand_back(out.grad, x.shape, axes) / n)
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
        x.accum_grad(_expand_back(out.grad, x.shape, axes) * share)
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
