"""The fast path of conv2d: conv.py's conv2d_reference, computed by im2col + one GEMM.

conv.py's conv2d checks its arguments and calls conv2d below; tests/test_conv_fast.py holds
it equal to the reference, forward and backward, on every path named here.

    cols[(c, i, j), (b, y, x)] = x_padded[b, c, y*sh + i, x*sw + j]    (C*kh*kw, N)
    Y = W_mat @ cols          dW_mat = G @ colsᵀ          dcols = W_matᵀ @ G

where W_mat is the weight (Cout, C, kh, kw) seen as (Cout, C*kh*kw) and G is dY laid out
like Y, (Cout, N). Four choices make it fast on a CPU:

1. Channels first. Images are kept as (C, B, rows, row pitch), flattened to (C, L). Moving
   NCHW there copies whole rows, and the GEMMs need no transposed copies. One zero gap
   pads both sides: a row is [pw zeros, W pixels], an image [ph zero rows, H rows].
2. Long runs. With horizontal stride 1, each output row is computed at every stored column,
   not only the Wo valid ones. Then each (c, i, j, b) piece of `cols` is Ho*Wr consecutive
   numbers of the flat input: im2col is a few long memcpys. The junk columns (pw of them
   for a "same" conv) cost a few percent more GEMM work and are dropped at the end.
3. Copy the smaller side. im2col copies kh*kw*C numbers per pixel. When Cout < C, the
   forward pass multiplies first and then adds the kh*kw shifted products (_shift_add),
   moving kh*kw*Cout. For dX, with stride 1 and Cout <= C, we convolve dY with the flipped
   kernel (moving kh*kw*Cout), else scatter-add dcols back (col2im, moving kh*kw*C). For
   dW, when Cout < C, the im2col is of dY rather than of the input (_conv_weight_grad).
   A 1x1 convolution needs no im2col and no layout change: see _pointwise_conv2d.
4. No fresh big arrays. Temporaries live in reused workspace buffers (_workspace.py).
5. Bounded buffers. A big batch runs as a few slices of images (_slices), so im2col's
   kh*kw-fold copy never takes more than _workspace.WORKSPACE_BYTES: a sampling step of the
   `small` U-Net at batch 64 would otherwise hold a 470 MB `cols`.

Python loops run over the kh*kw kernel offsets and those few slices, never over pixels or
single batch elements.

On the GPU (device "cuda") a kh x kw convolution runs as the implicit-GEMM kernels of
kernels/conv2d.cu instead, forward and backward (_conv2d_kernels); a 1x1 one stays a matmul,
on cuBLAS.
"""
from dataclasses import dataclass, replace
from functools import cached_property

from .. import backend, cuda
from ..tensor import Tensor
from ._workspace import batch_slices
from ._workspace import scratch as _scratch


