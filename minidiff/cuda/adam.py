"""The launches of kernels/adam.cu: the optimizer's per-parameter updates, in place, one pass
each (optim.adam_update, optim.adamw_update, optim.ema_update)."""
from . import _core             # for _core._launch, looked up at each call (see _core.py)
from ._core import BLOCK, _blocks, _f32, _i32, _inplace, _input, _same_shape


def _adam(p, g, m, v, t, lr, beta1, beta2, eps, l2_decay, decoupled_decay):
    p, m, v = _inplace(p, "p"), _inplace(m, "m"), _inplace(v, "v")
    g = _input(g, "grad")
    _same_shape("adam_step", p, ("grad", g), ("m", m), ("v", v))
    if p.size:
        bias_c1, bias_c2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t      # float64, then float32
        _core._launch("adam.cu", "adam_step", _blocks(p.size), (BLOCK,),
                      (p, g, m, v, _f32(lr), _f32(beta1), _f32(beta2), _f32(1.0 - beta1),
                       _f32(1.0 - beta2), _f32(eps), _f32(l2_decay), _f32(decoupled_decay),
                       _f32(bias_c1), _f32(bias_c2), _i32(p.size)))


def adam_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """optim.adam_update in one kernel: Adam, weight decay as an L2 term in the gradient."""
    _adam(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay, 0.0)


def adamw_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """optim.adamw_update in one kernel: AdamW's decoupled decay (Loshchilov & Hutter 2019)."""
    _adam(p, g, m, v, t, lr, beta1, beta2, eps, 0.0, weight_decay)


def ema_update(shadow, param, decay):
    """shadow <- shadow - (1 - decay) (shadow - param), in place (optim.ema_update)."""
    shadow, param = _inplace(shadow, "shadow"), _input(param, "param")
    _same_shape("ema_update", shadow, ("param", param))
    if shadow.size:
        _core._launch("adam.cu", "ema_update", _blocks(shadow.size), (BLOCK,),
                      (shadow, param, _f32(1.0 - decay), _i32(shadow.size)))
