"""Denoising networks: an MLP for 2-D data and Ho et al.'s U-Net for images."""
from .embedding import timestep_embedding
from .mlp import MLPDenoiser
from .unet import PRESETS, UNet, unet_from_preset
