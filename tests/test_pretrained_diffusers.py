"""minidiff.pretrained beside diffusers itself: run only in the benchmark venv, where torch and
diffusers are installed (skipped everywhere else; CI's venv never imports torch).

    .bench/bin/python -m pytest -q tests/test_pretrained_diffusers.py

- google/ddpm-cifar10-32's config (Ho et al.'s network) with random weights: minidiff's forward
  equals diffusers' within the derived float32 bound of test_pretrained.py (4E, E the float32
  error of diffusers' own evaluation, measured here against its float64 one);
- save -> diffusers.DDPMPipeline.from_pretrained: the same network and the same schedule.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from minidiff import pretrained  # noqa: E402
from minidiff.diffusion import GaussianDiffusion, get_beta_schedule  # noqa: E402
from minidiff.models import unet_from_preset  # noqa: E402
from minidiff.tensor import Tensor  # noqa: E402
from test_pretrained import GOOGLE_CIFAR10, TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def fixture_script():
    path = ROOT / "benchmarks" / "make_diffusers_fixture.py"
    spec = importlib.util.spec_from_file_location("make_diffusers_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def diffusers_outputs(unet, x, t, script):
    """diffusers' output in float32 and in float64 (its time embedding in float64 too)."""
    with torch.no_grad():
        out32 = unet(torch.from_numpy(x), torch.from_numpy(t)).sample.double()
        hook = unet.time_proj.register_forward_hook(script.embedding64)
        out64 = unet.double()(torch.from_numpy(x).double(), torch.from_numpy(t)).sample
        hook.remove()
        unet.float()
    return out32.numpy(), out64.numpy()


def check_forward(model, unet, batch, size, script, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    t = rng.integers(0, 1000, batch)
    out32, out64 = diffusers_outputs(unet, x, t, script)
    E = np.abs(out32 - out64).max()
    ours = model(Tensor(x), t).data.astype(np.float64)
    err = np.abs(ours - out32).max()
    assert 0 < E and err <= 4 * E, f"max |minidiff32 - diffusers32| = {err:.3e}, E = {E:.3e}"
    return err, E


def test_google_cifar10_config_random_weights_same_forward(tmp_path):
    script = fixture_script()
    config = {k: v for k, v in GOOGLE_CIFAR10.items() if not k.startswith("_")}
    unet = diffusers.UNet2DModel(**config)
    assert sum(p.numel() for p in unet.parameters()) == 35_746_307
    script.randomize(unet, torch.Generator().manual_seed(1))
    unet.eval().save_pretrained(tmp_path, safe_serialization=True)
    diffusers.DDPMScheduler(clip_sample=True).save_pretrained(tmp_path)
    model, diffusion = pretrained.load(tmp_path)
    assert model.config["downsample_padding"] == "same" and model.config["norm_eps"] == 1e-6
    err, E = check_forward(model, unet, 2, 32, script)
    print(f"cifar10 config: max |minidiff32 - diffusers32| = {err:.3e}, E = {E:.3e}")


@pytest.mark.parametrize("preset, variance", [("cifar10", "fixed_small"),
                                              ("tiny", "learned_range")])
def test_save_then_ddpmpipeline_loads_the_same_model(tmp_path, preset, variance):
    """A minidiff model (random weights) saved, then loaded by DDPMPipeline.from_pretrained."""
    script = fixture_script()
    size = {"cifar10": 32, "tiny": 16}[preset]
    kwargs = dict(in_channels=3, image_size=size, learn_sigma=variance == "learned_range")
    if preset == "cifar10":
        kwargs.update(base_channels=32, groups=8)           # Ho et al.'s layout, narrower
    model = unet_from_preset(preset, **kwargs)
    rng = np.random.default_rng(3)
    for _, p in model.named_parameters():
        p.data[...] = rng.normal(0, 1 / np.sqrt(p.data[0].size if p.ndim > 1 else 10), p.shape)
    model.eval()
    loss = "hybrid" if variance == "learned_range" else "simple"
    diffusion = GaussianDiffusion(get_beta_schedule("cosine", 200), variance=variance, loss=loss)
    pretrained.save(model, diffusion, tmp_path / "pipe")
    pipe = diffusers.DDPMPipeline.from_pretrained(tmp_path / "pipe")
    unet, scheduler = pipe.unet.eval(), pipe.scheduler
    assert scheduler.config.variance_type == variance and scheduler.config.clip_sample
    np.testing.assert_allclose(scheduler.betas.numpy(), diffusion.betas_float64, rtol=2 ** -23)
    check_forward(model, unet, 2, size, script, seed=4)


def test_the_fixture_loads_in_diffusers_as_minidiff_reads_it():
    """The committed fixture, read back by diffusers, still gives the stored outputs."""
    from safetensors.numpy import load_file
    expected = load_file(TINY.parent / "diffusers_tiny_expected.safetensors")
    unet = diffusers.UNet2DModel.from_pretrained(TINY).float().eval()
    with torch.no_grad():
        out = unet(torch.from_numpy(expected["x"]), torch.from_numpy(expected["t"])).sample
    np.testing.assert_array_equal(out.numpy(), expected["out32"])
