"""2-D convolution, average pooling and nearest upsampling on NCHW images.

conv2d_reference is convolution as its definition reads: cut the zero-padded input into
kh x kw windows, one per output pixel, and take the dot product of each window with each
kernel. Its backward is the same contraction read the other way round. conv2d, the one the
layers call, returns the same numbers faster through conv_fast.py: im2col GEMMs on the CPU,
the kernels of kernels/conv2d.cu on a GPU. tests/test_conv_fast.py holds the two equal.
"""
import numbers

from .. import backend
from ..tensor import Tensor, op
from . import _workspace, conv_fast
from ._util import as_tensor, check_ndim, same_dtype

free_workspace = _workspace.free_workspace         # releases the fast path's reused buffers


# ------------------------------------------------------------------ conv2d
@op
def conv2d_reference(x, weight, bias=None, stride=1, padding=0):
    """conv2d's arguments and result, as the definition reads, forward and backward:

        y[b, o, r, s] = bias[o] + Σ_{c,i,j} weight[o, c, i, j] x_pad[b, c, r*sh + i, s*sw + j]
    """
    x, weight, bias, (sh, sw), (ph, pw) = _conv2d_args(x, weight, bias, stride, padding)
    xp, (kh, kw) = backend.xp(), weight.shape[2:]
    x_pad = xp.pad(x.data, ((0, 0), (0, 0), (ph, ph), (pw, pw)))       # (B, C, Hp, Wp)
    windows = xp.lib.stride_tricks.sliding_window_view(x_pad, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw]                                # (B, C, Ho, Wo, kh, kw)
    Ho, Wo = windows.shape[2:4]             # (Hp - kh) // sh + 1: Dumoulin & Visin 2016, Rel. 6
    y = xp.einsum("bcrsij,ocij->bors", windows, weight.data)           # (B, Cout, Ho, Wo)
    if bias is not None:
        y += bias.data.reshape(1, -1, 1, 1)
    parents = (x, weight) if bias is None else (x, weight, bias)
    out = Tensor.make(y, parents)

    def _backward():
        dy = out.grad.data                                             # (B, Cout, Ho, Wo)
        if bias is not None and bias.requires_grad:
            bias.accum_grad(dy.sum(axis=(0, 2, 3)))                    # db[o] = Σ_{b,r,s} dy
        if weight.requires_grad:                                       # dW = Σ_{b,r,s} window dy
            weight.accum_grad(xp.einsum("bcrsij,bors->ocij", windows, dy))  # (Cout, C, kh, kw)
        if x.requires_grad:
            d_windows = xp.einsum("ocij,bors->bcrsij", weight.data, dy)  # (B, C, Ho, Wo, kh, kw)
            dx_pad = xp.zeros_like(x_pad)                              # (B, C, Hp, Wp)
            for i in range(kh):                     # windows overlap, so add each tap back to
                for j in range(kw):                 # the pixels it was read from, in turn
                    dx_pad[:, :, i:i + sh * Ho:sh, j:j + sw * Wo:sw] += d_windows[..., i, j]
            x.accum_grad(dx_pad[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]])  # (B, C, H, W)
    return out.set_backward(_backward)


