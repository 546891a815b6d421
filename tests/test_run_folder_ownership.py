"""Whose folder it is: minidiff writes only into a folder it made (or a new or empty one), a
killed --overwrite is undone by whichever command comes next, SIGTERM is Ctrl-C, a damaged
log.csv does not block a resume, and files get the umask's mode."""
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from minidiff import atomic, rundir
from minidiff.cli import main
from minidiff.runlog import LOG_HEADER, open_log, read_log_rows
from minidiff.train import Trainer

from test_cli_errors import one_line_failure
from test_run_folder import STAGING, log_steps, snapshot
from test_train import TINY, cli_args, env, minidiff_cmd, tiny

pytestmark = pytest.mark.usefixtures("one_blas_thread")

RUN = cli_args({**TINY, "steps": 4, "ckpt_every": 2}) + ["--quiet"]


def tree(folder):
    """{relative path: bytes, or None for a folder}: every entry, the lock and marks too."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(Path(folder).rglob("*"))}


# ------------------------------------------------------------------------------ whose folder
@pytest.mark.parametrize("flags", [[], ["--resume"], ["--overwrite"]])
def test_a_users_folder_is_refused_whatever_the_flags_and_left_as_it_was(tmp_path, capsys,
                                                                         flags):
    out = tmp_path / "p"                 # the folder: the user's own run files
    out.mkdir()
    for name in ("config.json", "log.csv", "loss.png", "notes.txt"):
        (out / name).write_bytes(f"the user's {name}".encode())
    before = tree(out)
    line = one_line_failure(["train", *RUN, "--out-dir", str(out), *flags], capsys)
    assert line.startswith(f"minidiff: error: --out-dir: {out} is not empty and minidiff did "
                           "not make it (it holds config.json, log.csv, loss.png, notes.txt)")
    assert tree(out) == before                       # not even a .lock


names = st.text("abcXYZ019._-", min_size=1, max_size=10).filter(lambda n: n not in (".", ".."))


@given(files=st.dictionaries(names, st.binary(max_size=20), min_size=1, max_size=9),
       resume=st.booleans(), overwrite=st.booleans())
def test_any_unmarked_non_empty_folder_is_refused_naming_what_it_holds(files, resume,
                                                                       overwrite):
    root = Path(tempfile.mkdtemp())
    try:
        out = root / "run"
        out.mkdir()
        for name, data in files.items():
            (out / name).write_bytes(data)
        before = tree(out)
        with pytest.raises(FileExistsError) as e:
            Trainer(tiny(root), resume=resume, overwrite=overwrite, quiet=True)
        msg, shown = str(e.value), sorted(files)[:5]
        assert "\n" not in msg and msg.startswith(f"out_dir: {out} is not empty"), msg
        assert f"(it holds {', '.join(shown)}" in msg, msg
        assert (f" and {len(files) - 5} more)" in msg) == (len(files) > 5), msg
        assert tree(out) == before
    finally:
        shutil.rmtree(root)


def test_a_new_or_empty_folder_is_marked_before_anything_else_is_written(tmp_path,
                                                                         monkeypatch):
    seen = []
    real_lock = rundir.RunLock

    def lock(folder):                                # what the folder holds before the lock
        seen.append(sorted(os.listdir(folder)) if os.path.isdir(folder) else None)
        return real_lock(folder)
    monkeypatch.setattr(rundir, "RunLock", lock)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new"):
        Trainer(tiny(tmp_path, out_dir=str(out), steps=2, ckpt_every=2), quiet=True).run(
            final_samples=False)
    assert seen == [[".minidiff-run"], [".minidiff-run"]]
    for out in (tmp_path / "empty", tmp_path / "new"):
        assert (out / rundir.MARK).read_text() == rundir.MARK_TEXT


def test_a_run_from_before_the_mark_is_adopted_and_marked_when_it_trains(tmp_path):
    Trainer(tiny(tmp_path, steps=4, ckpt_every=2), quiet=True).run(final_samples=False)
    out, mark = tmp_path / "run", tmp_path / "run" / ".minidiff-run"
    mark.unlink(missing_ok=True)                      # as minidiff wrote runs until now
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(tiny(tmp_path, steps=4))
    assert not mark.exists()
    t = Trainer(tiny(tmp_path, steps=6, ckpt_every=2), resume=True, quiet=True)
    assert t.step == 4
    t.run(final_samples=False)
    assert mark.exists() and log_steps(out) == list(range(1, 7))
    assert (out / "notes.txt").read_text() == "mine"


def test_a_checkpoint_npz_that_is_not_minidiffs_does_not_make_a_folder_ours(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(b"my own weights, in my own format")
    (out / "log.csv").write_text("my own log")
    before = tree(out)
    for flags in ([], ["--resume"], ["--overwrite"]):
        line = one_line_failure(["train", *RUN, "--out-dir", str(out), *flags], capsys)
        assert f"{out / 'checkpoint.npz'} is not a readable minidiff checkpoint" in line, line
        assert tree(out) == before


# ------------------------------------------------------------------------- a killed --overwrite
@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Two finished digits runs (an old one of 4 steps, a new one of 2): nll needs images."""
    pytest.importorskip("sklearn")
    root = tmp_path_factory.mktemp("digits")
    for name, steps in (("old", 4), ("new", 2)):
        main(["train", "--data", "digits", "--model", "tiny", "--timesteps", "21", "--steps",
              str(steps), "--ckpt-every", "2", "--batch-size", "2", "--n-samples", "2",
              "--quiet", "--out-dir", str(root / name)])
        (root / name / "notes.txt").write_text("the user's notes")
    return root


