"""Optimizers (SGD, Adam, AdamW), global-norm gradient clipping, EMA of weights, LR warm-up.

Ho et al. 2020 (Appendix B) train with Adam, learning rate 2e-4 warmed up linearly over the first
5000 steps, gradients clipped to global norm 1, and sample with an exponential moving average
of the weights (decay 0.9999).

Each optimizer's arithmetic is one small function on arrays (`sgd_update`, `adam_update`,
`adamw_update`, and `ema_update` for the EMA). They update in place and never touch a Tensor,
so a fused CUDA kernel takes the place of Adam's, AdamW's and the EMA's on the GPU
(kernels/adam.cu, through minidiff.cuda): one pass over each array instead of a dozen.

Checkpoints: every `state_dict()` here is a flat dict of NumPy arrays and JSON-able scalars
(str, int, float, lists of them); nothing needs pickle.
"""
import contextlib
import math

import numpy as np

from . import backend, cuda
from .nn import Module, checked_array
from .tensor import Tensor
from .validate import check_int, check_number


# ---------------------------------------------------------------------------- the updates
def sgd_update(p, g, buf, lr, momentum, weight_decay):
    """One SGD step in place on p (and on buf, the momentum buffer, when momentum > 0)."""
    if weight_decay != 0:
        g = g + weight_decay * p                               # L2 penalty ½λ‖p‖² adds λp
    if momentum != 0:
        buf *= momentum                                        # b ← μ b + g  (Sutskever et al.
        buf += g                                               #   2013, the PyTorch form)
        g = buf
    p -= lr * g                                                # p ← p - η g


def adam_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """One Adam step (Kingma & Ba 2015, Algorithm 1) in place on p, m and v; t counts from 1."""
    if cuda.use_kernels(p, g, m, v):                           # the whole step, one kernel
        return cuda.adam_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay)
    xp = backend.xp()
    if weight_decay != 0:
        g = g + weight_decay * p                               # L2 penalty, added to the gradient
    m *= beta1
    m += (1 - beta1) * g                                       # m_t = β1 m_{t-1} + (1-β1) g_t
    v *= beta2
    v += (1 - beta2) * (g * g)                                 # v_t = β2 v_{t-1} + (1-β2) g_t²
    m_hat = m / (1 - beta1 ** t)                               # m̂_t = m_t / (1 - β1^t)
    v_hat = v / (1 - beta2 ** t)                               # v̂_t = v_t / (1 - β2^t)
    p -= lr * m_hat / (xp.sqrt(v_hat) + eps)                   # θ_t = θ_{t-1} - α m̂/(√v̂ + ε)


def adamw_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """AdamW (Loshchilov & Hutter 2019, Algorithm 2): the decay acts on p, not on g."""
    if cuda.use_kernels(p, g, m, v):                           # decay and step, one kernel
        return cuda.adamw_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay)
    p -= lr * weight_decay * p                                 # θ ← θ - η λ θ, decoupled
    adam_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay=0.0)


def ema_update(shadow, param, decay):
    """shadow ← decay · shadow + (1 - decay) · param, in place (written as TF's EMA does)."""
    if cuda.use_kernels(shadow, param):
        return cuda.ema_update(shadow, param, decay)
    shadow -= (1 - decay) * (shadow - param)


# ---------------------------------------------------------------------------- checks
def _refuse_one_tensor(params, op):
    """A Tensor iterates over its rows, so list(t) would hand over copies of rows."""
    if isinstance(params, Tensor):
        raise TypeError(f"{op}: pass a list of tensors such as [t], not a single Tensor")


def _param_list(params, op):
    if isinstance(params, Module):
        raise ValueError(f"{op}: pass module.parameters(), not the module itself")
    _refuse_one_tensor(params, op)
    params = list(params)
    if not params:
        raise ValueError(f"{op}: got an empty parameter list")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor) or not p.requires_grad:
            raise ValueError(f"{op}: parameter {i} is {p!r}; need Tensors with "
                             f"requires_grad=True (e.g. module.parameters())")
    if len({id(p) for p in params}) != len(params):
        raise ValueError(f"{op}: the same parameter appears twice in the list")
    return params


