"""The launches of kernels/softmax.cu: the softmax over the last axis and its backward pass
(functional/attention.py), one row per thread (naive) or per block."""
import numpy as np

from .. import backend
from . import _core             # for _core._launch, looked up at each call (see _core.py)
from ._core import BLOCK, _blocks, _i32, _input, _reduce_block, _same_shape


def _rows(x):
    cols = x.shape[-1] if x.ndim else 1
    return x.size // max(1, cols), cols


def softmax(x, naive=False):
    """The softmax over the last axis (Vaswani et al. 2017, Eq. 1)."""
    x = _input(x, "x")
    rows, cols = _rows(x)
    y = backend.xp().empty(x.shape, dtype=np.float32)
    if x.size:
        if naive:
            _core._launch("softmax.cu", "softmax_forward_naive", _blocks(rows), (BLOCK,),
                          (x, y, _i32(rows), _i32(cols)))
        else:
            _core._launch("softmax.cu", "softmax_forward", (rows,), _reduce_block(cols),
                          (x, y, _i32(rows), _i32(cols)))
    return y


def softmax_backward(y, dy, naive=False):
    """dx = y (dy - sum(dy y)) over the last axis, given the softmax's output y."""
    y, dy = _input(y, "y"), _input(dy, "dy")
    _same_shape("softmax_backward", y, ("dy", dy))
    rows, cols = _rows(y)
    dx = backend.xp().empty(y.shape, dtype=np.float32)
    if y.size:
        if naive:
            _core._launch("softmax.cu", "softmax_backward_naive", _blocks(rows), (BLOCK,),
                          (y, dy, dx, _i32(rows), _i32(cols)))
        else:
            _core._launch("softmax.cu", "softmax_backward", (rows,), _reduce_block(cols),
                          (y, dy, dx, _i32(rows), _i32(cols)))
    return dx
