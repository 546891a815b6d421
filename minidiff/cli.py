"""The command line: `minidiff train | sample | nll | demo | gpu-check` (also `python -m
minidiff ...`).

    minidiff train --data swiss_roll --steps 3000 --out-dir runs/roll
    minidiff train --data swiss_roll --steps 3000 --out-dir runs/roll --resume   # after a kill
    minidiff sample --run runs/roll --gif                  # scatter plot, GIF, distances
    minidiff sample --run runs/digits --sampler ddim --ddim-steps 50
    minidiff train --data swiss_roll --objective flow --out-dir runs/flow   # flow matching
    minidiff sample --run runs/flow --sampler euler --euler-steps 100
    minidiff nll --run runs/digits                         # bits/dim on the digits test split
    minidiff demo                                          # the 2-D experiment, into demo_out/
    minidiff sample --pretrained ddpm-cifar10 --sampler ddim   # a diffusers folder
    minidiff export --run runs/digits --to digits-diffusers    # for DDPMPipeline

Every flag is listed by `minidiff <command> --help`. A bad value is refused with a message that
names the flag and what it allows; a run that fails says why and exits with status 1.
"""
import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time

import numpy as np

from . import backend, cli_pretrained, demo, distributed, gpucheck, memory
from .cli_common import (add_common, add_config_flags, describe, fail, fill_config, flagged,
                         float_in, image_outputs, int_at_least, os_failure, png_path,
                         refuse_unless_fits, sample_in_batches, scatter_outputs, set_device,
                         set_threads)
from .config import TrainConfig, check_sampler
from .datakinds import DATA_KINDS
from .diffusion import VARIANCES, calc_bpd_loop
from .metrics import format_distances
from .train import NonFiniteLoss, Trainer, distances_2d

# ------------------------------------------------------------------------------ train


def cmd_train(args):
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        cfg = TrainConfig(**fields).validate()
    except ValueError as e:
        args.parser.error(flagged(str(e)))
    set_device(args)
    set_threads(args, cfg.model == "mlp")
    refuse_unless_fits(memory.train_step_bytes(cfg), "one training step", *memory.train_flags(cfg))
    try:
        trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
        t0 = time.perf_counter()
        trainer.run()
    except NonFiniteLoss as e:
        fail(str(e))
    except (ValueError, ImportError, RuntimeError) as e:    # OSErrors: see main()
        fail(flagged(str(e)))
    if not args.quiet:
        print(f"trained to step {trainer.step} in {time.perf_counter() - t0:.1f} s; "
              f"{cfg.out_dir}: checkpoint.npz, log.csv, loss.png, samples.png")
        if not trainer.kind.images:
            x, _ = trainer.sample(2000)
            print(f"2000 EMA samples vs {cfg.data}: "
                  + format_distances(distances_2d(x, cfg)))

# ------------------------------------------------------------------------------ sample


def load_run(args, data_path=None):
    """The run's trainer; a 2-D run's data at data_path if it moved (checked: the same data)."""
    try:
        trainer = Trainer.from_checkpoint(args.run, quiet=False, data_path=data_path)
    except (ValueError, OSError, ImportError) as e:
        msg = describe(e) if isinstance(e, OSError) else str(e)
        fail(flagged(msg) if msg.startswith("data_path:") else f"--run {args.run}: {msg}")
    return trainer


def sample_name(args, cfg):
    """The default picture of `sample`: named by its sampler and steps, then by each choice
    that changes the picture (eta, variance, raw weights, seed, n), so that no two commands
    write the same file: sample-ancestral1000.png, sample-ddim50-eta1-raw.png."""
    steps = {"ddim": args.ddim_steps, "euler": args.euler_steps}.get(args.sampler, cfg.timesteps)
    parts = [f"sample-{args.sampler}{steps}"]
    if args.sampler == "ddim" and args.eta:
        parts.append(f"eta{args.eta:g}")
    if args.variance is not None:
        parts.append(args.variance)
    if args.no_ema:
        parts.append("raw")
    if args.seed:
        parts.append(f"seed{args.seed}")
    if args.n is not None:
        parts.append(f"n{args.n}")
    return "-".join(parts) + ".png"


