"""Peak memory of a command, estimated from its flags before anything is allocated.

A training step keeps every activation of the forward pass until the backward pass (the
autograd graph holds them), so its peak is about

    parameters x 4 bytes x 5         weights, gradients, Adam's m and v, the EMA
  + B x (what one example keeps)     the activations, block by block, with each attention's
                                     softmax A (B, N, N), N = H·W of its level
  + B x N^2 x 4 bytes x 3            dA, dS and a temporary in the largest attention's backward
  + conv2d's workspace               im2col buffers (functional/_workspace.py)

Sampling and `nll` run the network under no_grad, where only the skip connections, a few
working tensors and one attention's scores are alive at once; sampling draws in batches of
bounded memory (sample_batch), so `--n` sizes only the output. Each estimate is a dict
{what: bytes}, so a refusal can name the term that dominates. They count float32 arrays and
aim to be right within a factor of two: tests/test_cli_limits.py holds them to measured peaks.

    terms = train_step_bytes(cfg)
    check_fits(terms, "one training step", "--image-size 1024 with --model tiny",
               "a smaller --image-size or --batch-size")        # ValueError if it cannot fit
"""
import math
import os
from dataclasses import dataclass

from . import backend
from .datakinds import DATA_KINDS
from .functional._workspace import WORKSPACE_BYTES
from .models.unet import PRESETS

FLOAT = 4                   # bytes of a float32
SAMPLE_BATCH_BYTES = 1 << 30    # sampling draws at most this much working memory per batch
DISTANCE_POINTS = 2000      # 2-D distances are measured on the first this many samples
PLOT_BYTES_PER_POINT = 64   # matplotlib's copies of one scatter point (float64 x, y, paths)

# ------------------------------------------------------------------------------ free memory


def available_bytes():
    """Memory a command may still take: MemAvailable of /proc/meminfo (Linux), else the free
    pages (os.sysconf); on a GPU, the device's free memory."""
    if backend.get_device() == "cuda":
        import cupy
        return int(cupy.cuda.runtime.memGetInfo()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024          # "MemAvailable: 123 kB"
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def human(n):
    """Bytes as people read them: 512 MiB, 1.1 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024


def check_fits(terms, task, flags, advice):
    """Raise ValueError, in one line, when the sum of `terms` exceeds the free memory."""
    need, free = sum(terms.values()), available_bytes()
    if need > free:
        top = max(terms, key=terms.get)
        raise ValueError(f"{flags} needs about {human(need)} for {task} ({top}: "
                         f"{human(terms[top])}), {human(free)} are free; use {advice}")

# ------------------------------------------------------------------------------ the U-Net


def unet_blocks(preset, c, size):
    """The U-Net's blocks in forward order, as UNet.__init__ builds them (models/unet.py):
    [(kind, cin, cout, res)] with kind "in", "res", "attn", "down" or "up"; and the skip
    connections the down path pushes, [(channels, res)]."""
    p = PRESETS[preset]
    ch, mult, attn = p["base_channels"], p["ch_mult"], p["attn_resolutions"]
    blocks, skips, cur, res = [("in", c, ch, size)], [(ch, size)], ch, size
    for level, m in enumerate(mult):
        for _ in range(p["num_res_blocks"]):
            blocks.append(("res", cur, ch * m, res))
            cur = ch * m
            if res in attn:
                blocks.append(("attn", cur, cur, res))
            skips.append((cur, res))
        if level != len(mult) - 1:
            blocks.append(("down", cur, cur, res))
            res //= 2
            skips.append((cur, res))
    pushed = list(skips)
    blocks += [("res", cur, cur, res), ("attn", cur, cur, res), ("res", cur, cur, res)]
    for level, m in reversed(list(enumerate(mult))):
        for _ in range(p["num_res_blocks"] + 1):
            blocks.append(("res", cur + skips.pop()[0], ch * m, res))
            cur = ch * m
            if res in attn:
                blocks.append(("attn", cur, cur, res))
        if level != 0:
            blocks.append(("up", cur, cur, res))
            res *= 2
    return blocks, pushed


def conv_params(cin, cout, k):
    return cin * cout * k * k + cout                        # weight (cout, cin, k, k), bias


def unet_params(preset, c, size, learn_sigma):
    """Parameters of the U-Net, counted block by block (tests hold it to model.parameters())."""
    ch = PRESETS[preset]["base_channels"]
    tdim = 4 * ch
    n = ch * tdim + tdim + tdim * tdim + tdim               # the timestep MLP: ch -> 4ch -> 4ch
    for kind, cin, cout, _ in unet_blocks(preset, c, size)[0]:
        if kind == "res":                                   # GN, conv, Dense(temb), GN, conv
            n += 2 * cin + conv_params(cin, cout, 3) + tdim * cout + cout + 2 * cout
            n += conv_params(cout, cout, 3) + (conv_params(cin, cout, 1) if cin != cout else 0)
        elif kind == "attn":                                # GN, qkv (C -> 3C), proj (C -> C)
            n += 2 * cin + conv_params(cin, 3 * cin, 1) + conv_params(cin, cin, 1)
        else:                                               # conv_in, the stride-2 or x2 conv
            n += conv_params(cin, cout, 3)
    return n + 2 * ch + conv_params(ch, c * (2 if learn_sigma else 1), 3)   # GN, conv_out


def unet_kept(blocks):
    """Floats one example keeps for the backward pass. Per block of C x H x W: a ResBlock
    keeps its input's GroupNorm (2 cin: x̂ and the output) and about 7 tensors of cout (conv,
    + temb, GroupNorm x2, conv, skip, sum); an attention block 8 of C (GN, q, k, v, out,
    proj, sum) and its softmax A (N x N, N = H·W); a x2 upsample its input at 2H x 2W and
    the conv's output."""
    kept = 0
    for kind, cin, cout, res in blocks:
        pixels = res * res
        if kind == "in":
            kept += cout * pixels
        elif kind == "down":
            kept += cout * pixels // 4
        elif kind == "res":
            kept += (2 * cin + 7 * cout) * pixels
        elif kind == "attn":
            kept += 8 * cin * pixels + pixels * pixels
        else:
            kept += 2 * cin * 4 * pixels
    return kept


