"""Shape ops: reshape, unsqueeze, transpose/permute, concat, indexing, clone, and the move
between devices. They move numbers, never change them, so each backward moves the gradient back the
same way."""
import builtins
import numbers

from .. import backend
from ..backend import array_on
from ..tensor import Tensor, op
from ..validate import check_choice
from ._util import as_tensor


@op
def reshape(x, *shape):
    """x with a new shape of as many elements, given as ints or one tuple (-1: inferred),
    as numpy.reshape; the gradient is reshaped back."""
    x = as_tensor(x)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        data = x.data.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape {x.shape} ({x.numel()} elements) "
                         f"into {shape}") from None
    out = Tensor.make(data, (x,))

    def _backward():
        x.accum_grad(out.grad.data.reshape(x.shape))
    return out.set_backward(_backward)


def axis_index(axis, ndim, op):
    """`axis` as an index in [0, ndim), read as NumPy reads it: an int in [-ndim, ndim), the
    negatives counting from the end. Anything else is an error; it never wraps around."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for a {ndim}-d tensor; "
                         f"allowed: [{-ndim}, {ndim})")
    return int(axis) % ndim


@op
def unsqueeze(x, axis):
    """A new axis of length 1 at `axis`, in [-(ndim+1), ndim], as torch.unsqueeze (and
    numpy.expand_dims with one axis): (2, 3) -> (1, 2, 3), (2, 1, 3) or (2, 3, 1)."""
    x = as_tensor(x)
    ax = axis_index(axis, x.ndim + 1, "unsqueeze")
    return reshape(x, x.shape[:ax] + (1,) + x.shape[ax:])


def _axes_arg(axes):
    """f(x, 1, 0) and f(x, (1, 0)) name the same axes."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        return tuple(axes[0])
    return axes


@op
def transpose(x, *axes):
    """Permute axes (all reversed when none are given), like numpy.transpose."""
    x = as_tensor(x)
    if axes in ((), (None,)):
        axes = tuple(reversed(range(x.ndim)))          # transpose(x) = transpose(x, None)
    return _permute(x, _axes_arg(axes), "transpose")


@op
def permute(x, *axes):
    """torch.permute: every axis named, in its new order, as permute(x, 0, 2, 3, 1)."""
    x = as_tensor(x)
    return _permute(x, _axes_arg(axes), "permute")


def _permute(x, axes, op):
    given = axes
    axes = tuple(axis_index(a, x.ndim, op) for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"{op}: axes {given} are not a permutation for shape {x.shape}")
    inverse = tuple(sorted(range(x.ndim), key=lambda i: axes[i]))
    out = Tensor.make(x.data.transpose(axes), (x,))

    def _backward():                                   # the inverse permutation
        x.accum_grad(out.grad.data.transpose(inverse))
    return out.set_backward(_backward)


@op
def to_device(x, device):
    """x on `device` ("cpu" or "cuda"), as torch's Tensor.to: x itself when it is there, else a
    copy whose gradient is moved back to x's device."""
    x = as_tensor(x)
    device = check_choice("to: device", device, backend.DEVICES)
    source = x.device
    if source == device:
        return x
    out = Tensor.make(array_on(x.data, device), (x,))

    def _backward():
        x.accum_grad(array_on(out.grad.data, source))
    return out.set_backward(_backward)


@op
def clone(x):
    """A copy of x's data that stays on the graph (torch's clone): the gradient passes as is."""
    x = as_tensor(x)
    out = Tensor.make(x.data.copy(), (x,))

    def _backward():
        x.accum_grad(out.grad.data)
    return out.set_backward(_backward)


@op
def concat(tensors, axis=0):
    """Join along an existing axis; the backward slices the gradient back into pieces."""
    if isinstance(tensors, Tensor):                    # it iterates, but over its own rows
        raise TypeError("concat: takes a list of tensors, got a single Tensor")
    ts = [as_tensor(t) for t in tensors]
    if not ts:
        raise ValueError("concat: needs at least one tensor")
    for i, t in enumerate(ts):
        if t.ndim == 0:
            raise ValueError(f"concat: tensor {i} is 0-d; only tensors with an axis can be "
                             f"concatenated")
    ref = ts[0]
    ax = axis_index(axis, ref.ndim, "concat")
    for t in ts[1:]:
        if t.dtype != ref.dtype:
            raise ValueError(f"concat: dtype mismatch, {ref.dtype} {ref.shape} vs "
                             f"{t.dtype} {t.shape}")
        if t.ndim != ref.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref.shape))
                                     if i != ax):
            raise ValueError(f"concat: shapes {ref.shape} and {t.shape} differ off axis {axis}")
    out = Tensor.make(backend.xp().concatenate([t.data for t in ts], axis=ax), ts)
    bounds = [0]
    for t in ts:
        bounds.append(bounds[-1] + t.shape[ax])

    def _backward():
        for t, lo, hi in zip(ts, bounds[:-1], bounds[1:]):
            if t.requires_grad:
                idx = (builtins.slice(None),) * ax + (builtins.slice(lo, hi),)
                t.accum_grad(out.grad.data[idx].copy())
    return out.set_backward(_backward)


_BASIC_INDEX = (numbers.Integral, builtins.slice, type(Ellipsis), type(None))


@op
def getitem(x, idx):
    """Indexing by ints and slices (basic indexing): the backward scatters into zeros.

    As for a Python sequence, a wrong kind of index is a TypeError and an int out of range an
    IndexError (which ends Python's old iteration protocol)."""
    x = as_tensor(x)
    parts = idx if isinstance(idx, tuple) else (idx,)
    for p in parts:
        if not isinstance(p, _BASIC_INDEX):
            raise TypeError(f"getitem: index {p!r} is not an int, a slice, ... or None (only "
                            f"basic indexing is differentiable here)")
    try:
        data = x.data[idx]
    except IndexError as e:
        raise IndexError(f"getitem: index {idx!r} is out of range for shape {x.shape} ({e})") \
            from None
    out = Tensor.make(data, (x,))

    def _backward():
        g = backend.xp().zeros_like(x.data)
        g[idx] = out.grad.data
        x.accum_grad(g)
    return out.set_backward(_backward)
