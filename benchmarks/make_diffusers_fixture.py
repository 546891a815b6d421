"""Make tests/fixtures/diffusers_tiny/: a small UNet2DModel and DDPMScheduler written by
diffusers, with diffusers' own outputs beside them, so minidiff's tests check its reading of
diffusers' layout without torch or diffusers installed.

    python3 -m venv .bench
    .bench/bin/pip install torch==2.13.0 diffusers==0.42.1 safetensors numpy
    .bench/bin/python benchmarks/make_diffusers_fixture.py         # rewrites the fixture

The UNet has the DDPM block types of google/ddpm-cifar10-32 (Ho et al.'s network) at a small
width: two levels (16, 32 channels) at 8x8, attention at the second, 2 layers per block,
8 groups, TF's SAME downsampling (downsample_padding 0), GroupNorm eps 1e-6, sin-first time
embedding with freq_shift 1. Its weights are random: every parameter, GroupNorm's scales and
shifts included, is drawn, so a tensor read into the wrong place changes the output. They are
rounded to float16 and stored so (half the size, under 1 MB, and the float16 path is read);
the outputs are computed from those same values.

tests/fixtures/diffusers_tiny/ holds the model folder as google/ddpm-cifar10-32 is published
(config.json, diffusion_pytorch_model.safetensors, scheduler_config.json), and
diffusers_tiny_expected.safetensors holds:
    x, t            the inputs (2, 3, 8, 8) float32 and (2,) int64
    out32, out64    diffusers' output in float32, and with the same weights in float64 (its
                    time embedding too: diffusers computes that in float32 even then)
    step_*          DDPMScheduler.step in float64: x_t, t, model output eps, noise z, and
                    prev_sample
"""
import json
import os

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "tests", "fixtures", "diffusers_tiny")
EXPECTED = os.path.join(ROOT, "tests", "fixtures", "diffusers_tiny_expected.safetensors")

UNET = dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
            norm_num_groups=8, norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False,
            freq_shift=1, attention_head_dim=None, act_fn="silu")
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                 beta_schedule="linear", variance_type="fixed_small", clip_sample=True)


def randomize(model, g):
    """Every parameter drawn: conv and linear weights ~ N(0, 1/fan_in), GroupNorm scales
    ~ 1 + N(0, 0.3²), every bias and shift ~ N(0, 0.3²)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=g)
            if p.ndim > 1:
                p.copy_(z / p[0].numel() ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.3 * z)
            else:
                p.copy_(0.3 * z)
            p.copy_(p.half().float())                   # stored as float16, exactly


def embedding64(module, args, out):
    """A forward hook on unet.time_proj: the sin-first embedding (freq_shift 1) in float64."""
    t = args[0].double()
    half = out.shape[1] // 2
    freqs = torch.exp(-np.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - 1))
    angles = t[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def scheduler_steps(g):
    """DDPMScheduler.step in float64 at a few t, clipping both binding and not: x_t, the model
    output eps, the noise z it draws, and prev_sample. diffusers builds its schedule in float32,
    whose 1 - ᾱ_t cancels at small t (a relative error of 1e-4 at t = 1), so the schedule is
    rebuilt here in float64 from the same linspace: the oracle is diffusers' step formula."""
    scheduler = DDPMScheduler(**SCHEDULER)
    betas = torch.linspace(SCHEDULER["beta_start"], SCHEDULER["beta_end"],
                           SCHEDULER["num_train_timesteps"], dtype=torch.float64)
    scheduler.betas = betas
    scheduler.alphas = 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    t = torch.tensor([999, 500, 10, 1, 0])
    x_t = (torch.randn((len(t), 3, 8, 8), generator=g) * 1.5).double()
    eps = torch.randn((len(t), 3, 8, 8), generator=g).double()
    z, prev = [], []
    for i in range(len(t)):
        # step draws its noise as randn_tensor(shape, generator, dtype) does: replay the draw
        seed = torch.Generator().manual_seed(100 + i)
        z.append(torch.randn((1, 3, 8, 8), generator=seed, dtype=torch.float64)[0])
        gen = torch.Generator().manual_seed(100 + i)
        out = scheduler.step(eps[i:i + 1], int(t[i]), x_t[i:i + 1], generator=gen)
        prev.append(out.prev_sample[0])
    return dict(step_t=t, step_x_t=x_t, step_eps=eps, step_z=torch.stack(z),
                step_prev=torch.stack(prev))


def main():
    g = torch.Generator().manual_seed(0)
    unet = UNet2DModel(**UNET)
    randomize(unet, g)
    unet.eval()
    x = torch.randn((2, 3, 8, 8), generator=g)
    t = torch.tensor([7, 613])
    with torch.no_grad():
        out32 = unet(x, t).sample
        hook = unet.time_proj.register_forward_hook(embedding64)
        out64 = unet.double()(x.double(), t).sample
        hook.remove()
    unet.half().save_pretrained(FOLDER, safe_serialization=True)
    DDPMScheduler(**SCHEDULER).save_pretrained(FOLDER)
    arrays = dict(x=x, t=t, out32=out32, out64=out64, **scheduler_steps(g))
    save_file({k: np.ascontiguousarray(v.numpy()) for k, v in arrays.items()}, EXPECTED)
    err = (out32.double() - out64).abs().max().item()
    print(f"{FOLDER}: {sum(p.numel() for p in unet.parameters())} parameters; "
          f"max |out32 - out64| = {err:.3e}, max |out64| = {out64.abs().max().item():.3f}")
    print(json.dumps({k: os.path.getsize(os.path.join(FOLDER, k)) for k in os.listdir(FOLDER)}))


if __name__ == "__main__":
    main()
