"""The GPU path: the one module that knows the CUDA kernels of kernels/*.cu exist.

Each kernels/<topic>.cu is read as text into one cached `cupy.RawModule(code=..., options=...)`.
Every launch lives here, and owns:
  - grid and block sizes (the tiled kernels' tile sizes must match their .cu file);
  - contiguity: inputs go through `ascontiguousarray`, in-place arrays must already be;
  - argument types: arrays of exactly float32 / int32, and scalars as np.int32 / np.float32
    (CuPy would pass a Python int as int64 and a float as float64, silently wrong).

The same launch code runs without a GPU: tests swap in an emulator for `cupy.RawModule` and
NumPy for CuPy,

    with cuda.emulate(cuda_emu.Module, xp=numpy):
        x_t = cuda.q_sample(x0, noise, t, sqrt_abar, sqrt_1m_abar)

Routing. With the device set to "cuda", the ops (functional/norm.py, attention.py, conv.py),
the optimizer updates (optim.py) and the diffusion steps (diffusion/) call the functions
below, each from one `if cuda.use_kernels(...)` at the top of the op; everywhere else, and
for float64, they run their xp array code (NumPy is the specification).

Time index: arrays are 0-based, index t holds the paper's step t + 1 (Ho et al.'s code).
"""
import contextlib
from pathlib import Path

import numpy as np

from . import backend

# NVRTC options, defined here only. No -I: every .cu file stands alone, so CuPy's kernel
# cache, keyed by the source text and these options, sees every change.
OPTIONS = ("--std=c++17",)

# Every kernel this module launches, by file; _launch refuses any other name.
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
GEMM_THREADS, TILE_M, TILE_N, TILE_K = 256, 64, 64, 16     # as in conv2d.cu
LARGEST_BLOCK = 256         # the largest block any launch uses (the compile check's bound)
PARAMS = {"eps": 0, "x0": 1, "mu": 2}                      # as PARAM_* in diffusion.cu
_INT_MAX = 2**31 - 1

_PACKAGE_KERNELS = Path(__file__).resolve().parent / "kernels"     # after `pip install .`
_SOURCE_KERNELS = Path(__file__).resolve().parent.parent / "kernels"   # in a source checkout

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
    if name not in KERNELS.get(filename, ()):
        raise KeyError(f"minidiff.cuda: {name!r} is not a kernel of {filename} in KERNELS")
    key = (filename, name)
    if key not in _functions:
        _functions[key] = module(filename).get_function(name)
    _functions[key](grid, block, args, shared_mem=shared_mem)


