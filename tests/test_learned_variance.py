"""Learned variance end to end: the models' 2C output channels (Nichol & Dhariwal 2021, Eq. 15),
the config that turns them on, and `--variance learned_range` with `--loss hybrid` (their
Eq. 16) or `--loss kl` through training, sampling, bits/dim and the checkpoint."""
import re

import numpy as np
import pytest

from minidiff import backend
from minidiff.cli import main
from minidiff.config import TrainConfig
from minidiff.diffusion import GaussianDiffusion, calc_bpd_loop, get_beta_schedule
from minidiff.models import MLPDenoiser, UNet
from minidiff.autograd import no_grad
from minidiff.train import Trainer

pytestmark = pytest.mark.usefixtures("one_blas_thread")

SMALL_UNET = dict(in_channels=1, image_size=8, base_channels=8, ch_mult=(1, 2),
                  num_res_blocks=1, attn_resolutions=(4,), groups=4, dtype=np.float64)


def randomised(model, seed=0):
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data[...] = 0.3 * rng.standard_normal(p.shape) / np.sqrt(max(1, p.data[0].size))
    return model


def twin(plain, learned, v):
    """Give `learned` the weights of `plain`, and output layer rows that make its last C
    channels the constant v: then its output must be [plain's output, v]."""
    mine = dict(plain.named_parameters())
    for name, p in learned.named_parameters():
        src = mine[name].data
        if p.shape == src.shape:
            p.data[...] = src
        else:                                             # the output layer: 2C rows
            C = src.shape[0]
            p.data[:C] = src
            p.data[C:] = v if p.ndim == 1 else 0.0
    return learned


def run(model, x, t):
    with no_grad():
        return model(x, t).data


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_learn_sigma_adds_c_channels_after_the_prediction(kind):
    rng = np.random.default_rng(1)
    if kind == "unet":
        plain = randomised(UNet(**SMALL_UNET))
        learned = twin(plain, UNet(**SMALL_UNET, learn_sigma=True), v=0.25)
        x = rng.standard_normal((3, 1, 8, 8))
    else:
        plain = randomised(MLPDenoiser(time_dim=8, hidden=16, depth=2, dtype=np.float64))
        learned = twin(plain, MLPDenoiser(time_dim=8, hidden=16, depth=2, learn_sigma=True,
                                          dtype=np.float64), v=0.25)
        x = rng.standard_normal((3, 2))
    t = np.array([0, 5, 9])
    out, oracle = run(learned, x, t), run(plain, x, t)
    C = x.shape[1]
    assert out.shape == (3, 2 * C) + x.shape[2:]
    np.testing.assert_allclose(out[:, :C], oracle, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(out[:, C:], 0.25)
    if kind == "unet":
        assert learned.config["learn_sigma"] and not plain.config["learn_sigma"]


def test_learned_sigma_at_its_floor_gives_the_fixed_small_bound_and_sampler():
    """v = -1 puts log σ_t² at log β̃_t (Nichol & Dhariwal 2021, Eq. 15), which is
    fixed_small: the bound in bits/dim and Algorithm 2's samples must equal that run's."""
    betas = get_beta_schedule("linear", 12, beta_start=1e-3, beta_end=0.2)
    learned_d = GaussianDiffusion(betas, variance="learned_range", loss="hybrid",
                                  dtype=np.float64)
    fixed_d = GaussianDiffusion(betas, variance="fixed_small", dtype=np.float64)
    plain = randomised(UNet(**SMALL_UNET), seed=3)
    learned = twin(plain, UNet(**SMALL_UNET, learn_sigma=True), v=-1.0)
    x0 = np.random.default_rng(4).uniform(-1, 1, (2, 1, 8, 8))
    results = []
    for d, model in [(learned_d, learned), (fixed_d, plain)]:
        backend.manual_seed(9)
        bpd = calc_bpd_loop(d, model, x0)["total_bpd"]
        backend.manual_seed(9)
        results.append((bpd, d.p_sample_loop(model, (2, 1, 8, 8))))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-10)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)
    # and with v = +1 the bound differs: the learned σ is what the bound used
    twin(plain, learned, v=1.0)
    backend.manual_seed(9)
    assert not np.allclose(calc_bpd_loop(learned_d, learned, x0)["total_bpd"], results[1][0])


def test_the_config_turns_the_variance_channels_on():
    cfg = TrainConfig(variance="learned_range", loss="hybrid", hidden=8, depth=1, time_dim=8,
                      n_points=50, out_dir="unused").validate()
    from minidiff.train import build_model
    assert build_model(cfg, (2,)).out.weight.shape == (4, 8)
    cfg.variance, cfg.loss = "fixed_large", "kl"
    assert build_model(cfg.validate(), (2,)).out.weight.shape == (2, 8)


TINY = ["--data", "two_moons", "--n-points", "400", "--hidden", "32", "--depth", "2",
        "--time-dim", "16", "--timesteps", "30", "--batch-size", "32", "--n-samples", "40",
        "--variance", "learned_range", "--quiet"]


@pytest.mark.parametrize("loss", ["hybrid", "kl"])
def test_cli_trains_samples_and_resumes_a_learned_variance_run(tmp_path, capsys, loss):
    whole, split = tmp_path / "whole", tmp_path / "split"
    main(["train", *TINY, "--loss", loss, "--steps", "200", "--out-dir", str(whole)])
    main(["train", *TINY, "--loss", loss, "--steps", "100", "--out-dir", str(split)])
    main(["train", *TINY, "--loss", loss, "--steps", "200", "--resume", "--out-dir", str(split)])
    a, b = Trainer.from_checkpoint(whole), Trainer.from_checkpoint(split)
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)   # resumed bit for bit
    assert a.model.out.weight.shape == (4, 32)
    main(["sample", "--run", str(whole), "--n", "50", "--out", str(tmp_path / "s.png")])
    main(["sample", "--run", str(whole), "--n", "50", "--variance", "fixed_small",
          "--out", str(tmp_path / "f.png")])
    out = capsys.readouterr().out
    assert "ancestral, 30 steps, learned_range" in out and "fixed_small" in out
    assert len(re.findall(r"sliced W1 (\d+\.\d+)", out)) == 2


def test_cli_nll_of_a_learned_variance_image_run_is_finite_and_uses_the_learned_sigma(
        tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16)).astype(np.uint8)
    idx = tmp_path / "imgs.idx"
    idx.write_bytes(bytes([0, 0, 8, 3]) + np.array([6, 16, 16], ">u4").tobytes()
                    + images.tobytes())
    out = tmp_path / "run"
    main(["train", "--data", "idx", "--data-path", str(idx), "--model", "tiny",
          "--timesteps", "21", "--steps", "3", "--batch-size", "2", "--n-samples", "2",
          "--variance", "learned_range", "--loss", "hybrid", "--quiet", "--out-dir", str(out)])
    main(["nll", "--run", str(out), "--data-path", str(idx), "--n", "2", "--seed", "3"])
    m = re.search(r"NLL <= ([\d.]+) ±", capsys.readouterr().out)
    t = Trainer.from_checkpoint(out)
    assert t.diffusion.variance == "learned_range"
    x = images[:2, None].astype(np.float32) / np.float32(127.5) - np.float32(1)
    backend.manual_seed(3)
    with t.ema.swapped_in(t.model.eval()):
        bpd = calc_bpd_loop(t.diffusion, t.model, x)["total_bpd"]
    assert np.isfinite(bpd).all() and 0 < float(m.group(1)) < 50
    assert float(m.group(1)) == pytest.approx(bpd.mean(), abs=6e-4)     # printed to 3 places
