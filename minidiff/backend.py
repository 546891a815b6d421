"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every module asks `xp()` for the array module instead of importing numpy directly, so one line
of math runs on either device. CuPy is imported lazily, the first time CUDA is asked for.

    minidiff.set_device("cuda")      # or MINIDIFF_DEVICE=cuda in the environment
    minidiff.manual_seed(0)          # every random draw of the library is now reproducible

MINIDIFF_DEVICE only records a wish: `import minidiff` never fails because of it. The wish is
acted on (CuPy imported, the name checked) when the device is first used, by `xp()` or
`get_device()`; a set_device() call before that overrules it.
"""
import os

import numpy as np

DEVICES = ("cpu", "cuda")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))     # what a Tensor holds

_state = {
    "device": "cpu",      # "cpu" | "cuda", or MINIDIFF_DEVICE's wish while "xp" is None
    "xp": np,             # the array module of the device; None: not chosen yet (see xp())
    "rng": None,          # the random generator of the device, made by rng() from the seed
    "seed": None,
}


def _import_cupy():
    """Import CuPy and check that a GPU is visible; the error says which one is missing."""
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError(
            "device 'cuda' needs CuPy, which is not installed: "
            "pip install 'minidiff[cuda]' (cupy-cuda12x)") from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy raises its own CUDARuntimeError when there is no driver
        raise RuntimeError(f"device 'cuda' needs an NVIDIA GPU, but CUDA found none ({e})") from e
    if n < 1:
        raise RuntimeError("device 'cuda' needs an NVIDIA GPU, but CUDA found none")
    return cupy


def set_device(name):
    """Choose where arrays live: 'cpu' (NumPy) or 'cuda' (CuPy)."""
    if name not in DEVICES:
        raise ValueError(f"set_device: device must be 'cpu' or 'cuda', got {name!r}")
    xp = np if name == "cpu" else _import_cupy()
    _state.update(device=name, xp=xp, rng=None)      # rng() remakes the generator from the seed


def get_device():
    """'cpu' or 'cuda'. It acts on a MINIDIFF_DEVICE wish first, so it always agrees with xp()."""
    xp()
    return _state["device"]


def xp():
    """The array module of the current device: numpy or cupy."""
    if _state["xp"] is None:             # the first use of the device MINIDIFF_DEVICE wished for
        _choose_env_device()
    return _state["xp"]


def _choose_env_device():
    """Act on MINIDIFF_DEVICE; on failure the wish stays, so every later use fails the same way."""
    name = _state["device"]
    if name not in DEVICES:
        raise ValueError(f"MINIDIFF_DEVICE={name!r} is not a device; allowed: 'cpu', 'cuda'")
    try:
        set_device(name)
    except RuntimeError as e:
        raise RuntimeError(f"MINIDIFF_DEVICE={name}: {e}") from e


def manual_seed(seed):
    """Seed the one generator that every random draw of minidiff goes through."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _state.update(seed=int(seed), rng=None)           # rng() makes it, on the current device


class DeviceDraws:
    """The library's generator on a GPU: NumPy's generator on the host, each draw moved to the
    device.

    One host generator serves both devices, for two reasons. Its state is plain data, so a
    checkpoint holds it and --resume is exact (CuPy's generator states cannot be serialised).
    And one seed gives the same numbers on the CPU and the GPU. The price is a host-to-device
    copy of each draw: the size of one batch of noise.
    """

    def __init__(self, seed):
        self.host = np.random.default_rng(seed)
        self.bit_generator = self.host.bit_generator          # get_rng_state / set_rng_state

    def standard_normal(self, size=None, dtype=np.float64):
        return _state["xp"].asarray(self.host.standard_normal(size, dtype=dtype))

    def random(self, size=None, dtype=np.float64):
        return _state["xp"].asarray(self.host.random(size, dtype=dtype))

    def integers(self, low, high=None, size=None):
        return _state["xp"].asarray(self.host.integers(low, high, size=size))


def _make_rng(seed):
    if xp() is np:
        return np.random.default_rng(seed)
    return DeviceDraws(seed)


def rng():
    """The library's random generator: a NumPy `Generator`, or on a GPU its `DeviceDraws`."""
    if _state["rng"] is None:
        _state["rng"] = _make_rng(_state["seed"])
    return _state["rng"]


def get_rng_state():
    """The generator's state as plain JSON-able data, for checkpoints."""
    return rng().bit_generator.state


def set_rng_state(state):
    rng().bit_generator.state = state


def to_numpy(a):
    """Bring an array to the host as a NumPy array (a no-op on the CPU)."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


def device_of(a):
    """Where the array `a` lives. An array of the current device's array module is on the current
    device; any other array is on the other one (there are two). NumPy scalars are host values."""
    if isinstance(a, np.generic):
        return "cpu"
    current = get_device()
    if isinstance(a, xp().ndarray):
        return current
    return "cpu" if current == "cuda" else "cuda"


def array_on(a, device):
    """The array `a` on `device` ("cpu" or "cuda"): `a` itself when it is there already, else a
    copy. Moving to "cuda" while the current device is "cpu" imports CuPy (its error says what
    is missing)."""
    if device == "cpu":
        return np.asarray(to_numpy(a))
    if device == get_device():
        return xp().asarray(a)
    return _import_cupy().asarray(a)


def float_dtype_named(target, where):
    """float32 or float64 when `target` names a dtype (np.float64, "float32", a dtype), None
    when it does not (a device, then); another dtype is refused. `to` takes either, as torch's
    Tensor.to and Module.to do."""
    if target is None or isinstance(target, str) and target in DEVICES:
        return None
    try:
        dtype = np.dtype(target)
    except TypeError:
        return None
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"{where}: dtype must be float32 or float64, got {dtype}")
    return dtype


def _init_from_env():
    """Record MINIDIFF_DEVICE's wish; xp() acts on it (see the module docstring)."""
    name = os.environ.get("MINIDIFF_DEVICE", "cpu").strip().lower() or "cpu"
    if name != "cpu":
        _state.update(device=name, xp=None)


_init_from_env()