@contextlib.contextmanager
def emulate(module_class, xp=np):
    """Inside the block the device is 'cuda', `xp` stands in for CuPy and `module_class` for
    cupy.RawModule: the launch code of this module runs unchanged on the CPU (tests only)."""
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
    as if no kernel existed: the baseline of examples/gpu_benchmark.py, and a way to tell a
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
    return (-(-n // block),)


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


def _timesteps(t, batch, num_timesteps, what, allow_minus_one=False):
    """t as contiguous int32 of shape (B,), every value a valid index of the buffers."""
    xp = backend.xp()
    t = xp.asarray(t)
    if t.shape != (batch,) or t.dtype.kind not in "iu":
        raise ValueError(f"minidiff.cuda: {what} must be integers of shape ({batch},), got "
                         f"{t.dtype} {t.shape}")
    lo = -1 if allow_minus_one else 0
    if batch and (int(t.min()) < lo or int(t.max()) >= num_timesteps):
        raise ValueError(f"minidiff.cuda: {what} must lie in [{lo}, {num_timesteps}), got "
                         f"[{int(t.min())}, {int(t.max())}]")
    return xp.ascontiguousarray(t, dtype=xp.int32)


def _buffers(num_timesteps, **bufs):
    out = []
    for name, b in bufs.items():
        b = _input(b, name)
        if b.shape != (num_timesteps,):
            raise ValueError(f"minidiff.cuda: {name} must have shape ({num_timesteps},), "
                             f"got {b.shape}")
        out.append(b)
    return out


# ---------------------------------------------------------------------------- diffusion.cu
def q_sample(x0, noise, t, sqrt_abar, sqrt_1m_abar):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, Eq. 4), one pass."""
    x0, noise = _input(x0, "x0"), _input(noise, "noise")
    _same_shape("q_sample", x0, ("noise", noise))
    T = len(sqrt_abar)
    sa, s1 = _buffers(T, sqrt_abar=sqrt_abar, sqrt_1m_abar=sqrt_1m_abar)
    t = _timesteps(t, x0.shape[0], T, "t")
    x_t = backend.xp().empty(x0.shape, dtype=np.float32)
    if x0.size:
        _launch("diffusion.cu", "q_sample", _blocks(x0.size), (BLOCK,),
                (x0, noise, t, sa, s1, x_t, _i32(x0.size), _i32(x0.size // x0.shape[0])))
    return x_t


def posterior_mean(x0, x_t, t, coef1, coef2):
    """mu~_t(x_t, x0) = coef1_t x0 + coef2_t x_t (Ho et al. 2020, Eq. 7), the mu-loss target."""
    x0, x_t = _input(x0, "x0"), _input(x_t, "x_t")
    _same_shape("posterior_mean", x0, ("x_t", x_t))
    T = len(coef1)
    c1, c2 = _buffers(T, coef1=coef1, coef2=coef2)
    t = _timesteps(t, x0.shape[0], T, "t")
    mean = backend.xp().empty(x0.shape, dtype=np.float32)
    if x0.size:
        _launch("diffusion.cu", "posterior_mean", _blocks(x0.size), (BLOCK,),
                (x0, x_t, t, c1, c2, mean, _i32(x0.size), _i32(x0.size // x0.shape[0])))
    return mean


def reverse_step(model_out, x_t, t, z, *, param, clip, sqrt_recip_abar, sqrt_recipm1_abar,
                 coef1, coef2, sigma):
    """One ancestral step (Algorithm 2), fused: returns (x_{t-1}, x0^).

    param: what the network predicts, "eps", "x0" or "mu". clip: clip x0^ to [-1, 1].
    sigma (B,): each sample's standard deviation sigma_t (sqrt of beta_t or of beta~_t,
    gathered by the caller); z: the caller's standard normal draw, unused where t = 0
    (Algorithm 2, line 3).
    """
    if param not in PARAMS:
        raise ValueError(f"minidiff.cuda.reverse_step: param must be one of {list(PARAMS)}, "
                         f"got {param!r}")
    out, x_t, z = _input(model_out, "model_out"), _input(x_t, "x_t"), _input(z, "z")
    _same_shape("reverse_step", x_t, ("model_out", out), ("z", z))
    sigma = _input(sigma, "sigma")
    if sigma.shape != x_t.shape[:1]:
        raise ValueError(f"minidiff.cuda.reverse_step: sigma must have shape ({x_t.shape[0]},), "
                         f"one per sample, got {sigma.shape}")
    T = len(coef1)
    bufs = _buffers(T, sqrt_recip_abar=sqrt_recip_abar, sqrt_recipm1_abar=sqrt_recipm1_abar,
                    coef1=coef1, coef2=coef2) + [sigma]
    t = _timesteps(t, x_t.shape[0], T, "t")
    xp = backend.xp()
    x_prev = xp.empty(x_t.shape, dtype=np.float32)
    x0_hat = xp.empty(x_t.shape, dtype=np.float32)
    if x_t.size:
        _launch("diffusion.cu", "reverse_step", _blocks(x_t.size), (BLOCK,),
                (out, x_t, t, z, *bufs, x_prev, x0_hat, _i32(PARAMS[param]), _i32(bool(clip)),
                 _i32(x_t.size), _i32(x_t.size // x_t.shape[0])))
    return x_prev, x0_hat


def ddim_step(model_out, x_t, t, t_prev, z, abar, *, eta=0.0, param="eps", clip=True):
    """One DDIM step from t to t_prev (Song et al. 2021, Eq. 12), fused: (x_prev, x0^).

    t_prev = -1 marks the step to x0 (abar_prev = 1). eta = 0 is deterministic, eta = 1 the
    ancestral sampler's variance (Eq. 16). eps^ is re-derived from the (clipped) x0^.
    """
    if param not in ("eps", "x0"):
        raise ValueError(f"minidiff.cuda.ddim_step: param must be 'eps' or 'x0', got {param!r}")
    out, x_t, z = _input(model_out, "model_out"), _input(x_t, "x_t"), _input(z, "z")
    _same_shape("ddim_step", x_t, ("model_out", out), ("z", z))
    T = len(abar)
    (abar,) = _buffers(T, abar=abar)
    t = _timesteps(t, x_t.shape[0], T, "t")
    t_prev = _timesteps(t_prev, x_t.shape[0], T, "t_prev", allow_minus_one=True)
    xp = backend.xp()
    x_prev = xp.empty(x_t.shape, dtype=np.float32)
    x0_hat = xp.empty(x_t.shape, dtype=np.float32)
    if x_t.size:
        _launch("diffusion.cu", "ddim_step", _blocks(x_t.size), (BLOCK,),
                (out, x_t, t, t_prev, z, abar, x_prev, x0_hat, _i32(PARAMS[param]),
                 _i32(bool(clip)), _f32(eta), _i32(x_t.size), _i32(x_t.size // x_t.shape[0])))
    return x_prev, x0_hat


# ---------------------------------------------------------------------------- adam.cu
def _adam(p, g, m, v, t, lr, beta1, beta2, eps, l2_decay, decoupled_decay):
    p, m, v = _inplace(p, "p"), _inplace(m, "m"), _inplace(v, "v")
    g = _input(g, "grad")
    _same_shape("adam_step", p, ("grad", g), ("m", m), ("v", v))
    if p.size:
        bias_c1, bias_c2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t      # float64, then float32
        _launch("adam.cu", "adam_step", _blocks(p.size), (BLOCK,),
                (p, g, m, v, _f32(lr), _f32(beta1), _f32(beta2), _f32(1.0 - beta1),
                 _f32(1.0 - beta2), _f32(eps), _f32(l2_decay), _f32(decoupled_decay),
                 _f32(bias_c1), _f32(bias_c2), _i32(p.size)))


def adam_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """optim.adam_update in one kernel: Adam, weight decay as an L2 term in the gradient."""
    _adam(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay, 0.0)


def adamw_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """optim.adamw_update in one kernel: AdamW's decoupled decay (Loshchilov & Hutter 2019)."""
    _adam(p, g, m, v, t, lr, beta1, beta2, eps, 0.0, weight_decay)


