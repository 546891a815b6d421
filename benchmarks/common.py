"""What every benchmark here shares, without PyTorch: the workloads, their sizes, the timer.

The workloads are those of every speed figure since 2026-11: one training step and one sampling
step of the `tiny` and `small` U-Net presets and of the 2-D MLP, at fixed batch sizes. PARAMS and
FLOPS are their sizes as the figures were measured; the PyTorch side checks its own counts against
them (torch.utils.flop_counter: conv, matmul and bmm only, 2 per multiply-add, a training step
forward + backward), so old and new figures compare.

The machine may be shared: `run_rounds` interleaves the workloads round by round (a slow phase
hits all of them alike) and marks a timed block "contended" when other processes kept more than
FOREIGN_MAX of a core busy meanwhile (/proc/stat's busy time less this process's CPU time).
"""
import os
import statistics
import sys
import time

from threadpoolctl import threadpool_limits

from minidiff.models import MLPDenoiser
from minidiff.models.unet import PRESETS, unet_from_preset

MLP2D = dict(data_dim=2, time_dim=128, hidden=256, depth=3)   # [x, sinusoid(t)] -> 3 x 256 -> 2
TRAIN_BATCHES = [("tiny", 32), ("small", 16), ("mlp2d", 32), ("mlp2d", 1024)]
SAMPLE_BATCHES = [("tiny", 64), ("small", 64), ("mlp2d", 10_000)]
PARAMS = {"tiny": 701_345, "small": 6_472_195, "mlp2d": 165_634}
FLOPS = {"train tiny b32": 12_683_313_152, "train small b16": 152_337_645_568,
         "train mlp2d b32": 29_523_968, "train mlp2d b1024": 944_766_976,
         "sample tiny b64": 8_458_862_592, "sample small b64": 203_193_057_280,
         "sample mlp2d b10000": 3_297_280_000}

T, BETA_START, BETA_END = 1000, 1e-4, 0.02     # Ho et al. 2020, §4: the linear schedule
LR = 2e-4                                      # Adam's learning rate in every training step
SAMPLE_T = 499                                 # the paper's t = 500, 0-based as in minidiff

FOREIGN_MAX = 0.1          # cores other processes may keep busy before a block is contended
FOREIGN_MIN_S = 0.04       # ... and seconds (/proc/stat counts 10 ms ticks)


def jobs(only=None):
    """[(key, kind, config, batch)] of every workload, training first; `only` keeps configs."""
    js = [(f"train {c} b{b}", "train", c, b) for c, b in TRAIN_BATCHES]
    js += [(f"sample {c} b{b}", "sample", c, b) for c, b in SAMPLE_BATCHES]
    return [j for j in js if not only or j[2] in only]


def minidiff_model(name):
    """minidiff's network for a config name: a U-Net preset, or the 2-D MLP."""
    return MLPDenoiser(**MLP2D) if name == "mlp2d" else unet_from_preset(name)


def input_shape(name, batch):
    """(B, 2) for the MLP, (B, C, H, W) for a U-Net preset."""
    if name == "mlp2d":
        return (batch, MLP2D["data_dim"])
    c = PRESETS[name]
    return (batch, c["in_channels"], c["image_size"], c["image_size"])


# ---------------------------------------------------------------------------- the timer
def machine_busy_seconds():
    """CPU seconds every process of the machine spent busy so far (None without /proc)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")   # all but idle, iowait


def timed_block(fn, iters, min_seconds):
    """([seconds a call], foreign cores or None): at least `iters` calls and `min_seconds`."""
    b0, o0, w0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    times = []
    while len(times) < iters or sum(times) < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    if b0 is None:
        return times, None
    wall = time.perf_counter() - w0
    foreign = max(0.0, (machine_busy_seconds() - b0) - (time.process_time() - o0))
    return times, (foreign / wall if foreign > FOREIGN_MIN_S else 0.0)


def run_rounds(workloads, rounds=4, iters=3, min_seconds=0.2, warmup=2):
    """{name: stats} for {name: fn}: each round times every workload in turn (a block each).

    stats: n, median, p25, p75, min, max (seconds a call), blocks, contended (blocks during which
    other processes kept more than FOREIGN_MAX cores busy), clean (median over the other blocks,
    None when every block was contended) and foreign_max (cores)."""
    for fn in workloads.values():
        for _ in range(warmup):
            fn()
    blocks = {name: [] for name in workloads}
    for _ in range(rounds):
        for name, fn in workloads.items():
            blocks[name].append(timed_block(fn, iters, min_seconds))
    return {name: block_stats(b) for name, b in blocks.items()}


def block_stats(blocks):
    times = sorted(t for ts, _ in blocks for t in ts)
    busy = [f is not None and f > FOREIGN_MAX for _, f in blocks]
    clean = [t for (ts, _), b in zip(blocks, busy) if not b for t in ts]
    q = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return dict(n=len(times), median=statistics.median(times), p25=q[0], p75=q[2],
                min=times[0], max=times[-1], blocks=len(blocks), contended=sum(busy),
                clean=statistics.median(clean) if clean else None,
                foreign_max=max((f for _, f in blocks if f is not None), default=None))


def ratio(a, b):
    """'a/b' to two places, or '-' when b is missing."""
    return f"{a / b:.2f}" if a is not None and b else "-"


def set_threads(n):
    """n BLAS threads (NumPy's) and n PyTorch threads, when PyTorch is imported."""
    threadpool_limits(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
