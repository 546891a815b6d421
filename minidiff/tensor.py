"""Tensor: an array plus the graph that made it, and backward().

Every op (in functional/) is a function under `@op`, which names the op once, by the
function's name. It builds its output with `Tensor.make(data, parents)`, defines a `_backward`
closure "local gradient x out.grad.data (an array), accumulated into the parents", and
attaches it with `out.set_backward(_backward)`. backward() is a topological sort plus a
reversed loop, as in micrograd's engine.

Where the data lives: `.device` ("cpu" or "cuda"), and `.to(device)` copies there
(backend.device_of and backend.array_on do the same for a bare array).
"""
import functools
import numbers

import numpy as np

from . import backend, profiler
from .autograd import _grad_mode
from .backend import FLOAT_DTYPES, float_dtype_named

DEFAULT_DTYPE = np.float32
REAL_KINDS = "biuf"        # bool, int, uint, float: what a Tensor is made from (cast to float)


def op(fn):
    """The decorator of every differentiable op in functional/. The op's name is its function's:
    `@op def add(a, b)` names the Tensor that add returns "add" (errors and the profiler read
    it) and, while a profile() records, times each call of add under that name."""
    name = fn.__name__

    @functools.wraps(fn)
    def run(*args, **kwargs):
        prof = profiler._current              # None unless inside `with minidiff.profile()`
        out = fn(*args, **kwargs) if prof is None else prof._forward(name, fn, args, kwargs)
        if out._op is None:                   # made by this op, not by an op it called
            out._op = name
        return out
    return run


def unbroadcast(grad, shape):
    """The adjoint of broadcasting: sum `grad` back down to `shape`.

    Broadcasting copies an input along new leading axes and along axes of size 1, so the
    gradient of each copy must be summed into the one element it came from.
    """
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(lead))) if lead > 0 else grad     # new leading axes
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad        # stretched size-1 axes


def _as_array(data, dtype):
    """`data` as an array of `dtype`; with no dtype, float32 and float64 arrays keep theirs and
    everything else (Python numbers, lists, bool and int arrays) becomes float32. Complex, str
    and object data are refused, never cast: casting complex to real drops a part silently."""
    is_array = hasattr(data, "dtype") and hasattr(data, "shape")
    arr = data if is_array else np.asarray(data)       # numbers and lists are read on the host
    if arr.dtype.kind not in REAL_KINDS:
        raise TypeError(f"Tensor: got {type(data).__name__} data of dtype {arr.dtype}; a "
                        f"Tensor holds real numbers: a number, a nested list of numbers, or an "
                        f"array of bools, ints or floats")
    arr = backend.xp().asarray(arr)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if is_array and arr.dtype in FLOAT_DTYPES:
        return arr                           # float32 and float64 arrays keep their precision
    return arr.astype(DEFAULT_DTYPE)         # Python numbers, lists and ints become float32


def _comparable(o):
    """Whether ==, <, ... compare a Tensor with `o`: a Tensor, a real number, a list, or an
    array of bools, ints or floats. Anything else (None, a str) gets NotImplemented, so that
    `t == None` is False and `t < "a"` a TypeError, as Python's protocol has it."""
    if isinstance(o, (Tensor, numbers.Real, list, tuple)):
        return True
    kind = getattr(getattr(o, "dtype", None), "kind", None)
    return isinstance(kind, str) and kind in REAL_KINDS


def _topological_order(root):
    """Every tensor `root` depends on, each after all of its parents. An iterative depth-first
    search (a deep graph cannot overflow the stack); refuses a graph already freed."""
    topo, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            topo.append(node)
            continue
        if id(node) in seen:
            continue
        if node._freed:
            raise RuntimeError(
                f"backward: the graph behind this tensor (at a '{node._op}' op) was "
                f"already freed by an earlier backward(); call backward() once per "
                f"forward pass (run the forward again to build a new graph)")
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node._prev if id(p) not in seen)
    return topo


