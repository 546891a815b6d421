"""Flow matching as a feature: `minidiff train --objective flow`, `minidiff sample --sampler
euler`, resume, and the refusals, through minidiff.cli.main.

The convention (minidiff/diffusion/flow_matching.py; Lipman et al. 2023, §4.1, σ_min = 0, time
reversed): x_t = (1 - t) x0 + t x1, x1 ~ N(0, I), target v = x1 - x0, t = 0 data, t = 1 noise;
the network is called with 1000·t. Oracles: that convention written out with NumPy, with t and
the noise drawn here in the library's documented order; Euler's method written out as a loop;
the exact output law of Euler's method for Gaussian data (oracles.flow_euler_output_law); an
uninterrupted run for a resumed one.
"""
import numpy as np
import pytest
from PIL import Image

from minidiff import Tensor, backend
from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.cli import main
from minidiff.config import TrainConfig
from minidiff.diffusion import FLOW_TIME_SCALE, FlowMatching
from minidiff.testing import assert_normal, oracles
from minidiff.train import Trainer

from test_cli_errors import one_line_failure

pytestmark = pytest.mark.usefixtures("one_blas_thread")

FLOW_2D = ["--data", "swiss_roll", "--objective", "flow", "--n-points", "300", "--hidden", "16",
           "--depth", "1", "--time-dim", "8", "--batch-size", "16", "--n-samples", "20",
           "--ckpt-every", "3", "--quiet"]


def train(out, *extra, steps=6):
    main(["train", *FLOW_2D, "--steps", str(steps), "--out-dir", str(out), *extra])
    return str(out)


def checkpoint(run):
    return load_checkpoint(f"{run}/checkpoint.npz")


# ------------------------------------------------------------------ the loss and the sampler
def test_flow_loss_is_the_velocity_mse_of_the_straight_path():
    def model(x, s):                      # any smooth function of (x, the network's time s)
        return Tensor(np.tanh(x.data) * (s[:, None] / FLOW_TIME_SCALE) + np.cos(s)[:, None])
    x0 = np.array([[0.5, -1.0], [2.0, 0.25], [-0.3, 0.0]])
    x1 = np.array([[1.0, 0.5], [-2.0, 1.5], [0.7, -0.9]])
    t = np.array([0.0, 0.25, 0.9])
    x_t = (1 - t[:, None]) * x0 + t[:, None] * x1                   # the path at t
    v = np.tanh(x_t) * t[:, None] + np.cos(1000 * t)[:, None]       # the network at 1000·t
    expected = ((v - (x1 - x0)) ** 2).mean(axis=1)                  # target x1 - x0
    got = FlowMatching(np.float64).training_losses(model, x0, t=t, noise=x1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=0)


def test_a_flow_training_step_takes_the_flow_loss_with_the_documented_draws(tmp_path):
    cfg = TrainConfig(data="swiss_roll", objective="flow", n_points=300, hidden=16, depth=1,
                      time_dim=8, batch_size=16, out_dir=str(tmp_path / "run"))
    trainer = Trainer(cfg, quiet=True)
    try:
        state, g = backend.get_rng_state(), backend.rng()
        x0 = trainer.data[g.integers(0, 300, size=16)]        # then t, then x1: both float32
        t = g.random(16, dtype=np.float32)
        x1 = g.standard_normal(x0.shape, dtype=np.float32)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
        v = trainer.model(Tensor(x_t), t * np.float32(1000)).numpy()
        expected = ((v.astype(np.float64) - (x1 - x0)) ** 2).mean()
        backend.set_rng_state(state)
        loss, _, _ = trainer.train_step()
    finally:
        trainer.close()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_flow_euler_with_the_exact_velocity_has_the_exact_output_law_for_gaussian_data():
    data, steps = oracles.gaussian(0.3, 0.5), 50
    exact = oracles.flow_velocity_model(data)
    states = list(FlowMatching(np.float64).euler_sample_progressive(
        lambda x, s: exact(x, s / FLOW_TIME_SCALE), (20000, 1), steps))
    assert [t for t, _ in states] == pytest.approx(np.linspace(1, 0, steps + 1), abs=1e-12)
    mean, sd = oracles.flow_euler_output_law(data, steps)
    assert_normal(states[-1][1], mean, sd, sigmas=4, what="euler")
    assert_normal(states[0][1], 0.0, 1.0, sigmas=4, what="x1")


# ------------------------------------------------------------------ end to end, 2-D
def test_a_resumed_flow_run_equals_an_uninterrupted_one(tmp_path, capsys):
    whole = train(tmp_path / "whole")
    part = train(tmp_path / "part", steps=3)
    main(["train", *FLOW_2D, "--steps", "6", "--out-dir", part, "--resume"])
    (a, meta_a), (b, meta_b) = checkpoint(whole), checkpoint(part)
    assert meta_a["run_format"] == meta_b["run_format"] == 3
    assert meta_a["config"]["objective"] == meta_b["config"]["objective"] == "flow"
    assert meta_a["step"] == meta_b["step"] == 6 and meta_a["rng"] == meta_b["rng"]
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    line = one_line_failure(["train", *FLOW_2D, "--objective", "ddpm", "--steps", "9",
                             "--out-dir", part, "--resume"], capsys)
    assert "objective: checkpoint 'flow', now 'ddpm'" in line, line