def ema_update(shadow, param, decay):
    """shadow <- shadow - (1 - decay) (shadow - param), in place (optim.ema_update)."""
    shadow, param = _inplace(shadow, "shadow"), _input(param, "param")
    _same_shape("ema_update", shadow, ("param", param))
    if shadow.size:
        _launch("adam.cu", "ema_update", _blocks(shadow.size), (BLOCK,),
                (shadow, param, _f32(1.0 - decay), _i32(shadow.size)))


# ---------------------------------------------------------------------------- groupnorm.cu
def _reduce_block(length):
    """A block for one-block-per-row kernels: a multiple of 32, at most MAX_REDUCE_BLOCK."""
    return (min(MAX_REDUCE_BLOCK, 32 * max(1, -(-length // 32))),)


def _group_shape(x, gamma, beta, num_groups, what):
    if x.ndim < 2:
        raise ValueError(f"minidiff.cuda.{what}: x must be (N, C, ...), got {x.shape}")
    N, C = x.shape[:2]
    if num_groups < 1 or C % num_groups:
        raise ValueError(f"minidiff.cuda.{what}: {C} channels do not split into "
                         f"{num_groups} groups")
    for name, a in (("gamma", gamma), ("beta", beta)):
        if a.shape != (C,):
            raise ValueError(f"minidiff.cuda.{what}: {name} must have shape ({C},), "
                             f"got {a.shape}")
    return N, C, x.size // max(1, N * C)


def group_norm_forward(x, gamma, beta, num_groups, eps=1e-5, silu=False, naive=False):
    """GroupNorm (Wu & He 2018), optionally followed by SiLU: returns (y, mean, rstd), the
    last two of shape (N, G) for the backward pass."""
    x, gamma, beta = _input(x, "x"), _input(gamma, "gamma"), _input(beta, "beta")
    N, C, HW = _group_shape(x, gamma, beta, num_groups, "group_norm_forward")
    xp = backend.xp()
    y = xp.empty(x.shape, dtype=np.float32)
    mean = xp.empty((N, num_groups), dtype=np.float32)
    rstd = xp.empty((N, num_groups), dtype=np.float32)
    groups = N * num_groups
    if x.size:
        args = (x, gamma, beta, y, mean, rstd, _i32(groups), _i32(C), _i32(HW),
                _i32(num_groups), _f32(eps), _i32(bool(silu)))
        if naive:
            _launch("groupnorm.cu", "group_norm_forward_naive", _blocks(groups), (BLOCK,), args)
        else:
            _launch("groupnorm.cu", "group_norm_forward", (groups,),
                    _reduce_block(C // num_groups * HW), args)
    return y, mean, rstd


def group_norm_backward(dy, x, mean, rstd, gamma, beta, num_groups, silu=False, naive=False):
    """The gradients (dx, dgamma, dbeta) of group_norm_forward, given its saved mean, rstd."""
    dy, x = _input(dy, "dy"), _input(x, "x")
    gamma, beta = _input(gamma, "gamma"), _input(beta, "beta")
    mean, rstd = _input(mean, "mean"), _input(rstd, "rstd")
    _same_shape("group_norm_backward", x, ("dy", dy))
    N, C, HW = _group_shape(x, gamma, beta, num_groups, "group_norm_backward")
    for name, a in (("mean", mean), ("rstd", rstd)):
        if a.shape != (N, num_groups):
            raise ValueError(f"minidiff.cuda.group_norm_backward: {name} must have shape "
                             f"{(N, num_groups)}, got {a.shape}")
    xp = backend.xp()
    dx = xp.empty(x.shape, dtype=np.float32)
    dgamma = xp.empty((C,), dtype=np.float32)
    dbeta = xp.empty((C,), dtype=np.float32)
    groups = N * num_groups
    if x.size:
        common = (dy, x, mean, rstd, gamma, beta)
        args_in = common + (dx, _i32(groups), _i32(C), _i32(HW), _i32(num_groups),
                            _i32(bool(silu)))
        args_par = common + (dgamma, dbeta, _i32(N), _i32(C), _i32(HW), _i32(num_groups),
                             _i32(bool(silu)))
        if naive:
            _launch("groupnorm.cu", "group_norm_backward_input_naive", _blocks(groups),
                    (BLOCK,), args_in)
            _launch("groupnorm.cu", "group_norm_backward_params_naive", _blocks(C), (BLOCK,),
                    args_par)
        else:
            _launch("groupnorm.cu", "group_norm_backward_input", (groups,),
                    _reduce_block(C // num_groups * HW), args_in)
            _launch("groupnorm.cu", "group_norm_backward_params", (C,), _reduce_block(N * HW),
                    args_par)
    else:
        dgamma[...] = 0
        dbeta[...] = 0
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------- softmax.cu
def _rows(x):
    cols = x.shape[-1] if x.ndim else 1
    return x.size // max(1, cols), cols


def softmax(x, naive=False):
    """The softmax over the last axis (Vaswani et al. 2017, Eq. 1)."""
    x = _input(x, "x")
    rows, cols = _rows(x)
    y = backend.xp().empty(x.shape, dtype=np.float32)
    if x.size:
        if naive:
            _launch("softmax.cu", "softmax_forward_naive", _blocks(rows), (BLOCK,),
                    (x, y, _i32(rows), _i32(cols)))
        else:
            _launch("softmax.cu", "softmax_forward", (rows,), _reduce_block(cols),
                    (x, y, _i32(rows), _i32(cols)))
    return y


def softmax_backward(y, dy, naive=False):
    """dx = y (dy - sum(dy y)) over the last axis, given the softmax's output y."""
    y, dy = _input(y, "y"), _input(dy, "dy")
    _same_shape("softmax_backward", y, ("dy", dy))
    rows, cols = _rows(y)
    dx = backend.xp().empty(y.shape, dtype=np.float32)
    if y.size:
        if naive:
            _launch("softmax.cu", "softmax_backward_naive", _blocks(rows), (BLOCK,),
                    (y, dy, dx, _i32(rows), _i32(cols)))
        else:
            _launch("softmax.cu", "softmax_backward", (rows,), _reduce_block(cols),
                    (y, dy, dx, _i32(rows), _i32(cols)))
    return dx


# ---------------------------------------------------------------------------- conv2d.cu
def _pair(v, what):
    v = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(v) != 2 or any(int(a) < 0 for a in v):
        raise ValueError(f"minidiff.cuda: {what} must be an int or a pair of ints >= 0")
    return int(v[0]), int(v[1])


def conv_output_size(H, W, KH, KW, stride, padding):
    """(Ho, Wo) = ((H + 2 ph - KH) // sh + 1, (W + 2 pw - KW) // sw + 1)."""
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding")
    if sh < 1 or sw < 1:
        raise ValueError(f"minidiff.cuda: stride must be >= 1, got {(sh, sw)}")
    Ho, Wo = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"minidiff.cuda: a {KH}x{KW} kernel does not fit a {H}x{W} input "
                         f"with padding {(ph, pw)}")
    return Ho, Wo


def _conv_args(x_shape, w_shape, stride, padding):
    """The eleven ints of conv2d.cu's shape, and (Ho, Wo)."""
    N, Ci, H, W = x_shape
    Co, Ci_w, KH, KW = w_shape
    if Ci != Ci_w:
        raise ValueError(f"minidiff.cuda: x has {Ci} channels, the weight expects {Ci_w}")
    Ho, Wo = conv_output_size(H, W, KH, KW, stride, padding)
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding")
    return tuple(_i32(v) for v in (N, Ci, H, W, Co, KH, KW, sh, sw, ph, pw)), (Ho, Wo)


def _gemm_grid(M, Nc, splits=1):
    return (-(-Nc // TILE_N), -(-M // TILE_M), splits)


def conv2d_forward(x, w, b=None, stride=1, padding=0, naive=False):
    """y = conv2d(x, w) + b, NCHW, as an implicit GEMM (or the naive direct sum)."""
    x, w = _input(x, "x"), _input(w, "w")
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"minidiff.cuda.conv2d_forward: x {x.shape} and w {w.shape} must "
                         f"be 4-d")
    xp = backend.xp()
    Co = w.shape[0]
    b = xp.zeros((Co,), dtype=np.float32) if b is None else _input(b, "b")
    if b.shape != (Co,):
        raise ValueError(f"minidiff.cuda.conv2d_forward: b must have shape ({Co},)")
    shape, (Ho, Wo) = _conv_args(x.shape, w.shape, stride, padding)
    y = xp.empty((x.shape[0], Co, Ho, Wo), dtype=np.float32)
    if y.size and w.size:
        if naive:
            _launch("conv2d.cu", "conv2d_forward_naive", _blocks(y.size), (BLOCK,),
                    (x, w, b, y, *shape, _i32(y.size)))
        else:
            _launch("conv2d.cu", "conv2d_forward", _gemm_grid(Co, x.shape[0] * Ho * Wo),
                    (GEMM_THREADS,), (x, w, b, y, *shape))
    elif y.size:
        y[...] = b.reshape(1, Co, 1, 1)
    return y


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, naive=False):
    """dx, the gradient of conv2d_forward with respect to x (shape x_shape)."""
    dy, w = _input(dy, "dy"), _input(w, "w")
    shape, (Ho, Wo) = _conv_args(tuple(x_shape), w.shape, stride, padding)
    if dy.shape != (x_shape[0], w.shape[0], Ho, Wo):
        raise ValueError(f"minidiff.cuda.conv2d_backward_data: dy has shape {dy.shape}, "
                         f"expected {(x_shape[0], w.shape[0], Ho, Wo)}")
    xp = backend.xp()
    dx = xp.empty(tuple(x_shape), dtype=np.float32)
    if dx.size and dy.size:
        if naive:
            _launch("conv2d.cu", "conv2d_backward_data_naive", _blocks(dx.size), (BLOCK,),
                    (dy, w, dx, *shape, _i32(dx.size)))
        else:
            N, Ci, H, W = x_shape
            _launch("conv2d.cu", "conv2d_backward_data", _gemm_grid(Ci, N * H * W),
                    (GEMM_THREADS,), (dy, w, dx, *shape))
    elif dx.size:
        dx[...] = 0
    return dx


def _k_splits(K, tiles, target_blocks=256, max_splits=64):
    """Split the K = N Ho Wo reduction of backward-weight over gridDim.z: enough blocks to
    fill a GPU, each still summing at least 16 tiles of K. Returns (k_chunk, splits)."""
    splits = max(1, min(max_splits, -(-target_blocks // tiles), K // (16 * TILE_K)))
    chunk = -(-K // splits)
    chunk = -(-chunk // TILE_K) * TILE_K                         # a whole number of K tiles
    return chunk, -(-K // chunk)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, naive=False):
    """dw, the gradient of conv2d_forward with respect to w (shape w_shape)."""
    dy, x = _input(dy, "dy"), _input(x, "x")
    shape, (Ho, Wo) = _conv_args(x.shape, tuple(w_shape), stride, padding)
    Co, Ci, KH, KW = w_shape
    if dy.shape != (x.shape[0], Co, Ho, Wo):
        raise ValueError(f"minidiff.cuda.conv2d_backward_weight: dy has shape {dy.shape}, "
                         f"expected {(x.shape[0], Co, Ho, Wo)}")
    xp = backend.xp()
    Nc, K = Ci * KH * KW, x.shape[0] * Ho * Wo
    if Co * Nc == 0 or K == 0:
        return xp.zeros(tuple(w_shape), dtype=np.float32)
    if naive:
        dw = xp.empty(tuple(w_shape), dtype=np.float32)
        _launch("conv2d.cu", "conv2d_backward_weight_naive", _blocks(dw.size), (BLOCK,),
                (dy, x, dw, *shape, _i32(dw.size)))
        return dw
    grid = _gemm_grid(Co, Nc)
    chunk, splits = _k_splits(K, grid[0] * grid[1])
    partial = xp.empty((splits, Co, Nc), dtype=np.float32)
    _launch("conv2d.cu", "conv2d_backward_weight", _gemm_grid(Co, Nc, splits), (GEMM_THREADS,),
            (dy, x, partial, *shape, _i32(chunk)))
    return partial.sum(axis=0).reshape(tuple(w_shape))           # the partials, summed in order
