"""What every minidiff command shares: argument types that name what they allow, the device
and thread flags, one-line failures, and the pictures a command writes.

    p.add_argument("--n", type=int_at_least(2, 10**9))   # "--n: must be an int in [2, ...]"
    fail("--run runs/x: no checkpoint")                   # one line on stderr, exit status 1

cli.py (train, sample, nll), demo.py and gpucheck.py all import from here, and from nowhere
else in the command line, so no command module imports another.
"""
import argparse
import dataclasses
import json
import math
import os
import sys

import numpy as np

from . import backend, distributed, memory, viz
from .config import TrainConfig, check_field

# ------------------------------------------------------------------------------ argument types


INT_FLAG_MAX = 2**31 - 1           # an int flag without a bound of its own stops here


def int_at_least(lo, hi=INT_FLAG_MAX):
    """An int flag in [lo, hi]: every int flag has an upper bound, so no value overflows what
    it sizes ("--n: must be an int in [2, 1000000000], got '99999999999999999999'")."""
    allowed = f"an int in [{lo}, {hi}]"

    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {s!r:.40}") from None
        if not lo <= v <= hi:
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
    (minidiff/config.py), so the flags and validate() cannot disagree; and --config FILE.

    Every field's flag defaults to None, so that a flag left out can be told from one given:
    `fill_config` puts in the --config file's value, else the field's default."""
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        meta, default = f.metadata, getattr(defaults, f.name)
        help_text = meta["help"] + (f" (default: {default!r})" if default != "" else "")
        if isinstance(default, bool):               # --flip and --no-flip: either may
            p.add_argument(flag(f.name), action=argparse.BooleanOptionalAction,   # override
                           default=None, help=help_text)                        # --config
        elif meta["choices"] is not None:
            p.add_argument(flag(f.name), choices=meta["choices"],
                           type=type(meta["choices"][0]), help=help_text)
        elif meta["range"] is not None:
            p.add_argument(flag(f.name), type=int_at_least(*meta["range"]), help=help_text)
        elif meta["number"] is not None:
            p.add_argument(flag(f.name), type=float_in(**meta["number"]), help=help_text)
        else:
            p.add_argument(flag(f.name), help=help_text)
    p.add_argument("--config", metavar="FILE", default=None,
                   help="a run's config.json: its fields replace the defaults, and the flags "
                        "given override them (repeat a run with --out-dir NEW, or extend it "
                        "with --resume --steps N)")


def fill_config(args):
    """The train command's fields on `args`: each flag given, else the --config file's value,
    else TrainConfig's default."""
    saved = read_config_file(args.config) if args.config else {}
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if getattr(args, f.name) is None:
            setattr(args, f.name, saved.get(f.name, getattr(defaults, f.name)))
    return args


def read_config_file(path):
    """A config.json as a dict of checked TrainConfig fields; fail() in one line naming the
    file and the field otherwise (it may leave fields out: they take their defaults)."""
    try:
        with open(path, encoding="utf-8") as fh:
            saved = json.load(fh)
    except OSError as e:
        fail(f"--config {path}: {describe(e)}")
    except ValueError as e:                         # not JSON, or not UTF-8
        fail(f"--config {path}: not a JSON file of TrainConfig fields ({e})")
    if not isinstance(saved, dict):
        fail(f"--config {path}: must hold a JSON object of TrainConfig fields, as a run's "
             f"config.json does; got a {type(saved).__name__}")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(saved) - set(fields))
    if unknown:
        fail(f"--config {path}: unknown field {unknown[0]!r} (the fields are the flags of "
             f"`minidiff train --help`, with _ for -)")
    for name, value in saved.items():
        try:
            check_field(fields[name], value)
        except ValueError as e:
            fail(f"--config {path}: {e}")
    return saved


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
    p.add_argument("--threads", type=int_at_least(0, 1024), default=None, help=threads_help)


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


def png_path(flag_name, path):
    """A PNG the command may write: a name ending in .png, not a folder, in a folder that
    exists (the GIF takes its name). Anything else fails in one line naming the flag."""
    stem, ext = os.path.splitext(os.path.basename(path))
    if ext.lower() != ".png" or not stem.strip() or stem.startswith("."):
        fail(f"{flag_name}: must be a file name ending in .png, like samples.png; got {path!r}")
    if os.path.isdir(path):
        fail(f"{flag_name} {path}: is a folder; give a .png file name inside it")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        fail(f"{flag_name} {path}: the folder {parent} does not exist; create it first")
    return path


def folder_name(flag_name, path):
    """An --out-dir: a name that is not empty or blank (the folder may not exist yet)."""
    if not path.strip():
        fail(f"{flag_name}: must name a folder, got {path!r}")
    return path


def refuse_unless_fits(terms, task, flags, advice):
    """fail() in one line when an estimate of minidiff.memory exceeds the free memory."""
    try:
        memory.check_fits(terms, task, flags, advice)
    except ValueError as e:
        fail(str(e))


def sample_in_batches(trainer, n, seed, **kw):
    """trainer.sample(n, **kw) in batches of memory.sample_batch, whose working memory is
    bounded whatever n is. Batch 0 draws from the generator as the caller left it, so an n
    within one batch gives exactly trainer.sample(n)'s points; batch k > 0 draws from the seed
    sequence (seed, k), so a bigger n has the distribution of one big batch, not its points.
    Returns (x (n, ...), trajectory), each state of the trajectory joined over the batches;
    the generator is left as it was found, as trainer.sample leaves it."""
    size, state = memory.sample_batch(trainer.cfg, n), backend.get_rng_state()
    xs, paths = [], []
    for k, b0 in enumerate(range(0, n, size)):
        if k > 0:
            backend.manual_seed(int(np.random.SeedSequence([seed, k]).generate_state(1)[0]))
        x, path = trainer.sample(min(size, n - b0), **kw)
        xs.append(x)
        paths.append(path)
    backend.set_rng_state(state)
    if len(xs) == 1:
        return xs[0], paths[0]
    joined = [(s, np.concatenate([p[i][1] for p in paths]))       # state i of every batch
              for i, (s, _) in enumerate(paths[0])]
    return np.concatenate(xs), joined


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
