"""diffusers folders on the command line: `minidiff sample --pretrained DIR`, `minidiff nll
--pretrained DIR --data KIND`, and `minidiff export --run RUN --to DIR`.

    minidiff sample --pretrained ddpm-cifar10 --sampler ddim --ddim-steps 50 --n 16
    minidiff nll --pretrained ddpm-cifar10 --data cifar10 --data-path cifar-10-batches-bin
    minidiff export --run runs/digits --to digits-diffusers     # EMA weights, DDPMPipeline

cli.py hands `sample` and `nll` here when --pretrained is given (instead of --run); the folder
is read by minidiff.pretrained (see docs/pretrained.md), and x̂0 is clipped to [-1, 1] while
sampling when its scheduler says clip_sample, as diffusers does.
"""
import dataclasses
import sys
import time

import numpy as np

from . import backend, pretrained, viz
from .cli_common import add_common, describe, fail, image_outputs, set_device, set_threads
from .config import TrainConfig
from .datakinds import DATA_KINDS
from .diffusion import GaussianDiffusion, ddim_sample_loop_progressive, ddim_timesteps
from .autograd import no_grad

IMAGE_KINDS = tuple(k for k, kind in DATA_KINDS.items() if kind.images)


def add_pretrained_flag(group):
    group.add_argument("--pretrained", default=None, metavar="DIR",
                       help="a diffusers folder instead of a run: a DDPM pipeline "
                            "(model_index.json) or a UNet2DModel folder, e.g. "
                            "google/ddpm-cifar10-32 (docs/pretrained.md)")


def add_data_flag(p):
    p.add_argument("--data", choices=IMAGE_KINDS, default=None,
                   help="with --pretrained: the kind of held-out images at --data-path")


def load(args, reads_data):
    """(model, diffusion, clip) from --pretrained, or one line saying why not."""
    if args.no_ema:
        fail("--no-ema: a diffusers folder holds one set of weights; leave --no-ema out")
    if args.data_path and not reads_data:
        fail("--data-path: sampling reads no data; leave --data-path out")
    try:
        model, diffusion = pretrained.load(args.pretrained)
        clip = pretrained.clip_sample(args.pretrained)
    except (ValueError, OSError, ImportError) as e:
        fail(f"--pretrained {args.pretrained}: {describe(e) if isinstance(e, OSError) else e}")
    set_threads(args, mlp=False)
    return model, diffusion, clip

# ------------------------------------------------------------------------------ sample


def cmd_sample(args):
    set_device(args)
    model, diffusion, clip = load(args, reads_data=False)
    T = diffusion.num_timesteps
    if args.sampler == "ddim" and args.ddim_steps > T:
        args.parser.error(f"--ddim-steps: must be at most the model's T = {T}, "
                          f"got {args.ddim_steps}")
    out = args.out or "sample.png"
    if not out.lower().endswith(".png"):
        args.parser.error(f"--out: must be a .png path, got {out!r}")
    n = args.n or 64
    backend.manual_seed(args.seed)
    t0 = time.perf_counter()
    x, trajectory = sample(model, diffusion, n, args, clip)
    dt = time.perf_counter() - t0
    how = (f"DDIM, {args.ddim_steps} steps, eta {args.eta:g}" if args.sampler == "ddim" else
           f"ancestral, {T} steps, {args.variance or diffusion.variance}")
    gif = out[:-4] + ".gif" if args.gif else None
    print(f"{n} samples ({how}) from {args.pretrained} in {dt:.1f} s ({dt / n:.2f} s per "
          f"image) -> {out}" + (f", {gif}" if gif else ""))
    image_outputs(x, trajectory, out, gif)


def sample(model, diffusion, n, args, clip):
    """n images by Algorithm 2 (Ho et al. 2020) or DDIM, and about args.frames states of the
    chain if args.gif: (x0 (n, C, H, W), [(s, x_s)])."""
    c, size = model.config["in_channels"], model.config["image_size"]
    d, net = diffusion, model
    if args.variance not in (None, diffusion.variance):            # another fixed σ_t²
        d = GaussianDiffusion(diffusion.betas_float64, diffusion.parameterization,
                              variance=args.variance)
        if diffusion.variance == "learned_range":
            def net(x_t, t):                                        # the first C channels:
                return model(x_t, t)[:, :c]                         # the mean's, not v
    shape = (n, c, size, size)
    if args.sampler == "ddim":
        chain = ddim_sample_loop_progressive(d, net, shape, num_steps=args.ddim_steps,
                                             eta=args.eta, clip_denoised=clip,
                                             progress=True)
        n_states = len(ddim_timesteps(d.num_timesteps, args.ddim_steps)) + 1
    else:
        chain = d.p_sample_loop_progressive(net, shape, clip_denoised=clip,
                                            progress=True)
        n_states = d.num_timesteps + 1
    keep = viz.frame_indices(n_states, args.frames) if args.gif else set()
    trajectory = []
    for k, (s, x) in enumerate(chain):
        if not bool(backend.xp().isfinite(x).all()):
            chain.close()                               # its bar ends its line first
            fail(f"--pretrained {args.pretrained}: x_{s} holds NaN or inf; these weights do "
                 "not give a usable model")
        if k in keep:
            trajectory.append((s, backend.to_numpy(x)))
    return backend.to_numpy(x), trajectory