def cmd_sample(args):
    if args.pretrained and args.sampler == "euler":
        fail(f"--sampler: 'euler' samples a flow run (train --objective flow); --pretrained "
             f"{args.pretrained} is a DDPM: use ancestral or ddim")
    if args.pretrained:                             # a diffusers folder instead of a run
        return cli_pretrained.cmd_sample(args)
    set_device(args)
    trainer = load_run(args, data_path=args.data_path or None)
    if args.data_path and trainer.kind.images:
        fail(f"--data-path: sampling an image run reads no data (the run's data is "
             f"{trainer.cfg.data!r}); leave --data-path out")
    set_threads(args, trainer.cfg.model == "mlp")
    cfg = trainer.cfg
    args.sampler = args.sampler or ("euler" if cfg.objective == "flow" else "ancestral")
    try:
        check_sampler(cfg, args.sampler, args.variance)
    except ValueError as e:
        fail(f"--{e}")                              # "--sampler: ..." or "--variance: ..."
    if args.sampler == "ddim" and args.ddim_steps > cfg.timesteps:
        args.parser.error(f"--ddim-steps: must be at most the run's T = {cfg.timesteps}, "
                          f"got {args.ddim_steps}")
    backend.manual_seed(args.seed)
    n = args.n or trainer.kind.n_pictured
    out = png_path("--out", os.path.join(cfg.out_dir, sample_name(args, cfg)) if args.out is None
                   else args.out)
    gif = out[:-4] + ".gif" if args.gif else None
    frames = args.frames if args.gif else 0
    refuse_unless_fits(memory.sample_bytes(cfg, n, frames), "the samples and their picture",
                       f"--n {n}" + (f" with --gif --frames {frames}" if gif else ""),
                       "a smaller --n" + (" or fewer --frames" if gif else ""))
    t0 = time.perf_counter()
    x, trajectory = sample_in_batches(trainer, n, args.seed, use_ema=not args.no_ema,
                                      sampler=args.sampler, variance=args.variance,
                                      ddim_steps=args.ddim_steps, eta=args.eta, frames=frames,
                                      euler_steps=args.euler_steps,
                                      progress=True)       # a bar on stderr
    dt = time.perf_counter() - t0
    how = {"ddim": f"DDIM, {args.ddim_steps} steps, eta {args.eta:g}",
           "euler": f"Euler, {args.euler_steps} steps",
           "ancestral": f"ancestral, {cfg.timesteps} steps, {args.variance or cfg.variance}"
           }[args.sampler]
    weights = "raw" if args.no_ema else "EMA"
    print(f"{n} samples ({how}, {weights} weights) in {dt:.1f} s -> {out}"
          + (f", {gif}" if gif else ""))
    if not trainer.kind.images:
        scatter_outputs(trainer, x, trajectory, out, gif, f"{cfg.data}: {how}")
        first = f"the first {memory.DISTANCE_POINTS} samples: " if n > memory.DISTANCE_POINTS \
            else ""                                     # MMD's n x n kernels stay small
        print(first + format_distances(distances_2d(x[:memory.DISTANCE_POINTS], cfg)))
    else:
        image_outputs(x, trajectory, out, gif)

# ------------------------------------------------------------------------------ nll


