"""The command line: `minidiff train | sample | nll | demo` (also `python -m minidiff ...`).

    minidiff train --data swiss_roll --steps 3000 --out-dir runs/roll
    minidiff train --data swiss_roll --steps 3000 --out-dir runs/roll --resume   # after a kill
    minidiff sample --run runs/roll --gif                  # scatter plot, GIF, distances
    minidiff sample --run runs/digits --sampler ddim --ddim-steps 50
    minidiff nll --run runs/digits                         # bits/dim on the digits test split
    minidiff demo                                          # the 2-D experiment, into demo_out/

Every flag is listed by `minidiff <command> --help`. A bad value is refused with a message that
names the flag and what it allows; a run that fails says why and exits with status 1.
"""
import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time

import numpy as np

from . import backend, data, viz
from .diffusion import calc_bpd_loop
from .train import (CHOICES, IMAGE_DATA, INT_RANGES, TWO_D, NonFiniteLoss, Trainer, TrainConfig,
                    distances_2d, format_distances)

# ------------------------------------------------------------------------------ argument types


def int_at_least(lo, hi=None):
    allowed = f"an int >= {lo}" if hi is None else f"an int in [{lo}, {hi}]"

    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {s!r:.40}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {s!r:.40}")
        return v
    parse.__name__ = allowed
    return parse


def float_in(lo, hi=math.inf, lo_open=False, hi_open=False):
    lo_b, hi_b = "(" if lo_open else "[", ")" if hi_open else "]"
    allowed = f"a number in {lo_b}{lo:g}, {hi:g}{hi_b}"

    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {s!r:.40}") from None
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and \
            (v < hi if hi_open else v <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {s!r:.40}")
        return v
    parse.__name__ = allowed
    return parse


# One help line per TrainConfig field: `minidiff train --help` documents every flag.
TRAIN_HELP = {
    "data": "training data: a 2-D set, 'picture' (dark pixels of a picture become points), "
            "'digits' (scikit-learn's, 16x16), 'mnist' (an IDX file) or 'folder' (images)",
    "data_path": "the picture (if not given: the shipped mascot), the IDX file or the image "
                 "folder",
    "n_points": "number of points in a 2-D data set",
    "image_size": "images are resized and centre-cropped to this size (mnist, folder)",
    "channels": "image channels for 'folder': 1 (grey) or 3 (RGB)",
    "flip": "random horizontal flips of the training images",
    "model": "the network: 'mlp' for 2-D data, or a U-Net preset for images",
    "hidden": "MLP width",
    "depth": "MLP hidden layers",
    "time_dim": "MLP sinusoidal timestep-embedding size (even)",
    "dropout": "U-Net dropout probability (Ho et al.: 0.1 on CIFAR-10)",
    "timesteps": "T, the number of diffusion steps (Ho et al.: 1000)",
    "schedule": "β schedule; the β-range ones are Ho et al.'s 1e-4 -> 0.02 scaled by 1000/T",
    "parameterization": "what the network predicts: eps (Ho et al. Eq. 11), x0, mu (the "
                        "posterior mean) or v",
    "loss": "simple: L_simple (Eq. 14); mu_mse: ||mu~ - mu_theta||^2 (needs "
            "--parameterization mu); kl: the true bound's terms (Eq. 5)",
    "mu_mse_weight": "for --loss mu_mse: none (the unweighted MSE) or bound (the 1/(2 sigma_t^2)"
                     " weight of Eq. 8)",
    "variance": "sigma_t^2 of the reverse process: fixed_large (beta_t) or fixed_small "
                "(beta~_t)",
    "steps": "train until this step (a resumed run may raise it)",
    "batch_size": "examples per step",
    "optimizer": "adam, or adamw (decoupled weight decay)",
    "lr": "learning rate (after warm-up)",
    "weight_decay": "weight decay (AdamW: decoupled; Adam: L2)",
    "warmup": "linear learning-rate warm-up steps (Ho et al.: 5000)",
    "grad_clip": "clip the global gradient norm to this (Ho et al.: 1.0)",
    "ema_decay": "EMA decay of the weights used for sampling (warmed up as "
                 "min(d, (1+k)/(10+k)))",
    "seed": "seed of every random draw (data set, init, batches, noise)",
    "out_dir": "the run's folder: checkpoint.npz, log.csv, loss.png, samples",
    "ckpt_every": "write a checkpoint (atomically) every this many steps, and at the end",
    "sample_every": "draw a sample picture from the EMA weights every this many steps "
                    "(0: only at the end)",
    "n_samples": "points (2-D) or images (at most 64) in each sample picture",
    "log_every": "write a row of log.csv every this many steps",
}

TRAIN_TYPES = {
    **{name: int_at_least(lo, hi) for name, (lo, hi) in INT_RANGES.items()},
    "lr": float_in(0, lo_open=True), "weight_decay": float_in(0),
    "grad_clip": float_in(0, lo_open=True), "ema_decay": float_in(0, 1, hi_open=True),
    "dropout": float_in(0, 1, hi_open=True), "channels": int,
}


def flag(name):
    return "--" + name.replace("_", "-")


# ------------------------------------------------------------------------------ shared helpers


def limit_blas_threads(n):
    """Cap BLAS threads (n = 0 leaves BLAS alone). Small matrices, like the MLP's 256 x 256,
    run faster on one thread: with two, each product waits on the other core, and on a busy
    2-core machine a training step took 10x longer. Needs threadpoolctl (a dependency of
    scikit-learn, and of minidiff)."""
    if n <= 0:
        return None
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=n, user_api="blas")


