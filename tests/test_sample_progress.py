"""Sampling shows progress (issue 23, point 6's last gap): Trainer.sample(progress=True) and
`minidiff sample` draw a tqdm bar of the sampler's steps on stderr (in a log, ten whole lines),
and the bar changes no sample. On 71d2250 Trainer.sample had no progress= and `minidiff
sample` was silent for as long as it ran (73 s for 4 images of a U-Net)."""
import re
import sys

import numpy as np
import pytest

from minidiff import backend
from minidiff.cli import main
from minidiff.config import TrainConfig
from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.train import Trainer

T = 25
TINY = dict(data="two_moons", n_points=200, hidden=16, depth=1, time_dim=8, timesteps=T,
            batch_size=16, n_samples=20, steps=4, ckpt_every=4)


def bar_counts(err):
    """The "done/total" counts of tqdm's bar lines in `err`: each redraw of a terminal's bar,
    each whole line of a log's."""
    return {tuple(map(int, m)) for m in re.findall(r"[| ](\d+)/(\d+) \[", err)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("progress") / "run"
    trainer = Trainer(TrainConfig(**TINY, out_dir=str(out)), quiet=True)
    trainer.run(final_samples=False)
    return trainer, out


@pytest.mark.parametrize("kw, steps", [({}, T), ({"sampler": "ddim", "ddim_steps": 3}, 3)])
def test_trainer_sample_shows_a_bar_of_the_steps_and_the_same_samples(trained, capsys, kw,
                                                                      steps):
    trainer, _ = trained
    backend.manual_seed(0)
    quiet, _ = trainer.sample(5, **kw)
    assert capsys.readouterr().err == ""                     # progress=False: silent
    backend.manual_seed(0)
    shown, _ = trainer.sample(5, progress=True, **kw)
    np.testing.assert_array_equal(shown, quiet)
    assert (steps, steps) in bar_counts(capsys.readouterr().err)


def test_trainer_sample_refuses_a_progress_that_is_not_a_bool(trained):
    with pytest.raises(ValueError, match="progress"):
        trained[0].sample(2, progress="yes")


def test_the_sample_command_shows_the_bar_on_a_terminal_and_whole_lines_in_a_log(
        trained, capsys, monkeypatch):
    _, run = trained
    argv = ["sample", "--run", str(run), "--n", "4", "--sampler", "ddim", "--ddim-steps", "5"]
    main(argv)                                    # stderr is captured, not a terminal: a log
    err = capsys.readouterr().err
    assert bar_counts(err) == {(k, 5) for k in range(1, 6)} and "\r" not in err, err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    main(argv)
    captured = capsys.readouterr()
    assert (5, 5) in bar_counts(captured.err)
    assert "4 samples (DDIM, 5 steps" in captured.out and "/5 [" not in captured.out


def test_a_bar_cut_short_by_an_error_ends_its_line_before_the_error(trained, tmp_path,
                                                                     capsys, monkeypatch):
    arrays, meta = load_checkpoint(str(trained[1] / "checkpoint.npz"))
    for k in arrays:                        # finite, but the MLP's output overflows float32
        if k.startswith(("model.", "ema.")):
            arrays[k] = np.full_like(arrays[k], 1e15)
    (tmp_path / "run").mkdir()
    save_checkpoint(str(tmp_path / "run" / "checkpoint.npz"), arrays, meta)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with pytest.raises(SystemExit), np.errstate(all="ignore"):
        main(["sample", "--run", str(tmp_path / "run"), "--n", "5"])
    err = capsys.readouterr().err
    assert (0, T) in bar_counts(err), err
    assert err.splitlines()[-1].startswith("minidiff: error: sampling: x_"), repr(err)


@pytest.mark.parametrize("quiet", [False, True])
def test_the_samples_after_training_show_a_bar_unless_quiet(tmp_path, capsys, quiet):
    """`minidiff train` ends by drawing samples.png: T network calls per sample batch, minutes
    for a U-Net at T = 1000, silent before 2026-12-07 after the training bar had ended."""
    Trainer(TrainConfig(**TINY, out_dir=str(tmp_path / "run")), quiet=quiet).run()
    err = capsys.readouterr().err
    sampling = "\n".join(line for line in err.splitlines() if line.startswith("sample:"))
    assert ((T, T) in bar_counts(sampling)) is not quiet, err
    assert (tmp_path / "run" / "samples.png").exists()
