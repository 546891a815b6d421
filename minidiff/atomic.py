"""Files replaced atomically: a kill at any moment leaves the old file or the new one, never
half of either. The run folder (rundir.py), checkpoints and log.csv are written so.

    write_atomic("runs/roll/log.csv", text)      # bytes or str
"""
import os
import tempfile

TEMP = ".tmp-"                      # temporary files are .tmp-<pid>-<random><suffix>


def fsync_dir(folder):
    """Make renames and unlinks in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data):
    """Replace `path` by `data` (bytes or str) so that a kill at any moment leaves the old file
    or the new one: write a temporary file beside it, fsync, rename over, fsync the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP}{os.getpid()}-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o666 & ~umask())     # mkstemp's 0600 -> any tool's mode (0644)
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())        # the bytes are on disk before the name points at them
        os.replace(tmp, path)           # atomic on POSIX: the old file or the new, never half
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno and e.filename is None:   # ENOSPC: which file
            raise OSError(e.errno, e.strerror, path) from e
        raise
    fsync_dir(folder)


def umask():
    """The process's umask, read without changing it: os.umask can only set it, and setting
    it to read it races with other threads creating files. Linux has it in /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)                  # elsewhere: set it and put it straight back
    os.umask(mask)
    return mask
