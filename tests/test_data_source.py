"""A run records its data (absolute path and fingerprint), and a checkpoint's config has every
field: a resume, `sample` or `nll` on other data under the same name, or on a config with a
field deleted, is refused in one line instead of running on the wrong thing."""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from minidiff import data_source
from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.cli import main
from minidiff.config import TrainConfig

from test_cli_errors import one_line_failure
from test_train import cli_args

pytestmark = pytest.mark.usefixtures("one_blas_thread")

PICTURE_RUN = cli_args(dict(data="picture", n_points=300, hidden=16, depth=1, time_dim=8,
                            timesteps=30, batch_size=16, n_samples=20, steps=4, ckpt_every=2,
                            warmup=0)) + ["--quiet"]


def picture(path, seed):
    """A 24x24 black-and-white picture: its dark pixels are the 2-D data."""
    g = np.random.default_rng(seed)
    Image.fromarray(np.where(g.random((24, 24)) < 0.3, 0, 255).astype(np.uint8)).save(path)


def images(folder, n, start=0):
    folder.mkdir(exist_ok=True)
    g = np.random.default_rng(start)
    for i in range(start, start + n):
        Image.fromarray(g.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")


# ------------------------------------------------------------------------------ the record
def test_a_file_is_recorded_by_its_absolute_path_and_the_sha256_of_its_bytes(tmp_path,
                                                                             monkeypatch):
    (tmp_path / "pic.png").write_bytes(b"not really a png")
    monkeypatch.chdir(tmp_path)
    rec = data_source.record("pic.png")
    assert rec == {"path": str(tmp_path / "pic.png"), "kind": "file", "bytes": 16,
                   "sha256": hashlib.sha256(b"not really a png").hexdigest()}
    assert data_source.record("") is None
    assert data_source.check(rec, str(tmp_path / "pic.png")) is None


def test_a_folder_is_recorded_by_its_files_names_and_sizes(tmp_path):
    images(tmp_path / "f", 2)
    rec = data_source.record(str(tmp_path / "f"))
    lines = sorted(f"{p.name}\t{p.stat().st_size}" for p in (tmp_path / "f").iterdir())
    assert rec["files"] == 2 and rec["kind"] == "folder"
    assert rec["sha256"] == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    os.utime(tmp_path / "f" / "0.png", ns=(1, 1))        # a copy: same names and sizes
    assert "modification times" in data_source.check(rec, str(tmp_path / "f"))
    images(tmp_path / "f", 1, start=2)                    # a new image
    with pytest.raises(ValueError, match=r"it held 2 files, .* now 3 files"):
        data_source.check(rec, str(tmp_path / "f"))


@pytest.mark.parametrize("saved, path, words", [
    (None, "/x/pic.png", "trained on minidiff's own data"),
    ({"path": "/x/pic.png"}, "", "name it (or its moved copy) with --data-path"),
    ({"path": "/nowhere/pic.png"}, "/nowhere/pic.png", "the run's data is gone"),
])
def test_data_that_is_not_there_or_not_expected_is_refused(saved, path, words):
    with pytest.raises(ValueError, match=r"^data_path: ") as e:
        data_source.check(saved, path)
    assert words in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------ train --resume
def test_resume_from_another_directory_on_another_file_of_that_name_is_refused(tmp_path,
                                                                                monkeypatch,
                                                                                capsys):
    for d, seed in (("a", 0), ("b", 1)):
        (tmp_path / d).mkdir()
        picture(tmp_path / d / "pic.png", seed)
    run = str(tmp_path / "run")
    monkeypatch.chdir(tmp_path / "a")
    main(["train", *PICTURE_RUN, "--data-path", "pic.png", "--out-dir", run, "--steps", "2"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_path"] == str(tmp_path / "a" / "pic.png")       # absolute, not typed
    monkeypatch.chdir(tmp_path / "b")                                  # the same words typed
    line = one_line_failure(["train", *PICTURE_RUN, "--data-path", "pic.png", "--out-dir", run,
                             "--resume"], capsys)
    assert f"the data at {tmp_path / 'b' / 'pic.png'} changed" in line
    assert f"trained on {tmp_path / 'a' / 'pic.png'}" in line
    assert load_checkpoint(os.path.join(run, "checkpoint.npz"))[1]["step"] == 2   # untouched
    monkeypatch.chdir(tmp_path / "a")                                  # the right file resumes
    main(["train", *PICTURE_RUN, "--data-path", "pic.png", "--out-dir", run, "--resume"])
    assert load_checkpoint(os.path.join(run, "checkpoint.npz"))[1]["step"] == 4


def test_resume_of_a_folder_run_whose_images_changed_is_refused(tmp_path, capsys):
    images(tmp_path / "photos", 1)

    def train(steps, *more):
        main(["train", "--data", "folder", "--data-path", str(tmp_path / "photos"), "--model",
              "tiny", "--image-size", "8", "--channels", "3", "--timesteps", "21", "--steps",
              str(steps), "--batch-size", "2", "--n-samples", "2", "--quiet", "--out-dir",
              str(tmp_path / "run"), *more])
    train(1)
    images(tmp_path / "photos", 4, start=1)                             # 1 image became 5
    with pytest.raises(SystemExit):
        train(2, "--resume")
    line = capsys.readouterr().err.strip()
    assert line.startswith("minidiff: error: --data-path: the data at "), line
    assert "it held 1 file, " in line and "now 5 files" in line, line


# ------------------------------------------------------------------------------ sample, nll
def test_sample_reads_the_recorded_file_from_anywhere_and_refuses_a_changed_one(tmp_path,
                                                                                monkeypatch,
                                                                                capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "elsewhere").mkdir()
    picture(tmp_path / "a" / "pic.png", 0)
    picture(tmp_path / "elsewhere" / "pic.png", 1)       # same name, other points
    monkeypatch.chdir(tmp_path / "a")
    main(["train", *PICTURE_RUN, "--data-path", "pic.png", "--out-dir", str(tmp_path / "run")])
    monkeypatch.chdir(tmp_path / "elsewhere")
    main(["sample", "--run", str(tmp_path / "run"), "--n", "20", "--out", "s.png"])
    assert "20 samples" in capsys.readouterr().out      # the run's own picture, not this one
    os.replace(tmp_path / "a" / "pic.png", tmp_path / "moved.png")
    line = one_line_failure(["sample", "--run", str(tmp_path / "run"), "--n", "20"], capsys)
    assert line.startswith("minidiff: error: --data-path: the run's data is gone: nothing at "
                           f"{tmp_path / 'a' / 'pic.png'}"), line
    main(["sample", "--run", str(tmp_path / "run"), "--n", "20", "--out", "s.png",
          "--data-path", str(tmp_path / "moved.png")])  # moved data, named: the same bytes
    assert "20 samples" in capsys.readouterr().out
    line = one_line_failure(["sample", "--run", str(tmp_path / "run"), "--n", "20",
                             "--data-path", "pic.png"], capsys)   # another file: refused
    assert "changed since the run was trained" in line, line


# ------------------------------------------------------------------------------ missing fields
def edited_checkpoint(tmp_path, capsys, edit):
    """A trained 2-D run whose checkpoint metadata went through edit(meta)."""
    run = tmp_path / "run"
    main(["train", *PICTURE_RUN, "--data", "swiss_roll", "--out-dir", str(run)])
    capsys.readouterr()
    arrays, meta = load_checkpoint(str(run / "checkpoint.npz"))
    edit(meta)
    meta.pop("format")
    save_checkpoint(str(run / "checkpoint.npz"), arrays, meta)
    return str(run)


def test_a_config_field_deleted_from_the_checkpoint_is_refused_by_name(tmp_path, capsys):
    run = edited_checkpoint(tmp_path, capsys, lambda meta: meta["config"].pop("timesteps"))
    line = one_line_failure(["sample", "--run", run, "--n", "20"], capsys)
    assert "meta.config: TrainConfig: missing field timesteps" in line, line


def test_a_format_1_checkpoint_takes_only_its_documented_defaults(tmp_path, capsys):
    def as_format_1(meta):
        for key in ("run_format", "data"):
            meta.pop(key)
        meta["config"].pop("fourier_levels")          # added during format 1's life
    run = edited_checkpoint(tmp_path, capsys, as_format_1)
    main(["sample", "--run", run, "--n", "20", "--out", str(tmp_path / "s.png")])
    assert "20 samples" in capsys.readouterr().out
    assert TrainConfig.FORMAT_1_DEFAULTS == {"fourier_levels": 0}

    def format_1_without_timesteps(meta):
        as_format_1(meta)
        meta["config"].pop("timesteps")
    run = edited_checkpoint(tmp_path / "b", capsys, format_1_without_timesteps)
    assert "missing field timesteps" in one_line_failure(["sample", "--run", run], capsys)


@pytest.mark.parametrize("edit, words", [
    (lambda meta: meta.update(run_format=4), "meta.run_format: got 4"),
    (lambda meta: meta.pop("data"), "meta.data: missing"),
    (lambda meta: meta.update(data={"kind": "file"}), "meta.data: not the record"),
    (lambda meta: meta.pop("device"), "meta.device"),
])
def test_a_format_2_checkpoint_must_hold_its_fields(tmp_path, capsys, edit, words):
    run = edited_checkpoint(tmp_path, capsys, edit)
    assert words in one_line_failure(["sample", "--run", run, "--n", "20"], capsys)


@pytest.mark.parametrize("run_format, refused", [(1, True), (2, True), (3, False)])
def test_a_cifar10_run_from_before_ho_et_als_padding_is_refused(tmp_path, capsys, run_format,
                                                                 refused):
    def as_cifar10(meta):                  # only the config is edited: it is read first
        meta.update(run_format=run_format)
        meta["config"].update(model="cifar10", data="digits")
    run = edited_checkpoint(tmp_path, capsys, as_cifar10)
    line = one_line_failure(["sample", "--run", run, "--n", "20"], capsys)
    assert ("meta.config.model: a 'cifar10' run from before 2026-12-06" in line) == refused, line
