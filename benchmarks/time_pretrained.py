"""Time per image for sampling google/ddpm-cifar10-32's network (Ho et al.'s CIFAR-10 U-Net,
35.7M parameters) in minidiff: DDIM at 50 steps, and the 1000 ancestral steps of
Ho et al. 2020, Algorithm 2.

    python benchmarks/time_pretrained.py [--device cuda] [--batch 1] [--ancestral-steps 20]

The weights are random (the real ones cannot be downloaded here): the time does not depend on
them. The folder goes through minidiff.pretrained.save and load, as a downloaded one would.
DDIM runs its 50 steps whole. The ancestral loop runs --ancestral-steps of its 1000 steps and
is extrapolated (each step is one network call plus a few elementwise operations, the same at
every t); the line says so. Beside the wall-clock time it prints the process's CPU time (all
its threads): on a machine shared with other jobs, wall time grows with the load and CPU time
much less, so the two bracket what an idle machine gives.
"""
import argparse
import os
import tempfile
import time

import numpy as np

from minidiff import backend, pretrained
from minidiff.diffusion import GaussianDiffusion, ddim_sample_loop, get_beta_schedule
from minidiff.models import unet_from_preset


def folder(path):
    model = unet_from_preset("cifar10")
    rng = np.random.default_rng(0)
    for _, p in model.named_parameters():
        p.data[...] = rng.normal(0, 0.02, p.shape)
    diffusion = GaussianDiffusion(get_beta_schedule("linear", 1000), variance="fixed_small")
    pretrained.save(model, diffusion, path)


def clocks():
    return time.perf_counter(), time.process_time()


def per_image(start, n):
    """(wall s, CPU s) since `start`, divided by n."""
    wall, cpu = clocks()
    return (wall - start[0]) / n, (cpu - start[1]) / n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--ancestral-steps", type=int, default=20)
    args = p.parse_args()
    backend.set_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder(os.path.join(tmp, "ddpm-cifar10"))
        model, diffusion = pretrained.load(os.path.join(tmp, "ddpm-cifar10"))
    shape = (args.batch, 3, 32, 32)
    backend.manual_seed(0)
    ddim_sample_loop(diffusion, model, shape, num_steps=2)                 # warm-up
    start = clocks()
    x = ddim_sample_loop(diffusion, model, shape, num_steps=50)
    backend.to_numpy(x)
    ddim = per_image(start, args.batch)
    chain = diffusion.p_sample_loop_progressive(model, shape)
    next(chain)                                                            # x_T
    start = clocks()
    for _ in range(args.ancestral_steps):
        _, x = next(chain)
    backend.to_numpy(x)
    step = per_image(start, args.ancestral_steps * args.batch)
    load = os.getloadavg()[0]
    print(f"{args.device}, batch {args.batch}, load average {load:.1f}, per image (wall s, "
          f"CPU s): DDIM 50 steps ({ddim[0]:.1f}, {ddim[1]:.1f}); ancestral, one step "
          f"({step[0]:.2f}, {step[1]:.2f}), so 1000 steps ≈ ({1000 * step[0]:.0f}, "
          f"{1000 * step[1]:.0f}), extrapolated from {args.ancestral_steps} steps")


if __name__ == "__main__":
    main()
