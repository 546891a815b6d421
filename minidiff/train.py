"""The training loop (Ho et al. 2020, Algorithm 1), with EMA, checkpoints and exact resume.

    repeat
        x0 ~ q(x0)                                     a batch of data
        t ~ U{1..T}, ε ~ N(0, I)                       (0-based here: t ~ U{0..T-1})
        step on ∇θ ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖²   or the loss the config chooses
    until converged

A run lives in one folder:
    checkpoint.npz   weights, optimiser state, EMA, step, the RNG state and the config: all it
                     takes to continue bit for bit (arrays + JSON, written atomically)
    log.csv          step, loss, grad_norm, lr: one row per `log_every` steps
    loss.png         the loss curve, redrawn at every checkpoint
    samples*.png     sample pictures from the EMA weights
    config.json      the config, for people to read

    trainer = Trainer(TrainConfig(data="swiss_roll", steps=2000, out_dir="runs/roll")).run()
    trainer = Trainer(cfg, resume=True).run()     # continues a killed run exactly
    trainer = Trainer.from_checkpoint("runs/roll/checkpoint.npz")   # for sampling
"""
import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from . import backend, data, metrics, rundir, viz
from .checkpoint import check_like, load_checkpoint, save_checkpoint
from .diffusion import (GaussianDiffusion, ddim_sample_loop_progressive, ddim_timesteps,
                        get_beta_schedule)
from .models import MLPDenoiser, unet_from_preset
from .optim import EMA, Adam, AdamW, LinearWarmup, clip_grad_norm
from .progress import Progress

TWO_D = tuple(data.TWO_D_SETS) + ("picture",)
IMAGE_DATA = ("digits", "mnist", "folder")

# The allowed values of every field that takes a name (the CLI offers these as choices).
CHOICES = {
    "data": TWO_D + IMAGE_DATA,
    "model": ("mlp", "tiny", "small", "cifar10"),
    "schedule": ("linear", "quadratic", "sigmoid", "constant", "cosine"),
    "parameterization": ("eps", "x0", "mu", "v"),
    "loss": ("simple", "mu_mse", "kl"),
    "mu_mse_weight": ("none", "bound"),
    "variance": ("fixed_large", "fixed_small"),
    "optimizer": ("adam", "adamw"),
    "channels": (1, 3),
}

# The range of every int field; validate() and the CLI's flags read this one table. The upper
# bounds stop a typo from asking for terabytes (T = 10^12 is a schedule of 10^12 numbers).
INT_RANGES = {
    "n_points": (2, 10_000_000), "image_size": (1, 1024), "hidden": (1, 65536),
    "depth": (1, 256), "time_dim": (4, 65536), "timesteps": (1, 100_000),
    "steps": (1, 10**9), "batch_size": (1, 65536), "warmup": (0, 10**9),
    "seed": (0, 2**63 - 1), "ckpt_every": (1, 10**9), "sample_every": (0, 10**9),
    "n_samples": (2, 1_000_000), "log_every": (1, 10**9),
}


