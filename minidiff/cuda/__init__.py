"""The GPU path: the one package that knows the CUDA kernels of kernels/*.cu exist.

Each kernels/<topic>.cu is read as text into one cached `cupy.RawModule(code=..., options=...)`,
and launched only from minidiff/cuda/<topic>.py:

    _core.py       the kernel registry (KERNELS), compile-once modules, _launch, emulate(),
                   use_kernels(), unfused(), and the argument checks every launch shares
    diffusion.py   q_sample, posterior_mean, reverse_step, ddim_step     (kernels/diffusion.cu)
    adam.py        adam_update, adamw_update, ema_update                 (kernels/adam.cu)
    groupnorm.py   group_norm_forward, group_norm_backward               (kernels/groupnorm.cu)
    softmax.py     softmax, softmax_backward                             (kernels/softmax.cu)
    conv2d.py      conv2d_forward, conv2d_backward_data, _weight         (kernels/conv2d.cu)

The topic modules import _core, never this package (which imports them): the launches
all go through `_core._launch`, the one name a test replaces to count them.

Each launch owns:
  - grid and block sizes (the tiled kernels' tile sizes must match their .cu file);
  - contiguity: inputs go through `ascontiguousarray`, in-place arrays must already be;
  - argument types: arrays of exactly float32 / int32, and scalars as np.int32 / np.float32
    (CuPy would pass a Python int as int64 and a float as float64, silently wrong).

The same launch code runs without a GPU: tests swap in an emulator for `cupy.RawModule` and
NumPy for CuPy,

    with cuda.emulate(cuda_emu.Module, xp=numpy):
        x_t = cuda.q_sample(x0, noise, t, sqrt_abar, sqrt_1m_abar)

Routing. With the device set to "cuda", the ops (functional/groupnorm.py, attention.py, conv),
the optimizer updates (optim.py) and the diffusion steps (diffusion/) call the functions
below, each from one `if cuda.use_kernels(...)` at the top of the op; everywhere else, and
for float64, they run their xp array code (NumPy is the specification).

Time index: arrays are 0-based, index t holds the paper's step t + 1 (Ho et al.'s code).
"""
from ._core import (BLOCK, KERNELS, LARGEST_BLOCK, MAX_REDUCE_BLOCK, OPTIONS, emulate,
                    kernel_dir, module, source, unfused, use_kernels)
from .adam import adam_update, adamw_update, ema_update
from .conv2d import (GEMM_THREADS, TILE_K, TILE_M, TILE_N, _k_splits, conv2d_backward_data,
                     conv2d_backward_weight, conv2d_forward, conv_output_size)
from .diffusion import PARAMS, ddim_step, posterior_mean, q_sample, reverse_step
from .groupnorm import group_norm_backward, group_norm_forward
from .softmax import softmax, softmax_backward     # cuda.softmax: this function, not softmax.py
