"""conv2d, avg_pool2d and upsample_nearest2d against naive Python loops (forward) and float64
central finite differences (backward).

Each conv2d test runs twice: on conv2d (the fast path of conv_fast.py) and on conv2d_reference.
tests/test_conv_fast.py holds the two equal to each other, and names the fast path's branches.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff import Tensor
from minidiff.functional.conv import avg_pool2d, conv2d, conv2d_reference, upsample_nearest2d
from minidiff.testing import gradcheck, strategies
from tests.naive import naive_conv2d
from tests.test_conv_fast import PATHS

# Both implementations of one op: every conv2d test below runs on each.
each_conv = pytest.mark.parametrize("conv", [conv2d, conv2d_reference],
                                    ids=["conv2d", "conv2d_reference"])


# ------------------------------------------------------------------ naive references
def naive_avg_pool2d(x, k, s):
    (kh, kw), (sh, sw) = k, s
    B, C, H, W = x.shape
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    out = np.zeros((B, C, Ho, Wo))
    for y in range(Ho):
        for v in range(Wo):
            out[:, :, y, v] = x[:, :, y * sh:y * sh + kh, v * sw:v * sw + kw].mean(axis=(2, 3))
    return out


def naive_upsample(x, sh, sw):
    B, C, H, W = x.shape
    out = np.zeros((B, C, H * sh, W * sw))
    for y in range(H * sh):
        for v in range(W * sw):
            out[:, :, y, v] = x[:, :, y // sh, v // sw]
    return out


# ------------------------------------------------------------------ strategies
@st.composite
def conv_cases(draw):
    """Small conv problems (minidiff.testing.strategies.conv_configs: batch 1-2, kernels 1-3,
    non-square too, stride 1-2, padding 0-2, odd and even sizes) with float64 data."""
    c = draw(strategies.conv_configs())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x, w = rng.standard_normal(c.x_shape), rng.standard_normal(c.w_shape)
    b = rng.standard_normal(c.out_channels) if c.bias else None
    return x, w, b, c.stride, c.padding


def _pair(v):
    return (v, v) if isinstance(v, int) else v


# ------------------------------------------------------------------ conv2d
@each_conv
@pytest.mark.parametrize("name", list(PATHS))
def test_conv2d_paths_match_naive_loop_and_finite_differences(conv, name):
    xs, ws, stride, padding = PATHS[name]
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    out = conv(Tensor(x), Tensor(w), Tensor(b), stride, padding)
    expected = naive_conv2d(x, w, b, _pair(stride), _pair(padding))
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    gradcheck(lambda a, c, d: conv(a, c, d, stride, padding), x, w, b)


@each_conv
@given(conv_cases())
def test_conv2d_forward_matches_naive_loop(conv, case):
    x, w, b, stride, padding = case
    out = conv(Tensor(x), Tensor(w), None if b is None else Tensor(b), stride, padding)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, naive_conv2d(x, w, b, stride, padding),
                               rtol=1e-12, atol=1e-12)


@each_conv
@given(conv_cases())
def test_conv2d_backward_matches_finite_differences(conv, case):
    x, w, b, stride, padding = case
    if b is None:
        gradcheck(lambda a, c: conv(a, c, None, stride, padding), x, w)
    else:
        gradcheck(lambda a, c, d: conv(a, c, d, stride, padding), x, w, b)


@each_conv
def test_conv2d_float32_unet_shape_matches_float64_reference(conv):
    """A U-Net-like layer in float32: same answer as the float64 loop to float32 precision,
    and float32 all the way through (output and gradients)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 16, 9, 8)).astype(np.float32)
    w = (rng.standard_normal((8, 16, 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    tx, tw, tb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    out = conv(tx, tw, tb, 1, 1)
    assert out.dtype == np.float32
    ref = naive_conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                       (1, 1), (1, 1))
    np.testing.assert_allclose(out.data, ref, rtol=1e-5, atol=1e-5)
    out.backward(np.ones(out.shape, dtype=np.float32))
    assert tx.grad.dtype == tw.grad.dtype == tb.grad.dtype == np.float32
    # d(sum out)/db_o = B*Ho*Wo; d(sum out)/dW[o,c,i,j] = sum of the shifted input window.
    np.testing.assert_allclose(tb.grad, np.full(8, 2 * 9 * 8), rtol=1e-6)
    xpad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    dw = np.stack([[[xpad[:, c, i:i + 9, j:j + 8].sum() for j in range(3)] for i in range(3)]
                   for c in range(16)])
    np.testing.assert_allclose(tw.grad, np.broadcast_to(dw, (8, 16, 3, 3)), rtol=1e-4,
                               atol=1e-3)


@each_conv
def test_conv2d_without_bias_and_without_input_grad(conv):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((1, 2, 5, 5)))
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    out = conv(x, w, stride=2, padding=1)
    out.sum().backward()
    assert x.grad is None and w.grad is not None
    # d(sum out)/dW[o, c, i, j]: the sum of input pixels that kernel tap ever touches.
    xpad = np.pad(x.data, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.stack([[[xpad[0, c, i:i + 5:2, j:j + 5:2].sum() for j in range(3)]
                          for i in range(3)] for c in range(2)])
    np.testing.assert_allclose(w.grad, np.broadcast_to(expected, (3, 2, 3, 3)), rtol=1e-12)


@each_conv
@pytest.mark.parametrize("xs, ws, bs, kwargs, match", [
    ((2, 3, 5), (4, 3, 3, 3), None, {}, r"conv2d: input must be 4-d.*\(2, 3, 5\)"),
    ((1, 3, 5, 5), (4, 3, 3), None, {}, r"conv2d: weight must be 4-d.*\(4, 3, 3\)"),
    ((1, 3, 5, 5), (4, 2, 3, 3), None, {},
     r"conv2d: input \(1, 3, 5, 5\) has 3 channels but weight \(4, 2, 3, 3\)"),
    ((1, 1, 2, 2), (1, 1, 3, 3), None, {},
     r"conv2d: kernel 3x3 of weight \(1, 1, 3, 3\).*input \(1, 1, 2, 2\)"),
    ((1, 1, 2, 8), (1, 1, 5, 1), None, {"padding": 1},
     r"conv2d: kernel 5x1 of weight \(1, 1, 5, 1\).*input \(1, 1, 2, 8\) padded by \(1, 1\)"),
    ((1, 3, 5, 5), (4, 3, 3, 3), (3,), {}, r"conv2d: bias has shape \(3,\), need \(4,\)"),
    ((1, 3, 5, 5), (4, 3, 3, 3), None, {"stride": 0}, r"conv2d: stride must be .*got 0"),
    ((1, 3, 5, 5), (4, 3, 3, 3), None, {"stride": (1, 2, 3)}, r"conv2d: stride.*\(1, 2, 3\)"),
    ((1, 3, 5, 5), (4, 3, 3, 3), None, {"padding": -1}, r"conv2d: padding must be .*got -1"),
    ((1, 3, 5, 5), (4, 3, 3, 3), None, {"padding": 1.5}, r"conv2d: padding.*1\.5"),
])
def test_conv2d_bad_input_raises(conv, xs, ws, bs, kwargs, match):
    b = None if bs is None else Tensor(np.zeros(bs))
    with pytest.raises(ValueError, match=match):
        conv(Tensor(np.zeros(xs)), Tensor(np.zeros(ws)), b, **kwargs)


@each_conv
def test_conv2d_dtype_mismatch_raises(conv):
    x = Tensor(np.zeros((1, 2, 4, 4), dtype=np.float32))
    w = Tensor(np.zeros((3, 2, 3, 3), dtype=np.float64))
    with pytest.raises(ValueError, match=r"conv2d: dtype mismatch.*float32.*float64"):
        conv(x, w)


# ------------------------------------------------------------------ avg_pool2d
@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    H, W = draw(st.integers(kh, 7)), draw(st.integers(kw, 7))
    B, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal((B, C, H, W))
    return x, (kh, kw), stride


@given(pool_cases())
def test_avg_pool2d_matches_naive_loop_and_finite_differences(case):
    x, k, stride = case
    out = avg_pool2d(Tensor(x), k, stride)
    np.testing.assert_allclose(out.data, naive_avg_pool2d(x, k, stride or k), rtol=1e-12,
                               atol=1e-12)
    gradcheck(lambda a: avg_pool2d(a, k, stride), x)


def test_avg_pool2d_default_is_2x2_stride_2():
    x = np.arange(2 * 5 * 6, dtype=np.float64).reshape(1, 2, 5, 6)   # odd height: floor
    out = avg_pool2d(Tensor(x))
    assert out.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(out.data, naive_avg_pool2d(x, (2, 2), (2, 2)))
    assert out.data[0, 0, 0, 0] == (0 + 1 + 6 + 7) / 4


@pytest.mark.parametrize("shape, kwargs, match", [
    ((2, 4, 4), {}, r"avg_pool2d: input must be 4-d.*\(2, 4, 4\)"),
    ((1, 1, 2, 5), {"kernel_size": 3}, r"avg_pool2d: kernel 3x3.*\(1, 1, 2, 5\)"),
    ((1, 1, 4, 4), {"kernel_size": 0}, r"avg_pool2d: kernel_size must be .*got 0"),
    ((1, 1, 4, 4), {"stride": -2}, r"avg_pool2d: stride must be .*got -2"),
])
def test_avg_pool2d_bad_input_raises(shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        avg_pool2d(Tensor(np.zeros(shape)), **kwargs)


# ------------------------------------------------------------------ upsample_nearest2d
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5),
       st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))),
       st.integers(0, 2**32 - 1))
