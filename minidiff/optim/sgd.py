"""SGD with momentum (Sutskever et al. 2013, the PyTorch form) and L2 weight decay."""
from ..validate import check_number
from .optimizer import Optimizer


def sgd_update(p, g, buf, lr, momentum, weight_decay):
    """One SGD step in place on p (and on buf, the momentum buffer, when momentum > 0)."""
    if weight_decay != 0:
        g = g + weight_decay * p                               # L2 penalty ½λ‖p‖² adds λp
    if momentum != 0:
        buf *= momentum                                        # b ← μ b + g  (Sutskever et al.
        buf += g                                               #   2013, the PyTorch form)
        g = buf
    p -= lr * g                                                # p ← p - η g


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay.

    `params`: tensors, or PyTorch's param groups ([{"params": [...], "lr": 0.1}, ...]).
    """

    buffer_names = ("momentum_buffer",)
    required = ("lr", "momentum", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def _checked(self, group, where):
        return {"lr": check_number(f"{where}lr", group.get("lr"), 0.0),
                "momentum": check_number(f"{where}momentum", group.get("momentum"), 0.0, 1.0,
                                         hi_open=True),
                "weight_decay": check_number(f"{where}weight_decay", group.get("weight_decay"),
                                             0.0)}

    def _saved(self, h):
        return dict(h)

    def _buffers_for(self, h):
        return self.buffer_names if h["momentum"] != 0 else ()

    def _update(self, i, p, g, h):
        buf = self._buffer("momentum_buffer", i) if h["momentum"] != 0 else None
        sgd_update(p, g, buf, h["lr"], h["momentum"], h["weight_decay"])
