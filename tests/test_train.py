"""The training loop: exact resume after kill -9, non-finite losses, config checks, bad input.

The resume oracle is an uninterrupted run of the same command: a killed-and-resumed run must
write the same log.csv bytes and the same final arrays, bit for bit (CPU).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minidiff import backend
from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.config import TrainConfig
from minidiff.runlog import read_log_rows
from minidiff.train import NonFiniteLoss, Trainer


# Small matrices run fastest on one BLAS thread (see minidiff.cli_common.limit_blas_threads).
pytestmark = pytest.mark.usefixtures("one_blas_thread")


REPO = Path(__file__).resolve().parents[1]

# A tiny 2-D run: ~1 ms a step, so a whole run takes a second or two.
TINY = dict(data="swiss_roll", n_points=500, hidden=32, depth=2, time_dim=16, timesteps=50,
            batch_size=32, n_samples=50, lr=1e-3, warmup=20, ema_decay=0.99)


def tiny(tmp_path, **kw):
    return TrainConfig(**{**TINY, "out_dir": str(tmp_path / "run"), **kw})


def cli_args(cfg_kw):
    args = []
    for k, v in cfg_kw.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return args


def minidiff_cmd(*args):
    return [sys.executable, "-m", "minidiff", "train", *args]


def env():
    e = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def arrays_of(path):
    arrays, meta = load_checkpoint(path)
    return arrays, meta


# ------------------------------------------------------------------------------ exact resume
def test_kill_9_and_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path):
    run_kw = {**TINY, "steps": 800, "ckpt_every": 50}
    common = cli_args(run_kw) + ["--quiet", "--threads", "1"]
    full, killed = tmp_path / "full", tmp_path / "killed"

    # The oracle: one uninterrupted run.
    subprocess.run(minidiff_cmd(*common, "--out-dir", str(full)), env=env(), check=True,
                   timeout=300)

    # The same run, killed with SIGKILL as soon as a checkpoint exists.
    proc = subprocess.Popen(minidiff_cmd(*common, "--out-dir", str(killed)), env=env())
    ckpt = killed / "checkpoint.npz"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    if proc.poll() is not None:
        pytest.fail("the run ended before it could be killed; raise steps")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step_at_kill = load_checkpoint(ckpt)[1]["step"]
    assert 50 <= step_at_kill < 800

    # Death mid-write: a half-written checkpoint temp file and a torn last row of the log.
    blob = ckpt.read_bytes()
    (killed / f".tmp-{proc.pid}-deadbeef.npz").write_bytes(blob[: len(blob) // 2])
    with open(killed / "log.csv", "a") as f:
        f.write("79")                                    # the start of a row, no newline

    subprocess.run(minidiff_cmd(*common, "--out-dir", str(killed), "--resume"), env=env(),
                   check=True, timeout=300)

    assert not list(killed.glob(".tmp-*")), "the half-written temp file was cleaned up"
    log_full = (full / "log.csv").read_text()
    log_resumed = (killed / "log.csv").read_text()
    assert log_full.count("\n") == 801                   # header + one row per step
    assert log_resumed == log_full                       # every loss, grad norm and lr
    a_full, m_full = arrays_of(full / "checkpoint.npz")
    a_res, m_res = arrays_of(killed / "checkpoint.npz")
    assert sorted(a_full) == sorted(a_res)
    for k in a_full:                                     # weights, Adam m and v, EMA
        assert a_full[k].tobytes() == a_res[k].tobytes(), f"{k} differs after resume"
    assert m_full["rng"] == m_res["rng"] and m_full["opt"] == m_res["opt"]
    assert m_full["step"] == m_res["step"] == 800


def test_resume_in_process_matches_and_sampling_does_not_perturb_training(tmp_path):
    """Two halves (with sample pictures in between) equal one whole run without pictures."""
    whole = Trainer(tiny(tmp_path / "a", steps=60, ckpt_every=30), quiet=True)
    whole.run(final_samples=False)
    first = Trainer(tiny(tmp_path / "b", steps=30, ckpt_every=30, sample_every=10),
                    quiet=True).run()
    second = Trainer(tiny(tmp_path / "b", steps=60, ckpt_every=30, sample_every=10),
                     resume=True, quiet=True)
    assert second.step == first.step == 30
    second.run()
    assert (tmp_path / "b/run/samples_000010.png").exists()
    assert Path(whole.log_path).read_text() == Path(second.log_path).read_text()
    for (name, p), q in zip(whole.model.named_parameters(), second.model.parameters()):
        assert np.array_equal(p.data, q.data), name
    for s, r in zip(whole.ema.shadow, second.ema.shadow):
        assert np.array_equal(s, r)


def test_read_log_rows_drops_torn_and_future_rows(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,loss,grad_norm,lr\n1,0.5,1.0,0.001\n2,0.4,1.0,0.001\n3,0.3,1.0,0.001\n"
                 "4,0.2,1.0\n1")
    assert read_log_rows(p, 3) == ["1,0.5,1.0,0.001", "2,0.4,1.0,0.001", "3,0.3,1.0,0.001"]
    assert read_log_rows(p, 2) == ["1,0.5,1.0,0.001", "2,0.4,1.0,0.001"]


# ------------------------------------------------------------------------------ non-finite loss
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    t = Trainer(tiny(tmp_path, steps=40, ckpt_every=5), quiet=True)
    real = t.diffusion.training_losses

    def poisoned(model, x0, *drawn):                     # drawn: t and ε
        losses = real(model, x0, *drawn)
        if t.step >= 12:                                 # the 13th step's loss is NaN
            return losses * float("nan")
        return losses
    t.diffusion.training_losses = poisoned
    with pytest.raises(NonFiniteLoss, match=r"step 13: the loss is nan.*checkpoint.npz, is "
                                            r"untouched"):
        t.run()
    arrays, meta = load_checkpoint(t.ckpt_path)
    assert meta["step"] == 10
    assert all(np.isfinite(a).all() for a in arrays.values())
    # The oracle: the same run stopped cleanly at step 10 has exactly these weights.
    ref = Trainer(tiny(tmp_path / "ref", steps=10, ckpt_every=5), quiet=True)
    ref.run(final_samples=False)
    ref_arrays, _ = load_checkpoint(ref.ckpt_path)
    for k in ref_arrays:
        assert np.array_equal(ref_arrays[k], arrays[k]), k
    # ...and the run can go on from it.
    again = Trainer(tiny(tmp_path, steps=12, ckpt_every=5), resume=True, quiet=True)
    assert again.step == 10
    again.run(final_samples=False)


def test_absurd_lr_stops_with_a_clear_message_from_the_cli(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(minidiff_cmd(*cli_args({**TINY, "warmup": 0, "lr": 1e30}),
                                    "--steps", "50", "--ckpt-every", "1", "--quiet",
                                    "--out-dir", str(out)),
                       env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "training stopped" in r.stderr or "not saving" in r.stderr, r.stderr
    arrays, meta = load_checkpoint(out / "checkpoint.npz")
    assert 1 <= meta["step"] < 50
    assert all(np.isfinite(a).all() for a in arrays.values())


def test_non_finite_weights_are_never_saved(tmp_path):
    t = Trainer(tiny(tmp_path, steps=5, ckpt_every=5), quiet=True)
    t.run(final_samples=False)
    before = Path(t.ckpt_path).read_bytes()
    t.params[0].data[0, 0] = np.inf
    with pytest.raises(NonFiniteLoss, match="NaN or inf"):
        t.save(t.ckpt_path)
    assert Path(t.ckpt_path).read_bytes() == before


# ------------------------------------------------------------------------------ loading checks
def test_resume_with_a_different_config_names_the_fields(tmp_path):
    Trainer(tiny(tmp_path, steps=5, ckpt_every=5), quiet=True).run(final_samples=False)
    with pytest.raises(ValueError, match=r"hidden: checkpoint 32, now 64; lr: checkpoint "
                                         r"0.001, now 0.002"):
        Trainer(tiny(tmp_path, steps=10, hidden=64, lr=2e-3), resume=True)
    # Fields a resumption may change are accepted.
    t = Trainer(tiny(tmp_path, steps=10, ckpt_every=7, log_every=2), resume=True, quiet=True)
    assert t.step == 5


def test_resume_refuses_a_checkpoint_whose_shapes_do_not_fit(tmp_path):
    t = Trainer(tiny(tmp_path, steps=5, ckpt_every=5), quiet=True).run(final_samples=False)
    arrays, meta = load_checkpoint(t.ckpt_path)
    arrays["model.layers.0.weight"] = np.zeros((3, 3), np.float32)
    save_checkpoint(t.ckpt_path, arrays, meta)
    with pytest.raises(ValueError, match=r"does not fit this model.*layers.0.weight: expected "
                                         r"\(32, 18\), got \(3, 3\)"):
        Trainer(tiny(tmp_path, steps=10), resume=True)


def test_an_existing_run_is_not_overwritten_without_asking(tmp_path):
    t = Trainer(tiny(tmp_path, steps=5, ckpt_every=5), quiet=True).run(final_samples=False)
    before = Path(t.ckpt_path).read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run.*--resume.*--overwrite"):
        Trainer(tiny(tmp_path, steps=5))
    assert Path(t.ckpt_path).read_bytes() == before
    with pytest.raises(ValueError, match="steps: the checkpoint .* is at step 5, past steps=3"):
        Trainer(tiny(tmp_path, steps=3), resume=True)
    Trainer(tiny(tmp_path, steps=2, ckpt_every=2), overwrite=True, quiet=True).run(
        final_samples=False)
    assert load_checkpoint(t.ckpt_path)[1]["step"] == 2


def test_from_checkpoint_restores_the_weights_without_writing(tmp_path):
    t = Trainer(tiny(tmp_path, steps=5, ckpt_every=5), quiet=True).run(final_samples=False)
    files = sorted(os.listdir(t.cfg.out_dir))
    mtimes = [os.path.getmtime(os.path.join(t.cfg.out_dir, f)) for f in files]
    u = Trainer.from_checkpoint(t.cfg.out_dir)
    for p, q in zip(t.params, u.params):
        assert np.array_equal(p.data, q.data)
    for s, r in zip(t.ema.shadow, u.ema.shadow):
        assert np.array_equal(s, r)
    assert sorted(os.listdir(t.cfg.out_dir)) == files
    assert [os.path.getmtime(os.path.join(t.cfg.out_dir, f)) for f in files] == mtimes


# ------------------------------------------------------------------------------ the pieces
def test_ema_warms_up_as_tf_does(tmp_path):
    """After k updates the EMA used decay min(d, (1 + k)/(10 + k)): an independent replay."""
    t = Trainer(tiny(tmp_path, steps=3, ema_decay=0.5), quiet=True)
    shadow = [p.data.copy() for p in t.params]
    for k in range(3):
        t.train_step()
        d = min(0.5, (1 + k) / (10 + k))
        shadow = [d * s + (1 - d) * p.data for s, p in zip(shadow, t.params)]
    for s, e in zip(shadow, t.ema.shadow):
        np.testing.assert_allclose(e, s, rtol=1e-6, atol=1e-7)


def test_warmup_and_clipping_reach_the_log(tmp_path):
    t = Trainer(tiny(tmp_path, steps=30, ckpt_every=30, warmup=10, grad_clip=1e-3),
                quiet=True).run(final_samples=False)
    rows = [r.split(",") for r in read_log_rows(t.log_path, 30)]
    lrs = [float(r[3]) for r in rows]
    assert lrs[:3] == [0.0, 1e-4, 2e-4] and lrs[10:] == [1e-3] * 20   # Ho et al.'s warm-up
    assert all(float(r[2]) > 1e-3 for r in rows)          # the pre-clip norm is logged
    assert (Path(t.cfg.out_dir) / "loss.png").exists()


def test_sampling_draws_from_the_ema_and_restores_the_generator(tmp_path):
    t = Trainer(tiny(tmp_path, steps=20, ckpt_every=20), quiet=True).run(final_samples=False)
    state = backend.get_rng_state()
    x_ema, traj = t.sample(64, frames=5)
    assert backend.get_rng_state() == state
    assert x_ema.shape == (64, 2) and traj[0][0] == 50 and traj[-1][0] == 0
    assert np.array_equal(traj[-1][1], x_ema)
    x_raw, _ = t.sample(64, use_ema=False)
    assert not np.array_equal(x_ema, x_raw)               # the same noise, other weights
    with t.ema.swapped_in(t.model):
        x_swapped, _ = t.sample(64, use_ema=False)
    assert np.array_equal(x_swapped, x_ema)
    x_ddim, traj = t.sample(64, sampler="ddim", ddim_steps=10, frames=5)
    assert traj[-1][0] == 0 and len(traj) <= 7 and np.isfinite(x_ddim).all()


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("field, value, message", [
    ("data", "spiral", "data: got 'spiral', allowed: swiss_roll"),
    ("model", "huge", "model: got 'huge', allowed: mlp, tiny"),
    ("optimizer", "sgd", "optimizer: got 'sgd', allowed: adam, adamw"),
    ("steps", 0, r"steps: must be an int in \[1, 1000000000\], got 0"),
    ("batch_size", 2.5, r"batch_size: must be an int in \[1, 65536\], got 2.5"),
    ("lr", -1.0, r"lr: must be a finite number in \(0, inf\], got -1.0"),
    ("lr", float("nan"), "lr: must be a finite number"),
    ("ema_decay", 1.0, r"ema_decay: must be a finite number in \[0, 1\), got 1.0"),
    ("dropout", 0.1, "dropout: the MLP has no dropout layers"),
    ("timesteps", 10, "timesteps: the linear schedule scaled by 1000/T needs T >= 21"),
    ("loss", "mu_mse", "loss: 'mu_mse' trains a network that predicts μ"),
    ("mu_mse_weight", "bound", "mu_mse_weight: 'bound' only applies to loss='mu_mse'"),
    ("time_dim", 7, "time_dim: must be even"),
    ("warmup", -1, r"warmup: must be an int in \[0, 1000000000\], got -1"),
    ("variance", "learned_range", "variance: 'learned_range' is trained by loss 'hybrid' or "
                                  "'kl' only; loss 'simple' ignores the variance channels"),
    ("loss", "hybrid", "loss: 'hybrid' trains a learned variance; set variance "
                       "'learned_range', got 'fixed_large'"),
    ("channels", True, "channels: got True, allowed: 1, 3"),
    ("data_path", 5, "data_path: must be a string, got 5"),
])
def test_bad_config_values_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).validate()


def test_mismatched_data_and_model_are_refused():
    with pytest.raises(ValueError, match="model: 2-D data .* needs model 'mlp', got 'tiny'"):
        TrainConfig(data="rings", model="tiny").validate()
    with pytest.raises(ValueError, match="model: image data .* needs a U-Net preset"):
        TrainConfig(data="digits", model="mlp").validate()
    with pytest.raises(ValueError, match="data_path: data 'folder' needs a path"):
        TrainConfig(data="folder", model="tiny").validate()
