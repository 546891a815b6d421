"""The training loop (Ho et al. 2020, Algorithm 1), with EMA, checkpoints and exact resume.

    repeat
        x0 ~ q(x0)                                     a batch of data
        t ~ U{1..T}, ε ~ N(0, I)                       (0-based here: t ~ U{0..T-1})
        step on ∇θ ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖²   or the loss the config chooses
    until converged

A run lives in one folder: config.json, checkpoint.npz (weights, optimiser state, EMA, step and
the RNG state: everything to continue bit for bit), log.csv (one row per step) and pictures.
"""
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from . import backend, data, viz
from .checkpoint import load_checkpoint, save_checkpoint
from .diffusion import GaussianDiffusion, ddim_sample_loop, get_beta_schedule
from .models import MLPDenoiser, unet_from_preset
from .optim import EMA, Adam, AdamW, LinearWarmup, clip_grad_norm
from .progress import Progress
from .tensor import Tensor

TWO_D = tuple(data.TWO_D_SETS) + ("picture",)
IMAGE_DATA = ("digits", "mnist", "folder")


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
    schedule: str = "linear"
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
    ema_decay: float = 0.999         # Ho et al.: 0.9999 for long runs
    seed: int = 0
    # bookkeeping
    out_dir: str = "runs/run"
    ckpt_every: int = 500
    sample_every: int = 0            # 0: only at the end
    n_samples: int = 1000            # 2-D points (or 64 images) per sample picture
    log_every: int = 1               # rows of log.csv

    # Fields that may differ between a run and its resumption.
    RESUMABLE = ("steps", "out_dir", "ckpt_every", "sample_every", "n_samples", "log_every")

    def validate(self):
        choices = {"data": TWO_D + IMAGE_DATA, "model": ("mlp", "tiny", "small", "cifar10"),
                   "optimizer": ("adam", "adamw"), "parameterization": ("eps", "x0", "mu", "v"),
                   "loss": ("simple", "mu_mse", "kl"), "mu_mse_weight": ("none", "bound"),
                   "variance": ("fixed_large", "fixed_small")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, allowed: "
                                 f"{', '.join(allowed)}")
        for name in ("steps", "batch_size", "timesteps", "n_points", "n_samples", "log_every",
                     "ckpt_every", "image_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be an int >= 1, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: must be a finite number > 0, got {self.lr!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay: must be in [0, 1), got {self.ema_decay!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout!r}")
        if self.data in TWO_D and self.model != "mlp":
            raise ValueError(f"model: 2-D data ({self.data}) needs model 'mlp', got "
                             f"{self.model!r}")
        if self.data in IMAGE_DATA and self.model == "mlp":
            raise ValueError(f"model: image data ({self.data}) needs a U-Net preset "
                             "(tiny, small, cifar10), got 'mlp'")
        if self.data in ("mnist", "folder") and not self.data_path:
            raise ValueError(f"data_path: data {self.data!r} needs a path")
        if self.loss == "mu_mse" and self.parameterization != "mu":
            raise ValueError("loss: 'mu_mse' trains a network that predicts μ; set "
                             "parameterization='mu'")
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


class NonFiniteLoss(RuntimeError):
    pass


# ------------------------------------------------------------------------------ building blocks
def build_data(cfg):
    """The training set: an (N, 2) array, an (N, C, H, W) array, or an ImageFolder."""
    g = np.random.default_rng(cfg.seed)          # its own generator: the set is fixed by seed
    if cfg.data == "picture":
        path = cfg.data_path or data.default_picture_path()
        return data.points_from_picture(path, cfg.n_points, rng=g)
    if cfg.data in data.TWO_D_SETS:
        return data.TWO_D_SETS[cfg.data](cfg.n_points, rng=g)
    if cfg.data == "digits":
        return data.load_digits(size=16, split="train")
    if cfg.data == "mnist":
        return data.load_mnist_images(cfg.data_path, size=cfg.image_size)
    return data.ImageFolder(cfg.data_path, cfg.image_size, channels=cfg.channels, flip=cfg.flip)


def data_shape(train_data):
    """(C, H, W) or (2,): the shape of one example."""
    if isinstance(train_data, data.ImageFolder):
        return train_data.batch([0], rng=np.random.default_rng(0)).shape[1:]
    return train_data.shape[1:]


