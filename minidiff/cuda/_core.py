"""What every launch shares: the kernel registry, compiling a .cu file once, the launch itself,
the emulation seam, the routing switch, and the checks that turn arguments into exactly what
a kernel's C signature takes.

A kernels/<topic>.cu file is read as text into one cached `cupy.RawModule(code=..., options=
...)`, and `_launch(file, kernel, grid, block, args)` runs one of its kernels. Argument rules:
  - arrays of exactly float32 / int32, C-contiguous: read-only inputs go through
    `ascontiguousarray` (`_input`), arrays updated in place must already be (`_inplace`);
  - scalars as np.int32 / np.float32 (`_i32`, `_f32`): CuPy would pass a Python int as int64
    and a float as float64, silently wrong.
"""
import contextlib
from pathlib import Path

import numpy as np

from .. import backend

# NVRTC options, defined here only. No -I: every .cu file stands alone, so CuPy's kernel
# cache, keyed by the source text and these options, sees every change.
OPTIONS = ("--std=c++17",)

# Every kernel the package launches, by file; _launch refuses any other name. The launches of
# kernels/<topic>.cu live in minidiff/cuda/<topic>.py (tests/test_cuda_compile.py checks).
KERNELS = {
    "diffusion.cu": ("q_sample", "posterior_mean", "reverse_step", "ddim_step"),
    "adam.cu": ("adam_step", "ema_update"),
    "groupnorm.cu": ("group_norm_forward_naive", "group_norm_forward",
                     "group_norm_backward_input_naive", "group_norm_backward_input",
                     "group_norm_backward_params_naive", "group_norm_backward_params"),
    "softmax.cu": ("softmax_forward_naive", "softmax_forward",
                   "softmax_backward_naive", "softmax_backward"),
    "conv2d.cu": ("conv2d_forward_naive", "conv2d_backward_data_naive",
                  "conv2d_backward_weight_naive", "conv2d_forward", "conv2d_backward_data",
                  "conv2d_backward_weight"),
}

BLOCK = 256                 # threads per block of the one-thread-per-element kernels
MAX_REDUCE_BLOCK = 256      # threads per block of the one-block-per-row/group kernels
LARGEST_BLOCK = 256         # the largest block any launch uses (the compile check's bound)
_INT_MAX = 2**31 - 1

_PACKAGE = Path(__file__).resolve().parent.parent                  # minidiff/
_PACKAGE_KERNELS = _PACKAGE / "kernels"                            # after `pip install .`
_SOURCE_KERNELS = _PACKAGE.parent / "kernels"                      # in a source checkout

_seam = {"module_class": None}      # None: cupy.RawModule
_routing = {"kernels": True}        # False inside `unfused()`
_modules = {}                       # file name -> compiled module
_functions = {}                     # (file name, kernel name) -> launchable kernel


# ---------------------------------------------------------------------------- modules
def kernel_dir():
    """The folder holding the .cu files: inside the installed package, or the checkout's."""
    for d in (_PACKAGE_KERNELS, _SOURCE_KERNELS):
        if (d / "diffusion.cu").is_file():
            return d
    raise FileNotFoundError(f"minidiff.cuda: no kernels/*.cu in {_PACKAGE_KERNELS} or "
                            f"{_SOURCE_KERNELS}; reinstall minidiff (the .cu files are "
                            f"package data)")


def source(filename):
    """The text of one kernels/<filename>."""
    return (kernel_dir() / filename).read_text()


def module(filename):
    """The compiled module of one .cu file, made once."""
    if filename not in _modules:
        cls = _seam["module_class"]
        if cls is None:
            import cupy
            cls = cupy.RawModule
        _modules[filename] = cls(code=source(filename), options=OPTIONS)
    return _modules[filename]


