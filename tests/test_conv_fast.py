"""conv2d's fast path (functional/conv_fast.py) against conv2d_reference (functional/conv.py),
forward and both backwards, on every branch the fast path takes; and its reused workspace.

tests/test_conv.py checks both against the naive loop and float64 finite differences.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff import Tensor
from minidiff.functional.conv import conv2d, conv2d_reference, free_workspace
from minidiff.testing import strategies
from tests.naive import naive_conv2d

# The branches of the fast path, each named once so that none can go untested.
PATHS = {
    "3x3, Cout < C: shift-add, dW from dY, dX as a full conv": ((2, 4, 7, 6), (3, 4, 3, 3), 1, 1),
    "3x3, Cout == C: im2col, dX as a full conv": ((1, 3, 5, 6), (3, 3, 3, 3), 1, 1),
    "3x3, Cout > C: im2col, dX by col2im": ((2, 3, 6, 7), (4, 3, 3, 3), 1, 1),
    "1x1 pointwise: a matmul per image": ((2, 5, 4, 3), (3, 5, 1, 1), 1, 0),
    "1x1 padded, p > k-1: dX by col2im": ((1, 2, 3, 4), (3, 2, 1, 1), 1, 1),
    "3x3 stride 2, Cout > C: col2im": ((2, 3, 7, 7), (4, 3, 3, 3), 2, 1),
    "3x3 stride 2, Cout < C: shift-add, dW from dY, col2im": ((1, 4, 8, 7), (2, 4, 3, 3), 2, 1),
    "non-square kernel, stride (1, 2)": ((1, 2, 6, 7), (3, 2, 3, 2), (1, 2), (1, 0)),
    "non-square kernel, stride (2, 1)": ((2, 2, 7, 5), (2, 2, 2, 3), (2, 1), (0, 1)),
    "non-square kernel, Cout < C, stride (1, 3)": ((1, 3, 5, 9), (2, 3, 2, 3), (1, 3), (1, 1)),
    "valid 2x2, even sizes": ((1, 3, 4, 4), (2, 3, 2, 2), 1, 0),
    "kernel as big as the padded input": ((1, 2, 3, 2), (2, 2, 5, 4), 1, 1),
    "padding wider than the image": ((2, 2, 1, 2), (3, 2, 3, 3), 1, 2),
    "padding wider than the kernel": ((2, 3, 2, 3), (2, 3, 1, 2), (2, 1), (2, 3)),
}


def forward_backward(conv, x, w, b, stride, padding, dy=None, seed=0):
    """conv's output and the gradients of sum(out * dy) for x, w and b: (y, dx, dw, db)."""
    tensors = [None if a is None else Tensor(a, requires_grad=True) for a in (x, w, b)]
    out = conv(*tensors, stride, padding)
    if dy is None:
        dy = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype)
    out.backward(dy)
    return (out.data,) + tuple(None if t is None else t.grad.data for t in tensors)


def assert_same(got, ref, tol, what):
    """Each of (y, dx, dw, db) within atol + rtol·|ref|; a failure names the array."""
    for name, g, r in zip(("y", "dx", "dw", "db"), got, ref):
        if r is None:
            assert g is None, f"{what}: {name} is set, the reference has none"
            continue
        assert g.dtype == r.dtype and g.shape == r.shape, (what, name, g.dtype, r.dtype)
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol, err_msg=f"{what}: {name}")