def killed_aside(folder, new):
    """The old run in .previous/, the new run's first files beside it, no new checkpoint."""
    rundir.move_run_aside(folder)
    for name in ("log.csv", "config.json"):
        shutil.copy(new / name, folder / name)


def killed_moving_aside(folder, new):
    """Killed while moving the old run aside: half of its files in .previous.partial/."""
    (folder / rundir.MOVING).mkdir()
    for name in ("checkpoint.npz", "config.json"):
        os.replace(folder / name, folder / rundir.MOVING / name)


def killed_moving_back(folder, new):
    """Killed while restore() put the old run back: the checkpoint back, the rest not yet."""
    killed_aside(folder, new)
    for name in ("log.csv", "config.json"):
        (folder / name).unlink()
    os.replace(folder / rundir.PREVIOUS, folder / rundir.MOVING)
    os.replace(folder / rundir.MOVING / "checkpoint.npz", folder / "checkpoint.npz")


def killed_committing(folder, new):
    """Killed after the new run's first checkpoint, while the old run was being dropped."""
    rundir.move_run_aside(folder)
    for name in ("checkpoint.npz", "log.csv", "config.json"):
        shutil.copy(new / name, folder / name)
    os.replace(folder / rundir.PREVIOUS, folder / rundir.DISCARD)
    (folder / rundir.DISCARD / "loss.png").unlink()   # rmtree cut short


KILLS = {"aside": killed_aside, "moving aside": killed_moving_aside,
         "moving back": killed_moving_back, "committing": killed_committing}


@pytest.mark.parametrize("command", ["sample", "nll"])
@pytest.mark.parametrize("kill", list(KILLS))
def test_sample_and_nll_undo_a_killed_overwrite(digits_runs, tmp_path, capsys, command, kill):
    folder = tmp_path / "run"
    shutil.copytree(digits_runs / "old", folder)
    old = snapshot(folder)
    KILLS[kill](folder, digits_runs / "new")
    if kill == "committing":                         # the new run had a checkpoint: it stays
        expected = {**old, **{n: (digits_runs / "new" / n).read_bytes()
                              for n in ("checkpoint.npz", "log.csv", "config.json")}}
        del expected["loss.png"], expected["samples.png"]
    else:
        expected = old
    argv = {"sample": ["sample", "--run", str(folder), "--n", "2", "--out",
                       str(tmp_path / "s.png")],
            "nll": ["nll", "--run", str(folder), "--n", "2", "--batch-size", "2"]}[command]
    main(argv)
    said = capsys.readouterr().out
    assert ("2 samples" if command == "sample" else "2 images of the digits test") in said
    assert snapshot(folder) == expected                  # byte for byte
    assert not any((folder / name).exists() for name in STAGING)
    restored = f"{folder}: an --overwrite run ended before its first checkpoint"
    undone = f"{folder}: an interrupted --overwrite was undone"
    assert (restored in said) == (kill == "aside"), said
    assert (undone in said) == (kill in ("moving aside", "moving back")), said


