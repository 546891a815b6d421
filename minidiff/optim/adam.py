"""Adam (Kingma & Ba 2015), its AMSGrad variant (Reddi et al. 2018), and AdamW (Loshchilov &
Hutter 2019). Each update is one function on arrays, in place; on the GPU a fused kernel
(kernels/adam.cu, through minidiff.cuda) takes the place of Adam's and AdamW's, except with
amsgrad, which the kernel does not keep: that runs the xp code below on the device."""
from .. import backend, cuda
from ..validate import check_bool, check_number
from .optimizer import Optimizer


def adam_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay, v_max=None):
    """One Adam step (Kingma & Ba 2015, Algorithm 1) in place on p, m and v; t counts from 1.
    With v_max (AMSGrad, Reddi et al. 2018, Algorithm 2, as PyTorch has it), v_max ← max(v_max,
    v_t) in place and v̂ is v_max / (1 - β2^t)."""
    if v_max is None and cuda.use_kernels(p, g, m, v):        # the whole step, one kernel
        return cuda.adam_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay)
    xp = backend.xp()
    if weight_decay != 0:
        g = g + weight_decay * p                               # L2 penalty, added to the gradient
    m *= beta1
    m += (1 - beta1) * g                                       # m_t = β1 m_{t-1} + (1-β1) g_t
    v *= beta2
    v += (1 - beta2) * (g * g)                                 # v_t = β2 v_{t-1} + (1-β2) g_t²
    if v_max is not None:
        xp.maximum(v_max, v, out=v_max)                        # v_max = max(v_max, v_t)
        v = v_max
    m_hat = m / (1 - beta1 ** t)                               # m̂_t = m_t / (1 - β1^t)
    v_hat = v / (1 - beta2 ** t)                               # v̂_t = v_t / (1 - β2^t)
    p -= lr * m_hat / (xp.sqrt(v_hat) + eps)                   # θ_t = θ_{t-1} - α m̂/(√v̂ + ε)


def adamw_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay, v_max=None):
    """AdamW (Loshchilov & Hutter 2019, Algorithm 2): the decay acts on p, not on g."""
    if v_max is None and cuda.use_kernels(p, g, m, v):        # decay, step: one kernel
        return cuda.adamw_update(p, g, m, v, t, lr, beta1, beta2, eps,
                                 weight_decay)
    p -= lr * weight_decay * p                                 # θ ← θ - η λ θ, decoupled
    adam_update(p, g, m, v, t, lr, beta1, beta2, eps, 0.0, v_max)


def _check_betas(betas, where):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{where}betas must be a pair (beta1, beta2), got {betas!r:.60}")
    return tuple(check_number(f"{where}betas[{i}]", b, 0.0, 1.0, hi_open=True)
                 for i, b in enumerate(betas))


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015); weight_decay is an L2 penalty added to the gradient; amsgrad
    keeps the largest v_t seen (Reddi et al. 2018). Defaults are Ho et al.'s: lr 2e-4,
    β = (0.9, 0.999), ε = 1e-8. `params`: tensors, or PyTorch's param groups.
    """

    buffer_names = ("m", "v", "v_max")
    required = ("lr", "betas", "eps", "weight_decay")
    absent_means = {"amsgrad": False}               # checkpoints from before amsgrad
    update_rule = staticmethod(adam_update)         # the seam for a fused GPU kernel

    def __init__(self, params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "amsgrad": amsgrad})

    def _checked(self, group, where):
        return {"lr": check_number(f"{where}lr", group.get("lr"), 0.0),
                "betas": _check_betas(group.get("betas"), where),
                "eps": check_number(f"{where}eps", group.get("eps"), 0.0),
                "weight_decay": check_number(f"{where}weight_decay", group.get("weight_decay"),
                                             0.0),
                "amsgrad": check_bool(f"{where}amsgrad", group.get("amsgrad"))}

    def _saved(self, h):
        """As JSON keeps it; "amsgrad" only when on, so checkpoints without it keep loading."""
        s = {"lr": h["lr"], "betas": list(h["betas"]), "eps": h["eps"],
             "weight_decay": h["weight_decay"]}
        return {**s, "amsgrad": True} if h["amsgrad"] else s

    def _buffers_for(self, h):
        return self.buffer_names if h["amsgrad"] else ("m", "v")

    def _update(self, i, p, g, h):
        m, v = self._buffer("m", i), self._buffer("v", i)
        amsgrad = {"v_max": self._buffer("v_max", i)} if h["amsgrad"] else {}
        beta1, beta2 = h["betas"]
        self.update_rule(p, g, m, v, self.steps[i], h["lr"], beta1, beta2, h["eps"],
                         h["weight_decay"], **amsgrad)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p ← p - lr·λ·p each step."""

    update_rule = staticmethod(adamw_update)

    def __init__(self, params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
