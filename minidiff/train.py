"""The training loop (Ho et al. 2020, Algorithm 1), with EMA, checkpoints and exact resume.

    repeat
        x0 ~ q(x0)                                     a batch of data
        t ~ U{1..T}, ε ~ N(0, I)                       (0-based here: t ~ U{0..T-1})
        step on ∇θ ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖²   or the loss the config chooses
    until converged

A run lives in one folder: checkpoint.npz, log.csv, loss.png, samples*.png, config.json
(minidiff/rundir.py says what each holds, and keeps them whole).

    trainer = Trainer(TrainConfig(data="swiss_roll", steps=2000, out_dir="runs/roll")).run()
    trainer = Trainer(cfg, resume=True).run()     # continues a killed run exactly
    trainer = Trainer.from_checkpoint("runs/roll/checkpoint.npz")   # for sampling
"""
import contextlib
import io
import math
import os

import numpy as np

from . import backend, data, data_source, distributed, metrics, rundir, run_state, runlog, viz
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, check_sampler, schedule_betas
from .datakinds import DATA_KINDS, draw_points
from .diffusion import (FlowMatching, GaussianDiffusion, ddim_sample_loop_progressive,
                        ddim_timesteps)
from .models import MLPDenoiser, unet_from_preset
from .optim import EMA, Adam, AdamW, LinearWarmup, clip_grad_norm
from .progress import Progress

__all__ = ["Trainer", "TrainConfig", "NonFiniteLoss", "ModelDiverged", "build_model",
           "build_diffusion", "distances_2d"]


class NonFiniteLoss(RuntimeError):
    """Training met a NaN or inf; the last good checkpoint was left as it was."""


class ModelDiverged(RuntimeError):
    """Sampling met a NaN or inf: the weights produce garbage."""


def build_model(cfg, shape):
    """The MLP for points, or the U-Net preset for images of shape (C, S, S); twice the
    output channels when the variance is learned (Nichol & Dhariwal 2021, Eq. 15)."""
    learn_sigma = cfg.variance == "learned_range"
    if cfg.model == "mlp":
        return MLPDenoiser(data_dim=shape[0], time_dim=cfg.time_dim, hidden=cfg.hidden,
                           depth=cfg.depth, learn_sigma=learn_sigma,
                           fourier_levels=cfg.fourier_levels)
    c, h, w = shape
    if h != w:
        raise ValueError(f"image_size: images must be square, got {h}x{w}")
    return unet_from_preset(cfg.model, in_channels=c, image_size=h, dropout=cfg.dropout,
                            learn_sigma=learn_sigma)


def build_diffusion(cfg, variance=None):
    """The run's diffusion (its flow matching for objective 'flow'); with another (fixed)
    `variance`, one for sampling only."""
    if cfg.objective == "flow":
        return FlowMatching()
    if variance in (None, cfg.variance):
        return GaussianDiffusion(schedule_betas(cfg.schedule, cfg.timesteps),
                                 parameterization=cfg.parameterization, variance=cfg.variance,
                                 loss=cfg.loss, mu_mse_weight=cfg.mu_mse_weight)
    return GaussianDiffusion(schedule_betas(cfg.schedule, cfg.timesteps),
                             parameterization=cfg.parameterization, variance=variance)


def _mean_half(model):
    """The model without its variance channels: sampling a learned-σ run with a fixed σ."""
    return lambda x_t, t: model(x_t, t)[:, :x_t.shape[1]]       # the first C of 2C channels


def distances_2d(samples, cfg, seed=12345, repeats=None):
    """metrics.distances_2d against fresh draws of cfg's 2-D data."""
    return metrics.distances_2d(samples, lambda n, g: draw_points(cfg, n, g), seed, repeats)


