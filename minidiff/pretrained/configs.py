"""UNet2DModel and DDPMScheduler configs <-> minidiff's UNet and GaussianDiffusion arguments.

Every key is read. A value minidiff cannot express is refused in one line naming the file, the
key and its value (`refuse`); a key this file does not know is refused too.
"""
import json
import os

import numpy as np

from ..diffusion import cosine_beta_schedule

DIFFUSERS_VERSION = "0.42.1"            # the version save() was checked against

# UNet2DModel's and DDPMScheduler's defaults in diffusers 0.42.1: a key a config leaves out
# takes these values there, and so here.
UNET_DEFAULTS = dict(
    sample_size=None, in_channels=3, out_channels=3, center_input_sample=False,
    time_embedding_type="positional", time_embedding_dim=None, freq_shift=0,
    flip_sin_to_cos=True,
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    mid_block_type="UNetMidBlock2D",
    up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[224, 448, 672, 896], layers_per_block=2, mid_block_scale_factor=1,
    downsample_padding=1, downsample_type="conv", upsample_type="conv", dropout=0.0,
    act_fn="silu", attention_head_dim=8, norm_num_groups=32, attn_norm_num_groups=None,
    norm_eps=1e-5, resnet_time_scale_shift="default", add_attention=True,
    class_embed_type=None, num_class_embeds=None, num_train_timesteps=None)
SCHEDULER_DEFAULTS = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
    trained_betas=None, variance_type="fixed_small", clip_sample=True,
    prediction_type="epsilon", thresholding=False, dynamic_thresholding_ratio=0.995,
    clip_sample_range=1.0, sample_max_value=1.0, timestep_spacing="leading", steps_offset=0,
    rescale_betas_zero_snr=False)

# Keys whose one value is all minidiff's U-Net can be (diffusers' default, unless noted).
UNET_FIXED = dict(center_input_sample=False, time_embedding_type="positional",
                  mid_block_type="UNetMidBlock2D", mid_block_scale_factor=1,
                  downsample_type="conv", upsample_type="conv",
                  resnet_time_scale_shift="default", add_attention=True,
                  class_embed_type=None, num_class_embeds=None)
SCHEDULER_FIXED = dict(thresholding=False, rescale_betas_zero_snr=False)
# Read and left alone: dynamic_thresholding_ratio and sample_max_value (thresholding is off),
# timestep_spacing and steps_offset (how diffusers picks fewer steps than T; minidiff's
# samplers pick their own), and a UNet config's num_train_timesteps (read only by the
# "learned" time embedding, which is refused).

PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
# fixed_*_log are the same σ_t² as fixed_*, computed through its log in diffusers
VARIANCE_TYPES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small",
                  "fixed_large": "fixed_large", "fixed_large_log": "fixed_large",
                  "learned_range": "learned_range"}


def refuse(file, key, value, why):
    raise ValueError(f"{file}: {key} = {json.dumps(value)}: {why}")

# ------------------------------------------------------------------------------ reading


def read_json(file):
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file}: must hold a JSON object, got {type(config).__name__}")
    return config


def locate(path):
    """(UNet folder, scheduler config file or None) of a folder in one of the three layouts."""
    if not os.path.isdir(path):
        raise ValueError(f"{path}: not a folder (give a diffusers model or pipeline folder)")
    index = os.path.join(path, "model_index.json")
    if os.path.isfile(index):
        pipeline = read_json(index)
        for part in ("unet", "scheduler"):
            if part not in pipeline:
                raise ValueError(f"{index}: no {part!r} entry (minidiff reads DDPM pipelines: "
                                 "a UNet2DModel and a DDPMScheduler)")
        return (os.path.join(path, "unet"),
                os.path.join(path, "scheduler", "scheduler_config.json"))
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{path}: neither model_index.json nor config.json (not a diffusers "
                         "pipeline or UNet2DModel folder)")
    beside = os.path.join(path, "scheduler_config.json")
    return path, beside if os.path.isfile(beside) else None


def read_configs(path):
    """(UNet folder, UNet config, its file, scheduler config, its file or None), each config
    filled with diffusers' defaults for the keys it leaves out."""
    unet_dir, scheduler_file = locate(path)
    unet_file = os.path.join(unet_dir, "config.json")
    unet = {**UNET_DEFAULTS, **read_json(unet_file)}
    scheduler = dict(SCHEDULER_DEFAULTS)
    if scheduler_file is not None:
        scheduler.update(read_json(scheduler_file))
    return unet_dir, unet, unet_file, scheduler, scheduler_file


def clip_sample(path):
    """The scheduler's clip_sample: whether sampling clips x̂0 to [-1, 1] (Ho et al.'s code)."""
    return bool(read_configs(path)[3]["clip_sample"])

