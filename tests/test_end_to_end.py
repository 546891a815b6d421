"""End to end on 2-D data: a few hundred steps of Algorithm 1, then Algorithm 2.

The yardstick is the distance from N(0, I) noise, where the reverse chain starts, to the data
(sliced W1 ≈ 0.42 for the swiss roll). After 400 steps the samples must be closer to the data
than 0.3 times that: at least 3.3x better than noise (measured: 0.07-0.08 for seeds 0 and 1,
i.e. about 6x better; the noise floor of two independent data draws is 0.025).
"""
import re

import numpy as np
import pytest

from minidiff.cli import main
from minidiff.train import Trainer, TrainConfig, distances_2d


# Small matrices run fastest on one BLAS thread (see minidiff.cli_common.limit_blas_threads).
pytestmark = pytest.mark.usefixtures("one_blas_thread")


MARGIN = 0.3


def test_a_few_hundred_steps_learn_the_swiss_roll(tmp_path):
    cfg = TrainConfig(data="swiss_roll", steps=400, batch_size=128, hidden=128, timesteps=100,
                      lr=3e-3, ema_decay=0.99, ckpt_every=400, out_dir=str(tmp_path / "run"))
    trainer = Trainer(cfg, quiet=True).run(final_samples=False)
    x, _ = trainer.sample(1000)                                   # Algorithm 2, EMA weights
    assert x.shape == (1000, 2) and np.isfinite(x).all()
    d = distances_2d(x, cfg)
    assert d["sw"] < MARGIN * d["sw_noise"], d
    assert d["mmd"] < MARGIN * d["mmd_noise"], d
    # The loss fell too: the last 50 steps average well below the first 50.
    _, losses = trainer.read_log()
    assert losses[-50:].mean() < 0.7 * losses[:50].mean()


def test_the_demo_command_writes_its_pictures_and_distances(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["demo", "--out-dir", str(out), "--steps", "60", "--timesteps", "30", "--n", "200"])
    text = capsys.readouterr().out
    line = (r"sliced W1 [\d.]+ \(noise floor [\d.]+, N\(0,I\) [\d.]+; "
            r"80% of data-vs-data pairs [\d.]+-[\d.]+\)")
    assert len(re.findall(line, text)) == 2
    for name in ("demo.png", "swiss_roll/samples.png", "swiss_roll/samples.gif",
                 "swiss_roll/loss.png", "picture/samples.png", "picture/samples.gif"):
        assert (out / name).exists(), name
    # Running it again replaces its own folder without complaint.
    main(["demo", "--out-dir", str(out), "--steps", "10", "--timesteps", "30", "--n", "50"])