# ------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class _Geometry:
    """Every size of one convolution, each computed once from the input and kernel shapes."""
    B: int
    C: int
    H: int
    W: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int

    @cached_property
    def Hp(self):                       # padded input height
        return self.H + 2 * self.ph

    @cached_property
    def Wp(self):                       # padded input width
        return self.W + 2 * self.pw

    @cached_property
    def Ho(self):                       # output height
        return (self.Hp - self.kh) // self.sh + 1

    @cached_property
    def Wo(self):                       # output width
        return (self.Wp - self.kw) // self.sw + 1

    @cached_property
    def Hr(self):                       # rows per image in the flat layout: [ph zero rows,
        return self.H + self.ph         # H pixel rows]; the next image's zeros pad below

    @cached_property
    def Wr(self):                       # row pitch of the flat layout: [pw zeros, W pixels]
        if self.sw == 1:                # one output column per stored column (Wc = Wr)
            return max(self.W + self.pw, self.Wo)
        return self.W + self.pw

    @cached_property
    def Wc(self):                       # columns per output row in `cols`
        return self.Wr if self.sw == 1 else self.Wo

    @cached_property
    def L(self):                        # flat length of one channel: up to the last number
        last_row = (self.Ho - 1) * self.sh + self.kh - 1                # any window reads
        last_col = (self.Wc - 1) * self.sw + self.kw - 1
        last = ((self.B - 1) * self.Hr + last_row) * self.Wr + last_col
        return max(self.B * self.Hr * self.Wr, last + 1)

    @cached_property
    def N(self):                        # columns of `cols`: one per (b, y, x < Wc)
        return self.B * self.Ho * self.Wc

    @cached_property
    def is_pointwise(self):             # 1x1, stride 1, no padding: a batched matmul
        return (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (1, 1, 1, 1, 0, 0)


# ------------------------------------------------------------------ layout helpers
def _pad_channels_first(x, g):
    """(B, C, H, W) -> X (C, L): zero-padded images, channels first, flat (slot "padded").

    Each image is stored as [ph zero rows, H rows], each row as [pw zeros, W pixels]. A
    window running off the right end of a row reads the zeros that start the next row, and
    one running off the bottom of an image reads the zero rows of the next image: one gap
    pads both sides, so fewer junk pixels enter the GEMMs."""
    X = _scratch("padded", (g.C, g.L), x.dtype)
    rows = X[:, :g.B * g.Hr * g.Wr].reshape(g.C, g.B, g.Hr, g.Wr)
    X[:, g.B * g.Hr * g.Wr:] = 0                                       # the tail
    rows[:, :, :g.ph] = 0                                              # the padding
    rows[:, :, :, :g.pw] = 0
    rows[:, :, :, g.pw + g.W:] = 0
    rows[:, :, g.ph:, g.pw:g.pw + g.W] = x.transpose(1, 0, 2, 3)
    return X


def _windows(X, g):
    """A strided view of X (C, L): windows[c, i, j, b, y, x] is the pixel that kernel tap
    (i, j) sees for output (b, y, x), X_padded[c, b, y*sh + i, x*sw + j]. No copy."""
    e = X.itemsize
    return backend.xp().lib.stride_tricks.as_strided(
        X, shape=(X.shape[0], g.kh, g.kw, g.B, g.Ho, g.Wc),
        strides=(X.strides[0], g.Wr * e, e, g.Hr * g.Wr * e, g.sh * g.Wr * e, g.sw * e))


def _im2col(X, g):
    """cols[(c, i, j), (b, y, x)] = X_padded[c, b, y*sh + i, x*sw + j]: (C*kh*kw, N)."""
    windows = _windows(X, g)
    cols = _scratch("cols", windows.shape, X.dtype)
    cols[...] = windows                                                # the one copy
    return cols.reshape(g.C * g.kh * g.kw, g.N)


def _col2im(dcols, g):
    """The adjoint of _im2col: add every column back onto the pixel it was read from.
    dcols (C*kh*kw, N), whose junk columns (x >= Wo) are zero -> dX (B, C, H, W)."""
    dX = _scratch("padded", (g.C, g.L), dcols.dtype)
    dX[...] = 0
    windows = _windows(dX, g)                                          # writable view
    dcols = dcols.reshape(windows.shape)
    for i in range(g.kh):                                              # taps overlap, so
        for j in range(g.kw):                                          # one tap at a time
            windows[:, i, j] += dcols[:, i, j]
    dX = dX[:, :g.B * g.Hr * g.Wr].reshape(g.C, g.B, g.Hr, g.Wr)
    dX = dX[:, :, g.ph:g.ph + g.H, g.pw:g.pw + g.W].transpose(1, 0, 2, 3)
    return dX.copy()                                # (B, C, H, W), a new array, never a view


def _to_nchw(Y, g, bias, out):
    """GEMM output (Cout, N) -> out (B, Cout, Ho, Wo), without junk columns, plus bias."""
    Cout = Y.shape[0]
    if bias is not None:
        Y += bias.reshape(Cout, 1)                 # on long contiguous rows: 2x faster here
    out[...] = Y.reshape(Cout, g.B, g.Ho, g.Wc)[..., :g.Wo].transpose(1, 0, 2, 3)


def _from_nchw(dY, g):
    """dY (B, Cout, Ho, Wo) -> G (Cout, N) laid out like Y, junk columns 0 (slot "grad")."""
    Cout = dY.shape[1]
    G = _scratch("grad", (Cout, g.B, g.Ho, g.Wc), dY.dtype)
    G[..., g.Wo:] = 0
    G[..., :g.Wo] = dY.transpose(1, 0, 2, 3)
    return G.reshape(Cout, g.N)


# ------------------------------------------------------------------ the two forward GEMMs
def _gemm_im2col(X, w, g):
    """Y = W_mat @ cols: (Cout, C*kh*kw) @ (C*kh*kw, N) -> (Cout, N) in slot "output"."""
    xp = backend.xp()
    w_mat = w.reshape(w.shape[0], -1)
    cols = _im2col(X, g)
    Y = _scratch("output", (w.shape[0], cols.shape[1]), X.dtype)
    return xp.matmul(w_mat, cols, out=Y)


def _shift_add(X, w, g):
    """Y = Σ_{i,j} W[:, :, i, j] @ (X shifted by tap (i, j)), with the GEMM first.

    Z[(i, j, o), m] = Σ_c W[o, c, i, j] X[c, m] at every padded pixel m; then Y[o, (b, y, x)]
    adds Z[(i, j, o), pixel (b, y*sh + i, x*sw + j)] over the taps. This moves kh*kw*Cout
    numbers per pixel instead of im2col's kh*kw*C: the cheaper way when Cout < C.
    """
    xp = backend.xp()
    Cout, L, e = w.shape[0], g.L, X.itemsize
    w_taps = xp.ascontiguousarray(w.transpose(2, 3, 0, 1)).reshape(-1, g.C)  # (kh*kw*Cout, C)
    Z = _scratch("cols", (w_taps.shape[0], L), X.dtype)
    xp.matmul(w_taps, X, out=Z)                                        # (kh*kw*Cout, L)
    taps = xp.lib.stride_tricks.as_strided(                            # (kh, kw, Cout, B, Ho, Wc)
        Z, shape=(g.kh, g.kw, Cout, g.B, g.Ho, g.Wc),
        strides=((g.kw * Cout * L + g.Wr) * e, (Cout * L + 1) * e, L * e,
                 g.Hr * g.Wr * e, g.sh * g.Wr * e, g.sw * e))
    Y = _scratch("output", (Cout, g.B, g.Ho, g.Wc), X.dtype)
    Y[...] = taps[0, 0]
    for i in range(g.kh):                                              # kernel offsets only
        for j in range(g.kw):
            if (i, j) != (0, 0):
                Y += taps[i, j]
    return Y.reshape(Cout, g.N)


def _slices(g, Cout, itemsize):
    """The batch in slices of images whose buffers fit the workspace budget, each with its
    geometry: the same convolution on fewer images. The biggest buffer per image is
    im2col's kh*kw*C numbers per padded pixel, or shift-add's kh*kw*Cout."""
    per_image = g.kh * g.kw * max(g.C, Cout) * g.Hr * g.Wr * itemsize
    return [(b0, b1, replace(g, B=b1 - b0)) for b0, b1 in batch_slices(g.B, per_image)]


def _conv_forward(x, w, g, bias=None):
    """The raw forward on arrays: (B, C, H, W) * (Cout, C, kh, kw) -> new (B, Cout, Ho, Wo)."""
    y = backend.xp().empty((g.B, w.shape[0], g.Ho, g.Wo), x.dtype)
    for b0, b1, gs in _slices(g, w.shape[0], x.itemsize):
        X = _pad_channels_first(x[b0:b1], gs)                          # (C, L)
        if w.shape[0] < g.C:
            Y = _shift_add(X, w, gs)                                   # (Cout, N)
        else:
            Y = _gemm_im2col(X, w, gs)                                 # (Cout, N)
        _to_nchw(Y, gs, bias, out=y[b0:b1])
    return y


# ------------------------------------------------------------------ conv2d
def conv2d(x, weight, bias, stride, padding):
    """conv.py's conv2d after its checks: Tensors x (B, C, H, W), weight (Cout, C, kh, kw),
    bias (Cout,) or None; stride and padding as (vertical, horizontal) pairs of ints."""
    (sh, sw), (ph, pw) = stride, padding
    B, C, H, W = x.shape
    kh, kw = weight.shape[2:]
    g = _Geometry(B, C, H, W, kh, kw, sh, sw, ph, pw)
    if g.is_pointwise:
        return _pointwise_conv2d(x, weight, bias)                     # on a GPU too: cuBLAS
    if cuda.use_kernels(x.data, weight.data):
        return _conv2d_kernels(x, weight, bias, stride, padding)

    out_data = _conv_forward(x.data, weight.data, g, None if bias is None else bias.data)
    parents = (x, weight) if bias is None else (x, weight, bias)
    out = Tensor.make(out_data, parents)

    def _backward():
        dY = out.grad.data                                             # (B, Cout, Ho, Wo)
        if bias is not None and bias.requires_grad:
            bias.accum_grad(dY.sum(axis=(0, 2, 3)))                    # db = Σ_{b,y,x} dY
        slices = _slices(g, weight.shape[0], x.data.itemsize)
        dW, dX = 0, None
        if x.requires_grad and len(slices) > 1:
            dX = backend.xp().empty_like(x.data)                       # the slices fill it
        for b0, b1, gs in slices:
            G = _from_nchw(dY[b0:b1], gs)                              # (Cout, N)
            if weight.requires_grad:                                   # dW adds up the slices
                dW = dW + _conv_weight_grad(x.data[b0:b1], dY[b0:b1], G, weight.data, gs)
            if x.requires_grad and dX is None:                         # one slice: no copy
                dX = _conv_input_grad(dY, G, weight.data, gs)
            elif x.requires_grad:
                dX[b0:b1] = _conv_input_grad(dY[b0:b1], G, weight.data, gs)
        if weight.requires_grad:
            weight.accum_grad(dW)
        if x.requires_grad:
            x.accum_grad(dX)                                           # (B, C, H, W)
    return out.set_backward(_backward)


def _pointwise_conv2d(x, weight, bias):
    """A 1x1 convolution (stride 1, no padding) mixes channels only: for every image b,
    Y_b = W_mat @ X_b, with X_b = x[b] seen as (C, H*W). NCHW already holds each X_b as a
    matrix, so the GEMMs run on it directly, one per image, with no layout change at all."""
    xp = backend.xp()
    B, C, H, W = x.shape
    Cout = weight.shape[0]
    w_mat = weight.data.reshape(Cout, C)
    x_b = x.data.reshape(B, C, H * W)
    y = xp.matmul(w_mat, x_b)                                          # (B, Cout, H*W)
    if bias is not None:
        y += bias.data.reshape(Cout, 1)
    parents = (x, weight) if bias is None else (x, weight, bias)
    out = Tensor.make(y.reshape(B, Cout, H, W), parents)

    def _backward():
        dy_b = out.grad.data.reshape(B, Cout, H * W)
        if bias is not None and bias.requires_grad:
            bias.accum_grad(dy_b.sum(axis=(0, 2)))                     # db = Σ_{b,y,x} dY
        if weight.requires_grad:
            dW_b = _scratch("cols", (B, Cout, C), x.dtype)
            xp.matmul(dy_b, x_b.transpose(0, 2, 1), out=dW_b)          # dW_b = dY_b X_bᵀ
            weight.accum_grad(dW_b.sum(axis=0).reshape(weight.shape))  # dW = Σ_b dW_b
        if x.requires_grad:
            x.accum_grad(xp.matmul(w_mat.T, dy_b).reshape(x.shape))    # dX_b = W_matᵀ dY_b
    return out.set_backward(_backward)


def _conv2d_kernels(x, weight, bias, stride, padding):
    """conv2d on the GPU: the implicit-GEMM kernels of conv2d.cu, forward and backward.

    They gather the im2col matrix tile by tile in shared memory instead of building it:
    y = conv(x, w) + b, dX = the adjoint of conv in x (backward-data), dW = the adjoint in w
    (backward-weight). Only the bias gradient, one sum, is an xp op.
    """
    b = None if bias is None else bias.data
    y = cuda.conv2d_forward(x.data, weight.data, b, stride, padding)   # (B, Cout, Ho, Wo)
    parents = (x, weight) if bias is None else (x, weight, bias)
    out = Tensor.make(y, parents)

    def _backward():
        dY = out.grad.data                                             # (B, Cout, Ho, Wo)
        if bias is not None and bias.requires_grad:
            bias.accum_grad(dY.sum(axis=(0, 2, 3)))                    # db = Σ_{b,y,x} dY
        if weight.requires_grad:
            weight.accum_grad(cuda.conv2d_backward_weight(dY, x.data, weight.shape, stride,
                                                          padding))
        if x.requires_grad:
            x.accum_grad(cuda.conv2d_backward_data(dY, weight.data, x.shape, stride, padding))
    return out.set_backward(_backward)


def _conv_weight_grad(x, dY, G, w, g):
    """dW[o, c, i, j] = Σ_{b,y,x} dY[o, b, y, x] X_padded[c, b, y*sh + i, x*sw + j].

    Input side: dW_mat = G @ colsᵀ, whose im2col moves C*kh*kw numbers per pixel.
    Output side, when Cout < C: put dY on the grid of X, at the pixel where each window
    starts (Ĝ, zeros elsewhere); then dW[o, c, i, j] = Σ_m X[c, m + i*Wr + j] Ĝ[o, m], and
    the im2col of Ĝ moves Cout*kh*kw numbers per pixel.
    """
    xp = backend.xp()
    Cout, C, kh, kw = w.shape
    X = _pad_channels_first(x, g)                                      # (C, L)
    if Cout >= C:
        return (_im2col(X, g) @ G.T).T.reshape(w.shape)                # (C*kh*kw, Cout)ᵀ
    # Ĝ with `front` zeros before it, so that the window of tap (i, j) can start at
    # -(i*Wr + j): read it with the taps flipped, i' = kh-1-i, j' = kw-1-j, as a view.
    e, front = x.itemsize, (kh - 1) * g.Wr + kw - 1
    G_grid = _scratch("grad_grid", (Cout, front + g.L), x.dtype)
    G_grid[...] = 0
    starts = xp.lib.stride_tricks.as_strided(                          # (Cout, B, Ho, Wo)
        G_grid[:, front:], shape=(Cout, g.B, g.Ho, g.Wo),
        strides=(G_grid.strides[0], g.Hr * g.Wr * e, g.sh * g.Wr * e, g.sw * e))
    starts[...] = dY.transpose(1, 0, 2, 3)
    windows = xp.lib.stride_tricks.as_strided(                         # (Cout, kh', kw', L)
        G_grid, shape=(Cout, kh, kw, g.L), strides=(G_grid.strides[0], g.Wr * e, e, e))
    G_cols = _scratch("cols", windows.shape, x.dtype)
    G_cols[...] = windows                                              # the one copy
    dW_t = X @ G_cols.reshape(Cout * kh * kw, g.L).T                   # (C, Cout*kh'*kw')
    dW = dW_t.reshape(C, Cout, kh, kw).transpose(1, 0, 2, 3)
    return dW[:, :, ::-1, ::-1].copy()                                 # unflip the taps


def _conv_input_grad(dY, G, w, g):
    """dX of conv2d, by whichever GEMM copies fewer numbers around.

    Full convolution (stride 1): dX[c, u, v] = Σ_{o,i,j} W[o, c, i, j] dY[o, u+ph-i, v+pw-j]
    is a convolution of dY, padded by q = k - 1 - p, with W flipped in space and its channel
    axes swapped. Its im2col moves Cout*kh*kw numbers per pixel.
    col2im: dcols = W_matᵀ G (C*kh*kw, N), then a scatter-add, moving C*kh*kw per pixel.
    """
    xp = backend.xp()
    Cout, C, kh, kw = w.shape
    qh, qw = kh - 1 - g.ph, kw - 1 - g.pw
    if (g.sh, g.sw) == (1, 1) and qh >= 0 and qw >= 0 and Cout <= C:
        w_flip = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, Cout, ..)
        g_full = _Geometry(g.B, Cout, g.Ho, g.Wo, kh, kw, 1, 1, qh, qw)
        return _conv_forward(dY, w_flip, g_full)
    dcols = _scratch("cols", (C * kh * kw, g.N), G.dtype)
    xp.matmul(w.reshape(Cout, -1).T, G, out=dcols)                    # (C*kh*kw, N)
    return _col2im(dcols, g)
