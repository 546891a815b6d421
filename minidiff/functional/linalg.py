"""Matrix ops: batched matmul and the linear layer, on BLAS."""
from .. import backend
from ..tensor import Tensor, op, unbroadcast
from ._util import as_tensor, same_dtype


@op
def matmul(a, b):
    """a @ b for 2-d or batched (..., M, K) @ (..., K, N) operands; batch axes broadcast."""
    a, b = as_tensor(a), as_tensor(b)
    same_dtype("matmul", a, b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not multiply "
                         f"(need (..., M, K) @ (..., K, N), both at least 2-d)")
    xp = backend.xp()
    out = Tensor.make(xp.matmul(a.data, b.data), (a, b))

    def _backward():                                   # dA = dC·Bᵀ, dB = Aᵀ·dC
        dC = out.grad.data
        if a.requires_grad:
            a.accum_grad(unbroadcast(xp.matmul(dC, xp.swapaxes(b.data, -1, -2)), a.shape))
        if b.requires_grad:
            b.accum_grad(unbroadcast(xp.matmul(xp.swapaxes(a.data, -1, -2), dC), b.shape))
    return out.set_backward(_backward)


@op
def linear(x, weight, bias=None):
    """y = x Wᵀ + b with W of shape (out, in), the PyTorch convention. x: (..., in)."""
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    same_dtype("linear", x, weight, bias)
    if weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input {x.shape} does not fit weight {weight.shape} "
                         f"(need (..., in) and (out, in))")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias has shape {bias.shape}, need ({weight.shape[0]},)")
    xp = backend.xp()
    x2 = x.data.reshape(-1, x.shape[-1])                              # (N, in)
    y = x2 @ weight.data.T                                             # (N, out)
    if bias is not None:
        y += bias.data
    parents = (x, weight) if bias is None else (x, weight, bias)
    out = Tensor.make(y.reshape(x.shape[:-1] + (weight.shape[0],)), parents)

    def _backward():
        g = out.grad.data.reshape(-1, weight.shape[0])                 # (N, out)
        if x.requires_grad:
            x.accum_grad((g @ weight.data).reshape(x.shape))           # dX = dY·W
        if weight.requires_grad:
            weight.accum_grad(g.T @ x2)                                # dW = dYᵀ·X
        if bias is not None and bias.requires_grad:
            bias.accum_grad(xp.sum(g, axis=0))                         # db = Σ_n dY
    return out.set_backward(_backward)
