"""examples/ddpm_minimal.py: a short run learns the swiss roll, writes its picture, and the file
stays short enough to read (at most 150 lines of at most 100 characters)."""
import pathlib

import numpy as np
import pytest
from PIL import Image

from minidiff.data import make_swiss_roll
from minidiff.diffusion import get_beta_schedule
from tests.scripts import load_example

PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "ddpm_minimal.py"


@pytest.fixture(scope="module")
def ddpm():
    return load_example("ddpm_minimal")


def test_file_is_short_and_narrow():
    lines = PATH.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"{PATH.name} has {len(lines)} lines, at most 150 allowed"
    wide = [(i, len(line)) for i, line in enumerate(lines, 1) if len(line) > 100]
    assert not wide, f"lines over 100 characters (line, length): {wide}"


@pytest.mark.parametrize("T", [21, 50, 100, 1000])
def test_schedule_matches_the_library(ddpm, T):
    """The NumPy schedule is the library's linear one, scaled by 1000/T, and ends near noise."""
    betas, alphas, abar, c0, ct = ddpm.schedule(T)
    scale = 1000 / T
    expected = get_beta_schedule("linear", T, beta_start=1e-4 * scale, beta_end=0.02 * scale)
    np.testing.assert_allclose(betas, expected, rtol=1e-12)
    np.testing.assert_allclose(abar, np.cumprod(1 - expected), rtol=1e-12)
    assert abar[-1] < 1e-3                                    # x_T is (nearly) pure noise
    # Eq. 7 at the paper's t = 1 (index 0): the posterior mean is x_0 itself.
    assert c0[0] == pytest.approx(1.0) and ct[0] == pytest.approx(0.0, abs=1e-12)


def test_short_run_learns_the_swiss_roll(ddpm, tmp_path, monkeypatch):
    """300 steps at T = 50: the samples are far nearer the data than N(0, I) is, and have the
    data's mean and spread (from a large draw, the oracle). The thin arms of the roll take
    thousands of steps more (the default run), too long for a test."""
    monkeypatch.setattr(ddpm, "N", 500)     # fewer samples: metrics.sliced_wasserstein is O(N²)
    out = tmp_path / "roll.png"
    r = ddpm.main(["--steps", "300", "--timesteps", "50", "--seed", "0", "--out", str(out)])
    assert r["samples"].shape == (500, 2) and np.isfinite(r["samples"]).all()
    assert r["sw_noise"] > 0.3                               # the distance to beat
    assert r["sw"] < 0.3 * r["sw_noise"], r                  # a clear margin below noise
    assert r["sw"] < 6 * r["sw_floor"], r                    # within reach of the floor
    oracle = make_swiss_roll(100_000, np.random.default_rng(1))
    x = r["samples"]
    np.testing.assert_allclose(x.mean(0), oracle.mean(0), atol=0.1)
    np.testing.assert_allclose(x.std(0), oracle.std(0), rtol=0.15)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (500, 500)


def test_an_untrained_model_does_not_pass(ddpm, tmp_path, monkeypatch):
    """The margin above can fail: one step of training leaves samples far from the data."""
    monkeypatch.setattr(ddpm, "N", 500)
    r = ddpm.main(["--steps", "1", "--timesteps", "50", "--out", str(tmp_path / "x.png")])
    assert not r["sw"] < 0.3 * r["sw_noise"], r


def test_timesteps_below_21_are_refused(ddpm, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ddpm.main(["--timesteps", "20", "--out", str(tmp_path / "x.png")])
    assert "--timesteps >= 21" in capsys.readouterr().err