# ------------------------------------------------------------------------------ nll


def cmd_nll(args):
    set_device(args)
    if not args.pretrained:
        fail(f"--data: read only with --pretrained (a run knows its own data, {args.data!r} "
             "or not); leave --data out")
    if args.data is None:
        fail(f"--data: nll --pretrained needs the kind of held-out images (one of "
             f"{', '.join(IMAGE_KINDS)})")
    kind = DATA_KINDS[args.data]
    if kind.needs_path and not args.data_path:
        fail(f"--data-path: --data {args.data} needs the folder or file of held-out images")
    model, diffusion, clip = load(args, reads_data=True)
    shape = (model.config["in_channels"],) + (model.config["image_size"],) * 2
    cfg = dataclasses.replace(TrainConfig(), data=args.data, data_path=args.data_path,
                              image_size=shape[1], channels=shape[0])
    try:
        x, source = kind.heldout(cfg, args.data_path)                   # (N, C, H, W)
    except (ValueError, OSError, ImportError) as e:
        fail(f"--data-path: {describe(e) if isinstance(e, OSError) else e}")
    if x.shape[1:] != shape:
        fail(f"--data {args.data}: images of shape {x.shape[1:]}, but the model takes {shape}")
    backend.manual_seed(args.seed)
    total, prior = bits_per_dim(model, diffusion, x[:args.n], args.batch_size, clip)
    sem = total.std(ddof=1) / np.sqrt(len(total)) if len(total) > 1 else float("nan")
    print(f"{len(total)} images of {source}, T = {diffusion.num_timesteps}: NLL <= "
          f"{total.mean():.3f} ± {sem:.3f} bits/dim (prior {prior.mean():.4f}; "
          f"{args.pretrained})")


def bits_per_dim(model, diffusion, x, batch_size, clip):
    """The bound (Ho et al. 2020, Eq. 5) in bits/dim per image, and its prior term L_T."""
    totals, priors, t0 = [], [], time.perf_counter()
    with no_grad():
        for i in range(0, len(x), batch_size):
            r = diffusion.calc_bpd_loop(model, backend.xp().asarray(x[i:i + batch_size]),
                                        clip_denoised=clip, progress=True)
            totals.append(backend.to_numpy(r["total_bpd"]))
            priors.append(backend.to_numpy(r["prior_bpd"]))
            print(f"  {min(i + batch_size, len(x))}/{len(x)} images, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return np.concatenate(totals), np.concatenate(priors)

# ------------------------------------------------------------------------------ export


def add_parser(sub):
    p = sub.add_parser("export", help="write a run as a diffusers DDPM pipeline folder",
                       description="Write a U-Net run as a folder that "
                       "diffusers.DDPMPipeline.from_pretrained loads: model_index.json, "
                       "unet/ and scheduler/ (configs and safetensors), from the run's EMA "
                       "weights unless --no-ema.")
    p.add_argument("--run", required=True, help="a run folder (or its checkpoint.npz)")
    p.add_argument("--to", required=True, metavar="DIR",
                   help="the folder to write (new, or empty)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights")
    add_common(p)
    p.set_defaults(func=cmd_export, parser=p)


def cmd_export(args):
    from .train import Trainer
    set_device(args)
    try:
        trainer = Trainer.from_checkpoint(args.run)
    except (ValueError, OSError, ImportError) as e:
        fail(f"--run {args.run}: {describe(e) if isinstance(e, OSError) else e}")
    if not trainer.kind.images:
        fail(f"--run {args.run}: a {trainer.cfg.data!r} run has an MLP; diffusers' "
             "DDPMPipeline holds a U-Net (export an image run)")
    if trainer.cfg.objective == "flow":
        fail(f"--run {args.run}: a flow run (objective 'flow') predicts a velocity; diffusers' "
             "DDPMPipeline samples a DDPM (export a run of objective 'ddpm')")
    model = trainer.model.eval()
    try:
        if args.no_ema:
            pretrained.save(model, trainer.diffusion, args.to, clip=trainer.kind.clip)
        else:
            with trainer.ema.swapped_in(model):
                pretrained.save(model, trainer.diffusion, args.to, clip=trainer.kind.clip)
    except ValueError as e:                         # the folder, or what diffusers cannot hold
        fail(f"--to: {e}" if str(e).startswith(f"{args.to}:") else f"--run {args.run}: {e}")
    print(f"{args.to}: DDPMPipeline ({'raw' if args.no_ema else 'EMA'} weights of {args.run})")