class Trainer:
    """Everything one run needs; `run()` trains to cfg.steps.

    resume=True continues from out_dir/checkpoint.npz (if there is one); overwrite=True starts
    afresh over an existing run. Without either, a folder that already holds a run is refused,
    so nothing is lost by accident. The trainer holds the folder from here to the end of run()
    (rundir.open_run: its lock; an --overwrite's old run, whole until the new one's checkpoint)."""

    def __init__(self, cfg, resume=False, overwrite=False, quiet=False):
        self.quiet, self._folder = quiet, rundir.RunFolder(cfg.out_dir)   # no lock yet
        world = distributed.init().join(cfg.validate())  # N ranks (mpiexec): minidiff/distributed
        if not world.writer:                             # ranks 1..N-1: rank 0 keeps the folder
            self.quiet = True
            self._build(cfg)
            start = world.follow()                       # rank 0's first step: 0, or its
            if start:                                    # checkpoint's, read here too
                self.load(self.ckpt_path)
            if self.step != start:
                raise distributed.RankFailure(f"rank {world.rank}: read step {self.step} from "
                                              f"{self.ckpt_path}, rank 0 read step {start}")
            return
        try:
            self._folder = rundir.open_run(cfg.out_dir, resume, overwrite, self._say)
            self._build(cfg)
            if self._folder.start == "resume":
                self.load(self.ckpt_path)
                self._say(f"resume: continuing {cfg.out_dir} from step {self.step}")
            world.lead(self.step)
        except BaseException as e:
            self.close()
            if not isinstance(e, distributed.RankFailure):
                world.lead(failed=True)                  # N ranks: the others stop too
            raise

    def _build(self, cfg, with_data=True):
        """Data, model, diffusion, optimiser, warm-up and EMA, all from cfg and its seed.
        Without data (sampling a saved image run), the shape comes from the config."""
        cfg.data_path = os.path.abspath(cfg.data_path) if cfg.data_path else ""   # not cwd's
        self.cfg = cfg.validate()
        self.kind = DATA_KINDS[cfg.data]
        backend.manual_seed(cfg.seed)
        self.data = self.kind.load(cfg) if with_data else None
        self.data_record = data_source.record(cfg.data_path) if with_data else None
        self.shape = self.kind.shape(cfg)
        self.model = build_model(cfg, self.shape)
        self.diffusion = build_diffusion(cfg)
        self.params = list(self.model.parameters())
        opt_cls = AdamW if cfg.optimizer == "adamw" else Adam
        self.opt = opt_cls(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.warmup = LinearWarmup(self.opt, cfg.warmup, cfg.lr)
        self.ema = EMA(self.model, decay=cfg.ema_decay)
        self.step = 0
        self.ckpt_path = os.path.join(cfg.out_dir, "checkpoint.npz")
        self.log_path = os.path.join(cfg.out_dir, "log.csv")
        self._log = None

    @classmethod
    def from_checkpoint(cls, path, quiet=True, data_path=None):
        """A trainer holding a saved run (its config and weights), for sampling and
        evaluation. `path` is a checkpoint or a run folder. It writes nothing but what undoes
        a killed --overwrite (rundir.recover_for_reading); an image run needs no images. A
        2-D run reads its data (the plots' reference) where it was trained, or at `data_path`
        if it moved; either way it must be the same data (check_data)."""
        note = rundir.recover_for_reading(path)      # a killed --overwrite: the old run back
        if note:
            print(note, flush=True)                  # files moved: said even when quiet
        if os.path.isdir(path):
            path = os.path.join(path, "checkpoint.npz")
        arrays, meta = load_checkpoint(path, limit=run_state.checkpoint_limit)   # one read:
        cfg = run_state.saved_config(path, meta)     # a whole checkpoint, even if replaced
        cfg.out_dir = os.path.dirname(os.path.abspath(path))
        cfg.data_path = cfg.data_path if data_path is None else data_path
        self = cls.__new__(cls)
        self.quiet, self._folder = quiet, rundir.RunFolder(cfg.out_dir)   # reading: no lock
        self.ckpt_path, self.saved_meta = path, meta
        points = not DATA_KINDS[cfg.data].images    # points: the data is the plots' reference
        if points:
            self.check_data(cfg.data_path)
        self._build(cfg, with_data=points)
        self.ckpt_path = path
        run_state.restore(self, path, arrays, meta, restore_rng=False)
        return self

    def check_data(self, data_path):
        """Refuse, in one line, data at data_path that is not what this saved run was trained
        on (minidiff/data_source.py); say so if only its files' times changed."""
        note = run_state.check_data(self.ckpt_path, self.saved_meta, data_path)
        if note:
            self._say(note)

    def close(self):
        """Let go of the run folder (run() does this when it ends)."""
        self._folder.release()

    def _say(self, msg):
        if msg and not self.quiet:
            print(msg, flush=True)

    # ---------------------------------------------------- Ho et al. 2020, Algorithm 1
    def draw(self):
        """Ho et al. 2020, Alg. 1, lines 2-4 for the global batch of B, from the shared stream:
        x0 ~ q(x0) (with replacement), t ~ U{0..T-1} (flow: U[0, 1)) and ε ~ N(0, I). One
        process keeps all B rows; N ranks keep their own (minidiff/distributed: World.rows)."""
        B, g = self.cfg.batch_size, backend.rng()
        host = getattr(g, "host", g)                     # on a GPU: drawn on the host, moved
        idx = host.integers(0, len(self.data), size=B)                           # (B,)
        x0 = (self.data.batch(idx, rng=host) if isinstance(self.data, data.ImageFolder)
              else self.data[idx])                        # (B, 2) or (B, C, H, W): on the host
        if self.cfg.objective == "flow":
            t = host.random(B, dtype=self.diffusion.dtype)          # Lipman et al. 2022: U[0, 1)
        else:
            t = host.integers(0, self.diffusion.num_timesteps, size=B)               # (B,)
        noise = host.standard_normal(x0.shape, dtype=self.diffusion.dtype)           # ε
        rows, xp = distributed.world().rows(B), backend.xp()
        return xp.asarray(x0[rows]), xp.asarray(t[rows]), xp.asarray(noise[rows])

    def train_step(self):
        """One update of Ho et al. 2020's Algorithm 1; returns (loss, grad_norm, lr). Raises
        NonFiniteLoss before any change to the weights if the loss or the gradient is NaN or
        inf. N ranks (minidiff/distributed): draw keeps this rank's rows, own_stream gives its
        dropout the rank's own stream, all_reduce averages the loss and gradients over all B."""
        world = distributed.world()                              # one process, or N ranks
        x0, t, noise = self.draw()                               # Ho et al. 2020, Alg. 1, l. 2-4
        self.opt.zero_grad()
        with world.own_stream(), np.errstate(over="ignore", invalid="ignore"):  # checked below
            loss = self.diffusion.training_losses(self.model, x0, t, noise).mean()   # line 5
            loss.backward()                                      # its gradient ∇θ
        value = world.all_reduce(loss.item(), self.params)      # N ranks: the mean over all B
        self._stop_unless_finite("loss", value, " Try a lower --lr, more --warmup, or --loss "
                                 "simple.")
        grad_norm = clip_grad_norm(self.params, self.cfg.grad_clip)   # Ho et al.: clip to 1
        self._stop_unless_finite("gradient norm", grad_norm)
        lr = self.opt.lr
        self.opt.step()                                          # Ho et al. 2020, Alg. 1, l. 5
        self.warmup.step()
        # EMA with TF's ExponentialMovingAverage(num_updates=k) warm-up, decay min(d, (1 + k)/
        # (10 + k)): short runs are not mostly their random start (0.999^300 ≈ 0.74 of it).
        self.ema.decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        self.ema.update()
        self.step += 1
        return value, grad_norm, lr

    def _stop_unless_finite(self, what, value, advice=""):
        if not math.isfinite(value):
            raise NonFiniteLoss(f"step {self.step + 1}: the {what} is {value}; training "
                                f"stopped. {self._last_good()}{advice}")

    def _last_good(self):
        if self._folder.previous is not None:
            return (f"No checkpoint of this run was written, so the run it was to overwrite "
                    f"in {self.cfg.out_dir} is put back as it was.")
        if os.path.exists(self.ckpt_path):
            return f"The last good checkpoint, {self.ckpt_path}, is untouched."
        return "No checkpoint had been written yet."

    def run(self, final_samples=True):
        """Train from self.step to cfg.steps; then (if final_samples) draw samples.png."""
        try:
            self._train()
            if final_samples:
                self.save_samples("samples.png", progress=not self.quiet)   # minutes: a bar
        except BaseException:
            self._folder.failed()           # --overwrite, no checkpoint yet: the old run back
            raise
        finally:
            self._folder.release()
        return self

    def _train(self):
        """Ho et al. 2020's Algorithm 1 as a loop, with the log, checkpoints and sample
        pictures on the way."""
        cfg = self.cfg
        self._log = io.StringIO()                    # N ranks: only rank 0 writes the folder
        if distributed.writes():
            self._folder.begin(cfg.to_json(), self._say)   # --overwrite: the old run aside
            self._log, note = runlog.open_log(self.log_path, self.step)   # a damaged line:
            self._say(note)                                                 # dropped, said
        bar = Progress(cfg.steps, start=self.step, desc="train",
                       stream=io.StringIO() if self.quiet else None)
        self.model.train()
        try:
            while self.step < cfg.steps:
                loss, gnorm, lr = self.train_step()
                distributed.world().check_in(self.step, self.params)   # N ranks: no drift
                if self.step % cfg.log_every == 0:
                    self._log.write(runlog.format_row(self.step, loss, gnorm, lr))
                bar.update(1, loss=loss)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    self._log.flush()                 # every logged row is on disk first
                    self.save(self.ckpt_path)
                    self._folder.saved()              # the new run is durable: drop the old
                    self.plot_losses()
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.save_samples(f"samples_{self.step:06d}.png")
        except NonFiniteLoss:
            self._log.flush()
            if self._folder.previous is None:
                self.plot_losses()
            raise
        finally:
            bar.close()
            self._log.close()

    # -------------------------------------------------------------------- checkpoints
    def state(self, streams=None):
        """(arrays, meta): the whole run, as a checkpoint holds it."""
        return run_state.state(self, streams)

    def save(self, path):
        """Write the whole state atomically. Weights that are not finite are never saved,
        so the checkpoint on disk is always one that training can continue from."""
        streams = distributed.world().gather_streams()    # N ranks: every rank's own stream
        if not distributed.writes():                     # rank 0 writes it
            return
        arrays, meta = self.state(streams)
        bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            raise NonFiniteLoss(f"step {self.step}: {len(bad)} arrays hold NaN or inf (e.g. "
                                f"{bad[0]}); not saving them. {self._last_good()}")
        save_checkpoint(path, arrays, meta)

    def load(self, path, restore_rng=True):
        """Restore a checkpoint, checked whole first (minidiff/run_state.py)."""
        arrays, meta = load_checkpoint(path, limit=run_state.checkpoint_limit)
        note = run_state.check_data(path, meta, self.cfg.data_path)   # the same data
        run_state.restore(self, path, arrays, meta, restore_rng)
        if note:
            self._say(note)

    def read_log(self):
        """(steps, losses) from log.csv."""
        if self._log is not None and not self._log.closed:
            self._log.flush()
        return runlog.read_log(self.log_path)

    # -------------------------------------------------------------------- sampling
    def sample(self, n, use_ema=True, sampler=None, variance=None, ddim_steps=50,
               eta=0.0, frames=0, euler_steps=100, progress=False):
        """n samples (Ho et al. 2020, Algorithm 2, or DDIM; Euler's method for a flow run),
        from the EMA weights by default. sampler None: ancestral, or euler for a flow run.

        Returns (x0 (n, ...), trajectory): the trajectory is a list of (s, x_s) with about
        `frames` states of the reverse process, from s = T down to s = 0 (empty if frames=0;
        a flow run's s is its time, 1 down to 0). progress=True: a bar of the steps on stderr.
        The training RNG is left as it was, so sampling during training never changes a run.
        """
        sampler = sampler or ("euler" if self.cfg.objective == "flow" else "ancestral")
        check_sampler(self.cfg, sampler, variance)
        args = (n, sampler, variance, ddim_steps, eta, frames, euler_steps, progress)
        state = backend.get_rng_state()
        self.model.eval()
        try:
            if use_ema:
                with self.ema.swapped_in(self.model):
                    return self._sample(*args)
            return self._sample(*args)
        finally:
            self.model.train()
            backend.set_rng_state(state)

    def _sample(self, n, sampler, variance, ddim_steps, eta, frames, euler_steps, progress):
        shape = (n,) + self.shape
        clip = self.kind.clip                               # images live in [-1, 1]
        d, model = self.diffusion, self.model
        if variance not in (None, self.cfg.variance):
            d = build_diffusion(self.cfg, variance)
            if self.diffusion.variance == "learned_range" and d.variance != "learned_range":
                model = _mean_half(self.model)                      # keep the first C channels
        if sampler == "euler":                              # flow: dx/dt = v_θ, t = 1 → 0
            chain = d.euler_sample_progressive(model, shape, euler_steps, progress=progress)
            n_states = euler_steps + 1
        elif sampler == "ddim":
            chain = ddim_sample_loop_progressive(d, model, shape, num_steps=ddim_steps,
                                                 eta=eta, clip_denoised=clip, progress=progress)
            n_states = len(ddim_timesteps(d.num_timesteps, ddim_steps)) + 1
        else:                                               # ancestral (checked in sample)
            chain = d.p_sample_loop_progressive(model, shape, clip_denoised=clip,
                                                progress=progress)
            n_states = d.num_timesteps + 1                  # x_T, x_{T-1}, ..., x_0
        keep = viz.frame_indices(n_states, frames) if frames else set()
        trajectory = []
        with contextlib.closing(chain):                 # a bar ends its line before an error
            for k, (s, x) in enumerate(chain):
                if not bool(backend.xp().isfinite(x).all()):
                    raise ModelDiverged(
                        f"sampling: x_{s} holds NaN or inf: the model's predictions blew up, "
                        f"so its weights ({self.ckpt_path}) are not usable; the run probably "
                        "diverged in training. Try sampling the raw weights (--no-ema), or "
                        "train again with a lower --lr, more --warmup, or --loss simple")
                if k in keep:
                    trajectory.append((s, backend.to_numpy(x)))
        return backend.to_numpy(x), trajectory

    # -------------------------------------------------------------------- pictures
    def save_samples(self, name, progress=False):
        """A picture of samples from the EMA weights (what it looks like: self.kind)."""
        path = os.path.join(self.cfg.out_dir, name)
        x, _ = self.sample(self.cfg.n_samples if not self.kind.images else
                           min(self.cfg.n_samples, 64), progress=progress)
        reference = None if self.kind.images else self.data[:5000]
        if distributed.writes():               # N ranks: all sample (in step), rank 0 draws
            self.kind.picture(x, path, reference=reference, title=f"step {self.step}")
        return path

    def plot_losses(self):
        steps, losses = self.read_log() if distributed.writes() else ([], [])
        if len(steps) >= 2:
            viz.plot_loss_curve(steps, losses, os.path.join(self.cfg.out_dir, "loss.png"),
                                log_scale=None,          # log exactly when all > 0
                                title=f"{self.cfg.data}: {self.cfg.parameterization}, "
                                      f"loss {self.cfg.loss}")
