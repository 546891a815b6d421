"""group_norm, softmax and attention: forwards against naive loops, backwards against float64
central finite differences (minidiff.testing.gradcheck)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff import Tensor
from minidiff.functional.attention import attention, softmax
from minidiff.functional.groupnorm import group_norm
from minidiff.testing import assert_close, gradcheck


# ---------------------------------------------------------------------------- references
def group_norm_loops(x, G, weight, bias, eps):
    """Group norm by loops over samples and groups, statistics by Python sums."""
    B, C = x.shape[:2]
    y = np.empty_like(x)
    per = C // G
    for b in range(B):
        for g in range(G):
            vals = x[b, g * per:(g + 1) * per].ravel().tolist()
            mu = sum(vals) / len(vals)
            var = sum((v - mu) ** 2 for v in vals) / len(vals)
            for c in range(g * per, (g + 1) * per):
                y[b, c] = (x[b, c] - mu) / math.sqrt(var + eps) * weight[c] + bias[c]
    return y


def attention_loops(q, k, v):
    """out[b, :, i] = Σ_j softmax_j(q_i·k_j / √C) v[b, :, j], by loops."""
    B, C, N = q.shape
    out = np.zeros_like(q)
    for b in range(B):
        for i in range(N):
            s = [sum(q[b, c, i] * k[b, c, j] for c in range(C)) / math.sqrt(C) for j in range(N)]
            m = max(s)
            e = [math.exp(sj - m) for sj in s]
            z = sum(e)
            for j in range(N):
                out[b, :, i] += e[j] / z * v[b, :, j]
    return out


# ---------------------------------------------------------------------------- strategies
@st.composite
def gn_case(draw, spatial=True):
    """(B, C, H, W) or (B, C) with G dividing C; odd sizes and batch 1 included."""
    B = draw(st.integers(1, 3))
    G = draw(st.integers(1, 4))
    C = G * draw(st.integers(1, 3))
    shape = (B, C, draw(st.integers(1, 4)), draw(st.integers(1, 5))) if spatial else (B, C)
    seed = draw(st.integers(0, 2**31 - 1))
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape) * draw(st.sampled_from([0.1, 1.0, 10.0])) + r.standard_normal()
    return x, G, r.standard_normal(C), r.standard_normal(C)


@st.composite
def qkv_case(draw):
    B, C, N = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    r = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return tuple(r.standard_normal((B, C, N)) for _ in range(3))


# ---------------------------------------------------------------------------- group_norm
@given(gn_case(spatial=True) | gn_case(spatial=False), st.sampled_from([1e-5, 1e-2]))
def test_group_norm_forward_matches_loops(case, eps):
    x, G, w, b = case
    y = group_norm(Tensor(x), G, Tensor(w), Tensor(b), eps=eps)
    assert_close(y.data, group_norm_loops(x, G, w, b, eps), atol=1e-10, rtol=1e-9)


@given(gn_case(spatial=True) | gn_case(spatial=False))
def test_group_norm_backward_matches_finite_differences(case):
    x, G, w, b = case
    x = x / (np.abs(x).max() + 1e-3)   # keep σ moderate so finite differences stay accurate
    gradcheck(lambda x, w, b: group_norm(x, G, w, b), x, w, b, atol=1e-5, rtol=1e-4)


def test_group_norm_backward_without_affine():
    x = np.random.default_rng(1).standard_normal((2, 6, 3, 3))
    gradcheck(lambda x: group_norm(x, 3), x, atol=1e-6, rtol=1e-5)


def test_group_norm_output_has_zero_mean_unit_variance_per_group():
    """Closed form: without γ, β each (sample, group) slice has mean 0 and variance σ²/(σ²+ε)."""
    x = np.random.default_rng(2).standard_normal((3, 8, 5, 5)) * 3 + 1
    eps = 1e-5
    y = group_norm(Tensor(x), 4, eps=eps).data.reshape(3, 4, -1)
    var_x = x.reshape(3, 4, -1).var(axis=2)
    np.testing.assert_allclose(y.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=2), var_x / (var_x + eps), rtol=1e-12)


def test_group_norm_float32_stays_float32():
    r = np.random.default_rng(3)
    x = Tensor(r.standard_normal((2, 8, 4, 4)).astype(np.float32), requires_grad=True)
    w = Tensor(np.ones(8, np.float32), requires_grad=True)
    b = Tensor(np.zeros(8, np.float32), requires_grad=True)
    y = group_norm(x, 2, w, b)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
    ref = group_norm_loops(x.data.astype(np.float64), 2, np.ones(8), np.zeros(8), 1e-5)
    assert_close(y.data, ref, atol=1e-5, rtol=1e-5)


def test_group_norm_weight_only_gradients_flow_to_requires_grad_inputs_only():
    r = np.random.default_rng(4)
    x = Tensor(r.standard_normal((2, 4, 3, 3)))
    w = Tensor(r.standard_normal(4), requires_grad=True)
    y = group_norm(x, 2, w)
    y.backward(np.ones(y.shape))
    assert x.grad is None and w.grad is not None


@pytest.mark.parametrize("shape, G, wshape, match", [
    ((2, 6, 4, 4), 4, None, r"C=6 .* not divisible by num_groups=4"),
    ((2, 6, 4, 4), 0, None, r"num_groups must be a positive int, got 0"),
    ((2, 6, 4, 4), 2.0, None, r"num_groups must be a positive int, got 2.0"),
    ((6,), 2, None, r"must be \(B, C\) or \(B, C, H, W\), got shape \(6,\)"),
    ((2, 6, 4, 4), 3, (3,), r"weight must have shape \(6,\) .* got \(3,\)"),
])
def test_group_norm_bad_input(shape, G, wshape, match):
    x = Tensor(np.zeros(shape))
    w = None if wshape is None else Tensor(np.ones(wshape))
    with pytest.raises(ValueError, match=match):
        group_norm(x, G, w)


def test_group_norm_dtype_mismatch():
    with pytest.raises(ValueError, match="group_norm: dtype mismatch"):
        group_norm(Tensor(np.zeros((1, 2))), 1, Tensor(np.ones(2, np.float32)))


# ---------------------------------------------------------------------------- softmax
@given(st.integers(1, 4), st.integers(1, 5), st.integers(-2, 1), st.integers(0, 2**31 - 1))
def test_softmax_forward_closed_form_and_backward(rows, cols, axis, seed):
    x = np.random.default_rng(seed).standard_normal((rows, cols)) * 3
    y = softmax(Tensor(x), axis=axis).data
    expected = np.exp(x) / np.exp(x).sum(axis=axis, keepdims=True)
    assert_close(y, expected, atol=1e-15, rtol=1e-12)
    gradcheck(lambda x: softmax(x, axis=axis), x, atol=1e-7, rtol=1e-6)


def test_softmax_is_stable_for_huge_inputs():
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]], dtype=np.float32)
    y = softmax(Tensor(x)).data
    e = np.exp([0.0, 1.0, 2.0])
    assert np.isfinite(y).all()
    assert_close(y[0], e / e.sum(), atol=1e-7, rtol=1e-6)
    assert_close(y[1], e[::-1] / e.sum(), atol=1e-7, rtol=1e-6)


def test_softmax_bad_axis():
    with pytest.raises(ValueError, match=r"softmax: axis 2 is out of range for shape \(2, 3\)"):
        softmax(Tensor(np.zeros((2, 3))), axis=2)


# ---------------------------------------------------------------------------- attention
@given(qkv_case())
def test_attention_forward_matches_loops(qkv):
    q, k, v = qkv
    y = attention(Tensor(q), Tensor(k), Tensor(v)).data
    assert_close(y, attention_loops(q, k, v), atol=1e-12, rtol=1e-10)


@given(qkv_case())
def test_attention_backward_matches_finite_differences(qkv):
    gradcheck(attention, *qkv, atol=1e-6, rtol=1e-5)


def test_attention_uniform_scores_average_the_values():
    """Closed form: with q = 0 every weight is 1/N, so each output pixel is the mean of v."""
    v = np.random.default_rng(5).standard_normal((2, 3, 7))
    q = np.zeros_like(v)
    k = np.random.default_rng(6).standard_normal((2, 3, 7))
    y = attention(Tensor(q), Tensor(k), Tensor(v)).data
    assert_close(y, np.broadcast_to(v.mean(axis=2, keepdims=True), v.shape),
                 atol=1e-15, rtol=1e-12)


def test_attention_float32_stays_float32():
    r = np.random.default_rng(7)
    q, k, v = (Tensor(r.standard_normal((2, 4, 9)).astype(np.float32), requires_grad=True)
               for _ in range(3))
    y = attention(q, k, v)
    y.backward(np.ones(y.shape, np.float32))
    assert y.dtype == q.grad.dtype == k.grad.dtype == v.grad.dtype == np.float32


def test_attention_bad_input():
    a = Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"q \(2, 3, 4\), k \(2, 3, 5\), v \(2, 3, 4\)"):
        attention(a, Tensor(np.zeros((2, 3, 5))), a)
    with pytest.raises(ValueError, match=r"attention: k must be 3-d \(B, C, N\), got shape"):
        attention(a, Tensor(np.zeros((2, 3, 2, 2))), a)
    with pytest.raises(ValueError, match="attention: dtype mismatch"):
        attention(a, a, Tensor(np.zeros((2, 3, 4), np.float32)))