@dataclass
class TrainConfig:
    # data
    data: str = "swiss_roll"         # a 2-D set, "picture", "digits", "mnist" or "folder"
    data_path: str = ""              # the picture, the IDX file or the image folder
    n_points: int = 20000            # size of a 2-D data set
    image_size: int = 16             # for "mnist" and "folder"
    channels: int = 1                # for "folder": 1 (grey) or 3 (RGB)
    flip: bool = False               # random horizontal flips of images
    # model
    model: str = "mlp"               # "mlp", or a U-Net preset: "tiny", "small", "cifar10"
    hidden: int = 256                # MLP width
    depth: int = 3                   # MLP hidden layers
    time_dim: int = 128              # MLP timestep-embedding size
    dropout: float = 0.0             # U-Net dropout (Ho et al.: 0.1 on CIFAR-10)
    # diffusion
    timesteps: int = 1000
    schedule: str = "linear"         # linear β: 1e-4 → 0.02 at T = 1000, scaled by 1000/T
    parameterization: str = "eps"    # eps | x0 | mu | v
    loss: str = "simple"             # simple | mu_mse | kl
    mu_mse_weight: str = "none"      # none | bound (the 1/(2σ_t²) of Eq. 8)
    variance: str = "fixed_large"    # fixed_large | fixed_small
    # optimisation
    steps: int = 2000
    batch_size: int = 256
    optimizer: str = "adamw"         # adam | adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 0                  # linear LR warm-up steps (Ho et al.: 5000)
    grad_clip: float = 1.0           # global gradient-norm clip (Ho et al.: 1.0)
    ema_decay: float = 0.999         # Ho et al.: 0.9999 for long runs (warmed up, see below)
    seed: int = 0
    # bookkeeping
    out_dir: str = "runs/run"
    ckpt_every: int = 500
    sample_every: int = 0            # 0: only at the end
    n_samples: int = 1000            # 2-D points (or up to 64 images) per sample picture
    log_every: int = 1               # rows of log.csv

    # Fields that may differ between a run and its resumption.
    RESUMABLE = ("steps", "out_dir", "ckpt_every", "sample_every", "n_samples", "log_every")

    def validate(self):
        """Check every field; the error names the field, the value and what is allowed."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, allowed: "
                                 f"{', '.join(map(str, allowed))}")
        for name, (lo, hi) in INT_RANGES.items():
            _check_int(name, getattr(self, name), lo, hi)
        if self.time_dim % 2 or self.time_dim < 4:
            raise ValueError(f"time_dim: must be even and >= 4, got {self.time_dim}")
        _check_float("lr", self.lr, 0, lo_open=True)
        _check_float("grad_clip", self.grad_clip, 0, lo_open=True)
        _check_float("weight_decay", self.weight_decay, 0)
        _check_float("ema_decay", self.ema_decay, 0, 1, hi_open=True)
        _check_float("dropout", self.dropout, 0, 1, hi_open=True)
        for name in ("data_path", "out_dir"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip: must be true or false, got {self.flip!r}")
        if self.data in TWO_D and self.model != "mlp":
            raise ValueError(f"model: 2-D data ({self.data}) needs model 'mlp', got "
                             f"{self.model!r}")
        if self.data in IMAGE_DATA and self.model == "mlp":
            raise ValueError(f"model: image data ({self.data}) needs a U-Net preset "
                             "(tiny, small, cifar10), got 'mlp'")
        if self.model == "mlp" and self.dropout > 0:
            raise ValueError(f"dropout: the MLP has no dropout layers; got {self.dropout}, "
                             "allowed: 0 (dropout is for the U-Net presets)")
        if self.data in ("mnist", "folder") and not self.data_path:
            raise ValueError(f"data_path: data {self.data!r} needs a path")
        if self.loss == "mu_mse" and self.parameterization != "mu":
            raise ValueError("loss: 'mu_mse' trains a network that predicts μ; set "
                             "parameterization='mu'")
        if self.mu_mse_weight != "none" and self.loss != "mu_mse":
            raise ValueError(f"mu_mse_weight: {self.mu_mse_weight!r} only applies to "
                             f"loss='mu_mse', got loss={self.loss!r}")
        schedule_betas(self.schedule, self.timesteps)           # a bad T fails here, clearly
        return self

    def to_json(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {unknown}")
        return cls(**d)


def _check_int(name, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ValueError(f"{name}: must be an int in [{lo}, {hi}], got {v!r}")


def _check_float(name, v, lo, hi=math.inf, lo_open=False, hi_open=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        lo_b, hi_b = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name}: must be a finite number in {lo_b}{lo}, {hi}{hi_b}, got {v!r}")


class NonFiniteLoss(RuntimeError):
    """Training met a NaN or inf; the last good checkpoint was left as it was."""


class ModelDiverged(RuntimeError):
    """Sampling met a NaN or inf: the weights produce garbage."""


# ------------------------------------------------------------------------------ building blocks
def schedule_betas(name, T):
    """β_1 … β_T. The β-range schedules keep Ho et al.'s 1e-4 → 0.02 at T = 1000 (§4) and
    scale it by 1000/T otherwise, as Nichol & Dhariwal's code does, so that ᾱ_T ≈ 0 (x_T is
    noise) at any T. (Unscaled, T = 100 would end at ᾱ_T ≈ 0.36: far from N(0, I).)"""
    if name in ("linear", "quadratic", "sigmoid"):
        scale = 1000 / T
        if 0.02 * scale >= 1:
            raise ValueError(f"timesteps: the {name} schedule scaled by 1000/T needs T >= 21 "
                             f"(β_T = 0.02·1000/T < 1), got {T}")
        return get_beta_schedule(name, T, beta_start=1e-4 * scale, beta_end=0.02 * scale)
    return get_beta_schedule(name, T)


def build_data(cfg):
    """The training set: an (N, 2) array, an (N, C, H, W) array, or an ImageFolder."""
    if cfg.data in TWO_D:
        return draw_2d(cfg, cfg.n_points, np.random.default_rng(cfg.seed))  # fixed by seed
    if cfg.data == "digits":
        return data.load_digits(size=16, split="train")
    if cfg.data == "mnist":
        return data.load_mnist_images(cfg.data_path, size=cfg.image_size)
    return data.ImageFolder(cfg.data_path, cfg.image_size, channels=cfg.channels, flip=cfg.flip)


def draw_2d(cfg, n, g):
    """n fresh points of the 2-D distribution of cfg.data, drawn with the generator g."""
    if cfg.data == "picture":
        return data.points_from_picture(cfg.data_path or data.default_picture_path(), n, rng=g)
    return data.TWO_D_SETS[cfg.data](n, rng=g)


def config_shape(cfg):
    """(C, H, W) or (2,) from the config alone, as build_data would give it."""
    if cfg.data in TWO_D:
        return (2,)
    if cfg.data == "digits":
        return (1, 16, 16)
    channels = cfg.channels if cfg.data == "folder" else 1
    return (channels, cfg.image_size, cfg.image_size)


def saved_config(path, meta):
    """The TrainConfig inside a checkpoint's metadata, checked field by field."""
    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint {path}: meta.config: missing or not a JSON object. "
                         "Nothing was loaded or changed")
    try:
        return TrainConfig.from_json(saved).validate()
    except (ValueError, TypeError) as e:
        raise ValueError(f"checkpoint {path}: meta.config: {e}. Nothing was loaded or "
                         "changed") from None