def _launch(filename, name, grid, block, args, shared_mem=0):
    """Run kernel `name` of kernels/`filename` on a grid of `grid` blocks of `block` threads.

    The topic modules call it as `_core._launch`, looked up on this module at each call, so a
    test can count launches by replacing that one name (tests/conftest.py, `launched`). They
    import _core, never the package, which imports them (no import circle)."""
    if name not in KERNELS.get(filename, ()):
        raise KeyError(f"minidiff.cuda: {name!r} is not a kernel of {filename} in KERNELS")
    key = (filename, name)
    if key not in _functions:
        _functions[key] = module(filename).get_function(name)
    _functions[key](grid, block, args, shared_mem=shared_mem)


@contextlib.contextmanager
def emulate(module_class, xp=np):
    """Inside the block the device is 'cuda', `xp` stands in for CuPy and `module_class` for
    cupy.RawModule: the package's launch code runs unchanged on the CPU (tests only)."""
    saved = dict(backend._state), dict(_seam), dict(_modules), dict(_functions)
    backend._state.update(device="cuda", xp=xp, rng=None)
    _seam["module_class"] = module_class
    _modules.clear()
    _functions.clear()
    try:
        yield
    finally:
        for d, old in zip((backend._state, _seam, _modules, _functions), saved):
            d.clear()
            d.update(old)


def use_kernels(*arrays):
    """True when the device is "cuda" and every argument is a float32 array of the device:
    the condition under which an op takes its kernel path. Tensors, float64 arrays (the
    kernels are float32 only) and the CPU take the op's xp code."""
    if backend.get_device() != "cuda" or not _routing["kernels"]:
        return False
    xp = backend.xp()
    return all(isinstance(a, xp.ndarray) and a.dtype == np.float32 for a in arrays)


@contextlib.contextmanager
def unfused():
    """Inside the block every op runs its xp code on the device, one CuPy array op at a time,
    as if no kernel existed: the baseline of benchmarks/gpu_benchmark.py, and a way to tell a
    kernel's bug from the model's."""
    saved = _routing["kernels"]
    _routing["kernels"] = False
    try:
        yield
    finally:
        _routing["kernels"] = saved


# ---------------------------------------------------------------------------- arguments
def _i32(v):
    v = int(v)
    if not -_INT_MAX - 1 <= v <= _INT_MAX:
        raise ValueError(f"minidiff.cuda: {v} does not fit the kernels' 32-bit int")
    return np.int32(v)


def _f32(v):
    return np.float32(float(v))


def _blocks(n, block=BLOCK):
    """The grid of a one-thread-per-element launch: enough blocks to cover n."""
    return (-(-n // block),)


def _reduce_block(length):
    """A block for one-block-per-row kernels: a multiple of 32, at most MAX_REDUCE_BLOCK."""
    return (min(MAX_REDUCE_BLOCK, 32 * max(1, -(-length // 32))),)


def _input(a, what, dtype=np.float32):
    """A read-only array argument: contiguous, exactly `dtype`, small enough for int indices."""
    xp = backend.xp()
    a = xp.asarray(a)
    if a.dtype != dtype:
        raise TypeError(f"minidiff.cuda: {what} must be {np.dtype(dtype)}, got {a.dtype}")
    if a.size > _INT_MAX:
        raise ValueError(f"minidiff.cuda: {what} has {a.size} elements, more than 2^31 - 1")
    return xp.ascontiguousarray(a)


def _inplace(a, what):
    """An array the kernel updates in place: must already be contiguous float32."""
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        raise TypeError(f"minidiff.cuda: {what} is updated in place, so it must be a "
                        f"C-contiguous float32 array (got {a.dtype}, "
                        f"contiguous={a.flags.c_contiguous})")
    if a.size > _INT_MAX:
        raise ValueError(f"minidiff.cuda: {what} has {a.size} elements, more than 2^31 - 1")
    return a


def _same_shape(what, ref, *arrays):
    for name, a in arrays:
        if a.shape != ref.shape:
            raise ValueError(f"minidiff.cuda.{what}: {name} has shape {a.shape}, expected "
                             f"{ref.shape}")
