"""Elementwise ops. Binary ops broadcast; their backward sums back with `unbroadcast`."""
import math

import numpy as np

from .. import backend
from ..tensor import Tensor, op, unbroadcast
from ..validate import check_number
from ._util import as_tensor, pair


# ---------------------------------------------------------------------------- binary
@op
def add(a, b):
    """a + b elementwise, broadcast as NumPy: shape broadcast(a, b). The gradient of each
    input is summed back to its own shape (unbroadcast)."""
    a, b = pair(a, b, "add")
    out = Tensor.make(a.data + b.data, (a, b))

    def _backward():                                   # d(a+b)/da = d(a+b)/db = 1
        if a.requires_grad:
            a.accum_grad(unbroadcast(out.grad.data, a.shape))
        if b.requires_grad:
            b.accum_grad(unbroadcast(out.grad.data, b.shape))
    return out.set_backward(_backward)


@op
def sub(a, b):
    """a - b elementwise, broadcast as NumPy: shape broadcast(a, b)."""
    a, b = pair(a, b, "sub")
    out = Tensor.make(a.data - b.data, (a, b))

    def _backward():                                   # d(a-b)/da = 1, d(a-b)/db = -1
        if a.requires_grad:
            a.accum_grad(unbroadcast(out.grad.data, a.shape))
        if b.requires_grad:
            b.accum_grad(unbroadcast(-out.grad.data, b.shape))
    return out.set_backward(_backward)


@op
def mul(a, b):
    """a * b elementwise (Hadamard), broadcast as NumPy: shape broadcast(a, b)."""
    a, b = pair(a, b, "mul")
    out = Tensor.make(a.data * b.data, (a, b))

    def _backward():                                   # d(ab)/da = b, d(ab)/db = a
        if a.requires_grad:
            a.accum_grad(unbroadcast(out.grad.data * b.data, a.shape))
        if b.requires_grad:
            b.accum_grad(unbroadcast(out.grad.data * a.data, b.shape))
    return out.set_backward(_backward)


@op
def div(a, b):
    """a / b elementwise, broadcast as NumPy: shape broadcast(a, b)."""
    a, b = pair(a, b, "div")
    out = Tensor.make(a.data / b.data, (a, b))

    def _backward():                                   # d(a/b)/da = 1/b, d(a/b)/db = -a/b²
        if a.requires_grad:
            a.accum_grad(unbroadcast(out.grad.data / b.data, a.shape))
        if b.requires_grad:
            b.accum_grad(unbroadcast(-out.grad.data * out.data / b.data, b.shape))
    return out.set_backward(_backward)


@op
def pow(a, b):
    """a ** b. With a Tensor exponent, the gradient for b is a^b·log(a), defined for a > 0."""
    a, b = pair(a, b, "pow")
    xp = backend.xp()
    out = Tensor.make(a.data ** b.data, (a, b))

    def _backward():
        if a.requires_grad:                            # d(a^b)/da = b·a^(b-1)
            a.accum_grad(unbroadcast(out.grad.data * b.data * a.data ** (b.data - 1), a.shape))
        if b.requires_grad:                            # d(a^b)/db = a^b·log(a)
            b.accum_grad(unbroadcast(out.grad.data * out.data * xp.log(a.data), b.shape))
    return out.set_backward(_backward)


@op
def maximum(a, b):
    """Elementwise max; a tie sends the gradient to a."""
    a, b = pair(a, b, "maximum")
    xp = backend.xp()
    take_a = a.data >= b.data
    out = Tensor.make(xp.where(take_a, a.data, b.data), (a, b))

    def _backward():
        if a.requires_grad:
            a.accum_grad(unbroadcast(out.grad.data * take_a, a.shape))
        if b.requires_grad:
            b.accum_grad(unbroadcast(out.grad.data * ~take_a, b.shape))
    return out.set_backward(_backward)


# ---------------------------------------------------------------------------- unary
@op
def neg(x):
    """-x elementwise, x's shape."""
    x = as_tensor(x)
    out = Tensor.make(-x.data, (x,))

    def _backward():
        x.accum_grad(-out.grad.data)
    return out.set_backward(_backward)


@op
def exp(x):
    """e^x elementwise, x's shape."""
    x = as_tensor(x)
    out = Tensor.make(backend.xp().exp(x.data), (x,))

    def _backward():                                   # d exp(x) = exp(x)
        x.accum_grad(out.grad.data * out.data)
    return out.set_backward(_backward)


@op
def log(x):
    """The natural log ln x elementwise, x's shape (-inf at 0, NaN below)."""
    x = as_tensor(x)
    out = Tensor.make(backend.xp().log(x.data), (x,))

    def _backward():                                   # d log(x) = 1/x
        x.accum_grad(out.grad.data / x.data)
    return out.set_backward(_backward)


