"""Bad places and bad states reach the user as one line that names the flag and the path, with
a non-zero exit and nothing lost; and a fuzz of every numeric flag."""
import contextlib
import dataclasses
import errno
import io
import math
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st
from PIL import Image

from minidiff import cli
from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.cli import main
from minidiff.config import TrainConfig
from minidiff.train import ModelDiverged, Trainer

from test_train import TINY, cli_args, tiny

pytestmark = pytest.mark.usefixtures("one_blas_thread")

RUN = cli_args({**TINY, "steps": 10, "ckpt_every": 5}) + ["--quiet"]


def one_line_failure(argv, capsys):
    """Run the CLI in-process; it must exit 1 with one line on stderr. Returns that line."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minidiff: error: "), err
    return err[0]


def test_an_out_dir_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run"
    line = one_line_failure(["train", *RUN, "--out-dir", str(out)], capsys)
    assert line.startswith(f"minidiff: error: --out-dir {out}: Not a directory"), line
    line = one_line_failure(["train", *RUN, "--out-dir", str(tmp_path / "file")], capsys)
    assert line.startswith(f"minidiff: error: --out-dir {tmp_path / 'file'}: File exists"), line
    assert (tmp_path / "file").read_text() == "x"


def test_a_read_only_out_dir(tmp_path, capsys, monkeypatch):
    # Root ignores permission bits, so the refusal the OS would give is raised here instead.
    out = tmp_path / "ro"

    def refuse(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(os, "makedirs", refuse)
    line = one_line_failure(["train", *RUN, "--out-dir", str(out)], capsys)
    assert line == f"minidiff: error: --out-dir {out}: Permission denied: {out}"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_a_full_disk_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch, suffix):
    out = tmp_path / "run"
    main(["train", *RUN, "--out-dir", str(out)])
    before = (out / "checkpoint.npz").read_bytes()
    real_fsync = os.fsync

    def full(fd):                       # the disk fills up while this kind of file is written
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", full)
    line = one_line_failure(["train", *RUN[:-5], "--steps", "20", "--ckpt-every", "5", "--quiet",
                             "--resume", "--out-dir", str(out)], capsys)
    assert line.startswith(f"minidiff: error: --out-dir {out}: No space left on device: {out}/")
    assert (out / "checkpoint.npz").read_bytes() == before
    assert list(out.glob(".tmp-*")) == []


def test_files_that_are_not_checkpoints(tmp_path, capsys):
    npy = tmp_path / "weights.npy"
    np.save(npy, np.ones(3))
    line = one_line_failure(["sample", "--run", str(npy)], capsys)
    assert f"--run {npy}:" in line and "not an .npz archive" in line
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __meta__=np.frombuffer(b"{}", np.uint8),
             w=np.array([{"evil": 1}], dtype=object))
    line = one_line_failure(["sample", "--run", str(pickled)], capsys)
    assert "pickled Python objects, which minidiff never loads" in line
    assert "allow_pickle" not in line
    line = one_line_failure(["sample", "--run", str(tmp_path / "nowhere")], capsys)
    assert line.startswith(f"minidiff: error: --run {tmp_path / 'nowhere'}:")


def test_demo_into_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("keep")
    line = one_line_failure(["demo", "--out-dir", str(tmp_path / "f")], capsys)
    assert line == f"minidiff: error: --out-dir {tmp_path / 'f'}: is a file, not a folder; " \
                   "choose a folder for the pictures"
    assert (tmp_path / "f").read_text() == "keep"


def test_a_model_that_trained_to_finite_garbage_is_called_diverged(tmp_path, capsys):
    t = Trainer(tiny(tmp_path, steps=2, ckpt_every=2), quiet=True).run(final_samples=False)
    arrays, meta = load_checkpoint(t.ckpt_path)
    for k in arrays:                    # finite, but the MLP's output overflows float32
        if k.startswith(("model.", "ema.")):
            arrays[k] = np.full_like(arrays[k], 1e15)
    save_checkpoint(t.ckpt_path, arrays, meta)
    with pytest.raises(ModelDiverged, match=r"x_\d+ holds NaN or inf.*diverged"):
        with np.errstate(all="ignore"):
            Trainer.from_checkpoint(t.ckpt_path).sample(20)
    with np.errstate(all="ignore"):
        line = one_line_failure(["sample", "--run", str(tmp_path / "run"), "--n", "20"], capsys)
    assert "diverged" in line and "--no-ema" in line and "--lr" in line


def test_sampling_a_folder_run_needs_no_training_folder(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    g = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(g.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    out = tmp_path / "run"
    main(["train", "--data", "folder", "--data-path", str(photos), "--model", "tiny",
          "--image-size", "16", "--channels", "3", "--timesteps", "21", "--steps", "2",
          "--batch-size", "2", "--n-samples", "2", "--quiet", "--out-dir", str(out)])
    capsys.readouterr()
    for p in photos.iterdir():
        p.unlink()
    photos.rmdir()
    main(["sample", "--run", str(out), "--n", "3", "--out", str(tmp_path / "s.png")])
    assert "3 samples" in capsys.readouterr().out
    assert Image.open(tmp_path / "s.png").size[0] > 16


@pytest.mark.parametrize("wish, message", [
    ("cuda", "minidiff: error: MINIDIFF_DEVICE=cuda: device 'cuda' needs CuPy"),
    ("gpu", "minidiff: error: MINIDIFF_DEVICE='gpu' is not a device; allowed: 'cpu', 'cuda' "
            "(or pass --device cpu)"),
])
def test_a_device_wish_that_cannot_be_met_fails_in_one_line_and_device_cpu_wins(
        tmp_path, wish, message):
    from test_reliability_api import run_python
    argv = ["-m", "minidiff", "train", *RUN, "--steps", "2", "--ckpt-every", "2"]
    refused = run_python(argv + ["--out-dir", str(tmp_path / "a")], wish, tmp_path)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert lines[0].endswith("(or pass --device cpu)")
    assert not (tmp_path / "a").exists()
    taken = run_python(argv + ["--device", "cpu", "--out-dir", str(tmp_path / "b")], wish,
                       tmp_path)
    assert taken.returncode == 0, taken.stderr
    assert load_checkpoint(tmp_path / "b" / "checkpoint.npz")[1]["step"] == 2


# ------------------------------------------------------------------------------ numeric flags
# Every numeric field of the config, and the int range the field itself declares.
INT_RANGES = {f.name: f.metadata["range"] for f in dataclasses.fields(TrainConfig)
              if f.metadata["range"]}
NUMERIC = sorted(INT_RANGES) + sorted(f.name for f in dataclasses.fields(TrainConfig)
                                      if f.metadata["number"])
TEXT = st.one_of(
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "-inf", "1e400", "0x10", "1_000", "٣", "+7", "--1",
                     "1" * 5000, "3.0", "1e-400", "0.999999999999999999"]),
    st.text(max_size=12),
)


class Reached(Exception):
    """The config passed every check and a Trainer would have been built."""


@given(name=st.sampled_from(NUMERIC), text=TEXT)
def test_every_numeric_flag_is_refused_by_name_or_taken_in_range(name, text):
    """Each value is either refused (exit 2, one line naming the flag, not echoing a huge
    value) or reaches the Trainer as a number in the flag's range, equal to what was typed."""
    seen = {}

    def trainer(cfg, **kw):
        seen["cfg"] = cfg
        raise Reached()
    flag = "--" + name.replace("_", "-")
    argv = ["train", "--data", "digits", "--model", "tiny", f"{flag}={text}", "--out-dir",
            "/nonexistent/never-written"]
    real, cli.Trainer = cli.Trainer, trainer
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            main(argv)
    except Reached:
        value = getattr(seen["cfg"], name)
        if name in INT_RANGES:
            lo, hi = INT_RANGES[name]
            assert isinstance(value, int) and lo <= value <= hi and value == int(text)
        else:
            assert isinstance(value, float) and math.isfinite(value) and value == float(text)
    except SystemExit as e:
        last = err.getvalue().strip().splitlines()[-1]
        named = last.startswith(f"minidiff train: error: argument {flag}: must be ") or \
            last.startswith(f"minidiff train: error: {flag}: ")      # refused by validate()
        assert e.code == 2 and named, last
        assert len(last) < 300, last
    finally:
        cli.Trainer = real