def test_a_live_trainers_overwrite_is_left_alone_and_said(digits_runs, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(digits_runs / "old", folder)
    killed_aside(folder, digits_runs / "new")
    lock = rundir.RunLock(str(folder))               # a trainer replacing the run, alive
    try:
        before = tree(folder)
        line = one_line_failure(["sample", "--run", str(folder), "--n", "2"], capsys)
        assert line == (f"minidiff: error: --run {folder}: {folder}: no checkpoint yet: a "
                        f"trainer is replacing this run (--overwrite); the run it replaces "
                        f"waits in {folder / rundir.PREVIOUS}/ until the new run's first "
                        "checkpoint")
        assert tree(folder) == before
    finally:
        lock.release()


def test_sigterm_during_an_overwrite_puts_the_old_run_back_in_one_line(tmp_path):
    Trainer(tiny(tmp_path, steps=4, ckpt_every=2), quiet=True).run()
    out = tmp_path / "run"
    old = snapshot(out)
    cmd = minidiff_cmd(*cli_args({**TINY, "steps": 10**6, "ckpt_every": 10**6}), "--quiet",
                       "--overwrite", "--out-dir", str(out))
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and not (
                (out / rundir.PREVIOUS).is_dir() and (out / "log.csv").exists()):
            time.sleep(0.01)
        time.sleep(0.2)                              # into the training loop
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1 and stdout == ""
    assert stderr.splitlines() == ["minidiff: error: interrupted; the last checkpoint (if any) "
                                   "is intact: rerun with --resume"], stderr
    assert snapshot(out) == old
    assert not any((out / name).exists() for name in STAGING)


# ------------------------------------------------------------------------------ log.csv
def test_a_non_utf8_byte_in_log_csv_drops_that_row_names_the_file_and_resumes(tmp_path,
                                                                             capsys):
    Trainer(tiny(tmp_path, steps=6, ckpt_every=6), quiet=True).run(final_samples=False)
    out = tmp_path / "run"
    raw = (out / "log.csv").read_bytes()
    at = raw.index(b"\n3,") + 3                      # the loss of step 3 (line 4)
    (out / "log.csv").write_bytes(raw[:at] + b"\xff" + raw[at + 1:])
    t = Trainer(tiny(tmp_path, steps=8, ckpt_every=8), resume=True)
    assert t.step == 6
    t.run(final_samples=False)
    said = capsys.readouterr().out
    assert f"{out / 'log.csv'}: dropped 1 damaged line(s), not rows of numbers in UTF-8 " \
           "(line 4); the other rows are kept" in said, said
    assert log_steps(out) == [1, 2, 4, 5, 6, 7, 8]
    kept = raw.decode().splitlines()
    assert (out / "log.csv").read_text().splitlines()[:6] == kept[:3] + kept[4:7]


NOT_UTF8 = st.one_of(st.integers(0x80, 0xBF), st.integers(0xF8, 0xFF))   # never a character


@given(n=st.integers(1, 12), hits=st.lists(st.tuples(st.integers(0, 10**6), NOT_UTF8),
                                          max_size=6))
def test_bad_bytes_drop_exactly_the_rows_they_hit(n, hits):
    rows = [f"{s},{1 / s!r},{2.0 * s!r},0.001" for s in range(1, n + 1)]
    raw = bytearray("".join(r + "\n" for r in [LOG_HEADER] + rows).encode())
    where = [i for i, b in enumerate(raw) if b != ord("\n")]
    for k, byte in hits:
        raw[where[k % len(where)]] = byte
    lines = bytes(raw).split(b"\n")
    hit = {i for i in range(1, n + 1) if lines[i] != rows[i - 1].encode()}   # the oracle
    folder = Path(tempfile.mkdtemp())
    try:
        path = folder / "log.csv"
        path.write_bytes(bytes(raw))
        assert read_log_rows(path, n) == [r for i, r in enumerate(rows, 1) if i not in hit]
        f, note = open_log(str(path), n)
        f.close()
        assert (note is None) == (not hit)
        if hit:
            numbers = ", ".join(str(i + 1) for i in sorted(hit)[:5])
            assert note.startswith(f"{path}: dropped {len(hit)} damaged line(s)")
            assert f"(line {numbers}{', ...' if len(hit) > 5 else ''})" in note
    finally:
        shutil.rmtree(folder)


# ------------------------------------------------------------------------------ permissions
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=oct)
def test_files_get_the_umasks_mode_like_any_tools(tmp_path, mask):
    out = tmp_path / "run"
    code = ("import os, sys; os.umask(int(sys.argv[1], 8)); from minidiff.cli import main; "
            "main(sys.argv[2:])")
    subprocess.run([sys.executable, "-c", code, oct(mask), "train", *RUN, "--out-dir",
                    str(out)], env=env(), check=True, timeout=120)
    modes = {n: oct(stat.S_IMODE(os.stat(out / n).st_mode)) for n in os.listdir(out)}
    assert {"checkpoint.npz", "log.csv", "config.json", "loss.png", "samples.png",
            ".lock", ".minidiff-run"} <= set(modes), modes
    assert modes == {n: oct(0o666 & ~mask) for n in modes}


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027], ids=oct)
def test_the_umask_is_read_without_changing_it(monkeypatch, mask):
    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")
    before = os.umask(mask)
    try:
        assert atomic.umask() == mask                   # from /proc/self/status
        with monkeypatch.context() as m:
            m.setattr(atomic, "open", no_proc, raising=False)
            assert atomic.umask() == mask               # set and put straight back
        assert os.umask(mask) == mask                   # and it is still the same
    finally:
        os.umask(before)
