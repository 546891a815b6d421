"""An exponential moving average of the weights, as Ho et al. 2020 sample with (Appendix B,
decay 0.9999). `ema_update` is its arithmetic on arrays; a fused kernel (kernels/adam.cu)
takes its place on the GPU."""
import contextlib

import numpy as np

from .. import backend, cuda
from ..nn import Module, checked_array
from ..tensor import Tensor
from ..validate import check_int, check_number
from .optimizer import refuse_one_tensor


def ema_update(shadow, param, decay):
    """shadow ← decay · shadow + (1 - decay) · param, in place (written as TF's EMA does)."""
    if cuda.use_kernels(shadow, param):
        return cuda.ema_update(shadow, param, decay)
    shadow -= (1 - decay) * (shadow - param)


def _named_params(module_or_params, op):
    if isinstance(module_or_params, Module):
        return list(module_or_params.named_parameters())
    refuse_one_tensor(module_or_params, op)
    params = list(module_or_params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ValueError(f"{op}: item {i} is {p!r}, not a Tensor")
    return [(str(i), p) for i, p in enumerate(params)]


class EMA:
    """An exponential moving average of parameters: shadow ← d·shadow + (1-d)·θ per update().

    Ho et al. sample with the EMA weights (decay 0.9999). Typical use:

        ema = EMA(model)
        ...  opt.step(); ema.update()
        with ema.swapped_in(model):      # the model holds the averages inside the block
            samples = sample(model)
    """

    def __init__(self, module_or_params, decay=0.9999):
        named = _named_params(module_or_params, "EMA")
        if not named:
            raise ValueError("EMA: got no parameters")
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.decay = check_number("EMA: decay", decay, 0.0, 1.0)
        self.shadow = [p.data.copy() for p in self.params]
        self.num_updates = 0

    def update(self):
        """One step of the average, shadow ← d·shadow + (1-d)·θ, for every parameter."""
        for s, p in zip(self.shadow, self.params):
            ema_update(s, p.data, self.decay)
        self.num_updates += 1

    def _targets(self, target, op):
        params = self.params if target is None else [p for _, p in _named_params(target, op)]
        if len(params) != len(self.shadow):
            raise ValueError(f"{op}: target has {len(params)} parameters, EMA has "
                             f"{len(self.shadow)}")
        for name, s, p in zip(self.names, self.shadow, params):
            if p.shape != s.shape:
                raise ValueError(f"{op}: {name} has shape {s.shape} in the EMA but "
                                 f"{p.shape} in the target")
        return params

    def copy_to(self, target=None):
        """Write the averages into target's parameters (matched in order); default: our own."""
        for s, p in zip(self.shadow, self._targets(target, "EMA.copy_to")):
            p.data[...] = s

    @contextlib.contextmanager
    def swapped_in(self, target=None):
        """Inside the block the parameters hold the averages; after it, their own values."""
        params = self._targets(target, "EMA.swapped_in")
        backup = [p.data.copy() for p in params]
        self.copy_to(target)
        try:
            yield
        finally:
            for b, p in zip(backup, params):
                p.data[...] = b

    def state_dict(self):
        """{"decay", "num_updates", "shadow.<name>": array}; names as in named_parameters."""
        sd = {"decay": self.decay, "num_updates": self.num_updates}
        for name, s in zip(self.names, self.shadow):
            sd["shadow." + name] = np.array(backend.to_numpy(s), copy=True)
        return sd

    def load_state_dict(self, sd):
        """All or nothing, like the optimizers': every entry is checked before any is set."""
        expected = {"decay", "num_updates", *("shadow." + n for n in self.names)}
        missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
        try:
            if missing or unexpected:
                raise ValueError(f"missing {missing}, unexpected {unexpected}")
            decay = check_number("EMA: decay", sd["decay"], 0.0, 1.0)
            num_updates = check_int("num_updates", sd["num_updates"], 0)
            shadow = [checked_array("shadow." + n, sd["shadow." + n], p)
                      for n, p in zip(self.names, self.params)]
        except ValueError as e:
            raise ValueError(f"EMA.load_state_dict: nothing was loaded; {e}") from None
        self.shadow = [backend.xp().asarray(s) for s in shadow]
        self.decay, self.num_updates = decay, num_updates
        return self