# ------------------------------------------------------------------------------ configs in


def check_keys(config, file, known, class_name):
    name = config.get("_class_name", class_name)
    if name != class_name:
        refuse(file, "_class_name", name, f"minidiff reads {class_name} configs only")
    for key, value in config.items():
        if not key.startswith("_") and key not in known:
            refuse(file, key, value, "a key minidiff does not know, so cannot honour")
        if isinstance(known.get(key), bool) and not isinstance(value, bool):
            refuse(file, key, value, "must be true or false")


def unet_kwargs(c, file):
    """UNet2DModel config -> minidiff.models.UNet keyword arguments."""
    check_keys(c, file, UNET_DEFAULTS, "UNet2DModel")
    for key, value in UNET_FIXED.items():
        if c[key] != value:
            refuse(file, key, c[key], f"minidiff's U-Net has only {json.dumps(value)}")
    if c["act_fn"] not in ("silu", "swish"):
        refuse(file, "act_fn", c["act_fn"], "minidiff's U-Net uses SiLU (silu/swish) only")
    widths = c["block_out_channels"]
    if not isinstance(widths, list) or not widths or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        refuse(file, "block_out_channels", widths, "must be a list of positive ints")
    for key in ("layers_per_block", "norm_num_groups", "in_channels", "out_channels"):
        if not isinstance(c[key], int) or isinstance(c[key], bool) or c[key] < 1:
            refuse(file, key, c[key], "must be a positive int")
    ch = widths[0]
    if any(w % ch for w in widths):
        refuse(file, "block_out_channels", widths, "each must be a multiple of the first "
               "(minidiff's widths are ch x ch_mult)")
    if c["time_embedding_dim"] not in (None, 4 * ch):
        refuse(file, "time_embedding_dim", c["time_embedding_dim"],
               f"minidiff's time embedding is 4 x block_out_channels[0] = {4 * ch}")
    if c["attn_norm_num_groups"] not in (None, c["norm_num_groups"]):
        refuse(file, "attn_norm_num_groups", c["attn_norm_num_groups"],
               "minidiff's attention normalises with norm_num_groups groups")
    size = c["sample_size"]
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        refuse(file, "sample_size", size, "minidiff's U-Net needs one square image size")
    levels = attention_levels(c, file)
    heads_ok = c["attention_head_dim"] is None or all(
        widths[i] == c["attention_head_dim"] for i in levels + [len(widths) - 1])
    if not heads_ok:
        refuse(file, "attention_head_dim", c["attention_head_dim"],
               f"gives several heads; minidiff's attention has one head of all the channels "
               f"(null, or the width of each attention level: {widths})")
    ins, outs = c["in_channels"], c["out_channels"]
    if outs not in (ins, 2 * ins):
        refuse(file, "out_channels", outs, f"must be in_channels ({ins}) or twice it "
               "(a learned variance)")
    padding = {0: "same", 1: "symmetric"}.get(c["downsample_padding"])
    if padding is None:
        refuse(file, "downsample_padding", c["downsample_padding"], "minidiff has 0 (TF's "
               "SAME: 0 before, 1 after) or 1 (1 on every side)")
    if c["freq_shift"] not in (0, 1):
        refuse(file, "freq_shift", c["freq_shift"], "minidiff has 0 or 1")
    return dict(in_channels=ins, image_size=size, base_channels=ch,
                ch_mult=tuple(w // ch for w in widths), num_res_blocks=c["layers_per_block"],
                attn_resolutions=tuple(size >> i for i in levels), groups=c["norm_num_groups"],
                dropout=c["dropout"], learn_sigma=outs == 2 * ins, downsample_padding=padding,
                norm_eps=c["norm_eps"], flip_sin_to_cos=bool(c["flip_sin_to_cos"]),
                freq_shift=c["freq_shift"])


def attention_levels(c, file):
    """The levels (0 = full size) whose blocks hold attention, the same going down and up."""
    down, up = c["down_block_types"], c["up_block_types"]
    for key, types, names in (("down_block_types", down, ("DownBlock2D", "AttnDownBlock2D")),
                              ("up_block_types", up, ("UpBlock2D", "AttnUpBlock2D"))):
        if len(types) != len(c["block_out_channels"]) or any(t not in names for t in types):
            refuse(file, key, types, f"minidiff has one of {names} per block_out_channels "
                   "entry")
    levels = [i for i, t in enumerate(down) if t == "AttnDownBlock2D"]
    if levels != [i for i, t in enumerate(reversed(up)) if t == "AttnUpBlock2D"]:
        refuse(file, "up_block_types", up, "minidiff's U-Net holds attention at the same "
               "resolutions going up as down_block_types going down")
    return levels


def diffusion_kwargs(c, file, learn_sigma):
    """DDPMScheduler config -> GaussianDiffusion keyword arguments."""
    file = file or "(no scheduler config: DDPMScheduler's defaults)"
    check_keys(c, file, SCHEDULER_DEFAULTS, "DDPMScheduler")
    for key, value in SCHEDULER_FIXED.items():
        if c[key] != value:
            refuse(file, key, c[key], f"minidiff has only {json.dumps(value)}")
    if c["clip_sample"] and c["clip_sample_range"] != 1.0:
        refuse(file, "clip_sample_range", c["clip_sample_range"], "minidiff clips x0 to "
               "[-1, 1] only")
    if c["prediction_type"] not in PREDICTIONS:
        refuse(file, "prediction_type", c["prediction_type"], f"allowed: {list(PREDICTIONS)}")
    variance = VARIANCE_TYPES.get(c["variance_type"])
    if variance is None:
        refuse(file, "variance_type", c["variance_type"], f"allowed: {list(VARIANCE_TYPES)}")
    if (variance == "learned_range") != learn_sigma:
        refuse(file, "variance_type", c["variance_type"], "the UNet's out_channels say the "
               f"variance is {'learned' if learn_sigma else 'fixed'}")
    return dict(betas=betas(c, file), parameterization=PREDICTIONS[c["prediction_type"]],
                variance=variance, loss="hybrid" if learn_sigma else "simple")


def betas(c, file):
    """β_1 … β_T in float64 (diffusers computes them in float32)."""
    T, b0, b1 = c["num_train_timesteps"], c["beta_start"], c["beta_end"]
    if c["trained_betas"] is not None:
        if not isinstance(c["trained_betas"], list):
            refuse(file, "trained_betas", c["trained_betas"], "must be a list of numbers")
        if len(c["trained_betas"]) != T:
            refuse(file, "trained_betas", f"{len(c['trained_betas'])} values",
                   f"num_train_timesteps is {T}")
        return np.asarray(c["trained_betas"], dtype=np.float64)
    if c["beta_schedule"] == "linear":
        return np.linspace(b0, b1, T, dtype=np.float64)                # Ho et al. 2020, §4
    if c["beta_schedule"] == "scaled_linear":
        return np.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=np.float64) ** 2
    if c["beta_schedule"] == "squaredcos_cap_v2":
        return cosine_beta_schedule(T, s=0.008, max_beta=0.999)     # Nichol & Dhariwal 2021
    refuse(file, "beta_schedule", c["beta_schedule"],
           "allowed: linear, scaled_linear, squaredcos_cap_v2, or trained_betas")