def add_common(p, threads_help="BLAS threads; 0 leaves BLAS's default (default: 1 for the "
                               "2-D MLP, 0 for U-Nets)"):
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to compute: cpu (NumPy) or cuda (CuPy and CUDA kernels) "
                        "(default: $MINIDIFF_DEVICE, else cpu)")
    p.add_argument("--threads", type=int_at_least(0), default=None, help=threads_help)


def set_device(args):
    """--device, with a clear failure when CUDA is asked for but missing."""
    if args.device is None:                 # no flag: MINIDIFF_DEVICE's wish, or the CPU
        try:
            args.device = backend.get_device()
        except (RuntimeError, ValueError) as e:
            fail(f"{e} (or pass --device cpu)")
        return
    try:
        backend.set_device(args.device)
    except RuntimeError as e:
        fail(f"--device {args.device}: {e}")


def set_threads(args, mlp):
    """--threads, defaulting to 1 for the MLP, until the command ends (see main)."""
    threads = args.threads if args.threads is not None else (1 if mlp else 0)
    if args.device == "cpu":
        args.blas_limits = limit_blas_threads(threads)


def flagged(msg):
    """A config error names a field ("lr: ..."); on the command line, name its flag."""
    field, sep, rest = msg.partition(":")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return f"{flag(field)}:{rest}" if sep and field in names else msg


def describe(e):
    """An OSError in one line: our own message, or the system's reason and the path."""
    if e.errno is None:
        return str(e)
    return f"{e.strerror}: {e.filename}" if e.filename else e.strerror


PATH_FLAGS = ("out_dir", "run", "out", "data_path")


def os_failure(e, args):
    """One line for an OSError that reached main(): the flag whose path it concerns (the
    deepest one given that holds e.filename), and what the system said."""
    if e.errno is None:                             # one of ours: its message says it all
        return flagged(str(e))
    for name in PATH_FLAGS:
        given = getattr(args, name, None)
        if not given:
            continue
        if e.filename is None:      # a failed write() names no file: blame what we write to
            if name in ("out_dir", "out"):
                return f"{flag(name)} {given}: {describe(e)}"
        elif os.path.commonpath([os.path.abspath(e.filename), os.path.abspath(given)]) == \
                os.path.abspath(given):
            return f"{flag(name)} {given}: {describe(e)}"
    return describe(e)


def fail(msg):
    print(f"minidiff: error: {msg}", file=sys.stderr)
    sys.exit(1)


def scatter_outputs(trainer, x, trajectory, png, gif, title):
    """2-D samples: a scatter plot over the data and, if asked, a GIF of the points flowing."""
    reference = trainer.data[:5000]
    viz.scatter_plot(x, png, reference=reference, title=title, lim=1.5)
    if gif:
        sets = [p for _, p in trajectory] + [trajectory[-1][1]] * 12     # hold the end
        titles = [f"t = {s}" for s, _ in trajectory] + ["t = 0"] * 12
        viz.scatter_gif(sets, gif, reference=reference, lim=1.5, titles=titles, duration_ms=70)


def image_outputs(x, trajectory, png, gif):
    """Images: a PNG grid and, if asked, a GIF of the grid through the reverse process."""
    viz.save_image_grid(x, png, scale=3)
    if gif:
        frames = [viz.image_grid(np.clip(p, -1, 1), scale=3) for _, p in trajectory]
        viz.save_gif(frames + [frames[-1]] * 12, gif, duration_ms=70)

