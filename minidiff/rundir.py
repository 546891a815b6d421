"""A run folder that nothing can corrupt: minidiff's only once minidiff made it, one trainer
at a time, files replaced atomically, and an --overwrite that keeps the old run whole until the
new one has a checkpoint.

    run = open_run("runs/roll", resume, overwrite)   # a trainer's: claim, lock, recover, and
                                         # run.start: "new", "resume" or "overwrite"
    run.begin(config)                    # training starts: an --overwrite's old run aside
    run.saved()                          # a checkpoint is on disk: the old run dropped
    run.failed(); run.release()          # or put back, if the new run failed before that

    claim("runs/roll")                   # new or empty: marked ours; a user's folder: refused
    lock = RunLock("runs/roll")          # a second trainer on runs/roll is refused by name
    recover("runs/roll")                 # finish what a killed --overwrite left half done
    write_atomic("runs/roll/log.csv", text)     # minidiff/atomic.py's, used here too
    aside = move_run_aside("runs/roll")  # --overwrite: the old run waits in .previous/
    commit(aside)                        # after the new run's first checkpoint is on disk
    restore(aside)                       # or, if the new run failed before that

What a run writes into its folder (RUN_FILES; anything else there is the user's):
    checkpoint.npz   weights, optimiser state, EMA, step, the RNG state and the config: all it
                     takes to continue bit for bit (minidiff/run_state.py)
    log.csv          step, loss, grad_norm, lr: one row per `log_every` steps (runlog.py)
    loss.png         the loss curve, redrawn at every checkpoint
    samples*.png     sample pictures from the EMA weights
    config.json      the config, for people to read

Every step that moves files is one rename or a repeatable sequence of renames, so a kill -9 at
any moment leaves a state that `recover` turns back into one whole run; `sample` and `nll` call
recover_for_reading, so whichever command comes next puts the old run back.
"""
import errno
import fcntl
import json
import os
import re
import shutil
import time

from .atomic import TEMP, fsync_dir, write_atomic

MARK = ".minidiff-run"              # written first into a folder minidiff makes its own
MARK_TEXT = "a minidiff run folder: --overwrite replaces only the files minidiff wrote here\n"
LOCK = ".lock"                      # flock'ed by the trainer; holds its PID for the message
PREVIOUS = ".previous"              # the old run, whole, while a new run overwrites it
MOVING = ".previous.partial"        # the old run part way into (or back out of) .previous/
DISCARD = ".previous.discard"       # the old run, after the new run's first checkpoint
# What a run writes into its folder: only these are moved aside by --overwrite; anything else
# a user keeps in the folder is left where it is.
RUN_FILES = re.compile(r"(checkpoint\.npz|log\.csv|config\.json|loss\.png|samples(_\d+)?\.png)")


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock."""


# ------------------------------------------------------------------------------ whose folder
def claim(folder):
    """Make `folder` minidiff's before anything is written into it, or refuse it.

    A new or empty folder gets the mark, first. A marked folder is ours already, and so is a
    run from before the mark existed, once its checkpoint reads as minidiff's (mark() marks it
    when training starts). Any other folder is the user's: refused in one line that names what
    it holds, whatever the flags, and left exactly as it was (not even a .lock)."""
    from .checkpoint import load_checkpoint            # checkpoint.py imports this module
    os.makedirs(folder, exist_ok=True)
    names = sorted(os.listdir(folder))
    if not names:
        mark(folder)
    elif MARK not in names:
        old = _old_checkpoints(folder)
        if not old:
            shown = ", ".join(n if n.isprintable() else ascii(n) for n in names[:5])
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            raise FileExistsError(f"out_dir: {folder} is not empty and minidiff did not make "
                                  f"it (it holds {shown}{more}); minidiff writes only into a "
                                  "new or empty folder, or a run folder of its own: choose "
                                  "another --out-dir")
        load_checkpoint(old[0])         # not minidiff's: refused in one line that names it


def mark(folder):
    """Write the mark that makes `folder` minidiff's (once)."""
    if not os.path.isfile(os.path.join(folder, MARK)):
        write_atomic(os.path.join(folder, MARK), MARK_TEXT)


def _old_checkpoints(folder):
    """The checkpoints of a run from before the mark: in the folder, or where a killed
    --overwrite left them."""
    paths = (os.path.join(folder, where, "checkpoint.npz") for where in ("", PREVIOUS, MOVING))
    return [p for p in paths if os.path.isfile(p)]


