"""A test-only CUDA emulator with CuPy's RawModule interface.

    mod = Module(code=source, options=("--std=c++17",))      # like cupy.RawModule
    mod.get_function("q_sample")((grid,), (block,), (x0, eps, ..., np.int32(n)), shared_mem=0)

The unchanged .cu source is compiled by g++ after cuda_emu.h (blocks run in turn, each thread a
fiber) into a shared library, cached by a hash of everything that goes into it. A launch:
  - checks every argument against the kernel's parameter types, as the compiler sees them:
    a pointer takes a C-contiguous NumPy array of the same dtype, a scalar takes the exact NumPy
    scalar type (np.int32 for int, np.float32 for float); a Python int or float is refused,
    because CuPy would pass it as a 64-bit value;
  - copies each array between canary bytes (a huge float: reads out of bounds spoil results)
    and, after the launch, fails if a canary changed (an out-of-bounds write), then copies the
    array back;
  - runs blocks (and the threads inside each block) in the order set by `set_order`:
    "ascending", "descending" or "random".
"""
import contextlib
import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HEADER = HERE / "cuda_emu.h"
SHIM_DIR = HERE / "include"                      # <cuda/std/cstdint>
CXX = os.environ.get("CXX", "g++")
CXXFLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-fvisibility=hidden", "-fno-gnu-unique",
            "-w")
CACHE_DIR = Path(tempfile.gettempdir()) / f"minidiff-cuda-emu-{os.getuid()}"

ORDERS = ("ascending", "descending", "random")
_settings = {"order": "ascending", "seed": 0, "launches": 0}



def canary(i):
    """The bytes around array argument i: a huge float, different for each argument (a NaN
    would not do: NaN arithmetic hands back its first operand's bits, so an out-of-bounds
    `y[i] = y[i] + a * x[i]` would rewrite the canary unchanged)."""
    return np.frombuffer(np.float32(-(1 + i / 16) * 2.0**100).tobytes(), np.uint8)

MAX_THREADS = 1024

# Parameter type codes of cuda_emu::signature, and what a launch must pass for each.
SCALARS = {"f": np.float32, "d": np.float64, "i": np.int32, "I": np.uint32,
           "q": np.int64, "Q": np.uint64, "b": np.bool_}
CTYPES = {"f": ctypes.c_float, "d": ctypes.c_double, "i": ctypes.c_int32, "I": ctypes.c_uint32,
          "q": ctypes.c_int64, "Q": ctypes.c_uint64, "b": ctypes.c_bool}


class EmulatorError(RuntimeError):
    """A launch the emulator refused or that failed: the message says which kernel and why."""