class Tensor:
    """An n-d array of float32 (default) or float64 that remembers how it was computed.

    `.data` is the array (NumPy; CuPy on "cuda"). `.grad` is None until a backward() reaches
    this tensor, then a Tensor of the same shape (requires_grad=False), as in PyTorch: the
    engine, the optimizers and the all-reduce do their arithmetic on `.grad.data`. A leaf's
    gradient is its own memory, so `p.grad.zero_()` touches p's gradient and no other."""

    # Make `ndarray * Tensor` call Tensor.__rmul__ instead of building an array of objects.
    __array_ufunc__ = None
    _freed = False         # True once backward() has run this op's _backward and dropped it

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_array(data, dtype)
        if self.data.dtype not in FLOAT_DTYPES:
            raise ValueError(f"Tensor: dtype must be float32 or float64, got {self.data.dtype}")
        self._grad = None          # a Tensor once backward() reaches this one: see .grad
        self.requires_grad = bool(requires_grad)
        self._prev = ()            # the tensors this one was computed from
        self._backward = None      # closure that pushes self.grad into self._prev
        self._op = ""              # name of the op that made it: errors, repr, the profiler

    # ------------------------------------------------------------------ graph building
    @classmethod
    def make(cls, data, parents, op=None):
        """The output of an op: records parents only if a gradient will flow through it. Its
        name is `op`, or else the name of the @op function that returns it (set on return)."""
        out = cls.__new__(cls)
        out.data = data
        out._grad = None
        out.requires_grad = _grad_mode.enabled and any(p.requires_grad for p in parents)
        out._prev = tuple(parents) if out.requires_grad else ()
        out._backward = None
        out._op = op
        return out

    def set_backward(self, fn):
        """Attach the op's `_backward` closure (only when a gradient will flow); returns self."""
        if self.requires_grad:
            self._backward = fn
        return self

    def accum_grad(self, g):
        """self.grad += g, for an op's _backward: `g` is an array of self's shape. An op may
        hand one array to two parents (add gives both out.grad), so a leaf (a parameter)
        keeps a copy of its first one: its .grad is its own, safe to edit in place."""
        g = g.data if isinstance(g, Tensor) else g       # an op of your own may pass a Tensor
        if g.shape != self.data.shape:
            raise ValueError(f"{self._op or 'leaf'}: gradient of shape {g.shape} "
                             f"for a tensor of shape {self.data.shape}")
        if self._grad is None:
            self._grad = Tensor.make(g if self._prev else g.copy(), (), op="grad")
        else:
            self._grad.data = self._grad.data + g     # a new array: g's owner may still read it

    @property
    def grad(self):
        """d(loss)/d(self) after loss.backward(), a Tensor of self's shape (no graph), or None.
        Leaves (parameters) keep it; backward() frees every other tensor's as it goes."""
        return self._grad

    @grad.setter
    def grad(self, g):
        """p.grad = None, a Tensor, or an array of p's shape, dtype and device (not copied)."""
        if g is not None and not isinstance(g, Tensor):
            if not (hasattr(g, "shape") and hasattr(g, "dtype")):
                raise TypeError(f"grad: assign None, a Tensor or an array, got "
                                f"{type(g).__name__}")
            g = Tensor.make(g, (), op="grad")
        if g is not None and (g.shape, g.dtype, g.device) != (self.shape, self.dtype,
                                                              self.device):
            raise ValueError(f"grad: got shape {g.shape}, {g.dtype} on {g.device} for a tensor "
                             f"of shape {self.shape}, {self.dtype} on {self.device}; a gradient "
                             f"matches all three")
        self._grad = g

    def backward(self, grad=None):
        """Fill .grad of every tensor this one depends on (requires_grad=True leaves).

        The chain rule, as in micrograd: seed d(self)/d(self), then run each node's _backward
        after every node that uses it (reversed topological order). Each node's part of the
        graph is freed as soon as it has pushed its gradient to its parents."""
        grad = self._seed(grad)
        topo = _topological_order(self)       # checks the graph before any .grad is written
        self.accum_grad(grad)
        for node in reversed(topo):
            if node._backward is not None:
                profiler.run_backward(node)   # node._backward(), timed while profiling
                node._free(keep_grad=node is self)

    def _seed(self, grad):
        """The gradient backward() starts from: ones for a scalar, else the caller's `grad`."""
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (was it made under "
                               "no_grad, or from tensors with requires_grad=False?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: output has shape {self.shape}, not a scalar; pass grad=, an "
                    f"array of shape {self.shape} holding d(loss)/d(output)")
            grad = backend.xp().ones_like(self.data)
        grad = Tensor(grad, dtype=self.dtype).data.copy()     # the caller's array stays theirs
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape}, output has {self.shape}")
        return grad

    def _free(self, keep_grad):
        """Drop what backward() no longer needs: the closure (it holds the saved activations),
        the links to the parents, and, for an intermediate tensor, its gradient."""
        self._backward = None
        self._prev = ()
        self._freed = True
        if not keep_grad:
            self._grad = None

    # ------------------------------------------------------------------ views of the data
    @property
    def shape(self):
        """The sizes of the axes, a tuple: (B, C, H, W) for a batch of images."""
        return tuple(self.data.shape)

    @property
    def dtype(self):
        """float32 (the default) or float64."""
        return self.data.dtype

    @property
    def device(self):
        """"cpu" or "cuda": where the data lives (see backend.device_of)."""
        return backend.device_of(self.data)

    @property
    def ndim(self):
        """The number of axes: len(shape)."""
        return self.data.ndim

    def size(self, dim=None):
        """The shape as a tuple (torch's size(), NumPy's .shape), or the size of axis `dim`."""
        if dim is None:
            return self.shape
        if not isinstance(dim, numbers.Integral) or not -self.ndim <= dim < self.ndim:
            raise IndexError(f"size: dim must be an int in [{-self.ndim}, {self.ndim}), "
                             f"got {dim!r} for shape {self.shape}")
        return self.shape[dim]

    def numel(self):
        """The number of elements, the product of the shape (NumPy's .size)."""
        return int(self.data.size)

    def cpu(self):
        """This tensor on the host: `to("cpu")` (itself when it is there)."""
        return self.to("cpu")

    def cuda(self):
        """This tensor on the GPU: `to("cuda")` (itself when it is there; needs CuPy)."""
        return self.to("cuda")

    def detach(self):
        """The same data (shared, not copied), cut off from the graph: no grad flows back."""
        return Tensor(self.data)

    def numpy(self):
        """The data as a NumPy array on the host (shared on "cpu", copied from "cuda")."""
        return backend.to_numpy(self.data)

    def __array__(self, dtype=None, copy=None):
        """np.asarray(t) is t's data on the host, as in PyTorch (NumPy never walks the rows)."""
        return np.array(self.numpy(), dtype=dtype, copy=copy)

    def tolist(self):
        """The data as nested Python lists of floats (a float for a 0-d tensor), as in torch."""
        return self.numpy().tolist()

    def item(self):
        """The one element as a Python float: `loss.item()`; more or fewer is a ValueError."""
        if self.data.size != 1:
            raise ValueError(f"item: tensor has {self.data.size} elements, not 1")
        return float(self.data.reshape(()))

    def __float__(self): return self.item()                 # float(loss)
    def __int__(self): return int(self.item())              # int(t): truncated toward 0

    def __format__(self, spec):
        """f"{loss:.4f}" formats the one element as a float; an empty spec gives repr()."""
        if spec and self.data.size != 1:
            raise TypeError(f"format: spec {spec!r} needs a tensor of 1 element, this one has "
                            f"shape {self.shape}; format t.numpy() or t.item() instead")
        return format(self.item(), spec) if spec else repr(self)

    def astype(self, dtype):
        """The data cast to `dtype` (float32 or float64); gradients are cast back."""
        return F.astype(self, dtype)

    def to(self, target):
        """t.to("cpu" | "cuda") moves t (F.to_device: the gradient comes back); t.to(dtype),
        float32 or float64, casts it (float(), double()), as torch's. Itself if nothing changes."""
        dtype = float_dtype_named(target, "to")
        if dtype is None:
            return F.to_device(self, target)
        return self.float() if dtype == np.float32 else self.double()

    def float(self):
        """t.float(): t as float32, as in PyTorch: itself if it is already, else a cast
        (F.astype: the gradient is cast back)."""
        return self if self.dtype == np.float32 else F.astype(self, np.float32)

    def double(self):
        """t.double(): t as float64, as in PyTorch: itself if it is already, else a cast."""
        return self if self.dtype == np.float64 else F.astype(self, np.float64)

    def __repr__(self):
        g = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{g})"

    # ------------------------------------------------------------------ operators
    def __add__(self, o): return F.add(self, o)
    def __radd__(self, o): return F.add(o, self)
    def __sub__(self, o): return F.sub(self, o)
    def __rsub__(self, o): return F.sub(o, self)
    def __mul__(self, o): return F.mul(self, o)
    def __rmul__(self, o): return F.mul(o, self)
    def __truediv__(self, o): return F.div(self, o)
    def __rtruediv__(self, o): return F.div(o, self)
    def __pow__(self, o): return F.pow(self, o)
    def __rpow__(self, o): return F.pow(o, self)          # 2 ** x
    def __matmul__(self, o): return F.matmul(self, o)
    def __neg__(self): return F.neg(self)
    def __abs__(self): return F.abs(self)                  # abs(x)
    def __getitem__(self, idx): return F.getitem(self, idx)

    # Comparisons are elementwise masks without gradient (functional/compare.py), so a Tensor
    # hashes by identity, as in PyTorch. NotImplemented for None or a str: Python then says
    # `t == None` is False, and `t < "a"` is a TypeError.
    __hash__ = object.__hash__
    def __eq__(self, o): return F.eq(self, o) if _comparable(o) else NotImplemented
    def __ne__(self, o): return F.ne(self, o) if _comparable(o) else NotImplemented
    def __lt__(self, o): return F.lt(self, o) if _comparable(o) else NotImplemented
    def __le__(self, o): return F.le(self, o) if _comparable(o) else NotImplemented
    def __gt__(self, o): return F.gt(self, o) if _comparable(o) else NotImplemented
    def __ge__(self, o): return F.ge(self, o) if _comparable(o) else NotImplemented

    # ------------------------------------------------------------------ a container, as in PyTorch
    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        """The rows along the first axis, each `self[i]`: a getitem that gradients flow back
        through, so `sum(t)` and `a, b = t` stay on the graph."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (F.getitem(self, i) for i in range(self.shape[0]))

    def __contains__(self, x):
        """`x in t`: whether some element of t equals x, i.e. bool((t == x).any())."""
        if not _comparable(x):
            raise TypeError(f"`x in t`: x must be a number, an array or a Tensor, "
                            f"got {type(x).__name__}")
        return bool(F.any(F.eq(self, x)))

    def __bool__(self):
        """As Python reads the one element (0.0 is False); more or fewer is an error."""
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.data.size} elements is "
                             f"ambiguous; use .any() or .all()")
        return bool(self.data.reshape(()))

    # ------------------------------------------------------------------ methods, as in PyTorch
    # The others are their ops, bound in functional/__init__.py (x.sum(0) is F.sum(x, 0)).
    # clip keeps torch's keywords min= and max= (F.clip names NumPy's lo and hi).
    def clip(self, min=None, max=None):
        """Clamp to [min, max] elementwise (F.clip); the gradient passes where unclamped."""
        return F.clip(self, min, max)

    @property
    def T(self):
        """All axes reversed (F.transpose): (M, N) -> (N, M)."""
        return F.transpose(self)


# The one import circle of the package, on purpose: Tensor's operators are functional's ops
# (a + b is F.add(a, b), as in PyTorch), and every op builds Tensors. functional needs Tensor
# defined first, hence the import at the bottom (tests/test_import_cycles.py allows this one).
from . import functional as F  # noqa: E402
