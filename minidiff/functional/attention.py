"""Softmax and the single-head self-attention of Ho et al.'s U-Net.

Ho et al. (2020, Appendix B) put a self-attention block at the 16×16 resolution of the U-Net,
after Wang et al. (2018) and Vaswani et al. (2017). Every pixel is a token: with q, k, v of
shape (B, C, N), N = H·W,

    S = qᵀk / √C          (B, N, N)   one score per (query pixel i, key pixel j)
    A = softmax_j(S)      (B, N, N)   weights over the keys, each row sums to 1
    out = v Aᵀ            (B, C, N)   out[:, :, i] = Σ_j A[i, j] v[:, :, j]

Both backward passes are written out: the matmul adjoints and the softmax adjoint. On the
GPU the matmuls stay on CuPy (cuBLAS) and the softmax over the last axis, both ways, is one
kernel each (kernels/softmax.cu, through minidiff.cuda).
"""
import math

from .. import backend, cuda
from ..tensor import Tensor, op
from ._util import as_tensor, check_ndim, same_dtype


def _softmax_forward(xp, x, axis):
    """exp(x - max x) / Σ exp(x - max x): shifting by the max keeps exp from overflowing."""
    if cuda.use_kernels(x) and axis in (-1, x.ndim - 1):
        return cuda.softmax(x)                                 # the three passes, one kernel
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_backward(y, dy, axis):
    """The adjoint of y = softmax(x): dx = y ⊙ (dy - Σ dy ⊙ y), the sum along `axis`.

    From ∂y_i/∂x_j = y_i (δ_ij - y_j).
    """
    if cuda.use_kernels(y, dy) and axis in (-1, y.ndim - 1):
        return cuda.softmax_backward(y, dy)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


@op
def softmax(x, axis=-1):
    """Numerically stable softmax along one axis."""
    x = as_tensor(x)
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"softmax: axis {axis} is out of range for shape {x.shape}")
    y = _softmax_forward(backend.xp(), x.data, axis)
    out = Tensor.make(y, (x,))

    def _backward():
        x.accum_grad(_softmax_backward(y, out.grad.data, axis))
    return out.set_backward(_backward)


@op
def attention(q, k, v):
    """Scaled dot-product self-attention, one head: q, k, v (B, C, N) -> out (B, C, N)."""
    q, k, v = as_tensor(q), as_tensor(k), as_tensor(v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_ndim(t, 3, "attention", name, "(B, C, N)")
    if not q.shape == k.shape == v.shape:
        raise ValueError(f"attention: q, k, v must have one shape (B, C, N), got "
                         f"q {q.shape}, k {k.shape}, v {v.shape}")
    same_dtype("attention", q, k, v)
    xp = backend.xp()
    scale = 1.0 / math.sqrt(q.shape[1])                        # 1/√C, Vaswani et al. 2017, Eq. 1

    qT = xp.swapaxes(q.data, 1, 2)                             # (B, N, C)
    S = xp.matmul(qT, k.data) * scale                          # (B, N, N) S = qᵀk / √C
    A = _softmax_forward(xp, S, axis=-1)                       # (B, N, N) softmax over keys j
    y = xp.matmul(v.data, xp.swapaxes(A, 1, 2))                # (B, C, N) out = v Aᵀ
    out = Tensor.make(y, (q, k, v))

    def _backward():
        dy = out.grad.data                                     # (B, C, N)
        if v.requires_grad:
            v.accum_grad(xp.matmul(dy, A))                     # dv = dy A
        if q.requires_grad or k.requires_grad:
            dA = xp.matmul(xp.swapaxes(dy, 1, 2), v.data)      # (B, N, N) dA = dyᵀ v
            dS = _softmax_backward(A, dA, axis=-1) * scale     # (B, N, N) d(qᵀk) = dS / √C
            if q.requires_grad:
                q.accum_grad(xp.matmul(k.data, xp.swapaxes(dS, 1, 2)))   # dq = k dSᵀ
            if k.requires_grad:
                k.accum_grad(xp.matmul(q.data, dS))                       # dk = q dS
    return out.set_backward(_backward)