# ------------------------------------------------------------------------------ train


def cmd_train(args):
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        cfg = TrainConfig(**fields).validate()
    except ValueError as e:
        args.parser.error(flagged(str(e)))
    set_device(args)
    set_threads(args, cfg.model == "mlp")
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
        if cfg.data in TWO_D:
            x, _ = trainer.sample(2000)
            print(f"2000 EMA samples vs {cfg.data}: "
                  + format_distances(distances_2d(x, cfg)))

# ------------------------------------------------------------------------------ sample


def load_run(args):
    try:
        trainer = Trainer.from_checkpoint(args.run)
    except (ValueError, OSError, ImportError) as e:
        fail(f"--run {args.run}: {describe(e) if isinstance(e, OSError) else e}")
    return trainer


def cmd_sample(args):
    set_device(args)
    trainer = load_run(args)
    set_threads(args, trainer.cfg.model == "mlp")
    cfg = trainer.cfg
    if args.sampler == "ddim" and args.ddim_steps > cfg.timesteps:
        args.parser.error(f"--ddim-steps: must be at most the run's T = {cfg.timesteps}, "
                          f"got {args.ddim_steps}")
    backend.manual_seed(args.seed)
    n = args.n or (2000 if cfg.data in TWO_D else 64)
    out = args.out or os.path.join(cfg.out_dir, "sample.png")
    if not out.lower().endswith(".png"):
        args.parser.error(f"--out: must be a .png path, got {out!r}")
    gif = out[:-4] + ".gif" if args.gif else None
    frames = args.frames if args.gif else 0
    t0 = time.perf_counter()
    x, trajectory = trainer.sample(n, use_ema=not args.no_ema, sampler=args.sampler,
                                   variance=args.variance, ddim_steps=args.ddim_steps,
                                   eta=args.eta, frames=frames)
    dt = time.perf_counter() - t0
    how = (f"DDIM, {args.ddim_steps} steps, eta {args.eta:g}" if args.sampler == "ddim" else
           f"ancestral, {cfg.timesteps} steps, {args.variance or cfg.variance}")
    weights = "raw" if args.no_ema else "EMA"
    print(f"{n} samples ({how}, {weights} weights) in {dt:.1f} s -> {out}"
          + (f", {gif}" if gif else ""))
    if cfg.data in TWO_D:
        scatter_outputs(trainer, x, trajectory, out, gif, f"{cfg.data}: {how}")
        print(format_distances(distances_2d(x, cfg)))
    else:
        image_outputs(x, trajectory, out, gif)

# ------------------------------------------------------------------------------ nll


def cmd_nll(args):
    set_device(args)
    trainer = load_run(args)
    set_threads(args, trainer.cfg.model == "mlp")
    cfg = trainer.cfg
    if cfg.data not in IMAGE_DATA:
        fail(f"--run {args.run}: nll measures bits/dim of 8-bit images; this run's data is "
             f"{cfg.data!r} (allowed: {', '.join(IMAGE_DATA)})")
    try:
        if cfg.data == "digits":
            x = data.load_digits(size=16, split="test")                     # (360, 1, 16, 16)
            source = "the digits test split"
        elif not args.data_path:
            fail(f"--data-path: a {cfg.data} run needs held-out images (an IDX file or a "
                 "folder the run did not train on)")
        elif cfg.data == "mnist":
            x, source = data.load_mnist_images(args.data_path, size=cfg.image_size), \
                args.data_path
        else:
            folder = data.ImageFolder(args.data_path, cfg.image_size, channels=cfg.channels,
                                      flip=False)
            x, source = folder.batch(np.arange(len(folder))), args.data_path
    except (ValueError, OSError, ImportError) as e:
        fail(f"--data-path: {describe(e) if isinstance(e, OSError) else e}")
    x = x[:args.n]
    backend.manual_seed(args.seed)
    results = []
    t0 = time.perf_counter()
    model = trainer.model.eval()
    with trainer.ema.swapped_in(model) if not args.no_ema else contextlib.nullcontext():
        for i in range(0, len(x), args.batch_size):
            xb = backend.xp().asarray(x[i:i + args.batch_size])
            results.append(calc_bpd_loop(trainer.diffusion, model, xb))
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


# ------------------------------------------------------------------------------ demo