def ours(folder):
    """Whether minidiff made `folder`, or it holds a run from before the mark."""
    from .checkpoint import load_checkpoint
    if os.path.isfile(os.path.join(folder, MARK)):
        return True
    old = _old_checkpoints(folder)
    if not old:
        return False
    try:
        load_checkpoint(old[0])
    except (ValueError, OSError):
        return False
    return True


# ------------------------------------------------------------------------------ the lock
class RunLock:
    """An exclusive flock on <folder>/.lock, held until release() or the process ends (the OS
    drops it even on kill -9, so a crash never leaves the folder locked)."""

    def __init__(self, folder):
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.fd = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o666)  # umask
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = self._holder()
            os.close(self.fd)
            self.fd = None
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise RunFolderBusy(f"out_dir: {folder} is in use by another minidiff process "
                                f"(PID {holder}); wait for it to end, or choose another "
                                "--out-dir") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def _holder(self):
        """The PID the holder wrote, or 'unknown' (it may not have written it yet)."""
        for _ in range(3):
            text = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
            if text.isdigit():
                return text
            time.sleep(0.05)
        return "unknown"

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @property
    def held(self):
        return self.fd is not None


# ------------------------------------------------------------------------------ a trainer's
def open_run(folder, resume=False, overwrite=False, say=print):
    """Take `folder` for a trainer: claim it, lock it, finish a killed --overwrite (said through
    `say`), then decide what to do with a run already in it. Returns its RunFolder, whose
    start is "resume" (--resume and a checkpoint: continue it), "overwrite" (--overwrite and a
    checkpoint: begin() moves it aside) or "new". A run with neither flag is refused in one
    line, the lock let go and the folder as it was."""
    claim(folder)                                   # a user's folder: refused, untouched
    lock = RunLock(folder)                          # before we look at what is there
    try:
        note = recover(folder)
        if note:
            say(note)
        if not os.path.exists(os.path.join(folder, "checkpoint.npz")):
            if resume:
                say(f"resume: no checkpoint in {folder}; starting from step 0")
            return RunFolder(folder, lock, "new")
        if resume or overwrite:
            return RunFolder(folder, lock, "resume" if resume else "overwrite")
        raise FileExistsError(f"out_dir: {folder} already holds a run "
                              f"({os.path.join(folder, 'checkpoint.npz')}); pass --resume to "
                              "continue it, --overwrite to start it again, or choose another "
                              "--out-dir")
    except BaseException:
        lock.release()
        raise


class RunFolder:
    """A trainer's run folder from open_run to the end of its run: the lock (none for a
    trainer that only reads, or a rank that is not rank 0), how the run starts, and an
    --overwrite's old run, which waits in .previous/ from begin() until the new run's first
    checkpoint is on disk (saved), or goes back if the new run fails before that (failed)."""

    def __init__(self, folder, lock=None, start="new"):
        self.folder, self.lock, self.start = folder, lock, start
        self.previous = None                        # .previous/, while the old run waits

    def begin(self, config, say=print):
        """Training starts (rank 0): the lock (again, for a second run), the old run aside
        (--overwrite), the mark, stale temporary files removed, config.json written."""
        if self.lock is None or not self.lock.held:
            self.lock = RunLock(self.folder)
        if self.start == "overwrite":               # once: a second run() keeps the new run
            self.previous, self.start = move_run_aside(self.folder), "new"
        mark(self.folder)                           # a run from before the mark: ours now
        for tmp in remove_stale_temp_files(self.folder):
            say(f"removed {tmp}, left half-written by a killed run")
        write_atomic(os.path.join(self.folder, "config.json"),
                     json.dumps(config, indent=1) + "\n")

    def saved(self):
        """The new run's checkpoint is on disk: the old run is dropped."""
        if self.previous is not None:
            commit(self.previous)
            self.previous = None

    def failed(self):
        """The new run failed: before its first checkpoint, the old run is put back."""
        if self.previous is not None:
            restore(self.previous)
            self.previous = None

    def release(self):
        """Let go of the folder (a trainer does when its run ends)."""
        if self.lock is not None:
            self.lock.release()


# ------------------------------------------------------------------------------ files
def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:             # somebody else's process: alive
        return True
    return True