def test_upsample_nearest2d_matches_naive_loop_and_finite_differences(B, C, H, W, scale, seed):
    x = np.random.default_rng(seed).standard_normal((B, C, H, W))
    sh, sw = _pair(scale)
    out = upsample_nearest2d(Tensor(x), scale)
    np.testing.assert_array_equal(out.data, naive_upsample(x, sh, sw))
    gradcheck(lambda a: upsample_nearest2d(a, scale), x)


def test_upsample_backward_sums_each_block():
    x = Tensor(np.zeros((1, 1, 2, 2)), requires_grad=True)
    out = upsample_nearest2d(x, 2)                                     # (1, 1, 4, 4)
    out.backward(np.arange(16.0).reshape(1, 1, 4, 4))
    np.testing.assert_array_equal(x.grad[0, 0], [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7],
                                                 [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]])


@pytest.mark.parametrize("shape, scale, match", [
    ((1, 4, 4), 2, r"upsample_nearest2d: input must be 4-d.*\(1, 4, 4\)"),
    ((1, 1, 4, 4), 0, r"upsample_nearest2d: scale must be .*got 0"),
    ((1, 1, 4, 4), 1.5, r"upsample_nearest2d: scale.*1\.5"),
])
def test_upsample_bad_input_raises(shape, scale, match):
    with pytest.raises(ValueError, match=match):
        upsample_nearest2d(Tensor(np.zeros(shape)), scale)
