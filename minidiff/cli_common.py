"""What every minidiff command shares: argument types that name what they allow, the device
and thread flags, one-line failures, and the pictures a command writes.

    p.add_argument("--n", type=int_at_least(2))          # "--n: must be an int >= 2, got '1'"
    fail("--run runs/x: no checkpoint")                   # one line on stderr, exit status 1

cli.py (train, sample, nll), demo.py and gpucheck.py all import from here, and from nowhere
else in the command line, so no command module imports another.
"""
import argparse
import dataclasses
import math
import os
import sys

import numpy as np

from . import backend, distributed, viz
from .config import TrainConfig

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


def flag(name):
    return "--" + name.replace("_", "-")


def add_config_flags(p):
    """One flag per TrainConfig field, its type, allowed values and help read from the field
    (minidiff/config.py), so the flags and validate() cannot disagree."""
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        meta, default = f.metadata, getattr(defaults, f.name)
        help_text = meta["help"] + (f" (default: {default!r})" if default != "" else "")
        if isinstance(default, bool):
            p.add_argument(flag(f.name), action="store_true", help=help_text)
        elif meta["choices"] is not None:
            p.add_argument(flag(f.name), choices=meta["choices"], default=default,
                           type=type(meta["choices"][0]), help=help_text)
        elif meta["range"] is not None:
            p.add_argument(flag(f.name), type=int_at_least(*meta["range"]), default=default,
                           help=help_text)
        elif meta["number"] is not None:
            p.add_argument(flag(f.name), type=float_in(**meta["number"]), default=default,
                           help=help_text)
        else:
            p.add_argument(flag(f.name), default=default, help=help_text)


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
    distributed.launch.report(f"minidiff: error: {msg}")     # N ranks: then the job ends
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
