"""kernels/conv2d.cu through minidiff.cuda, the naive and the tiled implicit-GEMM kernels,
against float64 NumPy loops over output positions: the forward gathers each window, and its
two adjoints scatter dy back into the window (dx) or correlate it with the window (dw)."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from minidiff import cuda
from cuda_emu.testing import RUNNERS, assert_close, on

EPS = float(np.finfo(np.float32).eps)
IMPLS = [pytest.param(True, id="naive"), pytest.param(False, id="tiled")]

# Channel counts straddle the 64-wide tiles (63, 65) and the 16-deep K slices; images are
# small and odd; kernels 1, 2, 3; strides 1 and 2 (the U-Net's down-sampling), padding 0-2.
conv_case = st.fixed_dictionaries({
    "N": st.integers(1, 2),
    "Ci": st.sampled_from([1, 2, 3, 5, 17]),
    "Co": st.sampled_from([1, 2, 7, 13, 65]),
    "H": st.integers(1, 9), "W": st.integers(1, 9),
    "K": st.sampled_from([(1, 1), (3, 3), (2, 3)]),
    "stride": st.sampled_from([1, 2, (2, 1)]),
    "padding": st.sampled_from([0, 1, 2, (1, 0)]),
    "seed": st.integers(0, 2**31 - 1),
})


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def make(case):
    (sh, sw), (ph, pw), (KH, KW) = pair(case["stride"]), pair(case["padding"]), case["K"]
    assume(case["H"] + 2 * ph >= KH and case["W"] + 2 * pw >= KW)
    Ho, Wo = (case["H"] + 2 * ph - KH) // sh + 1, (case["W"] + 2 * pw - KW) // sw + 1
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["N"], case["Ci"], case["H"], case["W"])).astype(np.float32)
    w = rng.standard_normal((case["Co"], case["Ci"], KH, KW)).astype(np.float32)
    b = rng.standard_normal(case["Co"]).astype(np.float32)
    dy = rng.standard_normal((case["N"], case["Co"], Ho, Wo)).astype(np.float32)
    return x, w, b, dy, (sh, sw), (ph, pw)


def windows(Ho, Wo, KH, KW, stride):
    """(i, j, rows, cols) of every output position: the slice of the padded input it reads."""
    sh, sw = stride
    for i in range(Ho):
        for j in range(Wo):
            yield i, j, slice(i * sh, i * sh + KH), slice(j * sw, j * sw + KW)


def pad(x, padding):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv_ref(x, w, b, dy, stride, padding):
    """y, dx, dw in float64, and each one's sum of |terms| (for the error bound)."""
    x, w, b, dy = (a.astype(np.float64) for a in (x, w, b, dy))
    Ho, Wo = dy.shape[2:]
    xp = pad(x, padding)
    y = np.empty(dy.shape)
    y_abs = np.empty(dy.shape)
    dxp, dxp_abs = np.zeros(xp.shape), np.zeros(xp.shape)
    dw, dw_abs = np.zeros(w.shape), np.zeros(w.shape)
    for i, j, r, c in windows(Ho, Wo, *w.shape[2:], stride):
        win = xp[:, :, r, c]                                         # (N, Ci, KH, KW)
        y[:, :, i, j] = np.einsum("ncpq,ocpq->no", win, w) + b       # forward sum (1)
        y_abs[:, :, i, j] = np.einsum("ncpq,ocpq->no", np.abs(win), np.abs(w)) + np.abs(b)
        g = dy[:, :, i, j]                                           # (N, Co)
        dxp[:, :, r, c] += np.einsum("no,ocpq->ncpq", g, w)          # scatter: adjoint in x
        dxp_abs[:, :, r, c] += np.einsum("no,ocpq->ncpq", np.abs(g), np.abs(w))
        dw += np.einsum("no,ncpq->ocpq", g, win)                     # correlate: adjoint in w
        dw_abs += np.einsum("no,ncpq->ocpq", np.abs(g), np.abs(win))
    (ph, pw), (H, W) = padding, x.shape[2:]
    crop = (slice(None), slice(None), slice(ph, ph + H), slice(pw, pw + W))
    return (y, y_abs), (dxp[crop], dxp_abs[crop]), (dw, dw_abs)


def check(got, want_and_abs, terms, what):
    """A float32 sum of `terms` products is within ~terms EPS of the sum of their |values|."""
    want, total_abs = want_and_abs
    assert_close(got, want, atol=2 * (terms + 2) * EPS * total_abs + 1e-30, rtol=0, what=what)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("naive", IMPLS)
@given(case=conv_case)
def test_conv2d_forward(runner, naive, case):
    x, w, b, dy, stride, padding = make(case)
    want, _, _ = conv_ref(x, w, b, dy, stride, padding)
    with on(runner) as dev:
        got = dev.get(cuda.conv2d_forward(*dev.put(x, w, b), stride=stride, padding=padding,
                                          naive=naive))
    check(got, want, w[0].size, "conv2d forward")


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("naive", IMPLS)
@given(case=conv_case)
def test_conv2d_backward_data(runner, naive, case):
    x, w, b, dy, stride, padding = make(case)
    _, want, _ = conv_ref(x, w, b, dy, stride, padding)
    with on(runner) as dev:
        got = dev.get(cuda.conv2d_backward_data(*dev.put(dy, w), x.shape, stride=stride,
                                                padding=padding, naive=naive))
    check(got, want, w.shape[0] * w.shape[2] * w.shape[3], "conv2d backward data")


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("naive", IMPLS)
@given(case=conv_case)
def test_conv2d_backward_weight(runner, naive, case):
    x, w, b, dy, stride, padding = make(case)
    _, _, want = conv_ref(x, w, b, dy, stride, padding)
    with on(runner) as dev:
        got = dev.get(cuda.conv2d_backward_weight(*dev.put(dy, x), w.shape, stride=stride,
                                                  padding=padding, naive=naive))
    check(got, want, dy.shape[0] * dy.shape[2] * dy.shape[3], "conv2d backward weight")


@pytest.mark.parametrize("K", [1, 15, 16, 17, 300, 5000, 100000])
@pytest.mark.parametrize("tiles", [1, 9, 300])
def test_k_splits_cover_k_exactly(K, tiles):
    chunk, splits = cuda._k_splits(K, tiles)
    assert chunk % cuda.TILE_K == 0 and 1 <= splits <= 64
    assert (splits - 1) * chunk < K <= splits * chunk, (K, chunk, splits)


def test_backward_weight_split_k_on_a_long_reduction():
    """N Ho Wo = 2 * 24 * 24 = 1152 > 16 K-tiles: several z-slices, summed by the caller."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 24, 24)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 5, 24, 24)).astype(np.float32)
    assert cuda._k_splits(2 * 24 * 24, 1)[1] > 1
    _, _, want = conv_ref(x, w, np.zeros(5, np.float32), dy, (1, 1), (1, 1))
    with on("random"):
        got = cuda.conv2d_backward_weight(dy, x, w.shape, stride=1, padding=1)
    check(got, want, 2 * 24 * 24, "conv2d backward weight, split K")