def set_order(order, seed=0):
    """Run blocks and threads "ascending", "descending" or in "random" order from `seed`."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    _settings.update(order=order, seed=int(seed), launches=0)


@contextlib.contextmanager
def block_order(order, seed=0):
    prev = dict(_settings)
    set_order(order, seed)
    try:
        yield
    finally:
        _settings.update(prev)


def _strip_comments(code):
    code = re.sub(r"/\*.*?\*/", " ", code, flags=re.S)
    return re.sub(r"//[^\n]*", "", code)


def kernel_names(code):
    """Names of the __global__ functions of a source, in order."""
    pat = r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+(\w+)\s*\("
    return re.findall(pat, _strip_comments(code))


def _dynamic_smem(code):
    """(type, name) of every `extern __shared__ T name[];` declaration."""
    pat = r"extern\s+__shared__\s+(?:alignas\s*\(\s*\d+\s*\)\s*)?([\w ]+?)\s+(\w+)\s*\[\s*\]"
    return sorted(set(re.findall(pat, _strip_comments(code))))


def _glue(code):
    """What follows the kernel source: storage for dynamic shared memory, one export a kernel."""
    lines = []
    dyn = _dynamic_smem(code)
    for ty, name in dyn:
        lines.append(f"alignas(16) thread_local {ty} {name}[cuda_emu::kMaxDynSmem / sizeof({ty})];")
    if dyn:
        fills = " ".join(f"std::memset({name}, 0xFF, sizeof {name});" for _, name in dyn)
        lines.append(f"static void cuda_emu_poison_dyn_smem() {{ {fills} }}")
        lines.append("static const bool cuda_emu_dyn_registered ="
                     " (cuda_emu::g.poison_dyn_smem = cuda_emu_poison_dyn_smem, true);")
    lines += [f"CUDA_EMU_EXPORT({k})" for k in kernel_names(code)]
    return "\n".join(lines) + "\n"


def _build(code, options):
    """Compile code into a shared library (cached by hash) and return its path."""
    defines = tuple(o for o in options if o.startswith("-D"))
    source = (f'#include "{HEADER}"\n#line 1 "kernel.cu"\n{code}\n#line 1 "cuda_emu_glue"\n'
              f"{_glue(code)}")
    key = hashlib.sha256("\0".join((HEADER.read_text(), source, CXX) + CXXFLAGS + defines)
                         .encode()).hexdigest()[:24]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    lib = CACHE_DIR / f"{key}.so"
    if lib.exists():
        return lib
    src = CACHE_DIR / f"{key}.{os.getpid()}.cpp"
    tmp = CACHE_DIR / f"{key}.{os.getpid()}.so"
    src.write_text(source)
    cmd = [CXX, *CXXFLAGS, *defines, f"-I{SHIM_DIR}", str(src), "-o", str(tmp)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    src.unlink()
    if res.returncode != 0:
        raise EmulatorError(f"g++ failed to compile the kernel source:\n{res.stderr[-4000:]}")
    os.replace(tmp, lib)                  # atomic: a parallel build of the same key is harmless
    return lib


class Module:
    """cupy.RawModule(code=..., options=...) on the CPU."""

    def __init__(self, code, options=(), backend="nvrtc"):
        self.code = code
        self.options = tuple(options)
        self.names = kernel_names(code)
        self._lib = ctypes.CDLL(str(_build(code, self.options)))
        self._lib.cuda_emu_last_error.restype = ctypes.c_char_p

    def get_function(self, name):
        if name not in self.names:
            raise EmulatorError(f"no kernel named {name!r}; the module has {self.names}")
        return Function(self, name)


def _dims(d, what):
    d = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    if not 1 <= len(d) <= 3 or any(int(v) < 1 for v in d):
        raise EmulatorError(f"{what} {d}: 1 to 3 dimensions, each >= 1")
    return tuple(int(v) for v in d) + (1,) * (3 - len(d))


class Function:
    """A kernel: call it as f(grid, block, args, shared_mem=0), like cupy.RawKernel."""

    def __init__(self, module, name):
        self.module, self.name = module, name
        lib = module._lib
        sig = getattr(lib, f"cuda_emu_signature_{name}")
        sig.restype = ctypes.c_char_p
        self.params = sig().decode().split(",") if sig() else []
        self._launch = getattr(lib, f"cuda_emu_launch_{name}")
        self._launch.restype = ctypes.c_int

    def _fail(self, msg):
        raise EmulatorError(f"{self.name}: {msg}")

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        if np.prod(block) > MAX_THREADS or block[2] > 64:
            self._fail(f"block {block} exceeds 1024 threads (or 64 in z)")
        if grid[1] > 65535 or grid[2] > 65535 or grid[0] > 2**31 - 1:
            self._fail(f"grid {grid} exceeds the limits (2^31-1, 65535, 65535)")
        args = tuple(args)
        if len(args) != len(self.params):
            self._fail(f"takes {len(self.params)} arguments ({','.join(self.params)}), "
                       f"got {len(args)}")
        keep, slots, buffers = [], [], {}
        for i, (code, a) in enumerate(zip(self.params, args)):
            if code.startswith("P"):
                ptr = self._pointer(i, code, a, buffers)
                keep.append(ptr)
                slots.append(ctypes.cast(ctypes.pointer(ptr), ctypes.c_void_p))
            else:
                val = CTYPES[code](self._scalar(i, code, a))
                keep.append(val)
                slots.append(ctypes.cast(ctypes.pointer(val), ctypes.c_void_p))
        argv = (ctypes.c_void_p * max(1, len(slots)))(*slots)
        order = ORDERS.index(_settings["order"])
        seed = _settings["seed"] * 1_000_003 + _settings["launches"]
        _settings["launches"] += 1
        rc = self._launch((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block),
                          ctypes.c_size_t(int(shared_mem)), argv, ctypes.c_int(order),
                          ctypes.c_ulonglong(seed))
        if rc != 0:
            self._fail(self.module._lib.cuda_emu_last_error().decode())
        self._check_and_copy_back(buffers)

    def _scalar(self, i, code, a):
        want = SCALARS[code]
        if not isinstance(a, np.generic):
            self._fail(f"argument {i} is a Python {type(a).__name__} ({a!r}); the kernel takes "
                       f"{want.__name__}: pass {want.__name__}(...) (CuPy would send a Python "
                       f"int as int64 and a float as float64)")
        if type(a) is not want:
            self._fail(f"argument {i} is {type(a).__name__}, the kernel takes {want.__name__}")
        return a.item()

    def _pointer(self, i, code, a, buffers):
        want = np.dtype(SCALARS[code[1:]])
        if not isinstance(a, np.ndarray):
            self._fail(f"argument {i} must be a NumPy array of {want}, got {type(a).__name__}")
        if a.dtype != want:
            self._fail(f"argument {i} is an array of {a.dtype}, the kernel takes {want}")
        if not a.flags.c_contiguous:
            self._fail(f"argument {i} (shape {a.shape}) is not C-contiguous")
        start = a.__array_interface__["data"][0]
        key = (start, a.nbytes)
        for (s, n), buf in buffers.items():
            if (s, n) != key and s < start + a.nbytes and start < s + n:
                self._fail(f"argument {i} partly overlaps another array argument")
        if key not in buffers:
            pad = -(-max(8192, a.nbytes) // 16) * 16       # > a 1024-thread block of floats
            buf = np.resize(canary(i), 2 * pad + a.nbytes)
            buf[pad:pad + a.nbytes] = a.reshape(-1).view(np.uint8)
            buffers[key] = (buf, pad, a, i)
        buf, pad = buffers[key][:2]
        return ctypes.c_void_p(buf.ctypes.data + pad)

    def _check_and_copy_back(self, buffers):
        for buf, pad, a, i in buffers.values():
            n = a.nbytes
            for side, part in (("before", buf[:pad]), ("after", buf[pad + n:])):
                bad = np.flatnonzero(part != np.resize(canary(i), part.size))
                if bad.size:
                    off = (bad[0] - pad) if side == "before" else (n + bad[0])
                    self._fail(f"out-of-bounds write {side} argument {i} (shape {a.shape}, "
                               f"{a.dtype}): element {off // a.itemsize} of its flat index "
                               f"range [0, {a.size}) changed")
            new = buf[pad:pad + n]
            flat = a.reshape(-1).view(np.uint8)
            if not np.array_equal(new, flat):
                if not a.flags.writeable:
                    self._fail(f"wrote to read-only argument {i}")
                flat[:] = new


class PoisonedNumpy:
    """NumPy whose `empty` fills arrays with NaN bytes, so an output element a kernel never
    writes shows up in a comparison. Stands in for CuPy in the emulated tests."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(shape, dtype=np.float32, order="C"):
        a = np.empty(shape, dtype=dtype, order=order)
        a.reshape(-1).view(np.uint8)[:] = 0xFF
        return a

    @staticmethod
    def empty_like(a, dtype=None):
        return PoisonedNumpy.empty(a.shape, dtype or a.dtype)


poisoned_numpy = PoisonedNumpy()
