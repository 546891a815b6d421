"""Comparisons and truth tests: eq ne lt le gt ge, any all. None has a backward: a comparison
is a step function, whose derivative is 0 wherever it is defined.

minidiff's tensors hold floats only, so each result is a mask: 1.0 where the test holds and 0.0
where it does not, in the operands' dtype, with requires_grad=False. A mask multiplies like any
tensor (x * (x > 0) is relu's forward), and bool() reads a one-element mask as Python reads 1.0
and 0.0. Operands broadcast and must share a dtype, as for add; NaN compares as in NumPy.
"""
from ..tensor import Tensor, op
from ._util import as_tensor, pair
from .reduce import _axes


def _mask(test, like):
    """A bool array as a 0/1 Tensor of like's dtype: a leaf, outside any graph."""
    return Tensor.make(test.astype(like.dtype), ())


@op
def eq(a, b):
    """a == b elementwise, as a mask of 1.0 and 0.0 (broadcast shape), without gradient."""
    a, b = pair(a, b, "eq")
    return _mask(a.data == b.data, a)


@op
def ne(a, b):
    """a != b elementwise, as a mask of 1.0 and 0.0 (broadcast shape), without gradient."""
    a, b = pair(a, b, "ne")
    return _mask(a.data != b.data, a)


@op
def lt(a, b):
    """a < b elementwise, as a mask of 1.0 and 0.0 (broadcast shape), without gradient."""
    a, b = pair(a, b, "lt")
    return _mask(a.data < b.data, a)


@op
def le(a, b):
    """a <= b elementwise, as a mask of 1.0 and 0.0 (broadcast shape), without gradient."""
    a, b = pair(a, b, "le")
    return _mask(a.data <= b.data, a)


@op
def gt(a, b):
    """a > b elementwise, as a mask of 1.0 and 0.0 (broadcast shape), without gradient."""
    a, b = pair(a, b, "gt")
    return _mask(a.data > b.data, a)


@op
def ge(a, b):
    """a >= b elementwise, as a mask of 1.0 and 0.0 (broadcast shape), without gradient."""
    a, b = pair(a, b, "ge")
    return _mask(a.data >= b.data, a)


@op
def any(x, axis=None, keepdims=False):
    """1.0 where some element along `axis` (all axes by default) is nonzero; NaN is nonzero."""
    x = as_tensor(x)
    return _mask(x.data.any(axis=_axes(axis, x.ndim, "any"), keepdims=keepdims), x)


@op
def all(x, axis=None, keepdims=False):
    """1.0 where every element along `axis` (all axes by default) is nonzero."""
    x = as_tensor(x)
    return _mask(x.data.all(axis=_axes(axis, x.ndim, "all"), keepdims=keepdims), x)
