"""minidiff.pretrained against diffusers, without torch or diffusers: the fixture in
tests/fixtures/ was written by diffusers 0.42.1 (benchmarks/make_diffusers_fixture.py), with
diffusers' own outputs beside it.

The float32 bound is derived, not tuned. Rounding error grows in proportion to the unit
roundoff u. E = max |out32 - out64|, diffusers' float32 output against its float64 one, is this
network's own float32 error on this input (1.8e-6 of outputs up to 2.5), measured by diffusers
and stored with it. minidiff's float32 output is another evaluation of the same function, with
other summation orders: its error is of E's size, say at most 2E, and two errors add, so
|minidiff32 - diffusers32| <= 2E + E < 4E. The same argument in float64 gives
4E · u64/u32 = 4E · 2^-29 against diffusers' float64 output, which shows the mapping is exact.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import TensorSpec, serialize_file
from safetensors.numpy import load_file, save_file

from minidiff import pretrained
from minidiff.diffusion import GaussianDiffusion, get_beta_schedule
from minidiff.models import PRESETS, UNet
from minidiff.tensor import Tensor

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "diffusers_tiny"
WEIGHTS = "diffusion_pytorch_model.safetensors"
EXPECTED = load_file(FIXTURES / "diffusers_tiny_expected.safetensors")
E = float(np.abs(EXPECTED["out32"].astype(np.float64) - EXPECTED["out64"]).max())

# google/ddpm-cifar10-32's config.json as published (Ho et al.'s CIFAR-10 network); written
# here from its description, as it could not be downloaded: test_pretrained_diffusers.py checks
# diffusers counts the same 35,746,307 parameters for it
GOOGLE_CIFAR10 = {
    "_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "act_fn": "silu",
    "attention_head_dim": None, "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}


def copy_fixture(tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(TINY, folder)
    return folder


def edit_json(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def forward(model, dtype):
    out = model(Tensor(EXPECTED["x"].astype(dtype)), EXPECTED["t"])
    return out.data.astype(np.float64)


# ------------------------------------------------------------------------------ diffusers' outputs
def test_forward_matches_diffusers_in_float64():
    model, _ = pretrained.load(TINY, dtype=np.float64)
    err = np.abs(forward(model, np.float64) - EXPECTED["out64"]).max()
    assert err <= 4 * E * 2.0 ** -29, f"max |minidiff64 - diffusers64| = {err:.3e}"


def test_forward_matches_diffusers_in_float32():
    model, _ = pretrained.load(TINY)
    err = np.abs(forward(model, np.float32) - EXPECTED["out32"]).max()
    assert 0 < E < 1e-5 and err <= 4 * E, f"max |minidiff32 - diffusers32| = {err:.3e}, E = {E}"


def test_scheduler_step_matches_ddpmscheduler():
    """p_sample with the model's ε given = DDPMScheduler.step (fixed_small, clip_sample) in
    float64. Bound: the step is a handful of operations on values up to
    M = (|x_t| + |ε|)/√ᾱ_t + |z|, and diffusers forms β_t as 1 - ᾱ_t/ᾱ_{t-1}, which cancels
    to a relative error u64/β_t: 8 u64 M / β_t."""
    _, diffusion = pretrained.load(TINY, dtype=np.float64)
    betas = np.linspace(1e-4, 0.02, 1000)
    alphas_cumprod = np.cumprod(1 - betas)
    for i, t in enumerate(EXPECTED["step_t"]):
        x, eps, z = (EXPECTED[k][i:i + 1] for k in ("step_x_t", "step_eps", "step_z"))
        out = diffusion.p_sample(lambda x_t, s: eps, x, np.array([t]), clip_denoised=True, z=z)
        M = ((np.abs(x) + np.abs(eps)) / np.sqrt(alphas_cumprod[t]) + np.abs(z)).max()
        err = np.abs(np.asarray(out) - EXPECTED["step_prev"][i:i + 1]).max()
        assert err <= 8 * 2.0 ** -53 * M / betas[t], f"t = {t}: max error {err:.3e}"


def test_scheduler_config_maps_to_the_diffusion():
    _, d = pretrained.load(TINY)
    assert d.num_timesteps == 1000 and d.variance == "fixed_small" and d.parameterization == "eps"
    np.testing.assert_array_equal(d.betas_float64, np.linspace(1e-4, 0.02, 1000))
    assert pretrained.clip_sample(TINY) is True


# ------------------------------------------------------------------------------ the cifar10 preset
def test_google_cifar10_config_is_the_cifar10_preset():
    kwargs = pretrained.configs.unet_kwargs({**pretrained.configs.UNET_DEFAULTS,
                                             **GOOGLE_CIFAR10}, "config.json")
    preset = {**PRESETS["cifar10"], "dropout": 0.0}     # dropout is not in the published config
    assert {k: kwargs[k] for k in preset} == preset
    assert kwargs["flip_sin_to_cos"] is False and kwargs["freq_shift"] == 1
    assert UNet(**kwargs).num_parameters() == 35_746_307     # diffusers' count for this config


# ------------------------------------------------------------------------------ the three layouts
def test_bare_unet_folder_takes_ddpmscheduler_defaults(tmp_path):
    folder = copy_fixture(tmp_path)
    (folder / "scheduler_config.json").unlink()
    model, d = pretrained.load(folder)
    np.testing.assert_array_equal(d.betas_float64, np.linspace(1e-4, 0.02, 1000))
    assert d.variance == "fixed_small" and pretrained.clip_sample(folder) is True
    np.testing.assert_array_equal(forward(model, np.float32),
                                  forward(pretrained.load(TINY)[0], np.float32))


def test_save_then_load_is_the_same_network_and_schedule(tmp_path):
    model, _ = pretrained.load(TINY)
    cosine = GaussianDiffusion(get_beta_schedule("cosine", 50), parameterization="v",
                               variance="fixed_large")
    pretrained.save(model, cosine, tmp_path / "pipe", clip=False)
    assert sorted(p.name for p in (tmp_path / "pipe").iterdir()) == \
        ["model_index.json", "scheduler", "unet"]
    again, d = pretrained.load(tmp_path / "pipe")
    np.testing.assert_array_equal(forward(again, np.float32), forward(model, np.float32))
    np.testing.assert_array_equal(d.betas_float64, cosine.betas_float64)   # trained_betas
    assert (d.parameterization, d.variance) == ("v", "fixed_large")
    assert pretrained.clip_sample(tmp_path / "pipe") is False
    theirs = load_file(tmp_path / "pipe" / "unet" / WEIGHTS)
    ours = load_file(TINY / WEIGHTS)
    assert sorted(theirs) == sorted(ours)
    assert all(np.array_equal(theirs[k], ours[k].astype(np.float32)) for k in ours)


def test_save_writes_a_linear_schedule_by_name(tmp_path):
    model, d = pretrained.load(TINY)
    pretrained.save(model, d, tmp_path / "pipe")
    config = json.loads((tmp_path / "pipe" / "scheduler" / "scheduler_config.json").read_text())
    assert (config["beta_schedule"], config["beta_start"], config["beta_end"],
            config["trained_betas"]) == ("linear", 1e-4, 0.02, None)


def test_save_refuses_a_folder_that_holds_something(tmp_path):
    model, d = pretrained.load(TINY)
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        pretrained.save(model, d, tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    mu = GaussianDiffusion(get_beta_schedule("linear", 10), parameterization="mu")
    with pytest.raises(ValueError, match="'mu' has no diffusers prediction_type"):
        pretrained.save(model, mu, tmp_path / "new")


# ------------------------------------------------------------------------------ weights
def rewrite_weights(folder, change):
    tensors = load_file(folder / WEIGHTS)
    save_file(change(tensors), folder / WEIGHTS)


def test_old_attention_names_are_read(tmp_path):
    folder = copy_fixture(tmp_path)
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def rename(tensors):
        out = {}
        for k, v in tensors.items():
            for new, name in old.items():
                k = k.replace(f".{new}.", f".{name}.")
            out[k] = v
        return out
    rewrite_weights(folder, rename)
    assert any(".query." in k for k in load_file(folder / WEIGHTS))
    np.testing.assert_array_equal(forward(pretrained.load(folder)[0], np.float32),
                                  forward(pretrained.load(TINY)[0], np.float32))


def test_bfloat16_and_float64_weights_become_float32(tmp_path):
    """bf16: each float32 weight cut to its top 16 bits is written as bfloat16 and must come
    back bit for bit; float64 weights come back rounded to float32."""
    folder = copy_fixture(tmp_path)
    tensors = {k: v.astype(np.float32) for k, v in load_file(folder / WEIGHTS).items()}
    cut = {k: (v.view(np.uint32) & 0xFFFF0000).view(np.float32) for k, v in tensors.items()}
    halves = {k: np.ascontiguousarray((v.view(np.uint32) >> 16).astype("<u2"))
              for k, v in cut.items()}
    specs = {k: TensorSpec(dtype="bfloat16", shape=v.shape, data_ptr=v.ctypes.data,
                           data_len=v.nbytes) for k, v in halves.items()}
    serialize_file(specs, str(folder / WEIGHTS), metadata=None)
    weights = pretrained.weights.read_weights(str(folder / WEIGHTS))
    assert all(weights[k].dtype == np.float32 and np.array_equal(weights[k], cut[k])
               for k in cut)
    save_file({k: v.astype(np.float64) for k, v in tensors.items()}, folder / WEIGHTS)
    model, _ = pretrained.load(folder)
    np.testing.assert_array_equal(forward(model, np.float32),
                                  forward(pretrained.load(TINY)[0], np.float32))


def one_line_error(folder, *needles):
    with pytest.raises(ValueError) as info:
        pretrained.load(folder)
    msg = str(info.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


def test_a_pickled_weights_file_is_refused_with_the_conversion(tmp_path):
    folder = copy_fixture(tmp_path)
    (folder / WEIGHTS).rename(folder / "diffusion_pytorch_model.bin")
    one_line_error(folder, "diffusion_pytorch_model.bin", "pickle", "never reads it",
                   "safetensors.torch import save_file", "weights_only=True")


@pytest.mark.parametrize("change, needles", [
    (lambda t: {k: v for k, v in t.items() if k != "conv_in.bias"},
     ("1 tensors missing (conv_in.bias)", "0 unexpected")),
    (lambda t: {**t, "class_embedding.weight": np.zeros(3, np.float32)},
     ("0 tensors missing", "1 unexpected (class_embedding.weight)")),
    (lambda t: {**t, "conv_out.weight": np.zeros((3, 16, 1, 1), np.float32)},
     ("tensor conv_out.weight has shape (3, 16, 1, 1)", "needs (3, 16, 3, 3)")),
    (lambda t: {**t, "conv_out.bias": np.zeros(3, np.int32)}, ("conv_out.bias", "dtype I32")),
])
def test_a_tensor_that_does_not_fit_is_named_and_nothing_is_assigned(tmp_path, change,
                                                                      needles):
    folder = copy_fixture(tmp_path)
    rewrite_weights(folder, change)
    one_line_error(folder, *needles)


# ------------------------------------------------------------------------------ refusals
UNET_REFUSED = [
    ("attention_head_dim", 8), ("act_fn", "gelu"), ("class_embed_type", "timestep"),
    ("num_class_embeds", 10), ("time_embedding_type", "fourier"), ("center_input_sample", True),
    ("resnet_time_scale_shift", "scale_shift"), ("downsample_padding", 2),
    ("mid_block_type", "UNetMidBlock2DCrossAttn"), ("downsample_type", "resnet"),
    ("add_attention", False), ("out_channels", 4), ("freq_shift", 2),
    ("down_block_types", ["DownBlock2D", "CrossAttnDownBlock2D"]),
    ("up_block_types", ["UpBlock2D", "AttnUpBlock2D"]), ("block_out_channels", [16, 24]),
    ("sample_size", [8, 16]), ("time_embedding_dim", 32), ("attn_norm_num_groups", 4),
    ("cross_attention_dim", 64), ("_class_name", "UNet2DConditionModel"),
]
SCHEDULER_REFUSED = [
    ("beta_schedule", "sigmoid"), ("variance_type", "learned"), ("variance_type", "fixed_x"),
    ("prediction_type", "x0"), ("thresholding", True), ("rescale_betas_zero_snr", True),
    ("clip_sample_range", 2.0), ("_class_name", "PNDMScheduler"), ("variance_type",
                                                                    "learned_range"),
    ("trained_betas", [0.1, 0.2]), ("skip_prk_steps", True),
]


@pytest.mark.parametrize("key, value", UNET_REFUSED, ids=[k for k, _ in UNET_REFUSED])
def test_a_unet_config_minidiff_cannot_express_is_refused(tmp_path, key, value):
    folder = copy_fixture(tmp_path)
    edit_json(folder / "config.json", **{key: value})
    one_line_error(folder, "config.json", f"{key} = {json.dumps(value)}")


@pytest.mark.parametrize("key, value", SCHEDULER_REFUSED,
                         ids=[f"{k}={v}" for k, v in SCHEDULER_REFUSED])
def test_a_scheduler_config_minidiff_cannot_express_is_refused(tmp_path, key, value):
    folder = copy_fixture(tmp_path)
    edit_json(folder / "scheduler_config.json", **{key: value})
    one_line_error(folder, "scheduler_config.json", f"{key} =")


def test_a_pipeline_folder_needs_its_unet_and_scheduler(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "X"]}))
    one_line_error(tmp_path, "model_index.json", "no 'scheduler' entry")
    (tmp_path / "model_index.json").write_text("{not json")
    one_line_error(tmp_path, "model_index.json", "not valid JSON")
    (tmp_path / "model_index.json").unlink()
    one_line_error(tmp_path, "neither model_index.json nor config.json")


# ------------------------------------------------------------------------------ the two options
@pytest.mark.parametrize("flip, shift", [(False, 1), (True, 0), (True, 1), (False, 0)])
def test_time_embedding_options_against_a_naive_loop(flip, shift):
    from minidiff.models import timestep_embedding
    t, dim = np.array([0, 1, 7, 613, 999]), 8
    got = timestep_embedding(t, dim, np.float64, flip_sin_to_cos=flip, freq_shift=shift).data
    for b, s in enumerate(t):
        f = [10000.0 ** (-i / (dim // 2 - shift)) for i in range(dim // 2)]
        sin, cos = [np.sin(s * fi) for fi in f], [np.cos(s * fi) for fi in f]
        np.testing.assert_allclose(got[b], cos + sin if flip else sin + cos, rtol=0,
                                   atol=1e-12)


def test_same_padding_is_zero_before_and_one_after():
    """The downsampling conv with "same" against a naive loop over TF's SAME window: output
    (i, j) reads input rows 2i..2i+2 and columns 2j..2j+2, zero past the last."""
    from minidiff.models.unet import Downsample
    rng = np.random.default_rng(0)
    down = Downsample(2, "same", np.float64)
    down.conv.weight.data[...] = rng.standard_normal(down.conv.weight.shape)
    x = rng.standard_normal((1, 2, 6, 6))
    padded = np.zeros((1, 2, 7, 7))
    padded[:, :, :6, :6] = x
    expected = np.zeros((1, 2, 3, 3))
    for o in range(2):
        for i in range(3):
            for j in range(3):
                window = padded[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                expected[0, o, i, j] = (window * down.conv.weight.data[o]).sum()
    expected += down.conv.bias.data[:, None, None]
    np.testing.assert_allclose(down(Tensor(x)).data, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="downsample_padding"):
        UNet(downsample_padding="valid")


@pytest.mark.parametrize("file, key, value", [
    ("config.json", "flip_sin_to_cos", "no"), ("config.json", "block_out_channels", []),
    ("config.json", "block_out_channels", [16, 0]), ("config.json", "layers_per_block", 0),
    ("config.json", "norm_num_groups", 0), ("config.json", "sample_size", 9),
    ("scheduler_config.json", "clip_sample", 1), ("scheduler_config.json", "trained_betas", 3),
    ("scheduler_config.json", "beta_end", 1.5)])
def test_malformed_values_are_refused_naming_the_file(tmp_path, file, key, value):
    folder = copy_fixture(tmp_path)
    edit_json(folder / file, **{key: value})
    one_line_error(folder, file)