def largest_attention(blocks):
    """N^2 = (H·W)^2 of the largest attention: the scores of one example, floats."""
    return max((res * res) ** 2 for kind, _, _, res in blocks if kind == "attn")


def unet_live(blocks, skips):
    """Floats one example needs at once under no_grad, besides attention: every skip
    connection (the down path's outputs wait for the up path) and 6 working tensors of the
    widest block."""
    skip = sum(c * res * res for c, res in skips)
    widest = max(max(cin, cout) * res * res for _, cin, cout, res in blocks)
    return skip + 6 * widest


def widest_conv(blocks):
    """C x H x W of the widest image a conv copies (im2col copies the smaller of cin, cout)."""
    return max(min(cin, cout) * res * res for _, cin, cout, res in blocks)

# ------------------------------------------------------------------------------ the MLP


def mlp_widths(cfg, dim):
    """The MLP's layer widths, as MLPDenoiser builds them (models/mlp.py)."""
    x_width = dim * (1 + 2 * cfg.fourier_levels)                # x_t, or its encoding
    out = dim * (2 if cfg.variance == "learned_range" else 1)
    return [x_width + cfg.time_dim] + [cfg.hidden] * cfg.depth + [out]


def mlp_params(widths):
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))   # W (a, b), bias (b,)

# ------------------------------------------------------------------------------ per example


@dataclass(frozen=True)
class Footprint:
    """What cfg's network costs, counted in floats, before any of it is built."""
    shape: tuple            # one example: (2,) or (C, H, W)
    params: int             # parameters
    kept: int               # floats one example keeps for the backward pass
    live: int               # floats one example needs at once under no_grad
    attention: int = 0      # N^2 of the largest attention, N = H·W (0: none)
    conv: int = 0           # C x H x W of the widest conv's image (0: none)

    def workspace(self, slots):
        """conv2d's reused buffers (functional/_workspace.py): each slot (5 in training, 3
        without gradients) holds WORKSPACE_BYTES at least, or one image of the widest conv,
        of which im2col's `cols` takes kh x kw = 9 and each other slot one."""
        if not self.conv:
            return 0
        return max(slots * WORKSPACE_BYTES, (9 + slots - 1) * self.conv * FLOAT)

    def attention_name(self):
        side = round(self.attention ** 0.25)                    # N^2 = (H·W)^2 = side^4
        return f"attention at {side}x{side}"