@op
def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation, as torch.nn.functional.conv2d: conv2d_reference, made fast.

    x: (B, Cin, H, W); weight: (Cout, Cin, kh, kw); bias: (Cout,) or None.
    stride, padding: an int or a (vertical, horizontal) pair; zero padding.
    Returns (B, Cout, Ho, Wo) with Ho = (H + 2*ph - kh) // sh + 1, likewise Wo.
    """
    return conv_fast.conv2d(*_conv2d_args(x, weight, bias, stride, padding))


def _conv2d_args(x, weight, bias, stride, padding):
    """conv2d's arguments checked: Tensors x, weight, bias (or None), and the pairs
    (sh, sw), (ph, pw). Every failure is a ValueError that names the argument."""
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    check_ndim(x, 4, "conv2d", "input", "(B, C, H, W)")
    check_ndim(weight, 4, "conv2d", "weight", "(Cout, Cin, kh, kw)")
    same_dtype("conv2d", x, weight, bias)
    sh, sw = _int_pair(stride, "conv2d", "stride", 1)
    ph, pw = _int_pair(padding, "conv2d", "padding", 0)
    B, C, H, W = x.shape
    Cout, Cin, kh, kw = weight.shape
    if Cin != C:
        raise ValueError(f"conv2d: input {x.shape} has {C} channels but weight "
                         f"{weight.shape} expects Cin={Cin}")
    if min(weight.shape) < 1 or min(x.shape) < 1:
        raise ValueError(f"conv2d: empty input {x.shape} or weight {weight.shape}")
    if kh > H + 2 * ph or kw > W + 2 * pw:
        raise ValueError(f"conv2d: kernel {kh}x{kw} of weight {weight.shape} is larger than "
                         f"the input {x.shape} padded by {(ph, pw)}")
    if bias is not None and bias.shape != (Cout,):
        raise ValueError(f"conv2d: bias has shape {bias.shape}, need ({Cout},) for weight "
                         f"{weight.shape}")
    return x, weight, bias, (sh, sw), (ph, pw)


def _int_pair(v, op, name, minimum):
    """An int or a pair of ints, each >= minimum, as the tuple (vertical, horizontal)."""
    pair = (v, v) if isinstance(v, numbers.Integral) else v
    ok = (isinstance(pair, (tuple, list)) and len(pair) == 2
          and all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in pair))
    if not ok or min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be an int >= {minimum} or a pair of them, "
                         f"got {v!r}")
    return int(pair[0]), int(pair[1])


# ------------------------------------------------------------------ pooling, upsampling
@op
def avg_pool2d(x, kernel_size=2, stride=None):
    """Mean over kh x kw windows, moved by stride (default: the kernel size), no padding.

    x: (B, C, H, W) -> (B, C, Ho, Wo), Ho = (H - kh) // sh + 1, as torch's avg_pool2d.
    """
    x = as_tensor(x)
    check_ndim(x, 4, "avg_pool2d", "input", "(B, C, H, W)")
    kh, kw = _int_pair(kernel_size, "avg_pool2d", "kernel_size", 1)
    sh, sw = (kh, kw) if stride is None else _int_pair(stride, "avg_pool2d", "stride", 1)
    B, C, H, W = x.shape
    if kh > H or kw > W:
        raise ValueError(f"avg_pool2d: kernel {kh}x{kw} is larger than the input {x.shape}")
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    xp = backend.xp()
    scale = 1.0 / (kh * kw)

    y = xp.zeros((B, C, Ho, Wo), dtype=x.dtype)
    for i in range(kh):                                                # kernel offsets only
        for j in range(kw):
            y += x.data[:, :, i:i + sh * Ho:sh, j:j + sw * Wo:sw]
    y *= scale
    out = Tensor.make(y, (x,))

    def _backward():
        dy = out.grad.data * scale                                     # each input: 1/(kh kw)
        dx = xp.zeros(x.shape, dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                dx[:, :, i:i + sh * Ho:sh, j:j + sw * Wo:sw] += dy
        x.accum_grad(dx)
    return out.set_backward(_backward)


@op
def upsample_nearest2d(x, scale=2):
    """Nearest-neighbour upsampling: every pixel becomes an sh x sw block.

    x: (B, C, H, W) -> (B, C, H*sh, W*sw); scale: an int or a (vertical, horizontal) pair.
    """
    x = as_tensor(x)
    check_ndim(x, 4, "upsample_nearest2d", "input", "(B, C, H, W)")
    sh, sw = _int_pair(scale, "upsample_nearest2d", "scale", 1)
    B, C, H, W = x.shape
    xp = backend.xp()
    # Copy per offset (i, j) of the block, each a whole-image copy: numpy is slow at the
    # equivalent broadcast copy, whose innermost loop would be only sw numbers long.
    y = xp.empty((B, C, H, sh, W, sw), dtype=x.dtype)
    for j in range(sw):
        y[:, :, :, 0, :, j] = x.data                                   # widen the first row
    for i in range(1, sh):
        y[:, :, :, i] = y[:, :, :, 0]                                  # then repeat it
    out = Tensor.make(y.reshape(B, C, H * sh, W * sw), (x,))

    def _backward():                                                   # sum over each block
        dy = out.grad.data.reshape(B, C, H, sh, W, sw)
        dx = dy[:, :, :, 0, :, 0].copy()
        for i in range(sh):
            for j in range(sw):
                if (i, j) != (0, 0):
                    dx += dy[:, :, :, i, :, j]
        x.accum_grad(dx)
    return out.set_backward(_backward)
