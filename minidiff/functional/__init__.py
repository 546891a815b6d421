"""Every differentiable op, each forward beside its hand-written backward. Each is a plain
function under `@op` (tensor.py), named once, by its `def`: grep `def conv2d` to find it.

    elementwise.py   add sub mul div pow maximum neg exp log sqrt sin cos abs tanh sigmoid relu
                     silu clip
    reduce.py        sum mean max min norm
    shape.py         reshape unsqueeze transpose permute concat getitem clone to_device
    linalg.py        matmul linear
    conv.py          conv2d avg_pool2d upsample_nearest2d
    groupnorm.py     group_norm group_norm_silu (the fast path: groupnorm_fast.py)
    attention.py     softmax attention
    compare.py       eq ne lt le gt ge any all (masks of 0.0 and 1.0, no gradient)
    inplace.py       zero_ fill_ copy_ add_ sub_ mul_ div_ (in place, outside the graph)
    loss.py          mse_loss dropout
"""
from .attention import attention, softmax
from .compare import all, any, eq, ge, gt, le, lt, ne
from .conv import avg_pool2d, conv2d, upsample_nearest2d
from .elementwise import (abs, add, astype, clip, cos, div, exp, log, maximum, mul, neg, pow,
                          relu, sigmoid, silu, sin, sqrt, sub, tanh)
from .inplace import add_, copy_, div_, fill_, mul_, sub_, zero_
from .linalg import linear, matmul
from .loss import dropout, mse_loss
from .groupnorm import group_norm, group_norm_silu
from .reduce import max, mean, min, norm, sum
from .shape import (clone, concat, getitem, permute, reshape, to_device, transpose,
                    unsqueeze)
from ..tensor import Tensor          # the one allowed circle: see tensor.py's last import

# Tensor's methods, as in PyTorch, are these ops (x.sum(0) is sum(x, 0)), so help(Tensor.sum) is
# help(sum). Bound here, once every op is defined, whichever of tensor and functional loads first.
Tensor.sum, Tensor.mean, Tensor.max, Tensor.min = sum, mean, max, min
Tensor.norm = norm                                          # the 2-norm, reduce.py
Tensor.reshape = Tensor.view = reshape                      # view: reshape under torch's name
Tensor.transpose, Tensor.permute, Tensor.unsqueeze = transpose, permute, unsqueeze
Tensor.exp, Tensor.log, Tensor.sqrt, Tensor.abs, Tensor.tanh = exp, log, sqrt, abs, tanh
Tensor.any, Tensor.all, Tensor.clone = any, all, clone      # Tensor.to: tensor.py
Tensor.zero_, Tensor.fill_, Tensor.copy_ = zero_, fill_, copy_
Tensor.add_, Tensor.sub_, Tensor.mul_, Tensor.div_ = add_, sub_, mul_, div_
Tensor.__iadd__, Tensor.__isub__, Tensor.__imul__, Tensor.__itruediv__ = add_, sub_, mul_, div_
