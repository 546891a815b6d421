"""minidiff: Denoising Diffusion Probabilistic Models (Ho et al. 2020) from scratch.

`import minidiff` loads the engine (Tensor, functional, nn, optim, profile). The subpackages
diffusion, models and data are attributes too, each imported the first time it is used (PEP 562):
`minidiff.diffusion.GaussianDiffusion` works after a bare `import minidiff`, and a script that
needs only the engine does not pay for them (data brings in Pillow).
"""
import importlib

from . import functional, nn, optim
from .backend import get_device, manual_seed, set_device
from .profiler import profile
from .tensor import Tensor, no_grad

__version__ = "0.1.0"

_ON_FIRST_USE = ("data", "diffusion", "models")


def __getattr__(name):
    if name in _ON_FIRST_USE:
        return importlib.import_module(f".{name}", __name__)   # also binds it here
    raise AttributeError(f"module 'minidiff' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE))
