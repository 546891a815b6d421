"""gradcheck: a hand-written backward pass against float64 central differences.

    from minidiff.testing import gradcheck
    gradcheck(lambda a, b: a * b + a.exp(), x, y)          # x, y: arrays (any shape)

The output of fn is contracted with a fixed random weight w, so the scalar sum(fn(x) * w)
exercises every output element with a different weight, and its gradient is compared, element
by element, with (f(x + h e_j) - f(x - h e_j)) / 2h. In float64 the difference's truncation
error is O(h² f''') and its round-off O(u |f| / h) (u = 2^-53): about 1e-10 at h = 1e-6 for
values and derivatives of order 1, far inside the default atol 1e-6 + rtol 1e-5 |expected|.
"""
import numpy as np

from .. import backend
from ..tensor import Tensor


def numerical_grad(f, arrays, i, eps=1e-6):
    """d f(*arrays) / d arrays[i] by central differences, one element at a time. f returns a
    float; arrays[i] is changed in place and put back."""
    x = arrays[i]
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        j = it.multi_index
        old = x[j]
        x[j] = old + eps
        hi = f(*arrays)
        x[j] = old - eps
        lo = f(*arrays)
        x[j] = old
        g[j] = (hi - lo) / (2 * eps)
    return g


def _as_float64(k, a):
    a = a.data if isinstance(a, Tensor) else a
    try:
        a = np.array(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"gradcheck: input {k} must be an array of real numbers, got "
                        f"{type(a).__name__}") from None
    if not np.isfinite(a).all():
        raise ValueError(f"gradcheck: input {k} must be finite, got {a!r}")
    return a


def gradcheck(fn, *inputs, atol=1e-6, rtol=1e-5, eps=1e-6, seed=0, wrt=None):
    """Check every analytic gradient of `fn(*tensors)` against central differences in float64.

    inputs: arrays (or Tensors, or numbers), copied to float64. wrt: the indices of the inputs
    to check (default all). The tolerance is |analytic - numeric| <= atol + rtol |numeric|
    element by element. A failure names the input, the worst index, the expected (finite
    differences) and actual (backward) values, and the tolerance there.
    """
    arrays = [_as_float64(k, a) for k, a in enumerate(inputs)]
    wrt = range(len(arrays)) if wrt is None else wrt
    out = fn(*[Tensor(a) for a in arrays])
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    w = np.random.default_rng(seed).standard_normal(out.shape)

    def f(*arrs):
        return float((fn(*[Tensor(a) for a in arrs]).data * w).sum())

    ts = [Tensor(a.copy(), requires_grad=(i in wrt)) for i, a in enumerate(arrays)]
    fn(*ts).backward(w)
    for i in wrt:
        expected = numerical_grad(f, arrays, i, eps)
        assert ts[i].grad is not None, f"input {i}: no gradient reached it"
        actual = backend.to_numpy(ts[i].grad.data)
        assert actual.shape == expected.shape, \
            f"input {i}: gradient of shape {actual.shape}, expected {expected.shape}"
        err = np.abs(actual - expected)
        tol = atol + rtol * np.abs(expected)
        if not (err <= tol).all():
            j = tuple(int(k) for k in np.unravel_index(np.argmax(err - tol), err.shape))
            raise AssertionError(
                f"input {i}: gradient mismatch at index {j}: expected {float(expected[j])!r} "
                f"(finite differences), got {float(actual[j])!r}; |error| {err[j]:.3g} > "
                f"tolerance {tol[j]:.3g} (atol {atol:g} + rtol {rtol:g} |expected|); "
                f"max abs error {err.max():.3g}")
