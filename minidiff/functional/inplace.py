"""In-place changes, under PyTorch's names: zero_ fill_ copy_ add_ sub_ mul_ div_, and the
operators += -= *= /= (x += y is x.add_(y)). They write into x.data and build no graph.

A graph saves the arrays its backward needs, so a tensor that requires grad may change in place
only while no graph is being built, as in PyTorch:

    with minidiff.no_grad():
        for p in model.parameters():
            p -= lr * p.grad                 # plain SGD, by hand
    p.grad.zero_()                           # a gradient requires no grad: always allowed

An operand that requires grad is refused too while grad mode is on: PyTorch would put x on the
graph, here x would hold the result and pass no gradient back (write x = x + y instead).

minidiff keeps no version counters, so unlike PyTorch it cannot tell when a graph built before
saved the array changed here: run backward() before changing what a forward used.
"""
from .. import backend
from ..autograd import is_grad_enabled
from ..tensor import Tensor
from ..validate import check_number
from ._util import as_tensor, pair

OUT_OF_PLACE = {"zero_": "x = x * 0", "fill_": "x = y", "copy_": "x = y", "add_": "x = x + y",
                "sub_": "x = x - y", "mul_": "x = x * y", "div_": "x = x / y"}   # what to write


def _target(x, name):
    """x, checked: a Tensor that may change in place now."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: x must be a Tensor, got {type(x).__name__}; wrap an array "
                        f"a with minidiff.from_numpy(a), which shares its memory")
    if x.requires_grad and is_grad_enabled():
        raise RuntimeError(
            f"{name}: this tensor requires grad, and changing it in place would change what "
            f"a graph saved; update it inside `with minidiff.no_grad():`, or compute a new "
            f"tensor ({OUT_OF_PLACE[name]}) to stay on the graph")
    return x


def _operand(x, y, name):
    """y's array, of x's dtype and broadcast to x's shape: the result must fit in x. An operand
    on the graph is refused while grad mode is on: x would hold it but pass no gradient back."""
    y = as_tensor(y, like=x)
    if y.requires_grad and is_grad_enabled():
        raise RuntimeError(f"{name}: the operand requires grad, and an in-place result is off "
                           f"the graph, so its gradient would be lost; write "
                           f"{OUT_OF_PLACE[name]} to stay on the graph, or pass y.detach()")
    if y.dtype != x.dtype:
        raise ValueError(f"{name}: x is {x.dtype}, the operand {y.dtype}; cast the operand "
                         f"first: y.astype(np.{x.dtype})")
    _, y = pair(x, y, name)
    if backend.xp().broadcast_shapes(x.shape, y.shape) != x.shape:
        raise ValueError(f"{name}: a {y.shape} operand would make x of shape {x.shape} "
                         f"bigger; an in-place result keeps x's shape: write {OUT_OF_PLACE[name]}")
    return y.data


def zero_(x):
    """x[...] = 0, in place; returns x (p.grad.zero_(), as in PyTorch)."""
    _target(x, "zero_").data[...] = 0
    return x


def fill_(x, value):
    """x[...] = value (a number), in place; returns x."""
    _target(x, "fill_").data[...] = _operand(x, value, "fill_")
    return x


def copy_(x, src):
    """x[...] = src (a Tensor, an array or a number that broadcasts to x's shape); returns x."""
    _target(x, "copy_").data[...] = _operand(x, src, "copy_")
    return x


def add_(x, y, alpha=1):
    """x += alpha · y, in place; returns x (PyTorch's p.add_(g, alpha=-lr) is SGD)."""
    y = _operand(_target(x, "add_"), y, "add_")
    alpha = check_number("add_: alpha", alpha)
    x.data += y if alpha == 1 else x.dtype.type(alpha) * y
    return x


def sub_(x, y, alpha=1):
    """x -= alpha · y, in place; returns x."""
    y = _operand(_target(x, "sub_"), y, "sub_")
    alpha = check_number("sub_: alpha", alpha)
    x.data -= y if alpha == 1 else x.dtype.type(alpha) * y
    return x


def mul_(x, y):
    """x *= y, in place; returns x."""
    x.data *= _operand(_target(x, "mul_"), y, "mul_")
    return x


def div_(x, y):
    """x /= y, in place; returns x."""
    x.data /= _operand(_target(x, "div_"), y, "div_")
    return x