def data_shape(train_data):
    """(C, H, W) or (2,): the shape of one example."""
    if isinstance(train_data, data.ImageFolder):
        return tuple(train_data.images.shape[1:])
    return tuple(train_data.shape[1:])


def build_model(cfg, shape):
    if cfg.model == "mlp":
        return MLPDenoiser(data_dim=shape[0], time_dim=cfg.time_dim, hidden=cfg.hidden,
                           depth=cfg.depth)
    c, h, w = shape
    if h != w:
        raise ValueError(f"image_size: images must be square, got {h}x{w}")
    return unet_from_preset(cfg.model, in_channels=c, image_size=h, dropout=cfg.dropout)


def build_diffusion(cfg, variance=None):
    return GaussianDiffusion(schedule_betas(cfg.schedule, cfg.timesteps),
                             parameterization=cfg.parameterization,
                             variance=variance or cfg.variance, loss=cfg.loss,
                             mu_mse_weight=cfg.mu_mse_weight)


def distances_2d(samples, cfg, seed=12345, repeats=3):
    """Sliced Wasserstein-1 and MMD² between samples (n, 2) and fresh data, each beside its
    noise floor (the same distance between two independent draws of n data points) and
    beside the distance of N(0, I) noise, where the reverse chain starts.

    A draw that is not finite (a diverged model) gets distance inf."""
    n = len(samples)
    g = np.random.default_rng(seed)                     # independent of the training set

    def draw(k):
        return draw_2d(cfg, k, g)

    noise = g.standard_normal((n, 2)).astype(np.float32)
    reference = draw(n)
    finite = bool(np.isfinite(samples).all())
    out = {}
    for name, metric in (("sw", metrics.sliced_wasserstein), ("mmd", metrics.mmd_rbf)):
        out[name] = metric(samples, reference) if finite else math.inf
        out[name + "_floor"] = metrics.noise_floor(draw, n, metric, repeats=repeats)
        out[name + "_noise"] = metric(noise, reference)
    return out