@op
def sqrt(x):
    """√x elementwise, x's shape."""
    x = as_tensor(x)
    out = Tensor.make(backend.xp().sqrt(x.data), (x,))

    def _backward():                                   # d √x = 1 / (2√x)
        x.accum_grad(out.grad.data / (2 * out.data))
    return out.set_backward(_backward)


@op
def sin(x):
    """sin x elementwise, x's shape (the Fourier features of the MLP's positional encoding)."""
    x = as_tensor(x)
    out = Tensor.make(backend.xp().sin(x.data), (x,))

    def _backward():                                   # d sin(x) = cos(x)
        x.accum_grad(out.grad.data * backend.xp().cos(x.data))
    return out.set_backward(_backward)


@op
def cos(x):
    """cos x elementwise, x's shape."""
    x = as_tensor(x)
    out = Tensor.make(backend.xp().cos(x.data), (x,))

    def _backward():                                   # d cos(x) = -sin(x)
        x.accum_grad(-out.grad.data * backend.xp().sin(x.data))
    return out.set_backward(_backward)


@op
def abs(x):
    """|x| elementwise, x's shape; the gradient is sign(x), 0 at 0."""
    x = as_tensor(x)
    xp = backend.xp()
    out = Tensor.make(xp.abs(x.data), (x,))

    def _backward():                                   # d|x| = sign(x), 0 at 0
        x.accum_grad(out.grad.data * xp.sign(x.data))
    return out.set_backward(_backward)


@op
def tanh(x):
    """tanh x elementwise, x's shape."""
    x = as_tensor(x)
    out = Tensor.make(backend.xp().tanh(x.data), (x,))

    def _backward():                                   # d tanh = 1 - tanh²
        x.accum_grad(out.grad.data * (1 - out.data * out.data))
    return out.set_backward(_backward)


def _sigmoid(xp, a):
    """1 / (1 + e^-a) = e^min(a, 0) / (1 + e^-|a|): no exponent is ever positive, so nothing
    overflows, tiny values keep their digits, and there is no branch (np.where is slow)."""
    return xp.exp(xp.minimum(a, 0)) / (1 + xp.exp(-xp.abs(a)))


@op
def sigmoid(x):
    """σ(x) = 1 / (1 + e^-x) elementwise, x's shape."""
    x = as_tensor(x)
    out = Tensor.make(_sigmoid(backend.xp(), x.data), (x,))

    def _backward():                                   # dσ = σ(1 - σ)
        x.accum_grad(out.grad.data * out.data * (1 - out.data))
    return out.set_backward(_backward)


@op
def relu(x):
    """max(x, 0) elementwise, x's shape; the gradient is 1 where x > 0, else 0."""
    x = as_tensor(x)
    mask = x.data > 0
    out = Tensor.make(x.data * mask, (x,))

    def _backward():                                   # d relu = 1 where x > 0, else 0
        x.accum_grad(out.grad.data * mask)
    return out.set_backward(_backward)


@op
def silu(x):
    """x·σ(x) (Elfwing et al. 2018), the nonlinearity of Ho et al.'s U-Net, in five passes
    over the numbers and one exp."""
    x = as_tensor(x)
    xp = backend.xp()
    s = xp.negative(x.data, out=xp.empty_like(x.data))   # an array even for 0-d x
    with np.errstate(over="ignore"):                   # e^-a = inf for a < -88: σ = 1/inf = 0
        xp.exp(s, out=s)
    s += 1
    xp.reciprocal(s, out=s)                            # σ(a) = 1 / (1 + e^-a)
    out = Tensor.make(x.data * s, (x,))        # SiLU(a) = a σ(a)

    def _backward():                                   # d(aσ) = σ + aσ(1-σ) = σ + y(1-σ)
        d = 1 - s
        d *= out.data
        d += s
        d *= out.grad.data
        x.accum_grad(d)
    return out.set_backward(_backward)


@op
def clip(x, lo=None, hi=None):
    """Clamp to [lo, hi] (numbers; None: no bound on that side). The gradient passes where
    lo <= x <= hi, the bounds included, as in PyTorch's clamp."""
    x = as_tensor(x)
    if lo is None and hi is None:
        raise ValueError("clip: give lo, hi or both; with neither it would do nothing")
    lo = -math.inf if lo is None else check_number("clip: lo", lo)
    hi = math.inf if hi is None else check_number("clip: hi", hi)
    if lo > hi:
        raise ValueError(f"clip: lo must be <= hi, got lo={lo!r}, hi={hi!r}")
    inside = (x.data >= lo) & (x.data <= hi)
    out = Tensor.make(backend.xp().clip(x.data, lo, hi), (x,))

    def _backward():
        x.accum_grad(out.grad.data * inside)
    return out.set_backward(_backward)


@op
def astype(x, dtype):
    """Cast (float32 <-> float64); the gradient is cast back."""
    x = as_tensor(x)
    out = Tensor.make(x.data.astype(dtype), (x,))

    def _backward():
        x.accum_grad(out.grad.data.astype(x.dtype))
    return out.set_backward(_backward)
