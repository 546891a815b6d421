"""`minidiff demo`: the 2-D experiment, end to end on the CPU in a few minutes.

An MLP learns each of two 2-D sets (the swiss roll, and the shipped picture as points) with
Ho et al. 2020's L_simple; Algorithm 2 then draws 2000 points from each, and the demo writes a
scatter plot, a GIF of the reverse process, and the distances to the data beside their noise
floors.
"""
import os
import time

from . import memory, viz
from .cli_common import (add_common, fail, folder_name, int_at_least, refuse_unless_fits,
                         sample_in_batches, scatter_outputs, set_device, set_threads)
from .config import TrainConfig
from .metrics import format_distances
from .train import Trainer, distances_2d

DEMO_MARK = ".minidiff-demo"      # marks a folder the demo made, so a rerun may replace it
DEMO_FOURIER_LEVELS = 8           # frequencies 2^0 π … 2^7 π of each coordinate
# Seconds per training step (batch 256) and per reverse step for 2000 points, fastest and
# slowest seen on 2-core CPUs of the kind CI uses (whole demos of 109 s to 257 s).
DEMO_TRAIN_STEP_S = (0.0033, 0.008)
DEMO_SAMPLE_STEP_S = (0.0075, 0.03)
DEMO_FRAMES = 50                  # states of the reverse process in each GIF


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


def demo_config(args, name):
    """The run of one set. The MLP reads each point through 8 levels of positional encoding,
    as in Mildenhall et al. 2020, Eq. 4: it draws the picture's thin lines sharp where raw
    coordinates blur them (the README's before and after), the swiss roll as before."""
    return TrainConfig(data=name, steps=args.steps, timesteps=args.timesteps, batch_size=256,
                       lr=2e-3, warmup=100, ema_decay=0.995,
                       fourier_levels=DEMO_FOURIER_LEVELS, seed=args.seed,
                       ckpt_every=args.steps, out_dir=os.path.join(args.out_dir, name))


def cmd_demo(args):
    """Ho et al. 2020's ε-prediction (L_simple, Eq. 14) on two 2-D sets: the swiss roll, and
    the shipped picture as points. Each is trained, sampled
    with Ho et al. 2020's Algorithm 2, drawn and measured against its noise floor."""
    set_device(args)
    set_threads(args, mlp=True)
    folder_name("--out-dir", args.out_dir)
    refuse_unless_fits(memory.sample_bytes(demo_config(args, "swiss_roll"), args.n, DEMO_FRAMES),
                       "the samples and their pictures", f"--n {args.n}", "a smaller --n")
    demo_folder(args.out_dir)
    fastest, slowest = demo_estimate(args.steps, args.timesteps, args.n)
    print(f"the demo trains and samples two 2-D sets: expect {fastest / 60:.1f} to "
          f"{slowest / 60:.1f} minutes on 2 idle CPU cores", flush=True)
    t_start = time.perf_counter()
    panels, labels = [], []
    for name in ("swiss_roll", "picture"):
        cfg = demo_config(args, name)
        print(f"== {name}: an MLP predicting ε, {args.steps} steps at batch 256, "
              f"T = {args.timesteps}", flush=True)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, overwrite=True).run(final_samples=False)
        t1 = time.perf_counter()
        # Ho et al. 2020, Algorithm 2
        x, trajectory = sample_in_batches(trainer, args.n, args.seed, frames=DEMO_FRAMES,
                                          progress=True)          # 15-30 s: a bar on stderr
        t2 = time.perf_counter()
        png, gif = (os.path.join(cfg.out_dir, f"samples.{ext}") for ext in ("png", "gif"))
        scatter_outputs(trainer, x, trajectory, png, gif, f"{name}: {args.n} samples")
        d = distances_2d(x[:memory.DISTANCE_POINTS], cfg)      # MMD's n x n kernels: bounded
        print(f"   trained in {t1 - t0:.0f} s, sampled {args.n} points in {t2 - t1:.0f} s")
        print(f"   {format_distances(d)}", flush=True)
        panels.append(viz.scatter_plot(x, reference=trainer.data[:5000], lim=1.5, size=384,
                                       title=f"{name}: SW {d['sw']:.3f} (floor "
                                             f"{d['sw_floor']:.3f})"))
        labels.append(name)
    viz.side_by_side(panels, os.path.join(args.out_dir, "demo.png"))
    print(f"demo done in {time.perf_counter() - t_start:.0f} s; pictures in {args.out_dir}/: "
          "demo.png, */samples.png, */samples.gif (the reverse process), */loss.png")


def add_parser(sub):
    p = sub.add_parser("demo", help="the 2-D experiment on the CPU, in 1.5 to 4.5 minutes",
                       description="The 2-D experiment: a swiss roll and the shipped picture "
                       "turned into points, each learned by an MLP denoiser; then sampled, "
                       "drawn (PNG and GIF of the reverse process) and measured against "
                       "their noise floors.")
    p.add_argument("--out-dir", default="demo_out",
                   help="folder for the pictures (default: demo_out)")
    p.add_argument("--steps", type=int_at_least(1, 10**9), default=12000,
                   help="training steps per model (default: 12000)")
    p.add_argument("--timesteps", type=int_at_least(21, 100_000), default=1000,
                   help="T (default: 1000)")
    p.add_argument("--n", type=int_at_least(2, 10**9), default=2000,
                   help="samples per model; distances use the first 2000 (default: 2000)")
    p.add_argument("--seed", type=int_at_least(0, 2**63 - 1), default=0,
                   help="seed (default: 0)")
    add_common(p, threads_help="BLAS threads; 0 leaves BLAS's default (default: 1)")
    p.set_defaults(func=cmd_demo, parser=p)
    return p