# ------------------------------------------------------------------ float64: the same numbers
@st.composite
def fast_cases(draw):
    """Batch 1 to 3 (1 often), stride 1 or 2 and padding 0 or 1 on each axis, odd and even
    sizes, kernels 1 to 3 (non-square too), Cout below, equal to and above C."""
    c = draw(strategies.conv_configs(max_size=9, max_padding=1, max_batch=3, max_channels=5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x, w = rng.standard_normal(c.x_shape), rng.standard_normal(c.w_shape)
    b = rng.standard_normal(c.out_channels) if c.bias else None
    return x, w, b, c.stride, c.padding


@given(fast_cases())
def test_fast_path_matches_reference_forward_and_both_backwards(case):
    x, w, b, stride, padding = case
    got = forward_backward(conv2d, x, w, b, stride, padding)
    ref = forward_backward(conv2d_reference, x, w, b, stride, padding)
    assert_same(got, ref, 1e-12, f"x {x.shape} w {w.shape} stride {stride} pad {padding}")


@pytest.mark.parametrize("name", list(PATHS))
def test_each_fast_path_branch_matches_reference(name):
    xs, ws, stride, padding = PATHS[name]
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    got = forward_backward(conv2d, x, w, b, stride, padding)
    ref = forward_backward(conv2d_reference, x, w, b, stride, padding)
    assert_same(got, ref, 1e-12, name)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False),
                                   (False, False, True), (True, True, False)])
def test_fast_path_fills_only_the_gradients_asked_for(needs):
    """Each backward runs only for an input that requires grad, and equals the reference's."""
    rng = np.random.default_rng(4)
    arrays = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((3, 4, 3, 3)), \
        rng.standard_normal(3)
    dy = rng.standard_normal((2, 3, 7, 6))
    grads = []
    for conv in (conv2d, conv2d_reference):
        ts = [Tensor(a, requires_grad=n) for a, n in zip(arrays, needs)]
        if any(needs):
            conv(*ts, 1, 1).backward(dy)
        grads.append([None if t.grad is None else t.grad.data for t in ts])
    for i, (g, r, n) in enumerate(zip(*grads, needs)):
        assert (g is not None) == n == (r is not None), f"input {i}: requires_grad={n}"
        if n:
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12, err_msg=f"input {i}")


# ------------------------------------------------------------------ float32 at U-Net sizes
# The fast path is float32 all the way on U-Net layers. Against the float64 reference of the
# same float32 numbers, each result is a float32 sum of K products, in some order, so within
# γ_K·Σ|terms| of the exact one, K·u·Σ|terms| to first order (u = 2^-24; Higham 2002,
# Eq. 3.5). Σ|terms| is the reference run on |x|, |w|, |b| and |dy|.
# K: C·kh·kw + 1 for y, Cout·kh·kw for dx, B·Ho·Wo for dw and db.
UNET_SHAPES = {                                        # (B, C, H, W), (Cout, C, k, k), stride
    "res 3x3, Cout < C (shift-add)": ((2, 48, 8, 8), (16, 48, 3, 3), 1),
    "res 3x3, Cout == C (im2col)": ((2, 32, 16, 16), (32, 32, 3, 3), 1),
    "res 3x3, Cout > C (im2col, col2im)": ((2, 16, 8, 8), (32, 16, 3, 3), 1),
    "down 3x3 stride 2": ((2, 32, 16, 16), (32, 32, 3, 3), 2),
    "conv_in, C = 1": ((2, 1, 16, 16), (32, 1, 3, 3), 1),
    "conv_out, Cout = 1": ((2, 32, 16, 16), (1, 32, 3, 3), 1),
    "skip 1x1": ((2, 48, 8, 8), (32, 48, 1, 1), 1),
}


