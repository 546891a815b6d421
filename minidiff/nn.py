"""Modules: Parameter, Module, and the layers of Ho et al.'s networks.

A Module finds its parameters by walking its own attributes, in the order they were set:
an attribute that is a Parameter is a parameter, one that is a Module is a child, and a list
or tuple of Modules is a numbered row of children. So in

    class Block(Module):
        def __init__(self):
            super().__init__()
            self.norm = GroupNorm(8, 64)
            self.convs = [Conv2d(64, 64, 3, padding=1), Conv2d(64, 64, 3, padding=1)]

the names are "norm.weight", "norm.bias", "convs.0.weight", "convs.0.bias", "convs.1.weight",
... There is no registration step and no decorator.

Initialisation follows Ho et al.'s code (diffusion_tf/nn.py, `default_init`): weights are
variance-scaling uniform, mode "fan_avg", biases are zero. A layer made with `init_scale=0`
gets scale 1e-10 instead, as in their code; that is how they start output layers at
(almost) zero so each residual block begins as the identity. `zero_init(module)` sets every
parameter of a module to exactly zero, for when exact zeros are wanted.
"""
import math
import numbers

import numpy as np

from . import backend
from . import functional as F
from .functional.conv import conv2d
from .functional.loss import check_dropout_p, dropout
from .functional.norm import group_norm
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad is always True."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


def variance_scaling_uniform(shape, fan_in, fan_out, scale=1.0, dtype=np.float32):
    """U(-limit, limit) with Var = scale / fan_avg: limit = √(3 · scale / ((fan_in + fan_out)/2)).

    The variance of U(-L, L) is L²/3, so this limit gives the variance scale / fan_avg
    (Glorot & Bengio 2010 when scale = 1). As in Ho et al.'s `default_init`, scale 0 means 1e-10.
    """
    if not scale >= 0:
        raise ValueError(f"variance_scaling_uniform: scale must be >= 0, got {scale!r}")
    scale = 1e-10 if scale == 0 else scale
    fan_avg = (fan_in + fan_out) / 2.0
    limit = math.sqrt(3.0 * scale / fan_avg)
    u = backend.rng().random(shape, dtype=np.float64)          # U[0, 1), the library generator
    return ((2.0 * u - 1.0) * limit).astype(dtype)             # U[-limit, limit)


def zero_init(module):
    """Set every parameter of `module` to exactly zero, in place; returns the module."""
    for p in module.parameters():
        p.data[...] = 0
    return module