# ------------------------------------------------------------------------------ configs out


def unet_config(model):
    """The UNet2DModel config of a minidiff UNet."""
    c = model.config
    widths = [c["base_channels"] * m for m in c["ch_mult"]]
    attn = [c["image_size"] >> i in c["attn_resolutions"] for i in range(len(widths))]
    return dict(
        _class_name="UNet2DModel", _diffusers_version=DIFFUSERS_VERSION,
        sample_size=c["image_size"], in_channels=c["in_channels"],
        out_channels=c["in_channels"] * (2 if c["learn_sigma"] else 1),
        flip_sin_to_cos=c["flip_sin_to_cos"], freq_shift=c["freq_shift"],
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        block_out_channels=widths, layers_per_block=c["num_res_blocks"],
        downsample_padding={"same": 0, "symmetric": 1}[c["downsample_padding"]],
        dropout=c["dropout"], act_fn="silu", attention_head_dim=None,
        norm_num_groups=c["groups"], norm_eps=c["norm_eps"], **UNET_FIXED)


def scheduler_config(diffusion, clip):
    """The DDPMScheduler config of a GaussianDiffusion: β as a linear schedule when it is one
    exactly, else every value (trained_betas)."""
    names = {v: k for k, v in PREDICTIONS.items()}
    if diffusion.parameterization not in names:
        raise ValueError(f"parameterization: {diffusion.parameterization!r} has no diffusers "
                         f"prediction_type (allowed: {', '.join(names)})")
    b = diffusion.betas_float64
    T = len(b)
    linear = np.array_equal(b, np.linspace(b[0], b[-1], T))
    return dict(_class_name="DDPMScheduler", _diffusers_version=DIFFUSERS_VERSION,
                num_train_timesteps=T, beta_schedule="linear", beta_start=float(b[0]),
                beta_end=float(b[-1]), trained_betas=None if linear else b.tolist(),
                variance_type=diffusion.variance, clip_sample=bool(clip),
                prediction_type=names[diffusion.parameterization], **SCHEDULER_FIXED)
