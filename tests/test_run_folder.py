"""The run folder: one trainer at a time, only stale temp files removed, an --overwrite that
keeps the old run whole until the new run's first checkpoint, and recovery after a kill at
any rename."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minidiff import rundir
from minidiff.checkpoint import load_checkpoint
from minidiff.runlog import read_log_rows
from minidiff.train import NonFiniteLoss, Trainer

from test_train import TINY, cli_args, env, minidiff_cmd, tiny

pytestmark = pytest.mark.usefixtures("one_blas_thread")

STAGING = (rundir.PREVIOUS, rundir.MOVING, rundir.DISCARD)


def snapshot(folder):
    """{name: bytes} of every file in the folder but the lock: what a user would lose."""
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()
            if p.is_file() and p.name != rundir.LOCK}


def log_steps(folder):
    return [int(r.split(",")[0]) for r in read_log_rows(Path(folder) / "log.csv", 10**9)]


# ------------------------------------------------------------------------------ the lock
def test_a_second_trainer_on_a_busy_folder_is_refused_by_pid(tmp_path):
    first = Trainer(tiny(tmp_path, steps=4, ckpt_every=2), quiet=True)
    with pytest.raises(rundir.RunFolderBusy,
                       match=rf"out_dir: {tmp_path / 'run'} is in use by another minidiff "
                             rf"process \(PID {os.getpid()}\)"):
        Trainer(tiny(tmp_path, steps=4, ckpt_every=2), overwrite=True, quiet=True)
    first.run(final_samples=False)                   # the refused one changed nothing
    assert load_checkpoint(first.ckpt_path)[1]["step"] == 4 and log_steps(first.cfg.out_dir) \
        == [1, 2, 3, 4]
    later = Trainer(tiny(tmp_path, steps=6, ckpt_every=2), resume=True, quiet=True)
    assert later.step == 4                           # run() let go of the folder
    later.close()


def test_two_processes_on_one_folder_one_is_refused_and_the_other_is_whole(tmp_path):
    out = tmp_path / "run"
    cmd = minidiff_cmd(*cli_args({**TINY, "steps": 4000, "ckpt_every": 500}), "--quiet",
                       "--out-dir", str(out))
    first = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:                # until the first holds the lock
            lock = out / rundir.LOCK
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.01)
        second = subprocess.run(cmd + ["--overwrite"], env=env(), capture_output=True,
                                text=True, timeout=120)
        assert first.poll() is None, "the first run ended too soon; raise its steps"
    finally:
        out_first, err_first = first.communicate(timeout=300)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"minidiff: error: --out-dir: {out} is in use by another minidiff process (PID "
        f"{first.pid}); wait for it to end, or choose another --out-dir"]
    assert first.returncode == 0, err_first
    assert load_checkpoint(out / "checkpoint.npz")[1]["step"] == 4000
    assert log_steps(out) == list(range(1, 4001))


def test_only_provably_stale_temp_files_are_removed(tmp_path):
    out = tmp_path / "run"
    rundir.claim(str(out))                           # a run folder, where runs were killed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / f".tmp-{dead.pid}-ab12.npz").write_bytes(b"half a checkpoint")
        (out / f".tmp-{live.pid}-cd34.npz").write_bytes(b"being written")
        (out / f".tmp-{os.getpid()}-ef56.csv").write_bytes(b"ours, from a failed write")
        Trainer(tiny(tmp_path, steps=2, ckpt_every=2), quiet=True).run(final_samples=False)
        left = sorted(p.name for p in out.glob(".tmp-*"))
        assert left == [f".tmp-{live.pid}-cd34.npz"]
    finally:
        live.kill()
        live.wait()


# ------------------------------------------------------------------------------ --overwrite
def test_a_diverging_overwrite_leaves_the_old_run_whole_and_resumable(tmp_path):
    Trainer(tiny(tmp_path, steps=20, ckpt_every=10), quiet=True).run()
    before = snapshot(tmp_path / "run")
    assert {"checkpoint.npz", "log.csv", "config.json", "loss.png", "samples.png"} <= set(before)
    doomed = Trainer(tiny(tmp_path, steps=50, ckpt_every=25, lr=1e30, warmup=0),
                     overwrite=True, quiet=True)
    with pytest.raises(NonFiniteLoss) as e:
        doomed.run()
    assert "last good checkpoint" not in str(e.value)
    assert "the run it was to overwrite in" in str(e.value) and "put back" in str(e.value)
    assert snapshot(tmp_path / "run") == before                    # byte for byte
    assert not any((tmp_path / "run" / name).exists() for name in STAGING)
    # --resume continues the old run, with one unbroken log.
    Trainer(tiny(tmp_path, steps=30, ckpt_every=10), resume=True, quiet=True).run(
        final_samples=False)
    assert log_steps(tmp_path / "run") == list(range(1, 31))
    old_rows = before["log.csv"].decode().splitlines()[1:]
    assert (tmp_path / "run" / "log.csv").read_text().splitlines()[1:21] == old_rows


def test_an_overwrite_replaces_the_old_run_once_it_has_a_checkpoint(tmp_path):
    Trainer(tiny(tmp_path, steps=20, ckpt_every=10), quiet=True).run(final_samples=False)
    (tmp_path / "run" / "notes.txt").write_text("mine")            # not the run's: stays
    Trainer(tiny(tmp_path, steps=6, ckpt_every=3, lr=2e-3), overwrite=True, quiet=True).run(
        final_samples=False)
    arrays, meta = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert meta["step"] == 6 and meta["config"]["lr"] == 2e-3
    assert log_steps(tmp_path / "run") == list(range(1, 7))
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    assert not any((tmp_path / "run" / name).exists() for name in STAGING)


class Killed(BaseException):
    """Stands for kill -9 between two file operations."""


def file_ops_die_after(monkeypatch, k):
    """Let k renames/unlinks/removals succeed, then 'kill' the process at the next one."""
    count = {"n": 0}

    def wrap(real):
        def op(*args, **kwargs):
            if count["n"] >= k:
                raise Killed()
            count["n"] += 1
            return real(*args, **kwargs)
        return op
    for name in ("replace", "unlink", "rmdir"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))
    monkeypatch.setattr(shutil, "rmtree", wrap(shutil.rmtree))
    return count


def old_run(folder):
    folder.mkdir()
    for name in ("checkpoint.npz", "log.csv", "config.json", "loss.png", "samples.png",
                 "notes.txt"):
        (folder / name).write_bytes(f"old {name}".encode())
    return snapshot(folder)


def overwrite_then(folder, finish):
    aside = rundir.move_run_aside(folder)
    for name in ("checkpoint.npz", "log.csv", "samples_000010.png"):
        (folder / name).write_bytes(f"new {name}".encode())
    finish(aside)


@pytest.mark.parametrize("finish", [rundir.restore, rundir.commit])
def test_a_kill_at_any_file_operation_recovers_one_whole_run(tmp_path, monkeypatch, finish):
    old = old_run(tmp_path / "count")
    with monkeypatch.context() as m:
        total = file_ops_die_after(m, 10**9)
        overwrite_then(tmp_path / "count", finish)
    new = snapshot(tmp_path / "count")
    assert (new == old) == (finish is rundir.restore) and total["n"] > 8
    for k in range(total["n"] + 1):
        folder = tmp_path / f"k{k}"
        old_run(folder)
        with monkeypatch.context() as m:
            file_ops_die_after(m, k)
            try:
                overwrite_then(folder, finish)
            except Killed:
                pass
        rundir.recover(folder)
        got = snapshot(folder)
        if finish is rundir.restore:
            assert got == old, k
        else:                                        # before commit's rename: old; after: new
            assert got in (old, new), k
        assert not any((folder / name).exists() for name in STAGING), k


def test_a_killed_overwrite_is_undone_when_the_folder_is_next_used(tmp_path):
    Trainer(tiny(tmp_path, steps=10, ckpt_every=5), quiet=True).run(final_samples=False)
    before = snapshot(tmp_path / "run")
    rundir.move_run_aside(str(tmp_path / "run"))     # as a killed --overwrite leaves it
    (tmp_path / "run" / "log.csv").write_text("step,loss,grad_norm,lr\n1,9,9,9\n")
    t = Trainer(tiny(tmp_path, steps=15, ckpt_every=5), resume=True, quiet=True)
    assert t.step == 10
    t.close()
    assert snapshot(tmp_path / "run") == before


def test_sampling_reads_whole_checkpoints_while_a_run_writes_them(tmp_path):
    out = tmp_path / "run"
    cmd = minidiff_cmd(*cli_args({**TINY, "steps": 3000, "ckpt_every": 1}), "--quiet",
                       "--out-dir", str(out))
    writer = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        steps = []
        deadline = time.time() + 60
        while len(steps) < 25 and time.time() < deadline:
            if (out / "checkpoint.npz").exists():
                # every field is checked against the others (step, update counts, warm-up),
                # so a checkpoint torn between two writes would be refused here
                steps.append(Trainer.from_checkpoint(str(out)).step)
        assert writer.poll() is None, "the run ended too soon; raise its steps"
    finally:
        writer.kill()
        writer.wait()
    assert len(steps) == 25 and steps == sorted(steps) and steps[-1] > steps[0]


def test_from_checkpoint_reads_the_file_once(tmp_path, monkeypatch):
    """One read: config and weights come from the same file, even if it is replaced between
    two reads (the test above shows each read is whole)."""
    Trainer(tiny(tmp_path, steps=2, ckpt_every=2), quiet=True).run(final_samples=False)
    import minidiff.train as train
    reads = []

    def counted(path, **kwargs):
        reads.append(path)
        return load_checkpoint(path, **kwargs)
    monkeypatch.setattr(train, "load_checkpoint", counted)
    assert Trainer.from_checkpoint(str(tmp_path / "run")).step == 2
    assert len(reads) == 1