def remove_stale_temp_files(folder):
    """Remove the temporary files in `folder` that are provably stale: ours, or those of a
    process that no longer runs. Returns their paths. A live process's file is left alone."""
    removed = []
    for name in sorted(os.listdir(folder)):
        m = re.match(rf"{re.escape(TEMP)}(\d+)-", name)
        if m and (int(m.group(1)) == os.getpid() or not _alive(int(m.group(1)))):
            os.unlink(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
    return removed


# ------------------------------------------------------------------------------ --overwrite
def _run_files(folder):
    return sorted(n for n in os.listdir(folder) if RUN_FILES.fullmatch(n))


def _move_all(src, dst):
    """Move every entry of src into dst, one rename each: repeatable after a kill."""
    for name in sorted(os.listdir(src)):
        os.replace(os.path.join(src, name), os.path.join(dst, name))


def move_run_aside(folder):
    """Move the run's files into <folder>/.previous/ (the old run, whole); returns that path.
    They go through .previous.partial/ first, so .previous/ exists only once all are in."""
    moving, previous = os.path.join(folder, MOVING), os.path.join(folder, PREVIOUS)
    os.makedirs(moving, exist_ok=True)
    for name in _run_files(folder):
        os.replace(os.path.join(folder, name), os.path.join(moving, name))
    os.replace(moving, previous)
    fsync_dir(folder)
    return previous


def commit(previous):
    """The new run's first checkpoint is on disk: drop the old run (one rename decides it)."""
    folder = os.path.dirname(previous)
    discard = os.path.join(folder, DISCARD)
    os.replace(previous, discard)
    fsync_dir(folder)
    shutil.rmtree(discard)


def restore(previous):
    """The new run failed before its first checkpoint: delete its files, put the old back."""
    folder = os.path.dirname(previous)
    for name in _run_files(folder):         # only the new run's files are in the folder now
        os.unlink(os.path.join(folder, name))
    moving = os.path.join(folder, MOVING)
    os.replace(previous, moving)            # from here on, recover() moves them back
    _move_all(moving, folder)
    os.rmdir(moving)
    fsync_dir(folder)


def recover(folder):
    """Finish whatever a killed --overwrite left half done; call it holding the lock.
    Returns a sentence for the user, or None if there was nothing to do."""
    if os.path.isdir(os.path.join(folder, DISCARD)):        # committed; the rest is cleanup
        shutil.rmtree(os.path.join(folder, DISCARD))
    if os.path.isdir(os.path.join(folder, PREVIOUS)):       # never committed: the old run wins
        restore(os.path.join(folder, PREVIOUS))
        return (f"{folder}: an --overwrite run ended before its first checkpoint; the run it "
                "was replacing is back in place")
    if os.path.isdir(os.path.join(folder, MOVING)):         # a move aside or back, cut short
        _move_all(os.path.join(folder, MOVING), folder)
        os.rmdir(os.path.join(folder, MOVING))
        fsync_dir(folder)
        return f"{folder}: an interrupted --overwrite was undone; the earlier run is in place"
    return None


def recover_for_reading(path):
    """recover() for a command that only reads a run (sample, nll): `path` is its folder or a
    file in it. The lock is taken just for that, and only in a folder of minidiff's. Returns
    recover()'s sentence, or None.
    A live trainer's --overwrite is its own to finish: before its first checkpoint, the run
    is refused in one line, since the only whole run then is the one waiting in .previous/."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    if not any(os.path.isdir(os.path.join(folder, d)) for d in (PREVIOUS, MOVING, DISCARD)):
        return None                                 # nothing half done: reading takes no lock
    if not ours(folder):
        return None
    try:
        lock = RunLock(folder)
    except (RunFolderBusy, PermissionError) as e:
        if os.path.exists(os.path.join(folder, "checkpoint.npz")):
            return None                             # the new run's first checkpoint is there
        previous = os.path.join(folder, PREVIOUS if os.path.isdir(os.path.join(
            folder, PREVIOUS)) else MOVING)
        if isinstance(e, RunFolderBusy):
            raise FileNotFoundError(f"{folder}: no checkpoint yet: a trainer is replacing this "
                                    f"run (--overwrite); the run it replaces waits in "
                                    f"{previous}/ until the new run's first checkpoint") from None
        raise FileNotFoundError(f"{folder}: no checkpoint: a killed --overwrite left the run "
                                f"in {previous}/ and you cannot write the folder to put it "
                                "back; any minidiff command on it, run by someone who can, "
                                "does") from None
    try:
        return recover(folder)
    finally:
        lock.release()
