"""Central finite differences in float64: the oracle for every backward pass."""
import numpy as np

from minidiff import Tensor


def numerical_grad(f, arrays, i, eps=1e-6):
    """d(sum(f(*arrays) * w)) / d arrays[i] by central differences, one element at a time."""
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


def grad_check(op, *arrays, atol=1e-6, rtol=1e-5, eps=1e-6, seed=0, wrt=None):
    """Check every analytic gradient of `op(*tensors)` against central differences.

    The output is contracted with a fixed random weight w, so the scalar loss sum(op(x) * w)
    exercises every output element with a different weight.
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    wrt = range(len(arrays)) if wrt is None else wrt
    out_shape = op(*[Tensor(a) for a in arrays]).shape
    w = np.random.default_rng(seed).standard_normal(out_shape)

    def f(*arrs):
        return float((op(*[Tensor(a) for a in arrs]).data * w).sum())

    ts = [Tensor(a.copy(), requires_grad=(i in wrt)) for i, a in enumerate(arrays)]
    out = op(*ts)
    out.backward(w)
    for i in wrt:
        expected = numerical_grad(f, arrays, i, eps)
        actual = ts[i].grad
        assert actual is not None, f"input {i}: no gradient reached it"
        assert actual.shape == expected.shape, (i, actual.shape, expected.shape)
        err = np.abs(actual - expected)
        tol = atol + rtol * np.abs(expected)
        if not (err <= tol).all():
            j = np.unravel_index(np.argmax(err - tol), err.shape)
            raise AssertionError(
                f"input {i}: gradient mismatch at index {j}: expected {expected[j]!r} "
                f"(finite differences), got {actual[j]!r}; max abs error {err.max():.3g}")
