"""Elementwise, reduction, shape and matrix ops: forward against NumPy closed forms, backward
against float64 central finite differences, shapes from hypothesis."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidiff.functional as F
from minidiff import Tensor
from minidiff.testing import gradcheck, strategies


def arrays(shape, seed, lo=-2.0, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, size=shape)


BINARY = {
    "add": (F.add, np.add),
    "sub": (F.sub, np.subtract),
    "mul": (F.mul, np.multiply),
    "div": (F.div, np.divide),
    "maximum": (F.maximum, np.maximum),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=strategies.broadcastable_shapes(), seed=st.integers(0, 2**16))
def test_binary_ops_broadcast_forward_and_backward(name, shapes, seed):
    op, ref = BINARY[name]
    a = arrays(shapes[0], seed)
    b = arrays(shapes[1], seed + 1)
    if name == "div":
        b = np.sign(b) * (np.abs(b) + 0.5)          # keep away from 0
    out = op(Tensor(a), Tensor(b))
    np.testing.assert_allclose(out.data, ref(a, b), rtol=0, atol=0)
    if name == "maximum":
        full = np.broadcast_shapes(a.shape, b.shape)
        if np.min(np.abs(np.broadcast_to(a, full) - np.broadcast_to(b, full))) < 1e-3:
            return                                   # a near-tie: not differentiable there
    gradcheck(op, a, b)


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_pow_both_operands(shape, seed):
    a = arrays(shape, seed, 0.5, 2.0)                # a > 0 so d/db = a^b log a exists
    b = arrays(shape, seed + 1, -1.5, 2.5)
    np.testing.assert_allclose(F.pow(Tensor(a), Tensor(b)).data, a ** b, rtol=1e-12)
    gradcheck(F.pow, a, b)
    gradcheck(lambda x: x ** 3, arrays(shape, seed + 2))     # integer power of negatives too


UNARY = {
    "neg": (F.neg, lambda x: -x, (-2, 2)),
    "exp": (F.exp, np.exp, (-2, 2)),
    "log": (F.log, np.log, (0.2, 3)),
    "sqrt": (F.sqrt, np.sqrt, (0.2, 3)),
    "sin": (F.sin, np.sin, (-4, 4)),
    "cos": (F.cos, np.cos, (-4, 4)),
    "tanh": (F.tanh, np.tanh, (-3, 3)),
    "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), (-6, 6)),
    "relu": (F.relu, lambda x: np.where(x > 0, x, 0.0), (-2, 2)),
    "silu": (F.silu, lambda x: x / (1 + np.exp(-x)), (-6, 6)),
    "abs": (F.abs, np.abs, (-2, 2)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=st.lists(st.integers(1, 5), min_size=0, max_size=3), seed=st.integers(0, 2**16))
def test_unary_ops(name, shape, seed):
    op, ref, (lo, hi) = UNARY[name]
    x = arrays(shape, seed, lo, hi)
    if name in ("relu", "abs"):
        x = np.where(np.abs(x) < 1e-3, 0.5, x)       # keep away from the kink at 0
    np.testing.assert_allclose(op(Tensor(x)).data, ref(x), rtol=1e-12, atol=1e-15)
    gradcheck(op, x)


def test_sigmoid_and_silu_do_not_overflow():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise"):
        s = F.sigmoid(Tensor(x)).data
        y = F.silu(Tensor(x)).data
    np.testing.assert_allclose(s, [0.0, 1 / (1 + np.exp(50)), 0.5, 1 / (1 + np.exp(-50)), 1.0])
    np.testing.assert_allclose(y, x * s)


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 2**16),
       data=st.data())
def test_sum_and_mean_over_any_axes(shape, seed, data):
    x = arrays(shape, seed)
    nd = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-nd, nd - 1),
                               st.lists(st.integers(0, nd - 1), min_size=1, unique=True)
                               .map(tuple)))
    keep = data.draw(st.booleans())
    np.testing.assert_allclose(F.sum(Tensor(x), axis, keep).data,
                               np.sum(x, axis=axis, keepdims=keep), rtol=1e-12)
    np.testing.assert_allclose(F.mean(Tensor(x), axis, keep).data,
                               np.mean(x, axis=axis, keepdims=keep), rtol=1e-12)
    gradcheck(lambda t: F.sum(t, axis, keep), x)
    gradcheck(lambda t: F.mean(t, axis, keep), x)


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 2**16),
       data=st.data())
def test_reshape_and_transpose(shape, seed, data):
    x = arrays(shape, seed)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    np.testing.assert_array_equal(F.transpose(Tensor(x), perm).data, x.transpose(perm))
    gradcheck(lambda t: F.transpose(t, perm), x)
    gradcheck(lambda t: F.reshape(t, (-1,)), x)
    gradcheck(lambda t: F.reshape(t, tuple(reversed(shape))), x)


@given(n=st.integers(1, 4), seed=st.integers(0, 2**16), data=st.data())
def test_concat(n, seed, data):
    nd = data.draw(st.integers(1, 3))
    base = data.draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))
    axis = data.draw(st.integers(0, nd - 1))
    shapes = []
    for _ in range(n):
        s = list(base)
        s[axis] = data.draw(st.integers(1, 3))
        shapes.append(tuple(s))
    xs = [arrays(s, seed + i) for i, s in enumerate(shapes)]
    out = F.concat([Tensor(x) for x in xs], axis=axis)
    np.testing.assert_array_equal(out.data, np.concatenate(xs, axis=axis))
    gradcheck(lambda *ts: F.concat(ts, axis=axis), *xs)


@pytest.mark.parametrize("idx", [0, -1, slice(1, 3), (slice(None), 1), (1, slice(0, None, 2)),
                                 (Ellipsis, 0), (slice(None, None, -1),)])
def test_getitem_by_ints_and_slices(idx):
    x = arrays((4, 3), 7)
    np.testing.assert_array_equal(Tensor(x)[idx].data, x[idx])
    gradcheck(lambda t: t[idx], x)


@given(b=st.lists(st.integers(1, 3), min_size=0, max_size=2), m=st.integers(1, 4),
       k=st.integers(1, 4), n=st.integers(1, 4), seed=st.integers(0, 2**16),
       b_batched=st.booleans())
def test_matmul_batched_and_broadcast(b, m, k, n, seed, b_batched):
    a = arrays(tuple(b) + (m, k), seed)
    w = arrays((tuple(b) if b_batched else ()) + (k, n), seed + 1)
    ref = np.einsum("...ik,...kj->...ij", a, w) if b_batched else a @ w
    np.testing.assert_allclose(F.matmul(Tensor(a), Tensor(w)).data, ref, rtol=1e-12)
    gradcheck(F.matmul, a, w)


@given(lead=st.lists(st.integers(1, 3), min_size=1, max_size=2), i=st.integers(1, 5),
       o=st.integers(1, 5), seed=st.integers(0, 2**16), bias=st.booleans())
def test_linear(lead, i, o, seed, bias):
    x, w, b = arrays(tuple(lead) + (i,), seed), arrays((o, i), seed + 1), arrays((o,), seed + 2)
    ref = np.einsum("...i,oi->...o", x, w) + (b if bias else 0)
    if bias:
        np.testing.assert_allclose(F.linear(Tensor(x), Tensor(w), Tensor(b)).data, ref, rtol=1e-12)
        gradcheck(F.linear, x, w, b)
    else:
        np.testing.assert_allclose(F.linear(Tensor(x), Tensor(w)).data, ref, rtol=1e-12)
        gradcheck(F.linear, x, w)


def test_clip_and_astype():
    x = np.array([-2.0, -0.5, 0.3, 1.7])
    np.testing.assert_array_equal(F.clip(Tensor(x), -1, 1).data, [-1, -0.5, 0.3, 1])
    gradcheck(lambda t: F.clip(t, -1, 1), x)
    t = Tensor(x, requires_grad=True)
    y = F.astype(t, np.float32)
    assert y.dtype == np.float32
    (y * 2).sum().backward()
    assert t.grad.dtype == np.float64
    np.testing.assert_array_equal(t.grad, [2, 2, 2, 2])


# ------------------------------------------------------------------------------- bad input
def test_shape_mismatch_names_op_and_both_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) do not broadcast"):
        Tensor(np.ones((2, 3))) + Tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(2, 3\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"linear: input \(5, 3\) does not fit weight \(4, 2\)"):
        F.linear(Tensor(np.ones((5, 3))), Tensor(np.ones((4, 2))))
    with pytest.raises(ValueError, match=r"reshape: cannot reshape \(2, 3\)"):
        Tensor(np.ones((2, 3))).reshape(4, 2)
    with pytest.raises(ValueError, match=r"concat: shapes \(2, 3\) and \(2, 4\) differ off axis 0"):
        F.concat([Tensor(np.ones((2, 3))), Tensor(np.ones((2, 4)))], axis=0)


def test_dtype_mismatch_names_op_and_both_dtypes():
    a = Tensor(np.ones(3, dtype=np.float32))
    b = Tensor(np.ones(3, dtype=np.float64))
    with pytest.raises(ValueError, match=r"mul: dtype mismatch, float32 \(3,\) vs float64 \(3,\)"):
        a * b
    with pytest.raises(ValueError, match="matmul: dtype mismatch"):
        F.matmul(Tensor(np.ones((2, 2), np.float32)), Tensor(np.ones((2, 2))))


def test_python_scalars_keep_the_tensor_dtype():
    a = Tensor([1.0, 2.0])
    assert a.dtype == np.float32
    assert (2 * a).dtype == np.float32 and (a / 3.0).dtype == np.float32
    assert (1 - a).dtype == np.float32 and (a ** 2).dtype == np.float32
    d = Tensor(np.array([1.0, 2.0]))
    assert d.dtype == np.float64 and (0.5 * d).dtype == np.float64
