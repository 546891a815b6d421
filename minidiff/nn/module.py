"""Parameter and Module: the attribute walk that names parameters, state_dict and
load_state_dict with the checks of every loaded array, and the move between devices and dtypes.

As in PyTorch, parameters(), named_parameters(), children() and named_children() are iterators
(`next(model.parameters())` works; `list(...)` when you need a list)."""

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .. import backend
from ..backend import array_on, device_of, float_dtype_named
from ..tensor import Tensor
from ..validate import check_bool, check_choice


class Parameter(Tensor):
    """A Tensor that a Module trains: made with requires_grad=True (set it to False, or call
    Module.requires_grad_(False), to freeze it)."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


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


class IncompatibleKeys(NamedTuple):
    """What load_state_dict(strict=False) left out, as PyTorch's _IncompatibleKeys:
    the module's names the dict lacks, and the dict's names the module lacks."""
    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class: subclasses set attributes in __init__ and define forward()."""

    training = True          # a class default, so a subclass that forgets super().__init__ works

    def __init__(self):
        self.training = True

    def __call__(self, *args, **kwargs):
        self._check_device()
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        """What calling the module computes: module(*args) runs forward(*args). Every
        subclass defines it; the base raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    # ------------------------------------------------------------------ walking the attributes
    def _attributes(self, kind):
        """(name, value) for each attribute of this module that is a `kind`, alone or in a
        list or tuple ("layers.0"): how children and tensors are found, by one walk."""
        for name, value in vars(self).items():
            if isinstance(value, kind):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, kind):
                        yield f"{name}.{i}", item

    def named_children(self):
        """(name, module) for each direct child: Module attributes and lists/tuples of them."""
        return self._attributes(Module)

    def children(self):
        """Each direct child module, as `named_children` lists them (an iterator)."""
        for _, child in self.named_children():
            yield child

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module (named `prefix`, "" by default) and every module
        below it, depth first in attribute order; a module reached twice is listed once."""
        seen = set()
        for name, m in self._walk_modules(prefix):
            if id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def _walk_modules(self, prefix):
        yield prefix, self
        for name, child in self.named_children():
            yield from child._walk_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        """This module and every module below it, as `named_modules` lists them."""
        return [m for _, m in self.named_modules()]

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
        """Every Parameter, as `named_parameters` lists them: an iterator, as in PyTorch."""
        for _, p in self.named_parameters():
            yield p

    def num_parameters(self):
        """How many numbers the parameters hold (read from the arrays: Tensor.size may be
        PyTorch's method)."""
        return sum(int(p.data.size) for p in self.parameters())

    def _own_tensors(self):
        """(name, Tensor) for the tensors of this module itself, not of its children: its
        parameters and any other Tensor attribute (a buffer), alone or in a list or tuple."""
        return self._attributes(Tensor)

    # ------------------------------------------------------------------ devices
    def to(self, device):
        """Move every parameter, its gradient, and every other Tensor attribute (a buffer) of
        this module and of all below it to `device` ("cpu" or "cuda"); returns self. A dtype
        (float32 or float64) casts them instead, as float() and double() do (torch's to).

        In place: the Parameter objects stay, so an optimizer made before still holds them (its
        own state, such as Adam's moments, is not moved here). All or nothing: every array is
        copied before any tensor is changed. A tensor already there is not copied.
        """
        dtype = float_dtype_named(device, "Module.to")
        if dtype is not None:
            return self._cast(dtype)
        device = check_choice("Module.to: device", device, backend.DEVICES)
        tensors = {id(t): t for m in self.modules() for _, t in m._own_tensors()}.values()
        moved = [(t, array_on(t.data, device),
                  None if t.grad is None else array_on(t.grad.data, device)) for t in tensors]
        for t, data, grad in moved:
            t.data, t.grad = data, grad
        return self

    def cpu(self):
        """self.to("cpu")."""
        return self.to("cpu")

    def cuda(self):
        """self.to("cuda"): needs CuPy and a GPU (backend.set_device says what is missing)."""
        return self.to("cuda")

    def float(self):
        """Cast every parameter, gradient and buffer to float32, in place; returns self."""
        return self._cast(np.float32)

    def double(self):
        """Cast every parameter, gradient and buffer to float64, in place; returns self."""
        return self._cast(np.float64)

    def _cast(self, dtype):
        """A module that records its working dtype (UNet and MLPDenoiser make their time
        embedding in it) gets the new one too, so its forward stays in one dtype."""
        modules = self.modules()
        for t in {id(t): t for m in modules for _, t in m._own_tensors()}.values():
            t.data = t.data.astype(dtype, copy=False)
            t.grad = None if t.grad is None else t.grad.data.astype(dtype, copy=False)
        for m in modules:
            if "dtype" in vars(m):
                m.dtype = dtype
        return self

    def _check_device(self):
        """Refuse to run with a tensor that lives on another device than the current one (a
        model built before set_device() and not moved with .to()). Each module checks its own
        tensors as it is called: one isinstance each, no copy, no wait on the GPU. (It runs on
        every call, so it loops over vars() itself; `_own_tensors` is the same walk, slower.)"""
        kind = backend.xp().ndarray
        for value in vars(self).values():
            if isinstance(value, Tensor):
                if not isinstance(value.data, kind):
                    self._device_mismatch(value)
            elif type(value) in (list, tuple):
                for item in value:
                    if isinstance(item, Tensor) and not isinstance(item.data, kind):
                        self._device_mismatch(item)

    def _device_mismatch(self, tensor):
        if isinstance(tensor.data, np.generic):                   # a NumPy scalar goes anywhere
            return
        name = next(n for n, t in self._own_tensors() if t is tensor)
        here = backend.get_device()
        what = "parameter" if isinstance(tensor, Parameter) else "tensor"
        raise RuntimeError(
            f"{type(self).__name__}: {what} '{name}' is on {device_of(tensor.data)} but the "
            f"current device is {here}; move the model with .to('{here}')")

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode=True):
        """Set the training flag here and in every child (Dropout reads it)."""
        self.training = check_bool("train: mode", mode)
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self):
        """self.train(False): Dropout passes its input through unchanged."""
        return self.train(False)

    def apply(self, fn):
        """fn(m) for every module below this one, children before their parent, then
        fn(self), as in PyTorch (`model.apply(init_weights)`); returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def requires_grad_(self, requires_grad=True):
        """Set requires_grad on every parameter (False freezes them: backward() leaves their
        .grad alone and the optimizers skip them); returns self."""
        requires_grad = check_bool("requires_grad_: requires_grad", requires_grad)
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self):
        """Set every parameter's .grad to None."""
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
        the parameter's; finite values). Each lands on its parameter's device.

        Returns the names left out, IncompatibleKeys(missing_keys, unexpected_keys), a named
        tuple as PyTorch's (both empty after a strict load).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict ({type(self).__name__}): expected a dict of "
                            f"name -> array, got {type(state_dict).__name__}")
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
        arrays = {name: array_on(arr, own[name].device)                   # all on the device
                  for name, arr in arrays.items()}                         # before any write
        for name, arr in arrays.items():
            own[name].data[...] = arr
        return IncompatibleKeys(missing, unexpected)

    def __repr__(self):
        children = ", ".join(name for name, _ in self.named_children())
        return f"{type(self).__name__}({children})"