def cmd_nll(args):
    if args.pretrained or args.data:                # a diffusers folder instead of a run
        return cli_pretrained.cmd_nll(args)
    set_device(args)
    trainer = load_run(args)
    set_threads(args, trainer.cfg.model == "mlp")
    cfg = trainer.cfg
    if not trainer.kind.images:
        images = ", ".join(k for k, kind in DATA_KINDS.items() if kind.images)
        fail(f"--run {args.run}: nll measures bits/dim of 8-bit images; this run's data is "
             f"{cfg.data!r} (allowed: {images})")
    if cfg.objective == "flow":
        fail(f"--run {args.run}: nll measures DDPM's variational bound (Ho et al. 2020, Eq. 5); "
             "this run is flow matching (objective 'flow'), which has no such bound here")
    if cfg.data_path and not args.data_path:        # held out from the run's own copy
        try:
            trainer.check_data(cfg.data_path)
        except ValueError as e:
            fail(flagged(str(e)))
    if trainer.kind.needs_path and not args.data_path:
        fail(f"--data-path: a {cfg.data} run needs held-out images (an IDX file or a "
             "folder the run did not train on)")
    try:
        x, source = trainer.kind.heldout(cfg, args.data_path)           # (N, C, H, W)
    except (ValueError, OSError, ImportError) as e:
        fail(f"--data-path: {describe(e) if isinstance(e, OSError) else e}")
    x = x[:args.n]
    batch = min(args.batch_size, len(x))
    refuse_unless_fits(memory.nll_bytes(cfg, len(x), batch, cfg.timesteps), "the bound",
                       f"--batch-size {batch} on {len(x)} images (--n) at T = {cfg.timesteps}",
                       "a smaller --batch-size or --n")
    backend.manual_seed(args.seed)
    results = []
    t0 = time.perf_counter()
    model = trainer.model.eval()
    with trainer.ema.swapped_in(model) if not args.no_ema else contextlib.nullcontext():
        for i in range(0, len(x), args.batch_size):
            xb = backend.xp().asarray(x[i:i + args.batch_size])
            results.append(calc_bpd_loop(trainer.diffusion, model, xb,
                                         progress=True))       # a bar on stderr
            print(f"  {min(i + args.batch_size, len(x))}/{len(x)} images, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    total = np.concatenate([r["total_bpd"] for r in results])
    prior = np.concatenate([r["prior_bpd"] for r in results])
    dist = np.concatenate([r["distortion_bpd"] for r in results])
    rate = np.concatenate([r["rate_bpd"] for r in results])
    sem = total.std(ddof=1) / np.sqrt(len(total)) if len(total) > 1 else float("nan")
    print(f"{len(total)} images of {source}, T = {cfg.timesteps}: "
          f"NLL <= {total.mean():.3f} ± {sem:.3f} bits/dim "
          f"(rate {rate.mean():.3f}, distortion {dist.mean():.3f}, prior {prior.mean():.4f}; "
          f"{'raw' if args.no_ema else 'EMA'} weights)")


# ------------------------------------------------------------------------------ the parser


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minidiff", description="Denoising diffusion probabilistic models (Ho et al. "
        "2020) from scratch: train, sample, measure bits/dim, or run the 2-D demo.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (Ho et al. 2020, Algorithm 1)",
                       description="Train a denoiser (Ho et al. 2020, Algorithm 1) with "
                       "Adam(W), warm-up, gradient clipping and an EMA; checkpoints are exact, "
                       "so --resume continues a killed run bit for bit.")
    add_config_flags(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out-dir from its checkpoint (same config)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even though --out-dir holds a run (it is replaced)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    add_common(p)
    p.set_defaults(func=distributed.launch.data_parallel(p, cmd_train), parser=p)  # mpiexec

    p = sub.add_parser("sample", help="draw samples (Ho et al. 2020, Algorithm 2, DDIM, or "
                       "Euler's method for a flow run)",
                       description="Draw samples from a run's checkpoint, with its EMA "
                       "weights unless --no-ema. 2-D runs give a scatter plot over the data "
                       "and print the sliced Wasserstein and MMD distances beside their noise "
                       "floors; image runs give a PNG grid.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a run folder (or its checkpoint.npz)")
    cli_pretrained.add_pretrained_flag(source)
    p.add_argument("--data-path", default="",
                   help="where a 2-D run's picture is now, if it moved (it must be the same "
                        "file; default: where the run recorded it)")
    p.add_argument("--sampler", choices=("ancestral", "ddim", "euler"), default=None,
                   help="ancestral: Ho et al. 2020's Algorithm 2 over all T steps; ddim: Song et "
                        "al.'s DDIM over --ddim-steps steps; euler: Euler's method over "
                        "--euler-steps steps, for a flow run (train --objective flow) "
                        "(default: ancestral, or euler for a flow run)")
    p.add_argument("--variance", choices=[v for v in VARIANCES if v != "learned_range"],
                   default=None,
                   help="sigma_t^2 for ancestral sampling: fixed_large (beta_t) or "
                        "fixed_small (beta~_t) (default: the run's)")
    p.add_argument("--ddim-steps", type=int_at_least(1, 100_000), default=50,
                   help="number of DDIM steps, at most T (default: 50)")
    p.add_argument("--eta", type=float_in(0), default=0.0,
                   help="DDIM's eta: 0 deterministic, 1 like DDPM (default: 0)")
    p.add_argument("--euler-steps", type=int_at_least(1, 100_000), default=100,
                   help="number of Euler steps from t = 1 to 0 (default: 100)")
    p.add_argument("--n", type=int_at_least(2, 10**9), default=None,
                   help="number of samples, drawn in batches of bounded memory (default: 2000 "
                        "points, or 64 images)")
    p.add_argument("--no-ema", action="store_true",
                   help="sample with the raw weights instead of the EMA weights")
    p.add_argument("--gif", action="store_true",
                   help="also write a GIF of the reverse process next to --out")
    p.add_argument("--frames", type=int_at_least(2, 1000), default=50,
                   help="about this many GIF frames (default: 50)")
    p.add_argument("--out", default=None,
                   help="the PNG to write (default: in the run's folder, named by the "
                        "sampler, its steps and the other flags given, such as "
                        "sample-ddim50.png or sample-ancestral1000-raw.png; the GIF takes "
                        "its name)")
    p.add_argument("--seed", type=int_at_least(0, 2**63 - 1), default=0,
                   help="sampling seed (default: 0)")
    add_common(p)
    p.set_defaults(func=cmd_sample, parser=p)

    p = sub.add_parser("nll", help="bits/dim of held-out images (the variational bound)",
                       description="The variational bound on the negative log-likelihood "
                       "(Ho et al. 2020, Eq. 5) in bits/dim, by calc_bpd_loop over all T "
                       "steps, on held-out images: the digits test split for a digits run.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a run folder (or its checkpoint.npz)")
    cli_pretrained.add_pretrained_flag(source)
    cli_pretrained.add_data_flag(p)
    p.add_argument("--data-path", default="",
                   help="held-out images for an idx (IDX file) or folder run")
    p.add_argument("--n", type=int_at_least(1, 10**9), default=360,
                   help="use the first N held-out images (default: 360, all digits)")
    p.add_argument("--batch-size", type=int_at_least(1, 65536), default=120,
                   help="images per pass through the T steps (default: 120)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    p.add_argument("--seed", type=int_at_least(0, 2**63 - 1), default=0,
                   help="seed of the noise draws (default: 0)")
    add_common(p)
    p.set_defaults(func=cmd_nll, parser=p)

    demo.add_parser(sub)
    gpucheck.add_parser(sub)
    cli_pretrained.add_parser(sub)
    return parser


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (`kill`, a job scheduler) stops the command as Ctrl-C does: an --overwrite cut
    short puts the old run back, and one line says what happened. (Signals reach only the
    main thread, so from another thread this does nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":                     # flags, else --config's file, else defaults
        fill_config(args)
    args.blas_limits = None
    try:
        with sigterm_as_ctrl_c():
            args.func(args)
    except KeyboardInterrupt:
        fail("interrupted; the last checkpoint (if any) is intact: rerun with --resume")
    except RuntimeError as e:                       # e.g. CUDA failing mid-run
        fail(str(e))
    except OSError as e:                            # a folder we cannot write, a full disk
        fail(os_failure(e, args))
    finally:
        if args.blas_limits is not None:            # main() may be called in-process
            args.blas_limits.restore_original_limits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