def footprint(cfg):
    shape = DATA_KINDS[cfg.data].shape(cfg)
    learn_sigma = cfg.variance == "learned_range"
    if cfg.model == "mlp":
        widths = mlp_widths(cfg, shape[0])
        # each Linear's output, its SiLU, and the gradient flowing back through it
        kept = 3 * sum(widths) + 3 * cfg.time_dim
        live = 4 * max(widths) + 3 * cfg.time_dim               # a layer's input and output
        return Footprint(shape, mlp_params(widths), kept, live)
    c, size = shape[0], shape[1]
    blocks, skips = unet_blocks(cfg.model, c, size)
    return Footprint(shape, unet_params(cfg.model, c, size, learn_sigma), unet_kept(blocks),
                     unet_live(blocks, skips), largest_attention(blocks), widest_conv(blocks))

# ------------------------------------------------------------------------------ the commands


def train_step_bytes(cfg):
    """{what: bytes} at the peak of one training step of cfg (batch B = cfg.batch_size), and
    of the sample pictures the run draws (all --n-samples at once: Trainer.save_samples),
    counted as if both were alive together."""
    f, B = footprint(cfg), cfg.batch_size
    terms = {"weights, gradients, Adam's m and v, EMA": 5 * f.params * FLOAT,
             "activations": B * f.kept * FLOAT}                 # B x what one example keeps
    if f.attention:
        # the softmax A that each attention block keeps is in `kept`; the backward of the
        # largest builds dA, dS and a temporary (B, N, N) beside it
        terms[f.attention_name()] = 3 * B * f.attention * FLOAT
        terms["conv2d workspace"] = f.workspace(slots=5)
    pictured = cfg.n_samples if len(f.shape) == 1 else min(cfg.n_samples, 64)
    terms[f"--n-samples {pictured} in one batch"] = pictured * sample_working_bytes(cfg)
    return terms


def sample_working_bytes(cfg):
    """Bytes one sample needs at once in the reverse process: its live tensors under no_grad
    and, at the largest attention, its scores, exp and softmax (3 N^2)."""
    f = footprint(cfg)
    return (f.live + 3 * f.attention) * FLOAT


def sample_batch(cfg, n):
    """Samples drawn at once: as many as fit in SAMPLE_BATCH_BYTES of working memory (at least
    one), so `--n` only sets the size of the output. Depends on the config, never on the
    machine, so a seed gives the same samples everywhere."""
    return max(1, min(n, SAMPLE_BATCH_BYTES // sample_working_bytes(cfg)))


def sample_bytes(cfg, n, frames):
    """{what: bytes} at the peak of `minidiff sample --n n` (frames: GIF states, or 0)."""
    f = footprint(cfg)
    shape, size = f.shape, math.prod(f.shape)                  # floats of one sample
    terms = {"the run's weights, EMA and optimiser state": 5 * f.params * FLOAT,
             "one batch of the reverse process":
             sample_batch(cfg, n) * sample_working_bytes(cfg) + f.workspace(slots=3),
             # x0 of every batch, their concatenation, and `frames` states of the chain
             "the samples": n * size * FLOAT * (2 + 2 * frames)}
    if len(shape) == 1:                                         # points: a scatter plot
        terms["the scatter plot"] = n * PLOT_BYTES_PER_POINT * (2 if frames else 1)
    else:                                                       # images: a grid at scale 3
        c, h, w = shape
        terms["the image grid"] = n * c * (h + 2) * (w + 2) * 9 * 2 + 2 * n * size * FLOAT
    return terms


def nll_bytes(cfg, n, batch, timesteps):
    """{what: bytes} at the peak of `minidiff nll` on n images, `batch` at a time."""
    f = footprint(cfg)
    return {"the run's weights, EMA and optimiser state": 5 * f.params * FLOAT,
            "one batch through the network":
            batch * sample_working_bytes(cfg) + f.workspace(slots=3),
            # calc_bpd_loop's terms, x̂0 and ε errors: 3 (n, T) float64, kept for every batch
            "the bound's terms per step": 3 * n * timesteps * 8}


def train_flags(cfg):
    """(the flags that set a training step's memory, as said to the user; the advice)."""
    if cfg.model == "mlp":
        return (f"--hidden {cfg.hidden} with --depth {cfg.depth} and --batch-size "
                f"{cfg.batch_size}", "a smaller --hidden, --depth, --batch-size or --n-samples")
    c, h, w = DATA_KINDS[cfg.data].shape(cfg)
    return (f"--model {cfg.model} on {c}x{h}x{w} images (--data {cfg.data}, --image-size "
            f"{cfg.image_size}) at --batch-size {cfg.batch_size}",
            "a smaller --image-size, --batch-size, --n-samples or --model")