def build_model(cfg, shape):
    if cfg.model == "mlp":
        return MLPDenoiser(data_dim=shape[0], time_dim=cfg.time_dim, hidden=cfg.hidden,
                           depth=cfg.depth)
    c, h, w = shape
    if h != w:
        raise ValueError(f"image_size: images must be square, got {h}x{w}")
    return unet_from_preset(cfg.model, in_channels=c, image_size=h, dropout=cfg.dropout)


def build_diffusion(cfg):
    return GaussianDiffusion(get_beta_schedule(cfg.schedule, cfg.timesteps),
                             parameterization=cfg.parameterization, variance=cfg.variance,
                             loss=cfg.loss, mu_mse_weight=cfg.mu_mse_weight)


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


# ------------------------------------------------------------------------------ the trainer
class Trainer:
    """Everything one run needs; `run()` trains to cfg.steps, resuming if asked."""

    def __init__(self, cfg, resume=False, quiet=False):
        self.cfg = cfg.validate()
        self.quiet = quiet
        backend.manual_seed(cfg.seed)
        self.data = build_data(cfg)
        self.shape = tuple(data_shape(self.data))
        self.model = build_model(cfg, self.shape)
        self.diffusion = build_diffusion(cfg)
        params = self.model.parameters()
        opt_cls = AdamW if cfg.optimizer == "adamw" else Adam
        self.opt = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.warmup = LinearWarmup(self.opt, cfg.warmup, cfg.lr)
        self.ema = EMA(self.model, decay=cfg.ema_decay)
        self.step = 0
        os.makedirs(cfg.out_dir, exist_ok=True)
        self.ckpt_path = os.path.join(cfg.out_dir, "checkpoint.npz")
        self.log_path = os.path.join(cfg.out_dir, "log.csv")
        if resume and os.path.exists(self.ckpt_path):
            self.load(self.ckpt_path)
        elif resume and not quiet:
            print(f"resume: no checkpoint in {cfg.out_dir}; starting from step 0")
        self._open_log()

    # -------------------------------------------------------------------- data
    def next_batch(self):
        """x0: a batch drawn with replacement through the library's generator."""
        g = backend.rng()
        n = len(self.data)
        idx = backend.to_numpy(g.integers(0, n, size=self.cfg.batch_size))
        if isinstance(self.data, data.ImageFolder):
            x0 = self.data.batch(idx, rng=g)
        else:
            x0 = self.data[idx]
        return backend.xp().asarray(x0)                           # (B, ...) on the device

    # -------------------------------------------------------------------- Algorithm 1
    def train_step(self):
        x0 = self.next_batch()                                    # Alg. 1, line 2
        losses = self.diffusion.training_losses(self.model, x0)   # Alg. 1, lines 3-5
        loss = losses.mean()
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(f"step {self.step + 1}: the loss is {value}; training stopped. "
                                f"The last good checkpoint, {self.ckpt_path}, is untouched. "
                                "Try a lower lr, more warm-up, or loss='simple'.")
        self.opt.zero_grad()
        loss.backward()
        grad_norm = clip_grad_norm(self.model.parameters(), self.cfg.grad_clip)
        if not math.isfinite(float(grad_norm)):
            raise NonFiniteLoss(f"step {self.step + 1}: the gradient norm is {grad_norm}; "
                                f"training stopped. {self.ckpt_path} is untouched.")
        lr = self.opt.lr
        self.opt.step()                                           # Alg. 1, line 5: the step
        self.warmup.step()
        self.ema.update()
        self.step += 1
        return value, float(grad_norm), lr

    def run(self):
        cfg = self.cfg
        bar = Progress(cfg.steps, start=self.step, desc="train",
                       stream=open(os.devnull, "w") if self.quiet else None)
        self.model.train()
        try:
            while self.step < cfg.steps:
                loss, gnorm, lr = self.train_step()
                if self.step % cfg.log_every == 0:
                    self._log.write(f"{self.step},{loss!r},{gnorm!r},{lr!r}\n")
                bar.update(1, loss=loss)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    self._log.flush()
                    self.save(self.ckpt_path)
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.save_samples(f"samples_{self.step:06d}.png")
        finally:
            bar.close()
            self._log.flush()
        self.save_samples("samples.png")
        self.plot_losses()
        return self

    # -------------------------------------------------------------------- checkpoints
    def state(self):
        arrays, meta = {}, {"step": self.step, "config": self.cfg.to_json(),
                            "rng": backend.get_rng_state()}
        for name, value in self.model.state_dict().items():
            arrays["model." + name] = value
        opt_meta, ema_meta = {}, {}
        _flatten("opt.", self.opt.state_dict(), arrays, opt_meta)
        _flatten("ema.", self.ema.state_dict(), arrays, ema_meta)
        meta.update(opt=opt_meta, ema=ema_meta, warmup=self.warmup.state_dict())
        return arrays, meta

    def save(self, path):
        arrays, meta = self.state()
        save_checkpoint(path, arrays, meta)

    def load(self, path):
        arrays, meta = load_checkpoint(path)
        saved = TrainConfig.from_json(meta["config"])
        diffs = [f"{k}: checkpoint {getattr(saved, k)!r}, now {getattr(self.cfg, k)!r}"
                 for k in saved.to_json() if k not in TrainConfig.RESUMABLE
                 and getattr(saved, k) != getattr(self.cfg, k)]
        if diffs:
            raise ValueError(f"resume: the config differs from the checkpoint's "
                             f"({path}): " + "; ".join(diffs))
        if meta["step"] > self.cfg.steps:
            raise ValueError(f"resume: the checkpoint is at step {meta['step']}, past "
                             f"steps={self.cfg.steps}")
        self.model.load_state_dict({k[6:]: v for k, v in arrays.items()
                                    if k.startswith("model.")})
        self.opt.load_state_dict(_unflatten("opt.", arrays, meta["opt"]))
        self.ema.load_state_dict(_unflatten("ema.", arrays, meta["ema"]))
        self.warmup.load_state_dict(meta["warmup"])
        backend.set_rng_state(meta["rng"])
        self.step = int(meta["step"])

    def _open_log(self):
        """log.csv keeps exactly the rows of steps 1..self.step (a killed run may have more)."""
        rows = []
        if self.step > 0 and os.path.exists(self.log_path):
            with open(self.log_path) as f:
                rows = [r for r in f.read().splitlines()[1:]
                        if r and int(r.split(",")[0]) <= self.step]
        self._log = open(self.log_path, "w")
        self._log.write("step,loss,grad_norm,lr\n")
        self._log.writelines(r + "\n" for r in rows)
        with open(os.path.join(self.cfg.out_dir, "config.json"), "w") as f:
            json.dump(self.cfg.to_json(), f, indent=1)

    def read_log(self):
        self._log.flush()
        a = np.loadtxt(self.log_path, delimiter=",", skiprows=1, ndmin=2)
        return a[:, 0].astype(int), a[:, 1]

    # -------------------------------------------------------------------- pictures
    def sample(self, n, use_ema=True, sampler="ancestral", ddim_steps=50):
        """n samples from the model (EMA weights by default). Leaves the training RNG as it was,
        so sampling during training never changes the run."""
        state = backend.get_rng_state()
        self.model.eval()
        try:
            if use_ema:
                with self.ema.swapped_in(self.model):
                    x = self._sample(n, sampler, ddim_steps)
            else:
                x = self._sample(n, sampler, ddim_steps)
        finally:
            self.model.train()
            backend.set_rng_state(state)
        return backend.to_numpy(x)

    def _sample(self, n, sampler, ddim_steps):
        shape = (n,) + self.shape
        clip = self.cfg.data in IMAGE_DATA                  # images live in [-1, 1]
        if sampler == "ddim":
            return ddim_sample_loop(self.diffusion, self.model, shape, num_steps=ddim_steps,
                                    clip_denoised=clip)
        return self.diffusion.p_sample_loop(self.model, shape, clip_denoised=clip)

    def save_samples(self, name):
        path = os.path.join(self.cfg.out_dir, name)
        if self.cfg.data in TWO_D:
            x = self.sample(self.cfg.n_samples)
            viz.scatter_plot(x, path, reference=self.data[:5000], title=f"step {self.step}")
        else:
            x = self.sample(min(self.cfg.n_samples, 64))
            viz.save_image_grid(x, path, scale=2)
        return path

    def plot_losses(self):
        steps, losses = self.read_log()
        if len(steps) >= 2:
            viz.plot_loss_curve(steps, losses, os.path.join(self.cfg.out_dir, "loss.png"))


def as_tensor_batch(x):
    return Tensor(x)
