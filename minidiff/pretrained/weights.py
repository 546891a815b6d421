"""Tensors: diffusers' names for a minidiff UNet's parameters, and safetensors files in and out.

Weights are read through the safetensors package's NumPy API, never by unpickling. Every
tensor's name and shape is checked against the model before anything is assigned. float16,
bfloat16 and float64 tensors become float32 (NumPy has no bfloat16: its bytes are widened by
hand, which is exact).
"""
import json
import os

import numpy as np

from ..models.unet import AttnBlock, Downsample, ResBlock, Upsample

WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLED_WEIGHTS = "diffusion_pytorch_model.bin"
DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "BF16": None}
# Attention layers in checkpoints written before diffusers 0.14 (google/ddpm-* among them)
OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}



# ------------------------------------------------------------------------------ names


def tensor_map(model):
    """[(minidiff parameter, (diffusers names...), diffusers shape)] for every parameter of a
    UNet. Several names are stacked along axis 0: minidiff's attention has one fused 1x1 conv
    for q, k and v where diffusers has three Linear layers (and a Linear for the output)."""
    nrb = model.config["num_res_blocks"]
    modules = [("temb0", "time_embedding.linear_1", model.temb0),
               ("temb1", "time_embedding.linear_2", model.temb1),
               ("conv_in", "conv_in", model.conv_in)]
    modules += path_names(model.down, "down", "down_blocks", nrb, "downsamplers")
    modules += [("mid1", "mid_block.resnets.0", model.mid1),
                ("mid_attn", "mid_block.attentions.0", model.mid_attn),
                ("mid2", "mid_block.resnets.1", model.mid2)]
    modules += path_names(model.up, "up", "up_blocks", nrb + 1, "upsamplers")
    modules += [("norm_out", "conv_norm_out", model.norm_out),
                ("conv_out", "conv_out", model.conv_out)]
    entries = []
    for ours, theirs, module in modules:
        for layer, sub, names in layer_names(module):
            for kind in ("weight", "bias"):
                shape = getattr(layer, kind).shape
                if isinstance(module, AttnBlock) and sub != "norm":
                    shape = shape[:2]                           # a Linear layer in diffusers
                shape = (shape[0] // len(names),) + tuple(shape[1:])
                entries.append((dotted(ours, sub, kind),
                                tuple(dotted(theirs, n, kind) for n in names), shape))
    return entries


def path_names(blocks, ours, theirs, per_level, resampler):
    """(minidiff name, diffusers name, module) along the down or up path: per_level ResBlocks
    per level, each followed by its attention if any, then the level's resampler."""
    out, r = [], -1
    for i, m in enumerate(blocks):
        r += isinstance(m, ResBlock)
        level, j = divmod(r, per_level)
        kind = {ResBlock: "resnets", AttnBlock: "attentions"}.get(type(m))
        name = f"{theirs}.{level}.{kind}.{j}" if kind else f"{theirs}.{level}.{resampler}.0"
        out.append((f"{ours}.{i}", name, m))
    return out


def layer_names(module):
    """(layer, its minidiff name, its diffusers names) inside one block, or the layer itself."""
    if isinstance(module, ResBlock):
        pairs = [("norm1", ("norm1",)), ("conv1", ("conv1",)), ("temb", ("time_emb_proj",)),
                 ("norm2", ("norm2",)), ("conv2", ("conv2",))]
        pairs += [("skip", ("conv_shortcut",))] if module.skip is not None else []
    elif isinstance(module, AttnBlock):
        pairs = [("norm", ("group_norm",)), ("qkv", ("to_q", "to_k", "to_v")),
                 ("proj", ("to_out.0",))]
    elif isinstance(module, (Downsample, Upsample)):
        pairs = [("conv", ("conv",))]
    else:
        return [(module, "", ("",))]                    # a Linear, Conv2d or GroupNorm
    return [(getattr(module, sub), sub, names) for sub, names in pairs]


def dotted(*parts):
    return ".".join(p for p in parts if p)

def model_tensors(model):
    """{diffusers name: float32 array} of a UNet's parameters."""
    state = model.state_dict()
    tensors = {}
    for ours, names, shape in tensor_map(model):
        pieces = np.split(state[ours].astype(np.float32), len(names))             # q, k, v
        tensors.update({n: np.ascontiguousarray(p.reshape(shape))
                        for n, p in zip(names, pieces)})
    return tensors

# ------------------------------------------------------------------------------ reading


def weights_file(unet_dir):
    file = os.path.join(unet_dir, WEIGHTS)
    if os.path.isfile(file):
        return file
    if os.path.isfile(os.path.join(unet_dir, PICKLED_WEIGHTS)):
        b = os.path.join(unet_dir, PICKLED_WEIGHTS)
        raise ValueError(
            f"{b}: a pickle, which can run any code when loaded, so minidiff never reads it; "
            "convert it once, where PyTorch is installed: python -c \"import torch; from "
            "safetensors.torch import save_file; save_file(torch.load('{0}', "
            "map_location='cpu', weights_only=True), '{1}')\"".format(b, file))
    raise ValueError(f"{unet_dir}: no {WEIGHTS}")


def read_weights(file):
    """{diffusers name: float32 array} of a safetensors file, old attention names renamed."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(file, framework="np") as f:
            header = {k: f.get_slice(k) for k in f.keys()}
            for name, s in header.items():
                if s.get_dtype() not in DTYPES:
                    raise ValueError(f"{file}: tensor {name} has dtype {s.get_dtype()}; "
                                     f"allowed: {', '.join(DTYPES)}")
            arrays = {k: read_tensor(f, file, k, s) for k, s in header.items()}
    except SafetensorError as e:
        raise ValueError(f"{file}: not a readable safetensors file ({e})") from None
    return {new_name(k): a for k, a in arrays.items()}


def read_tensor(f, file, name, header):
    if header.get_dtype() != "BF16":
        return f.get_tensor(name).astype(np.float32)
    # bfloat16 is the top half of a float32: widen the raw little-endian bytes
    with open(file, "rb") as raw:
        n = int.from_bytes(raw.read(8), "little")
        start, end = json.loads(raw.read(n))[name]["data_offsets"]
        raw.seek(8 + n + start)
        half = np.frombuffer(raw.read(end - start), dtype="<u2")
    return (half.astype(np.uint32) << 16).view(np.float32).reshape(header.get_shape())


def new_name(name):
    """A checkpoint's attention names from before diffusers 0.14 -> today's (diffusers
    renames them the same way when it loads such a file)."""
    head, _, last = name.rpartition(".")
    block, _, layer = head.rpartition(".")
    if ".attentions." in name and layer in OLD_ATTENTION_NAMES:
        return f"{block}.{OLD_ATTENTION_NAMES[layer]}.{last}"
    return name


def load_weights(model, file):
    """Every tensor's name and shape checked against the model, then all assigned at once."""
    entries = tensor_map(model)
    weights = read_weights(file)
    expected = {n: shape for _, names, shape in entries for n in names}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{file}: {len(missing)} tensors missing ({', '.join(missing[:4])}"
                         f"{'...' if len(missing) > 4 else ''}), {len(unexpected)} unexpected "
                         f"({', '.join(unexpected[:4])}{'...' if len(unexpected) > 4 else ''})"
                         " for the model its config describes")
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise ValueError(f"{file}: tensor {name} has shape {weights[name].shape}, the "
                             f"config's model needs {shape}")
    params = dict(model.named_parameters())
    state = {ours: np.concatenate([weights[n] for n in names]).reshape(params[ours].shape)
             for ours, names, _ in entries}
    model.load_state_dict(state)