def _check_betas(betas, op):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{op}: betas must be a pair (beta1, beta2), got {betas!r}")
    return tuple(check_number(f"{op}: betas[{i}]", b, 0.0, 1.0, hi_open=True)
                 for i, b in enumerate(betas))


# ---------------------------------------------------------------------------- optimizers
class Optimizer:
    """What SGD, Adam and AdamW share: the parameters, per-parameter buffers, checkpoints.

    `steps[i]` counts the updates parameter i has had (a parameter whose .grad is None is
    skipped). `buffers[name][i]` holds the arrays an optimizer keeps between steps (Adam's m
    and v), made as zeros the first time they are needed.
    """

    buffer_names = ()

    def __init__(self, params, lr):
        self.params = _param_list(params, type(self).__name__)
        self.lr = check_number(f"{type(self).__name__}: lr", lr, 0.0)
        self.steps = [0] * len(self.params)
        self.buffers = {name: [None] * len(self.params) for name in self.buffer_names}

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def _buffer(self, name, i):
        if self.buffers[name][i] is None:
            self.buffers[name][i] = backend.xp().zeros_like(self.params[i].data)
        return self.buffers[name][i]

    def step(self):
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if p.grad.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.step: parameter {i} has shape "
                                 f"{p.shape} but its grad has shape {p.grad.shape}")
            self.steps[i] += 1
            self._update(i, p.data, p.grad)

    # ------------------------------------------------------------------ checkpoints
    def hyperparameters(self):
        raise NotImplementedError

    def state_dict(self):
        """{"kind", hyperparameters, "steps": [t_i], "<buffer>.<i>": array}."""
        sd = {"kind": type(self).__name__, **self.hyperparameters(), "steps": list(self.steps)}
        for name in self.buffer_names:
            for i, buf in enumerate(self.buffers[name]):
                if buf is not None:
                    sd[f"{name}.{i}"] = np.array(backend.to_numpy(buf), copy=True)
        return sd

    def buffers_in_use(self):
        return self.buffer_names

    def load_state_dict(self, sd):
        """Restore a state_dict() of this kind of optimizer over the same parameters, all or
        nothing: a new optimizer is built from it and checked, then this one takes its fields."""
        try:
            new = self._from_state(sd)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}.load_state_dict: nothing was loaded; {e}") \
                from None
        vars(self).update(vars(new))
        return self

    def _from_state(self, sd):
        """The hyperparameters pass the constructor's checks, each step count is an int >= 0,
        and a buffer is there exactly for each parameter that has taken a step (checked_array)."""
        kind, n, names = type(self).__name__, len(self.params), list(self.hyperparameters())
        if sd.get("kind") != kind:
            raise ValueError(f"state is for {sd.get('kind')!r}, not {kind}")
        missing = [k for k in ("steps", *names) if k not in sd]
        if missing:
            raise ValueError(f"missing keys {missing}")
        new, steps = type(self)(self.params, **{k: sd[k] for k in names}), sd["steps"]
        if not isinstance(steps, (list, tuple)):
            raise ValueError(f"steps must be a list of step counts, got {steps!r}")
        if len(steps) != n:
            raise ValueError(f"steps: the state has {len(steps)} parameters, the optimizer {n}")
        new.steps = [check_int(f"steps[{i}]", s, 0) for i, s in enumerate(steps)]
        wanted = {f"{b}.{i}": (b, i) for b in new.buffers_in_use() for i in range(n)
                  if new.steps[i] > 0}
        unexpected = [k for k in sd if k not in wanted and k not in ("kind", "steps", *names)]
        absent = [k for k in wanted if k not in sd]
        if unexpected or absent:
            raise ValueError(f"unexpected key {unexpected[0]!r}" if unexpected else
                             f"missing buffers {absent} (of the parameters that took a step)")
        for key, (b, i) in wanted.items():
            new.buffers[b][i] = backend.xp().asarray(checked_array(key, sd[key], self.params[i]))
        return new


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay."""

    buffer_names = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum = check_number("SGD: momentum", momentum, 0.0, 1.0, hi_open=True)
        self.weight_decay = check_number("SGD: weight_decay", weight_decay, 0.0)

    def _update(self, i, p, g):
        buf = self._buffer("momentum_buffer", i) if self.momentum != 0 else None
        sgd_update(p, g, buf, self.lr, self.momentum, self.weight_decay)

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}

    def buffers_in_use(self):
        return self.buffer_names if self.momentum != 0 else ()


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015); weight_decay is an L2 penalty added to the gradient.

    Defaults are Ho et al.'s: lr 2e-4, β = (0.9, 0.999), ε = 1e-8.
    """

    buffer_names = ("m", "v")
    update_rule = staticmethod(adam_update)     # the seam for a fused GPU kernel

    def __init__(self, params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        name = type(self).__name__
        self.betas = _check_betas(betas, name)
        self.eps = check_number(f"{name}: eps", eps, 0.0)
        self.weight_decay = check_number(f"{name}: weight_decay", weight_decay, 0.0)

    def _update(self, i, p, g):
        m, v = self._buffer("m", i), self._buffer("v", i)
        beta1, beta2 = self.betas
        self.update_rule(p, g, m, v, self.steps[i], self.lr, beta1, beta2, self.eps,
                         self.weight_decay)

    def hyperparameters(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p ← p - lr·λ·p each step."""

    update_rule = staticmethod(adamw_update)

    def __init__(self, params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


# ---------------------------------------------------------------------------- clipping
def clip_grad_norm(params, max_norm):
    """Scale all gradients together so their global L2 norm is at most max_norm.

    g ← g · max_norm / max(‖g‖, max_norm), with ‖g‖ over every gradient at once (Pascanu et
    al. 2013; TF's clip_by_global_norm, as in Ho et al.'s code). Returns ‖g‖ before clipping.
    Parameters whose .grad is None are skipped. New gradient arrays are made, never edited in
    place, since two tensors may share one gradient array.
    """
    if isinstance(params, Module):
        raise ValueError("clip_grad_norm: pass module.parameters(), not the module itself")
    _refuse_one_tensor(params, "clip_grad_norm")
    max_norm = check_number("clip_grad_norm: max_norm", max_norm, 0.0)
    if max_norm == 0:
        raise ValueError("clip_grad_norm: max_norm must be > 0, got 0")
    xp = backend.xp()
    params = [p for p in params if p.grad is not None]
    sq = 0.0
    for p in params:
        g = p.grad.astype(xp.float64)                          # summed in float64
        sq = sq + (g * g).sum()
    total = math.sqrt(float(sq))                               # ‖g‖ = √(Σ_i Σ g_i²)
    if total > max_norm:
        coef = max_norm / total
        for p in params:
            p.grad = p.grad * p.grad.dtype.type(coef)          # g ← g · max_norm / ‖g‖
    return total


# ---------------------------------------------------------------------------- EMA
def _named_params(module_or_params, op):
    if isinstance(module_or_params, Module):
        return list(module_or_params.named_parameters())
    _refuse_one_tensor(module_or_params, op)
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


# ---------------------------------------------------------------------------- warm-up
class LinearWarmup:
    """Learning rate base_lr · min(k / warmup_steps, 1) for the update after k updates.

    As in Ho et al.'s code (diffusion_tf/utils.py, get_warmed_up_lr, with TF's global step k
    counting completed updates), so the very first update has lr 0. Call step() after each
    optimizer.step(); construction sets the lr of the first update. warmup_steps=0: constant.
    """

    def __init__(self, optimizer, warmup_steps, base_lr):
        self.optimizer = optimizer
        self.warmup_steps = check_int("LinearWarmup: warmup_steps", warmup_steps, 0)
        self.base_lr = check_number("LinearWarmup: base_lr", base_lr, 0.0)
        self.last_step = 0                                     # k: updates taken so far
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, k):
        if self.warmup_steps == 0:
            return self.base_lr
        return self.base_lr * min(k / self.warmup_steps, 1.0)  # Ho et al.'s linear warm-up

    def step(self):
        self.last_step += 1
        self.optimizer.lr = self.lr_at(self.last_step)
        return self.optimizer.lr

    def state_dict(self):
        return {"warmup_steps": self.warmup_steps, "base_lr": self.base_lr,
                "last_step": self.last_step}

    def load_state_dict(self, sd):
        self.warmup_steps, self.base_lr = int(sd["warmup_steps"]), float(sd["base_lr"])
        self.last_step = int(sd["last_step"])
        self.optimizer.lr = self.lr_at(self.last_step)
        return self