def test_sampling_a_flow_run_is_eulers_method_on_its_ema_weights(tmp_path, capsys):
    run = train(tmp_path / "run")
    capsys.readouterr()
    main(["sample", "--run", run, "--sampler", "euler", "--euler-steps", "4", "--n", "30",
          "--seed", "3", "--out", str(tmp_path / "s.png")])
    out = capsys.readouterr().out
    assert "30 samples (Euler, 4 steps, EMA weights)" in out and "sliced W1" in out, out
    assert (tmp_path / "s.png").is_file()
    trainer = Trainer.from_checkpoint(run)
    backend.manual_seed(3)
    got, _ = trainer.sample(30, euler_steps=4)                       # the run's own: Euler
    backend.manual_seed(3)
    x = backend.rng().standard_normal((30, 2), dtype=np.float32)    # x1 ~ N(0, I)
    with trainer.ema.swapped_in(trainer.model.eval()):
        for k in range(4):                                          # x ← x - Δt v(x, t_k)
            t = np.full(30, 1 - k / 4, dtype=np.float32)
            x = x - trainer.model(Tensor(x), t * np.float32(1000)).numpy() * np.float32(0.25)
    np.testing.assert_allclose(got, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_a_flow_run_refuses_ddpm_samplers_in_one_line(tmp_path, capsys, sampler):
    run = train(tmp_path / "run", steps=1)
    line = one_line_failure(["sample", "--run", run, "--sampler", sampler], capsys)
    assert line == ("minidiff: error: --sampler: this run learned a velocity (objective "
                    f"'flow'); sample it with 'euler' (Euler's method), got '{sampler}'")


def test_a_ddpm_run_refuses_euler_in_one_line(tmp_path, capsys):
    run = train(tmp_path / "run", "--objective", "ddpm", "--timesteps", "30", steps=1)
    line = one_line_failure(["sample", "--run", run, "--sampler", "euler"], capsys)
    assert "--sampler: got 'euler', allowed for a DDPM run (objective 'ddpm')" in line, line
    line = one_line_failure(["sample", "--pretrained", str(tmp_path / "any"), "--sampler",
                             "euler"], capsys)
    assert "--sampler: 'euler' samples a flow run" in line, line


@pytest.mark.parametrize("flag, value, default", [
    ("--timesteps", "100", "1000"), ("--schedule", "cosine", "'linear'"),
    ("--parameterization", "x0", "'eps'"), ("--loss", "kl", "'simple'"),
    ("--variance", "fixed_small", "'fixed_large'")])
def test_flow_refuses_the_ddpm_fields_in_one_line(tmp_path, capsys, flag, value, default):
    with pytest.raises(SystemExit) as e:
        main(["train", *FLOW_2D, flag, value, "--out-dir", str(tmp_path / "run")])
    assert e.value.code == 2
    got = value if flag == "--timesteps" else repr(value)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"minidiff train: error: {flag}: a DDPM setting, unused by objective 'flow' (continuous "
        f"t in [0, 1], the velocity MSE); got {got}, allowed with flow: {default} (the default)")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ end to end, images
def test_an_image_flow_run_trains_resumes_and_samples_with_euler(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    g = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(g.integers(0, 256, (20, 24), dtype=np.uint8)).save(photos / f"{i}.png")
    main(["train", "--data", "folder", "--data-path", str(photos), "--model", "tiny",
          "--image-size", "16", "--objective", "flow", "--batch-size", "2", "--n-samples", "2",
          "--steps", "2", "--quiet", "--out-dir", str(tmp_path / "whole")])
    # The same run stopped after step 1 and resumed; without the end-of-run pictures (100 Euler
    # steps of the U-Net each), which leave the run's state as it was (Trainer.sample).
    cfg = dict(data="folder", data_path=str(photos), model="tiny", image_size=16,
               objective="flow", batch_size=2, n_samples=2, out_dir=str(tmp_path / "part"))
    Trainer(TrainConfig(steps=1, **cfg), quiet=True).run(final_samples=False)
    Trainer(TrainConfig(steps=2, **cfg), resume=True, quiet=True).run(final_samples=False)
    (a, _), (b, _) = checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "part")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    main(["sample", "--run", str(tmp_path / "whole"), "--euler-steps", "3", "--n", "3",
          "--out", str(tmp_path / "s.png")])
    assert "3 samples (Euler, 3 steps, EMA weights)" in capsys.readouterr().out
    assert Image.open(tmp_path / "s.png").size[0] > 16
    line = one_line_failure(["nll", "--run", str(tmp_path / "whole")], capsys)
    assert "this run is flow matching (objective 'flow')" in line, line


# ------------------------------------------------------------------ run formats
def edited(run, edit):
    arrays, meta = checkpoint(run)
    edit(meta)
    meta.pop("format")
    save_checkpoint(f"{run}/checkpoint.npz", arrays, meta)
    return run


def test_formats_1_and_2_lack_objective_and_are_ddpm_runs_format_3_must_hold_it(tmp_path,
                                                                                 capsys):
    assert TrainConfig.FORMAT_2_DEFAULTS == {"objective": "ddpm"}
    ddpm = ["--objective", "ddpm", "--timesteps", "30"]

    def as_format_2(meta):
        meta.update(run_format=2)
        meta["config"].pop("objective")
    run = edited(train(tmp_path / "two", *ddpm, steps=1), as_format_2)
    assert Trainer.from_checkpoint(run).cfg.objective == "ddpm"

    def as_format_1(meta):
        as_format_2(meta)
        for key in ("run_format", "data"):
            meta.pop(key)
    run = edited(train(tmp_path / "one", *ddpm, steps=1), as_format_1)
    assert Trainer.from_checkpoint(run).cfg.objective == "ddpm"
    run = edited(train(tmp_path / "three", steps=1), lambda meta: meta["config"].pop("objective"))
    line = one_line_failure(["sample", "--run", run], capsys)
    assert "meta.config: TrainConfig: missing field objective" in line, line