# ---------------------------------------------------------------------------- loading checks
def checked_values(name, arr, dtype):
    """A loaded array as a new host array of `dtype`, or a ValueError that names it.

    Its dtype must be real floating (float16, float32, float64): integer, bool and complex
    arrays are refused rather than cast silently. Its values must be finite once cast to
    `dtype` (NaN and inf are refused, and so is a float64 beyond float32's range). Every
    load_state_dict, here and in optim.py, checks each entry so before writing any.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind != "f":
        raise ValueError(f"{name}: dtype {arr.dtype} is not a floating dtype (float16/32/64); "
                         f"integers, bools and complex numbers are not cast silently")
    with np.errstate(over="ignore"):                  # an overflow becomes inf, refused below
        arr = arr.astype(dtype)                       # a copy
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: holds NaN or inf (as {arr.dtype})")
    return arr


def checked_array(name, value, like):
    """A loaded array for the tensor `like`: exactly its shape, then `checked_values`."""
    arr = np.asarray(backend.to_numpy(value))
    if arr.shape != like.shape:
        raise ValueError(f"{name}: expected shape {like.shape}, got {arr.shape}")
    return checked_values(name, arr, like.dtype)


def check_count(value, what):
    """A loaded step count: an int >= 0 (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{what} must be an int >= 0, got {value!r}")
    return int(value)


def _positive_int(value, layer, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


class Module:
    """Base class: subclasses set attributes in __init__ and define forward()."""

    training = True          # a class default, so a subclass that forgets super().__init__ works

    def __init__(self):
        self.training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    # ------------------------------------------------------------------ walking the attributes
    def named_children(self):
        """(name, module) for each direct child: Module attributes and lists/tuples of them."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) in attribute order; a shared Parameter is listed once."""
        seen = set()
        for name, p in self._walk_parameters(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _walk_parameters(self, prefix):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value._walk_parameters(f"{prefix}{name}.")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Parameter):
                        yield f"{prefix}{name}.{i}", item
                    elif isinstance(item, Module):
                        yield from item._walk_parameters(f"{prefix}{name}.{i}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode=True):
        """Set the training flag here and in every child (Dropout reads it)."""
        self.training = bool(mode)
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ------------------------------------------------------------------ weights in and out
    def state_dict(self):
        """{name: NumPy copy of the parameter}: plain arrays, ready for np.savez."""
        return {name: np.array(backend.to_numpy(p.data), copy=True)
                for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters of the same name: all or nothing.

        Every entry is checked before anything is written, so a failed load (a ValueError
        naming the bad entries) leaves the module exactly as it was. strict=True requires the
        two sets of names to be equal; strict=False loads the names both have. Each array must
        have its parameter's exact shape and pass `checked_values` (a floating dtype, cast to
        the parameter's; finite values).
        """
        own = dict(self.named_parameters())
        missing = [n for n in own if n not in state_dict]
        unexpected = [n for n in state_dict if n not in own]
        arrays, mismatched, bad_values = {}, [], []
        for name, p in own.items():
            if name in state_dict:
                arr = np.asarray(backend.to_numpy(state_dict[name]))
                if arr.shape != p.shape:
                    mismatched.append(f"{name}: expected {p.shape}, got {arr.shape}")
                    continue
                try:
                    arrays[name] = checked_values(name, arr, p.dtype)
                except ValueError as e:
                    bad_values.append(str(e))
        problems = []
        if strict and missing:
            problems.append(f"missing names: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected names: {unexpected}")
        if mismatched:
            problems.append(f"shape mismatch: {mismatched}")
        if problems or bad_values:
            raise ValueError(f"load_state_dict ({type(self).__name__}): nothing was loaded; "
                             + "; ".join(problems + bad_values))
        xp = backend.xp()
        arrays = {name: xp.asarray(arr) for name, arr in arrays.items()}  # all on the device
        for name, arr in arrays.items():                                   # before any write
            own[name].data[...] = arr
        return self

    def __repr__(self):
        children = ", ".join(name for name, _ in self.named_children())
        return f"{type(self).__name__}({children})"


# ---------------------------------------------------------------------------- layers
class Linear(Module):
    """y = x Wᵀ + b, W of shape (out_features, in_features). Ho et al.'s `dense`."""

    def __init__(self, in_features, out_features, bias=True, init_scale=1.0, dtype=np.float32):
        super().__init__()
        self.in_features = _positive_int(in_features, "Linear", "in_features")
        self.out_features = _positive_int(out_features, "Linear", "out_features")
        w = variance_scaling_uniform((out_features, in_features), in_features, out_features,
                                     init_scale, dtype)
        self.weight = Parameter(w)                                   # (out, in)
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None   # (out,)

    def forward(self, x):                                            # (..., in) -> (..., out)
        return F.linear(x, self.weight, self.bias)


class Conv2d(Module):
    """2-d convolution, weight (out, in, kh, kw), NCHW. Ho et al.'s `conv2d`."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init_scale=1.0, dtype=np.float32):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "Conv2d", "in_channels")
        self.out_channels = _positive_int(out_channels, "Conv2d", "out_channels")
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        self.kernel_size = (_positive_int(kh, "Conv2d", "kernel_size"),
                            _positive_int(kw, "Conv2d", "kernel_size"))
        self.stride, self.padding = stride, padding
        fan_in, fan_out = in_channels * kh * kw, out_channels * kh * kw
        w = variance_scaling_uniform((out_channels, in_channels, kh, kw), fan_in, fan_out,
                                     init_scale, dtype)
        self.weight = Parameter(w)                                   # (out, in, kh, kw)
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None   # (out,)

    def forward(self, x):                                            # (B, in, H, W)
        return conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)


class GroupNorm(Module):
    """Group normalisation with a per-channel scale (ones) and shift (zeros)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.num_groups = _positive_int(num_groups, "GroupNorm", "num_groups")
        self.num_channels = _positive_int(num_channels, "GroupNorm", "num_channels")
        if num_channels % num_groups != 0:
            raise ValueError(f"GroupNorm: num_channels={num_channels} is not divisible by "
                             f"num_groups={num_groups}")
        self.eps = eps
        self.weight = Parameter(np.ones(num_channels, dtype))        # (C,) γ
        self.bias = Parameter(np.zeros(num_channels, dtype))         # (C,) β

    def forward(self, x):                                            # (B, C, ...) -> same
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class Dropout(Module):
    """Inverted dropout while training, the identity in eval mode."""

    def __init__(self, p=0.1):
        super().__init__()
        check_dropout_p(p)
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, training=self.training)


class SiLU(Module):
    """x · σ(x), the nonlinearity of Ho et al.'s U-Net."""

    def forward(self, x):
        return F.silu(x)


class Sequential(Module):
    """Modules applied one after another; parameters are named "layers.<i>.<name>"."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise ValueError(f"Sequential: argument {i} is a {type(m).__name__}, "
                                 f"not a Module")
        self.layers = list(modules)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]