DEMO_MARK = ".minidiff-demo"      # marks a folder the demo made, so a rerun may replace it
# Seconds per training step (batch 256) and per reverse step for 2000 points, fastest and
# slowest seen on 2-core CPUs of the kind CI uses (whole demos of 109 s to 201 s).
DEMO_TRAIN_STEP_S = (0.0033, 0.0065)
DEMO_SAMPLE_STEP_S = (0.0075, 0.017)


def demo_estimate(steps, timesteps, n):
    """(fastest, slowest) seconds the demo should take: two sets, each trained then sampled."""
    return tuple(2 * (steps * train + timesteps * n / 2000 * sample)
                 for train, sample in zip(DEMO_TRAIN_STEP_S, DEMO_SAMPLE_STEP_S))


def demo_folder(path):
    """The demo's folder: new, empty, or one it made before; anything else is refused."""
    if os.path.exists(path) and not os.path.isdir(path):
        fail(f"--out-dir {path}: is a file, not a folder; choose a folder for the pictures")
    if os.path.isdir(path) and os.listdir(path) and \
            not os.path.exists(os.path.join(path, DEMO_MARK)):
        fail(f"--out-dir: {path} exists and was not made by the demo; choose another folder "
             "(the demo would overwrite what is there)")
    os.makedirs(path, exist_ok=True)                # an OSError here: main() names the flag
    open(os.path.join(path, DEMO_MARK), "w").close()


def cmd_demo(args):
    """Ho et al.'s ε-prediction (L_simple, Eq. 14) on two 2-D sets: the swiss roll, and the
    shipped picture as points (the 2-D experiment of the notes). Each is trained, sampled
    with Algorithm 2, drawn and measured against its noise floor."""
    set_device(args)
    set_threads(args, mlp=True)
    demo_folder(args.out_dir)
    fastest, slowest = demo_estimate(args.steps, args.timesteps, args.n)
    print(f"the demo trains and samples two 2-D sets: expect {fastest / 60:.1f} to "
          f"{slowest / 60:.1f} minutes on 2 idle CPU cores", flush=True)
    t_start = time.perf_counter()
    panels, labels = [], []
    for name in ("swiss_roll", "picture"):
        cfg = TrainConfig(data=name, steps=args.steps, timesteps=args.timesteps,
                          batch_size=256, lr=2e-3, warmup=100, ema_decay=0.995,
                          seed=args.seed, ckpt_every=args.steps,
                          out_dir=os.path.join(args.out_dir, name))
        print(f"== {name}: an MLP predicting ε, {args.steps} steps at batch 256, "
              f"T = {args.timesteps}", flush=True)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, overwrite=True).run(final_samples=False)
        t1 = time.perf_counter()
        x, trajectory = trainer.sample(args.n, frames=50)               # Algorithm 2
        t2 = time.perf_counter()
        png, gif = (os.path.join(cfg.out_dir, f"samples.{ext}") for ext in ("png", "gif"))
        scatter_outputs(trainer, x, trajectory, png, gif, f"{name}: {args.n} samples")
        d = distances_2d(x, cfg)
        print(f"   trained in {t1 - t0:.0f} s, sampled {args.n} points in {t2 - t1:.0f} s")
        print(f"   {format_distances(d)}", flush=True)
        panels.append(viz.scatter_plot(x, reference=trainer.data[:5000], lim=1.5, size=384,
                                       title=f"{name}: SW {d['sw']:.3f} (floor "
                                             f"{d['sw_floor']:.3f})"))
        labels.append(name)
    viz.side_by_side(panels, os.path.join(args.out_dir, "demo.png"))
    print(f"demo done in {time.perf_counter() - t_start:.0f} s; pictures in {args.out_dir}/: "
          "demo.png, */samples.png, */samples.gif (the reverse process), */loss.png")


