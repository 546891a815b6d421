"""`minidiff sample | nll --pretrained DIR` and `minidiff export`, each against the library
calls it stands for (the same seed through ddim_sample_loop and calc_bpd_loop, the exported
folder read back by minidiff.pretrained), and each refusal in one line."""
import numpy as np
import pytest
from PIL import Image

from minidiff import backend, pretrained, viz
from minidiff.cli import main
from minidiff.config import TrainConfig
from minidiff.diffusion import GaussianDiffusion, ddim_sample_loop, get_beta_schedule
from minidiff.models import UNet
from minidiff.tensor import Tensor
from minidiff.train import Trainer
from test_data_cifar10 import make_cifar
from test_pretrained import TINY


def fails(capsys, argv, *needles):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code != 0 and all(n in err for n in needles), err


def test_sample_pretrained_is_ddim_from_the_folder_with_its_clipping(tmp_path, capsys):
    out = tmp_path / "s.png"
    main(["sample", "--pretrained", str(TINY), "--sampler", "ddim", "--ddim-steps", "3",
          "--n", "2", "--seed", "5", "--out", str(out)])
    assert "2 samples (DDIM, 3 steps, eta 0)" in capsys.readouterr().out
    model, diffusion = pretrained.load(TINY)
    backend.manual_seed(5)
    x = ddim_sample_loop(diffusion, model, (2, 3, 8, 8), num_steps=3, clip_denoised=True)
    expected = np.asarray(viz.image_grid(backend.to_numpy(x), scale=3))
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), expected)


def test_sample_pretrained_refuses_what_it_does_not_read(tmp_path, capsys):
    fails(capsys, ["sample", "--pretrained", str(TINY), "--no-ema"], "--no-ema")
    fails(capsys, ["sample", "--pretrained", str(TINY), "--data-path", "x"], "--data-path")
    fails(capsys, ["sample", "--pretrained", str(TINY), "--sampler", "ddim", "--ddim-steps",
                   "1001"], "--ddim-steps", "T = 1000")
    fails(capsys, ["sample", "--pretrained", str(tmp_path)], f"--pretrained {tmp_path}",
          "neither model_index.json nor config.json")


def small_pipeline(path, T=10):
    """A 32x32 RGB U-Net with random weights and a T-step schedule, saved for diffusers."""
    model = UNet(in_channels=3, image_size=32, base_channels=4, ch_mult=(1, 2),
                 num_res_blocks=1, attn_resolutions=(16,), groups=2,
                 downsample_padding="same", norm_eps=1e-6)
    rng = np.random.default_rng(0)
    for _, p in model.named_parameters():
        p.data[...] = rng.normal(0, 0.1, p.shape)
    diffusion = GaussianDiffusion(get_beta_schedule("linear", T), variance="fixed_small")
    pretrained.save(model, diffusion, path)
    return model, diffusion


def test_nll_pretrained_on_cifar10_is_calc_bpd_loop(tmp_path, capsys):
    small_pipeline(tmp_path / "pipe")
    folder, _ = make_cifar(tmp_path)
    main(["nll", "--pretrained", str(tmp_path / "pipe"), "--data", "cifar10", "--data-path",
          str(folder), "--n", "3", "--batch-size", "2", "--seed", "7", "--threads", "1"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    model, diffusion = pretrained.load(tmp_path / "pipe")
    from minidiff import data
    x = data.load_cifar10(folder, "test")
    backend.manual_seed(7)
    total = np.concatenate([diffusion.calc_bpd_loop(model, x[i:i + 2])["total_bpd"]
                            for i in (0, 2)])
    assert line.startswith(f"3 images of the CIFAR-10 test set, T = 10: NLL <= "
                           f"{total.mean():.3f} ± {total.std(ddof=1) / np.sqrt(3):.3f}"), line


def test_nll_pretrained_refusals(tmp_path, capsys):
    fails(capsys, ["nll", "--pretrained", str(TINY)], "--data: nll --pretrained needs")
    fails(capsys, ["nll", "--pretrained", str(TINY), "--data", "cifar10"], "--data-path")
    fails(capsys, ["nll", "--pretrained", str(TINY), "--data", "digits"],
          "(1, 16, 16)", "(3, 8, 8)")
    fails(capsys, ["nll", "--run", str(tmp_path), "--data", "digits"],
          "--data: read only with --pretrained")


def train_one_step(out_dir, **fields):
    cfg = TrainConfig(steps=1, batch_size=2, timesteps=25, schedule="linear", n_samples=2,
                      out_dir=str(out_dir), **fields).validate()
    trainer = Trainer(cfg, quiet=True)
    trainer.run(final_samples=False)
    trainer.close()


def test_export_writes_the_runs_ema_weights(tmp_path, capsys):
    folder, _ = make_cifar(tmp_path)
    run = tmp_path / "run"
    train_one_step(run, data="cifar10", data_path=str(folder), model="tiny")
    main(["export", "--run", str(run), "--to", str(tmp_path / "out")])
    assert "EMA weights" in capsys.readouterr().out
    trainer = Trainer.from_checkpoint(str(run))
    model, diffusion = pretrained.load(tmp_path / "out")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    t = np.array([3, 20])
    raw = trainer.model.eval()(Tensor(x), t).data
    with trainer.ema.swapped_in(trainer.model):
        expected = trainer.model(Tensor(x), t).data
    assert not np.array_equal(raw, expected)             # one step: EMA and raw differ
    np.testing.assert_array_equal(model(Tensor(x), t).data, expected)
    np.testing.assert_array_equal(diffusion.betas_float64, trainer.diffusion.betas_float64)
    assert pretrained.clip_sample(tmp_path / "out") is True
    fails(capsys, ["export", "--run", str(run), "--to", str(tmp_path / "out")],
          "--to", "exists and is not an empty folder")


def test_export_refuses_a_2d_run(tmp_path, capsys):
    train_one_step(tmp_path / "roll", data="swiss_roll", n_points=100)
    fails(capsys, ["export", "--run", str(tmp_path / "roll"), "--to", str(tmp_path / "x")],
          "has an MLP", "DDPMPipeline holds a U-Net")