@pytest.mark.parametrize("name", list(UNET_SHAPES))
def test_fast_path_float32_is_within_the_float32_rounding_bound(name):
    (B, C, H, W), (Cout, _, kh, kw), s = UNET_SHAPES[name]
    p = kh // 2
    Ho, Wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    rng = np.random.default_rng(6)
    x, w, b, dy = (rng.standard_normal(shape).astype(np.float32)
                   for shape in ((B, C, H, W), (Cout, C, kh, kw), (Cout,), (B, Cout, Ho, Wo)))
    got = forward_backward(conv2d, x, w, b, s, p, dy=dy)                    # float32
    exact = [a.astype(np.float64) for a in (x, w, b, dy)]
    ref = forward_backward(conv2d_reference, *exact[:3], s, p, dy=exact[3])
    mag = forward_backward(conv2d_reference, *map(np.abs, exact[:3]), s, p,
                           dy=np.abs(exact[3]))                             # Σ|terms|
    u = 2.0**-24
    for what, g, r, m, K in zip(("y", "dx", "dw", "db"), got, ref, mag,
                                (C * kh * kw + 1, Cout * kh * kw, B * Ho * Wo, B * Ho * Wo)):
        assert g.dtype == np.float32, what
        err, bound = np.abs(g - r), K * u * m
        j = np.unravel_index(np.argmax(err - bound), err.shape)
        assert (err <= bound).all(), (f"{name}, {what} at {j}: expected {r[j]!r}, got "
                                      f"{g[j]!r}, error {err[j]:.3g} > bound {bound[j]:.3g}")


# ------------------------------------------------------------------ the reused workspace
def test_conv2d_float32_and_float64_calls_interleave_and_workspace_can_be_freed():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    expected = naive_conv2d(x, w, None, (1, 1), (1, 1))
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-4), (np.float64, 1e-12)):
        out = conv2d(Tensor(x.astype(dtype)), Tensor(w.astype(dtype)), padding=1)
        assert out.dtype == dtype
        np.testing.assert_allclose(out.data, expected, rtol=tol, atol=tol)
        free_workspace()


@pytest.mark.parametrize("name", list(PATHS))
def test_conv2d_results_do_not_alias_the_workspace(name):
    """conv2d reuses scratch buffers; outputs and gradients must be arrays of their own."""
    xs, ws, stride, padding = PATHS[name]
    rng = np.random.default_rng(1)
    x, w = (Tensor(rng.standard_normal(s), requires_grad=True) for s in (xs, ws))
    out = conv2d(x, w, None, stride, padding)
    out.backward(np.ones(out.shape))
    kept = [a.copy() for a in (out.data, x.grad.data, w.grad.data)]
    for other in PATHS.values():                                       # every path again
        a, c = (Tensor(rng.standard_normal(s), requires_grad=True) for s in other[:2])
        conv2d(a, c, None, *other[2:]).sum().backward()
    for before, after in zip(kept, (out.data, x.grad.data, w.grad.data)):
        np.testing.assert_array_equal(before, after)


# ------------------------------------------------------------------ batch slices
@given(fast_cases(), st.integers(1, 3000))
def test_a_batch_cut_into_slices_gives_the_reference_numbers(case, budget):
    """With a workspace budget of a few KB, conv_fast runs the batch a slice of images at a
    time (often one image each); forward, dX and the dW summed over slices stay exact."""
    from minidiff.functional import _workspace
    x, w, b, stride, padding = case
    saved = _workspace.WORKSPACE_BYTES
    _workspace.WORKSPACE_BYTES = budget
    try:
        got = forward_backward(conv2d, x, w, b, stride, padding)
    finally:
        _workspace.WORKSPACE_BYTES = saved
    ref = forward_backward(conv2d_reference, x, w, b, stride, padding)
    assert_same(got, ref, 1e-12, f"x {x.shape} w {w.shape} budget {budget} B")


@pytest.mark.parametrize("batch, per_image, budget, expected", [
    (5, 10, 25, [(0, 2), (2, 4), (4, 5)]),          # two images per slice
    (3, 100, 10, [(0, 1), (1, 2), (2, 3)]),         # one image is over budget: still one each
    (4, 1, 1 << 20, [(0, 4)]),                      # all fits: one slice
])
def test_batch_slices_cover_the_batch_in_order(batch, per_image, budget, expected, monkeypatch):
    from minidiff.functional import _workspace
    monkeypatch.setattr(_workspace, "WORKSPACE_BYTES", budget)
    assert _workspace.batch_slices(batch, per_image) == expected