def format_distances(d):
    return (f"sliced W1 {d['sw']:.4f} (noise floor {d['sw_floor']:.4f}, N(0,I) "
            f"{d['sw_noise']:.4f})   MMD² {d['mmd']:.5f} (noise floor {d['mmd_floor']:.5f}, "
            f"N(0,I) {d['mmd_noise']:.5f})")


def frame_indices(n_states, frames):
    """About `frames` of the chain's n_states states (0 = x_T, n_states - 1 = x_0), spaced
    quadratically: the shape appears in the last few percent of the reverse process, so the
    frames crowd there. Always holds the first and the last state."""
    k = np.arange(frames + 1) / frames                                   # 0 … 1
    last = n_states - 1
    return {int(i) for i in np.round(last * (1 - (1 - k) ** 2))} | {0, last}


def _flatten(prefix, state, arrays, meta):
    """Split a state_dict into arrays (for the npz) and JSON-able scalars (for the metadata)."""
    for k, v in state.items():
        if isinstance(v, np.ndarray) or hasattr(v, "__cuda_array_interface__"):
            arrays[f"{prefix}{k}"] = backend.to_numpy(v)
        else:
            meta[k] = v


def _unflatten(prefix, arrays, meta):
    state = dict(meta)
    state.update({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
    return state


LOG_HEADER = "step,loss,grad_norm,lr"


def read_log_rows(path, last_step):
    """The complete rows of log.csv for steps 1..last_step, in order.

    A run killed mid-write can leave a torn last line, and rows past its last checkpoint; both
    are dropped: a row must have 4 fields that parse, and steps must increase."""
    rows, prev = [], 0
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        lines = f.read().split("\n")
    for line in lines[1:]:
        fields = line.split(",")
        try:
            step = int(fields[0])
            [float(v) for v in fields[1:]]
        except ValueError:
            continue
        if len(fields) == 4 and prev < step <= last_step:
            rows.append(line)
            prev = step
    return rows


# ------------------------------------------------------------------------------ the trainer
class Trainer:
    """Everything one run needs; `run()` trains to cfg.steps.

    resume=True continues from out_dir/checkpoint.npz (if there is one); overwrite=True starts
    afresh over an existing run. Without either, a folder that already holds a run is refused,
    so nothing is lost by accident.

    The trainer holds the folder's lock (minidiff.rundir) from here to the end of run(): a
    second trainer on the same folder is refused. With overwrite=True the old run is moved
    aside when run() starts and dropped only once the new run's first checkpoint is on disk;
    if the new run fails before that, the old run is put back.
    """

    def __init__(self, cfg, resume=False, overwrite=False, quiet=False):
        self.quiet = quiet
        cfg.validate()
        self._lock = rundir.RunLock(cfg.out_dir)         # before we look at what is there
        try:
            note = rundir.recover(cfg.out_dir)
            if note:
                self._say(note)
            self._build(cfg)
            if os.path.exists(self.ckpt_path):
                if resume:
                    self.load(self.ckpt_path)
                    self._say(f"resume: continuing {cfg.out_dir} from step {self.step}")
                elif overwrite:
                    self._overwrite = True              # run() moves the old run aside
                else:
                    raise FileExistsError(
                        f"out_dir: {cfg.out_dir} already holds a run ({self.ckpt_path}); pass "
                        "--resume to continue it, --overwrite to start it again, or choose "
                        "another --out-dir")
            elif resume:
                self._say(f"resume: no checkpoint in {cfg.out_dir}; starting from step 0")
        except BaseException:
            self._lock.release()
            raise

    def close(self):
        """Let go of the run folder (run() does this when it ends)."""
        if self._lock is not None:
            self._lock.release()

    def _build(self, cfg, with_data=True):
        """Data, model, diffusion, optimiser, warm-up and EMA, all from cfg and its seed.
        Without data (sampling a saved image run), the shape comes from the config."""
        self.cfg = cfg.validate()
        backend.manual_seed(cfg.seed)
        self.data = build_data(cfg) if with_data else None
        self.shape = data_shape(self.data) if with_data else config_shape(cfg)
        self.model = build_model(cfg, self.shape)
        self.diffusion = build_diffusion(cfg)
        self.params = self.model.parameters()
        opt_cls = AdamW if cfg.optimizer == "adamw" else Adam
        self.opt = opt_cls(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.warmup = LinearWarmup(self.opt, cfg.warmup, cfg.lr)
        self.ema = EMA(self.model, decay=cfg.ema_decay)
        self.step = 0
        self._replacing = None              # the old run's .previous/ while it is replaced
        self._overwrite = False
        self.ckpt_path = os.path.join(cfg.out_dir, "checkpoint.npz")
        self.log_path = os.path.join(cfg.out_dir, "log.csv")
        self._log = None

    @classmethod
    def from_checkpoint(cls, path, quiet=True):
        """A trainer holding a saved run (its config and weights), for sampling and
        evaluation. `path` is a checkpoint or a run folder. Nothing on disk is written."""
        if os.path.isdir(path):
            path = os.path.join(path, "checkpoint.npz")
        arrays, meta = load_checkpoint(path)         # one read: a whole checkpoint, even if a
        cfg = saved_config(path, meta)               # running trainer replaces it meanwhile
        cfg.out_dir = os.path.dirname(os.path.abspath(path))
        self = cls.__new__(cls)
        self.quiet, self._lock = quiet, None        # reading takes no lock
        self._build(cfg, with_data=cfg.data in TWO_D)    # 2-D data: the plots' reference
        self.ckpt_path = path
        self._restore(path, arrays, meta, restore_rng=False)
        return self

    def _say(self, msg):
        if not self.quiet:
            print(msg, flush=True)

    # -------------------------------------------------------------------- data
    def next_batch(self):
        """x0: a batch drawn with replacement through the library's generator."""
        g = backend.rng()
        idx = backend.to_numpy(g.integers(0, len(self.data), size=self.cfg.batch_size))  # (B,)
        if isinstance(self.data, data.ImageFolder):
            x0 = self.data.batch(idx, rng=g)                          # (B, C, H, W)
        else:
            x0 = self.data[idx]                                       # (B, 2) or (B, C, H, W)
        return backend.xp().asarray(x0)                               # on the device

    # -------------------------------------------------------------------- Algorithm 1
    def train_step(self):
        """One update; returns (loss, grad_norm, lr). Raises NonFiniteLoss before any change
        to the weights if the loss or the gradient is NaN or inf."""
        x0 = self.next_batch()                                        # Alg. 1, line 2
        with np.errstate(over="ignore", invalid="ignore"):            # checked just below
            losses = self.diffusion.training_losses(self.model, x0)   # Alg. 1, lines 3-5
            loss = losses.mean()
            value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(f"step {self.step + 1}: the loss is {value}; training stopped. "
                                f"{self._last_good()} Try a lower --lr, more --warmup, or "
                                "--loss simple.")
        self.opt.zero_grad()
        loss.backward()
        grad_norm = clip_grad_norm(self.params, self.cfg.grad_clip)   # Ho et al.: clip to 1
        if not math.isfinite(grad_norm):
            raise NonFiniteLoss(f"step {self.step + 1}: the gradient norm is {grad_norm}; "
                                f"training stopped. {self._last_good()}")
        lr = self.opt.lr
        self.opt.step()                                               # Alg. 1, line 5
        self.warmup.step()
        # EMA with a warm-up: decay min(d, (1 + k)/(10 + k)) after k updates, as TF's
        # ExponentialMovingAverage(num_updates=k) does, so short runs are not averaged
        # mostly with the random initial weights (0.999^300 ≈ 0.74 of them would remain).
        self.ema.decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        self.ema.update()
        self.step += 1
        return value, grad_norm, lr

    def _last_good(self):
        if self._replacing is not None:
            return (f"No checkpoint of this run was written, so the run it was to overwrite "
                    f"in {self.cfg.out_dir} is put back as it was.")
        if os.path.exists(self.ckpt_path):
            return f"The last good checkpoint, {self.ckpt_path}, is untouched."
        return "No checkpoint had been written yet."

    def run(self, final_samples=True):
        """Train from self.step to cfg.steps; then (if final_samples) draw samples.png."""
        cfg = self.cfg
        if self._lock is None or not self._lock.held:   # a second run() of this trainer
            self._lock = rundir.RunLock(cfg.out_dir)
        try:
            if self._overwrite:                         # the old run waits in .previous/
                self._replacing = rundir.move_run_aside(cfg.out_dir)
                self._overwrite = False
            self._train()
            if final_samples:
                self.save_samples("samples.png")
        except BaseException:
            if self._replacing is not None:             # failed before its first checkpoint
                rundir.restore(self._replacing)
                self._replacing = None
            raise
        finally:
            self._lock.release()
        return self

    def _train(self):
        """Algorithm 1's loop, with the log, checkpoints and sample pictures on the way."""
        cfg = self.cfg
        self._open_log()
        bar = Progress(cfg.steps, start=self.step, desc="train",
                       stream=io.StringIO() if self.quiet else None)
        self.model.train()
        try:
            while self.step < cfg.steps:
                loss, gnorm, lr = self.train_step()
                if self.step % cfg.log_every == 0:
                    self._log.write(f"{self.step},{loss!r},{gnorm!r},{lr!r}\n")
                bar.update(1, loss=loss)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    self._log.flush()                 # every logged row is on disk first
                    self.save(self.ckpt_path)
                    if self._replacing is not None:   # the new run is durable: drop the old
                        rundir.commit(self._replacing)
                        self._replacing = None
                    self.plot_losses()
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.save_samples(f"samples_{self.step:06d}.png")
        except NonFiniteLoss:
            self._log.flush()
            if self._replacing is None:
                self.plot_losses()
            raise
        finally:
            bar.close()
            self._log.close()

    # -------------------------------------------------------------------- checkpoints
    def state(self):
        arrays, meta = {}, {"step": self.step, "config": self.cfg.to_json(),
                            "device": backend.get_device(), "rng": backend.get_rng_state()}
        for name, value in self.model.state_dict().items():
            arrays["model." + name] = value
        opt_meta, ema_meta = {}, {}
        _flatten("opt.", self.opt.state_dict(), arrays, opt_meta)
        _flatten("ema.", self.ema.state_dict(), arrays, ema_meta)
        meta.update(opt=opt_meta, ema=ema_meta, warmup=self.warmup.state_dict())
        return arrays, meta

    def save(self, path):
        """Write the whole state atomically. Weights that are not finite are never saved,
        so the checkpoint on disk is always one that training can continue from."""
        arrays, meta = self.state()
        bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            raise NonFiniteLoss(f"step {self.step}: {len(bad)} arrays hold NaN or inf (e.g. "
                                f"{bad[0]}); not saving them. {self._last_good()}")
        save_checkpoint(path, arrays, meta)

    def load(self, path, restore_rng=True):
        """Restore a checkpoint; the config must match ours (but for RESUMABLE fields)."""
        arrays, meta = load_checkpoint(path)
        self._restore(path, arrays, meta, restore_rng)

    def _restore(self, path, arrays, meta, restore_rng):
        """Check every field and array of the checkpoint against this run, then load it all.
        A checkpoint that fails any check changes nothing."""
        saved = saved_config(path, meta)
        diffs = [f"{k}: checkpoint {getattr(saved, k)!r}, now {getattr(self.cfg, k)!r}"
                 for k in saved.to_json() if k not in TrainConfig.RESUMABLE
                 and getattr(saved, k) != getattr(self.cfg, k)]
        if diffs:
            raise ValueError(f"resume: the config differs from the checkpoint's ({path}): "
                             + "; ".join(diffs) + ". Use the checkpoint's values, or another "
                             "--out-dir for a new run")
        step = meta.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"checkpoint {path}: meta.step: must be an int >= 0, got "
                             f"{step!r:.40}. Nothing was loaded or changed")
        template_arrays, template_meta = self.state()
        if step > 0:                                                  # Adam's m and v exist
            template_arrays.update({f"opt.{name}.{i}": backend.to_numpy(p.data)
                                    for name in self.opt.buffers_in_use()
                                    for i, p in enumerate(self.params)})
        check_like(path, arrays, meta, template_arrays, template_meta,
                   skip=("format", "config", "device"))
        self._check_counts(path, meta, step)
        if step > self.cfg.steps:
            raise ValueError(f"steps: the checkpoint {path} is at step {step}, past "
                             f"steps={self.cfg.steps}; allowed: steps >= {step}")
        device = meta.get("device", "cpu")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"checkpoint {path}: meta.device: got {device!r}, allowed: cpu, "
                             "cuda. Nothing was loaded or changed")
        if restore_rng and device != backend.get_device():
            raise ValueError(f"device: the checkpoint {path} was written on {device!r}, this "
                             f"run is on {backend.get_device()!r}; resume on {device!r} (its "
                             "random generator cannot move between devices)")
        self.model.load_state_dict({k[6:]: v for k, v in arrays.items()
                                    if k.startswith("model.")})
        self.opt.load_state_dict(_unflatten("opt.", arrays, meta["opt"]))
        self.ema.load_state_dict(_unflatten("ema.", arrays, meta["ema"]))
        self.warmup.load_state_dict(meta["warmup"])
        if restore_rng:
            backend.set_rng_state(meta["rng"])
        self.step = step

    def _check_counts(self, path, meta, step):
        """The step, the optimiser's and the EMA's update counts and the warm-up agree, and
        the RNG state is one NumPy accepts. (check_like has already checked the kinds.)"""
        def refuse(field, msg):
            raise ValueError(f"checkpoint {path}: {field}: {msg}. Nothing was loaded or changed")
        if any(t != step for t in meta["opt"]["steps"]):
            refuse("meta.opt.steps", f"every parameter's update count must equal the step "
                   f"{step}, got {sorted(set(meta['opt']['steps']))}")
        if meta["ema"]["num_updates"] != step:
            refuse("meta.ema.num_updates", f"must equal the step {step}, got "
                   f"{meta['ema']['num_updates']}")
        if not 0 <= meta["ema"]["decay"] <= 1:
            refuse("meta.ema.decay", f"must be in [0, 1], got {meta['ema']['decay']}")
        want = {"warmup_steps": self.cfg.warmup, "base_lr": self.cfg.lr, "last_step": step}
        if meta["warmup"] != want:
            refuse("meta.warmup", f"expected {want} (the config's warm-up at step {step}), "
                   f"got {meta['warmup']}")
        _, fresh = self.state()
        lr = self.warmup.lr_at(step)
        for k, v in fresh["opt"].items():
            got = meta["opt"][k]
            if k != "steps" and got != (lr if k == "lr" else v):
                refuse(f"meta.opt.{k}", f"expected {lr if k == 'lr' else v!r}, got {got!r}")
        kind = fresh["rng"]["bit_generator"]                   # PCG64, NumPy's default
        if meta["rng"]["bit_generator"] != kind:
            refuse("meta.rng.bit_generator", f"expected {kind!r}, got "
                   f"{meta['rng']['bit_generator']!r:.40}")
        rng = meta["rng"]
        if rng["has_uint32"] not in (0, 1) or not 0 <= rng["uinteger"] < 2**32:
            refuse("meta.rng", "has_uint32 must be 0 or 1 and uinteger a 32-bit number")
        try:                                    # NumPy must take the state and give it back
            scratch = getattr(np.random, kind)()
            scratch.state = meta["rng"]
            taken = scratch.state == meta["rng"]
        except (TypeError, ValueError, OverflowError, KeyError):
            taken = False
        if not taken:
            refuse("meta.rng", "not a state NumPy's generator accepts as it is")

    def _open_log(self):
        """log.csv keeps exactly the rows of steps 1..self.step (a killed run may have more,
        or a torn last line), rewritten atomically; then it is opened to append. Half-written
        temporary files of a killed run are removed (only provably stale ones)."""
        for tmp in rundir.remove_stale_temp_files(self.cfg.out_dir):
            self._say(f"removed {tmp}, left half-written by a killed run")
        rows = read_log_rows(self.log_path, self.step) if self.step > 0 else []
        rundir.write_atomic(self.log_path, "".join(r + "\n" for r in [LOG_HEADER] + rows))
        self._log = open(self.log_path, "a")
        rundir.write_atomic(os.path.join(self.cfg.out_dir, "config.json"),
                            json.dumps(self.cfg.to_json(), indent=1) + "\n")

    def read_log(self):
        """(steps, losses) from log.csv."""
        if self._log is not None and not self._log.closed:
            self._log.flush()
        rows = read_log_rows(self.log_path, math.inf)
        a = np.array([[float(v) for v in r.split(",")[:2]] for r in rows]).reshape(-1, 2)
        return a[:, 0].astype(int), a[:, 1]

    # -------------------------------------------------------------------- sampling
    def sample(self, n, use_ema=True, sampler="ancestral", variance=None, ddim_steps=50,
               eta=0.0, frames=0):
        """n samples (Algorithm 2, or DDIM), from the EMA weights by default.

        Returns (x0 (n, ...), trajectory): the trajectory is a list of (s, x_s) with about
        `frames` states of the reverse process, from s = T down to s = 0 (empty if frames=0).
        The training RNG is left as it was, so sampling during training never changes a run.
        """
        state = backend.get_rng_state()
        self.model.eval()
        try:
            if use_ema:
                with self.ema.swapped_in(self.model):
                    return self._sample(n, sampler, variance, ddim_steps, eta, frames)
            return self._sample(n, sampler, variance, ddim_steps, eta, frames)
        finally:
            self.model.train()
            backend.set_rng_state(state)

    def _sample(self, n, sampler, variance, ddim_steps, eta, frames):
        shape = (n,) + self.shape
        clip = self.cfg.data in IMAGE_DATA                  # images live in [-1, 1]
        d = self.diffusion if variance in (None, self.cfg.variance) else \
            build_diffusion(self.cfg, variance)
        if sampler == "ddim":
            chain = ddim_sample_loop_progressive(d, self.model, shape, num_steps=ddim_steps,
                                                 eta=eta, clip_denoised=clip)
            n_states = len(ddim_timesteps(d.num_timesteps, ddim_steps)) + 1
        elif sampler == "ancestral":
            chain = d.p_sample_loop_progressive(self.model, shape, clip_denoised=clip)
            n_states = d.num_timesteps + 1                  # x_T, x_{T-1}, ..., x_0
        else:
            raise ValueError(f"sampler: got {sampler!r}, allowed: ancestral, ddim")
        keep = frame_indices(n_states, frames) if frames else set()
        trajectory = []
        for k, (s, x) in enumerate(chain):
            if not bool(backend.xp().isfinite(x).all()):
                raise ModelDiverged(
                    f"sampling: x_{s} holds NaN or inf: the model's predictions blew up, so "
                    f"its weights ({self.ckpt_path}) are not usable; the run probably diverged "
                    "in training. Try sampling the raw weights (--no-ema), or train again with "
                    "a lower --lr, more --warmup, or --loss simple")
            if k in keep:
                trajectory.append((s, backend.to_numpy(x)))
        return backend.to_numpy(x), trajectory

    # -------------------------------------------------------------------- pictures
    def save_samples(self, name):
        """A sample picture from the EMA weights: a scatter plot over the data for 2-D data,
        an image grid otherwise. Returns its path."""
        path = os.path.join(self.cfg.out_dir, name)
        if self.cfg.data in TWO_D:
            x, _ = self.sample(self.cfg.n_samples)
            viz.scatter_plot(x, path, reference=self.data[:5000], title=f"step {self.step}",
                             lim=1.5)
        else:
            x, _ = self.sample(min(self.cfg.n_samples, 64))
            viz.save_image_grid(x, path, scale=2)
        return path

    def plot_losses(self):
        steps, losses = self.read_log()
        if len(steps) >= 2:
            viz.plot_loss_curve(steps, losses, os.path.join(self.cfg.out_dir, "loss.png"),
                                log_scale=bool((losses > 0).all()),
                                title=f"{self.cfg.data}: {self.cfg.parameterization}, "
                                      f"loss {self.cfg.loss}")