# ------------------------------------------------------------------------------ the parser


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minidiff", description="Denoising diffusion probabilistic models (Ho et al. "
        "2020) from scratch: train, sample, measure bits/dim, or run the 2-D demo.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (Algorithm 1)",
                       description="Train a denoiser (Ho et al. 2020, Algorithm 1) with "
                       "Adam(W), warm-up, gradient clipping and an EMA; checkpoints are exact, "
                       "so --resume continues a killed run bit for bit.")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        help_text = TRAIN_HELP[f.name] + (f" (default: {default!r})" if default != "" else "")
        if f.type is bool or isinstance(default, bool):
            p.add_argument(flag(f.name), action="store_true", help=help_text)
        elif f.name in CHOICES:
            p.add_argument(flag(f.name), choices=CHOICES[f.name], default=default,
                           type=TRAIN_TYPES.get(f.name, str), help=help_text)
        else:
            p.add_argument(flag(f.name), type=TRAIN_TYPES.get(f.name, str), default=default,
                           help=help_text)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out-dir from its checkpoint (same config)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even though --out-dir holds a run (it is replaced)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    add_common(p)
    p.set_defaults(func=cmd_train, parser=p)

    p = sub.add_parser("sample", help="draw samples from a trained run (Algorithm 2 or DDIM)",
                       description="Draw samples from a run's checkpoint, with its EMA "
                       "weights unless --no-ema. 2-D runs give a scatter plot over the data "
                       "and print the sliced Wasserstein and MMD distances beside their noise "
                       "floors; image runs give a PNG grid.")
    p.add_argument("--run", required=True, help="a run folder (or its checkpoint.npz)")
    p.add_argument("--sampler", choices=("ancestral", "ddim"), default="ancestral",
                   help="ancestral: Ho et al.'s Algorithm 2 over all T steps; ddim: Song et "
                        "al.'s DDIM over --ddim-steps steps (default: ancestral)")
    p.add_argument("--variance", choices=CHOICES["variance"], default=None,
                   help="sigma_t^2 for ancestral sampling: fixed_large (beta_t) or "
                        "fixed_small (beta~_t) (default: the run's)")
    p.add_argument("--ddim-steps", type=int_at_least(1), default=50,
                   help="number of DDIM steps, at most T (default: 50)")
    p.add_argument("--eta", type=float_in(0), default=0.0,
                   help="DDIM's eta: 0 deterministic, 1 like DDPM (default: 0)")
    p.add_argument("--n", type=int_at_least(2), default=None,
                   help="number of samples (default: 2000 points, or 64 images)")
    p.add_argument("--no-ema", action="store_true",
                   help="sample with the raw weights instead of the EMA weights")
    p.add_argument("--gif", action="store_true",
                   help="also write a GIF of the reverse process next to --out")
    p.add_argument("--frames", type=int_at_least(2), default=50,
                   help="about this many GIF frames (default: 50)")
    p.add_argument("--out", default=None,
                   help="the PNG to write (default: RUN/sample.png; the GIF takes its name)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="sampling seed (default: 0)")
    add_common(p)
    p.set_defaults(func=cmd_sample, parser=p)

    p = sub.add_parser("nll", help="bits/dim of held-out images (the variational bound)",
                       description="The variational bound on the negative log-likelihood "
                       "(Ho et al. 2020, Eq. 5) in bits/dim, by calc_bpd_loop over all T "
                       "steps, on held-out images: the digits test split for a digits run.")
    p.add_argument("--run", required=True, help="a run folder (or its checkpoint.npz)")
    p.add_argument("--data-path", default="",
                   help="held-out images for an mnist (IDX file) or folder run")
    p.add_argument("--n", type=int_at_least(1), default=360,
                   help="use the first N held-out images (default: 360, all digits)")
    p.add_argument("--batch-size", type=int_at_least(1), default=120,
                   help="images per pass through the T steps (default: 120)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="seed of the noise draws (default: 0)")
    add_common(p)
    p.set_defaults(func=cmd_nll, parser=p)

    p = sub.add_parser("demo", help="the 2-D experiment on the CPU, in 1.5 to 3.5 minutes",
                       description="The 2-D experiment: a swiss roll and the shipped picture "
                       "turned into points, each learned by an MLP denoiser; then sampled, "
                       "drawn (PNG and GIF of the reverse process) and measured against "
                       "their noise floors.")
    p.add_argument("--out-dir", default="demo_out",
                   help="folder for the pictures (default: demo_out)")
    p.add_argument("--steps", type=int_at_least(1), default=12000,
                   help="training steps per model (default: 12000)")
    p.add_argument("--timesteps", type=int_at_least(21), default=1000,
                   help="T (default: 1000)")
    p.add_argument("--n", type=int_at_least(2), default=2000,
                   help="samples per model (default: 2000)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed (default: 0)")
    add_common(p, threads_help="BLAS threads; 0 leaves BLAS's default (default: 1)")
    p.set_defaults(func=cmd_demo, parser=p)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.blas_limits = None
    try:
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
