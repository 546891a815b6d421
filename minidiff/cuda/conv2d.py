"""The launches of kernels/conv2d.cu: 2-D convolution, NCHW, forward and both gradients (the
conv2d op of functional/), as tiled implicit GEMMs or as the naive one-thread-per-output sums.
"""
import numpy as np

from .. import backend
from . import _core             # for _core._launch, looked up at each call (see _core.py)
from ._core import BLOCK, _blocks, _i32, _input

GEMM_THREADS, TILE_M, TILE_N, TILE_K = 256, 64, 64, 16     # as in conv2d.cu


def _pair(v, what):
    v = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(v) != 2 or any(int(a) < 0 for a in v):
        raise ValueError(f"minidiff.cuda: {what} must be an int or a pair of ints >= 0")
    return int(v[0]), int(v[1])


def conv_output_size(H, W, KH, KW, stride, padding):
    """(Ho, Wo) = ((H + 2 ph - KH) // sh + 1, (W + 2 pw - KW) // sw + 1)."""
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding")
    if sh < 1 or sw < 1:
        raise ValueError(f"minidiff.cuda: stride must be >= 1, got {(sh, sw)}")
    Ho, Wo = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"minidiff.cuda: a {KH}x{KW} kernel does not fit a {H}x{W} input "
                         f"with padding {(ph, pw)}")
    return Ho, Wo


def _conv_args(x_shape, w_shape, stride, padding):
    """The eleven ints of conv2d.cu's shape, and (Ho, Wo)."""
    N, Ci, H, W = x_shape
    Co, Ci_w, KH, KW = w_shape
    if Ci != Ci_w:
        raise ValueError(f"minidiff.cuda: x has {Ci} channels, the weight expects {Ci_w}")
    Ho, Wo = conv_output_size(H, W, KH, KW, stride, padding)
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding")
    return tuple(_i32(v) for v in (N, Ci, H, W, Co, KH, KW, sh, sw, ph, pw)), (Ho, Wo)


def _gemm_grid(M, Nc, splits=1):
    return (-(-Nc // TILE_N), -(-M // TILE_M), splits)


def conv2d_forward(x, w, b=None, stride=1, padding=0, naive=False):
    """y = conv2d(x, w) + b, NCHW, as an implicit GEMM (or the naive direct sum)."""
    x, w = _input(x, "x"), _input(w, "w")
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"minidiff.cuda.conv2d_forward: x {x.shape} and w {w.shape} must "
                         f"be 4-d")
    xp = backend.xp()
    Co = w.shape[0]
    b = xp.zeros((Co,), dtype=np.float32) if b is None else _input(b, "b")
    if b.shape != (Co,):
        raise ValueError(f"minidiff.cuda.conv2d_forward: b must have shape ({Co},)")
    shape, (Ho, Wo) = _conv_args(x.shape, w.shape, stride, padding)
    y = xp.empty((x.shape[0], Co, Ho, Wo), dtype=np.float32)
    if y.size and w.size:
        if naive:
            _core._launch("conv2d.cu", "conv2d_forward_naive", _blocks(y.size), (BLOCK,),
                          (x, w, b, y, *shape, _i32(y.size)))
        else:
            _core._launch("conv2d.cu", "conv2d_forward", _gemm_grid(Co, x.shape[0] * Ho * Wo),
                          (GEMM_THREADS,), (x, w, b, y, *shape))
    elif y.size:
        y[...] = b.reshape(1, Co, 1, 1)
    return y


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, naive=False):
    """dx, the gradient of conv2d_forward with respect to x (shape x_shape)."""
    dy, w = _input(dy, "dy"), _input(w, "w")
    shape, (Ho, Wo) = _conv_args(tuple(x_shape), w.shape, stride, padding)
    if dy.shape != (x_shape[0], w.shape[0], Ho, Wo):
        raise ValueError(f"minidiff.cuda.conv2d_backward_data: dy has shape {dy.shape}, "
                         f"expected {(x_shape[0], w.shape[0], Ho, Wo)}")
    xp = backend.xp()
    dx = xp.empty(tuple(x_shape), dtype=np.float32)
    if dx.size and dy.size:
        if naive:
            _core._launch("conv2d.cu", "conv2d_backward_data_naive", _blocks(dx.size),
                          (BLOCK,), (dy, w, dx, *shape, _i32(dx.size)))
        else:
            N, Ci, H, W = x_shape
            _core._launch("conv2d.cu", "conv2d_backward_data", _gemm_grid(Ci, N * H * W),
                          (GEMM_THREADS,), (dy, w, dx, *shape))
    elif dx.size:
        dx[...] = 0
    return dx


def _k_splits(K, tiles, target_blocks=256, max_splits=64):
    """Split the K = N Ho Wo reduction of backward-weight over gridDim.z: enough blocks to
    fill a GPU, each still summing at least 16 tiles of K. Returns (k_chunk, splits)."""
    splits = max(1, min(max_splits, -(-target_blocks // tiles), K // (16 * TILE_K)))
    chunk = -(-K // splits)
    chunk = -(-chunk // TILE_K) * TILE_K                         # a whole number of K tiles
    return chunk, -(-K // chunk)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, naive=False):
    """dw, the gradient of conv2d_forward with respect to w (shape w_shape)."""
    dy, x = _input(dy, "dy"), _input(x, "x")
    shape, (Ho, Wo) = _conv_args(x.shape, tuple(w_shape), stride, padding)
    Co, Ci, KH, KW = w_shape
    if dy.shape != (x.shape[0], Co, Ho, Wo):
        raise ValueError(f"minidiff.cuda.conv2d_backward_weight: dy has shape {dy.shape}, "
                         f"expected {(x.shape[0], Co, Ho, Wo)}")
    xp = backend.xp()
    Nc, K = Ci * KH * KW, x.shape[0] * Ho * Wo
    if Co * Nc == 0 or K == 0:
        return xp.zeros(tuple(w_shape), dtype=np.float32)
    if naive:
        dw = xp.empty(tuple(w_shape), dtype=np.float32)
        _core._launch("conv2d.cu", "conv2d_backward_weight_naive", _blocks(dw.size), (BLOCK,),
                      (dy, x, dw, *shape, _i32(dw.size)))
        return dw
    grid = _gemm_grid(Co, Nc)
    chunk, splits = _k_splits(K, grid[0] * grid[1])
    partial = xp.empty((splits, Co, Nc), dtype=np.float32)
    _core._launch("conv2d.cu", "conv2d_backward_weight", _gemm_grid(Co, Nc, splits),
                  (GEMM_THREADS,), (dy, x, partial, *shape, _i32(chunk)))
    return partial.sum(axis=0).reshape(tuple(w_shape))           # the partials, summed in order
