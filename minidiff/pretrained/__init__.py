"""diffusers-layout folders in and out: Ho et al.'s trained DDPMs (google/ddpm-cifar10-32 and
its siblings) in minidiff, and minidiff's runs in diffusers.

    model, diffusion = load("ddpm-cifar10")         # then diffusion.p_sample_loop(model, ...)
    save(model, diffusion, "exported")              # diffusers.DDPMPipeline.from_pretrained

`load` reads three layouts:
    a DDPM pipeline folder      model_index.json, unet/ (config.json + weights), scheduler/
    a UNet2DModel folder with   config.json, diffusion_pytorch_model.safetensors and
      its scheduler beside it   scheduler_config.json (as google/ddpm-cifar10-32 is published)
    a bare UNet2DModel folder   config.json + weights; the scheduler is DDPMScheduler's default

Every key of both configs is read. A value minidiff's U-Net or GaussianDiffusion cannot express
(another block type, several heads, class conditioning, a key this file does not know...) is
refused in one line that names the file, the key and its value: nothing is approximated.

Weights are read through the safetensors package's NumPy API, never by unpickling (a .bin file
is a pickle: it is refused, with the command that converts it); see weights.py.

    configs.py   the two configs <-> UNet and GaussianDiffusion arguments, and the folders
    weights.py   diffusers' tensor names for a UNet; safetensors in, checked, and out
"""
import json
import os
import tempfile

import numpy as np

from ..diffusion import GaussianDiffusion
from ..models.unet import UNet
from .configs import (DIFFUSERS_VERSION, clip_sample, diffusion_kwargs, read_configs,
                      scheduler_config, unet_config, unet_kwargs)
from .weights import WEIGHTS, load_weights, model_tensors, weights_file

__all__ = ["load", "save", "clip_sample", "read_configs"]


def load(path, dtype=np.float32):
    """(UNet, GaussianDiffusion) from a diffusers folder; the UNet in eval mode."""
    unet_dir, unet, unet_file, scheduler, scheduler_file = read_configs(path)
    kwargs = unet_kwargs(unet, unet_file)
    diffusion_args = diffusion_kwargs(scheduler, scheduler_file, kwargs["learn_sigma"])
    file = weights_file(unet_dir)
    try:
        diffusion = GaussianDiffusion(**diffusion_args, dtype=dtype)
    except ValueError as e:
        raise ValueError(f"{scheduler_file or 'DDPMScheduler defaults'}: {e}") from None
    try:
        model = UNet(**kwargs, dtype=dtype)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{unet_file}: {e}") from None
    load_weights(model, file)
    return model.eval(), diffusion


def save(model, diffusion, path, clip=True):
    """A DDPM pipeline folder at path (new, or empty) that diffusers.DDPMPipeline loads.
    clip: the scheduler's clip_sample (x̂0 clipped to [-1, 1] while sampling, for images)."""
    from safetensors.numpy import save_file
    if not isinstance(model, UNet):
        raise ValueError(f"save: diffusers' UNet2DModel holds a minidiff UNet, got "
                         f"{type(model).__name__}")
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ValueError(f"{path}: exists and is not an empty folder; choose a new path")
    configs = {"model_index.json": dict(_class_name="DDPMPipeline",
                                        _diffusers_version=DIFFUSERS_VERSION,
                                        scheduler=["diffusers", "DDPMScheduler"],
                                        unet=["diffusers", "UNet2DModel"]),
               "unet/config.json": unet_config(model),
               "scheduler/scheduler_config.json": scheduler_config(diffusion, clip)}
    tensors = model_tensors(model)
    parent = os.path.dirname(os.path.abspath(path))
    partial = tempfile.mkdtemp(prefix=".export-", dir=parent)   # written whole, then renamed
    for name, config in configs.items():
        os.makedirs(os.path.dirname(os.path.join(partial, name)), exist_ok=True)
        with open(os.path.join(partial, name), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
    save_file(tensors, os.path.join(partial, "unet", WEIGHTS), metadata={"format": "pt"})
    if os.path.isdir(path):
        os.rmdir(path)
    os.rename(partial, path)
