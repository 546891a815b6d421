"""minidiff: Denoising Diffusion Probabilistic Models (Ho et al. 2020) from scratch.

`import minidiff` loads the engine (Tensor, functional, nn, optim, profile). The subpackages
diffusion, models and data are attributes too, each imported the first time it is used (PEP 562):
`minidiff.diffusion.GaussianDiffusion` works after a bare `import minidiff`, and a script that
needs only the engine does not pay for them (data brings in Pillow).

PyTorch's top-level names work as there: minidiff.tensor, from_numpy, randn, rand, zeros, ones
(creation.py), no_grad, set_grad_enabled, inference_mode, is_grad_enabled (autograd.py), and
save/load for state dicts, as .safetensors files (serialization.py). As in PyTorch,
`minidiff.tensor` is the function; the module of the Tensor class is tensor.py all the same
(`from minidiff.tensor import Tensor`).
"""
import importlib

from . import functional, nn, optim
from .autograd import inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .backend import get_device, manual_seed, set_device
from .creation import from_numpy, ones, rand, randn, tensor, zeros
from .profiler import profile
from .serialization import load, save
from .tensor import Tensor

__version__ = "0.1.0"

_ON_FIRST_USE = ("data", "diffusion", "models")


def __getattr__(name):
    if name in _ON_FIRST_USE:
        return importlib.import_module(f".{name}", __name__)   # also binds it here
    raise AttributeError(f"module 'minidiff' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE))
