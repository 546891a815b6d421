"""Tensors made as PyTorch makes them: minidiff.tensor, from_numpy, randn, rand, zeros, ones.

A minidiff Tensor holds float32 or float64 (the default is float32), on the current device.
randn and rand draw from the library's generator (backend.rng(), seeded by
minidiff.manual_seed), so a seeded script draws the same numbers every run.
"""
import numbers

import numpy as np

from . import backend
from .tensor import Tensor

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _dtype(name, dtype):
    """float32 (None) or float64; anything else refused in one line."""
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in DTYPES:
        raise ValueError(f"{name}: dtype must be float32 or float64, got {dtype!r}")
    return dt


def _shape(name, size):
    """randn(2, 3) and randn((2, 3)) alike: a tuple of ints >= 0."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0
               for n in size):
        raise ValueError(f"{name}: size must be ints >= 0, as in {name}(2, 3) or "
                         f"{name}((2, 3)); got {size!r:.60}")
    return tuple(int(n) for n in size)


def tensor(data, dtype=None, requires_grad=False):
    """A new Tensor holding a copy of `data` (a number, nested list, array or Tensor). Ints
    and bools become float32; float32 and float64 arrays keep their dtype unless `dtype`."""
    arr = Tensor(data, dtype=None if dtype is None else _dtype("tensor", dtype)).data
    return Tensor(arr.copy(), requires_grad=requires_grad)


def from_numpy(a):
    """A Tensor that shares the float32 or float64 NumPy array `a` on the CPU (a write to one
    is seen in the other); on the GPU, or for other dtypes, a float32 copy."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"from_numpy: expected a NumPy array, got {type(a).__name__}; "
                        f"for numbers and lists use minidiff.tensor(...)")
    return Tensor(a)


def randn(*size, dtype=None, requires_grad=False):
    """N(0, I) of shape `size`, from the library's generator."""
    shape, dt = _shape("randn", size), _dtype("randn", dtype)
    return Tensor(backend.rng().standard_normal(shape, dtype=dt), requires_grad=requires_grad)


def rand(*size, dtype=None, requires_grad=False):
    """U[0, 1) of shape `size`, from the library's generator."""
    shape, dt = _shape("rand", size), _dtype("rand", dtype)
    return Tensor(backend.rng().random(shape, dtype=dt), requires_grad=requires_grad)


def zeros(*size, dtype=None, requires_grad=False):
    """Zeros of shape `size`."""
    shape, dt = _shape("zeros", size), _dtype("zeros", dtype)
    return Tensor(backend.xp().zeros(shape, dtype=dt), requires_grad=requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    """Ones of shape `size`."""
    shape, dt = _shape("ones", size), _dtype("ones", dtype)
    return Tensor(backend.xp().ones(shape, dtype=dt), requires_grad=requires_grad)
