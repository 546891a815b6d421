"""minidiff: Denoising Diffusion Probabilistic Models (Ho et al. 2020) from scratch."""
from . import functional, nn, optim
from .backend import get_device, manual_seed, set_device
from .tensor import Tensor, no_grad

__version__ = "0.1.0"
