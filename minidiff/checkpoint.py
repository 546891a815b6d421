"""Checkpoints without pickle: named arrays plus JSON metadata in one .npz file, written
atomically (temp file, fsync, rename), so a crash mid-write never harms the last good one.

    save_checkpoint("run/ckpt.npz", {"model.conv_in.weight": w, ...}, {"step": 100, ...})
    arrays, meta = load_checkpoint("run/ckpt.npz")
"""
import io
import json
import os
import zipfile
import tempfile

import numpy as np

FORMAT = "minidiff-checkpoint-v1"
_META_KEY = "__meta__"


def save_checkpoint(path, arrays, meta):
    """Write arrays (name -> array) and meta (JSON-able dict) to `path`, atomically."""
    for name in arrays:
        if name == _META_KEY or not isinstance(name, str):
            raise ValueError(f"save_checkpoint: invalid array name {name!r}")
        if np.asarray(arrays[name]).dtype.hasobject:
            raise ValueError(f"save_checkpoint: array {name!r} holds Python objects; only "
                             f"numeric arrays are saved (no pickle)")
    meta = {"format": FORMAT, **meta}
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **{_META_KEY: blob}, **{k: np.asarray(v) for k, v in arrays.items()})
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())            # the bytes are on disk before the name points at them
        os.replace(tmp, path)               # atomic on POSIX: the old file or the new, never half
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)                       # make the rename itself durable
    finally:
        os.close(dfd)


def load_checkpoint(path):
    """(arrays, meta) from a file written by save_checkpoint. Never unpickles anything."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"load_checkpoint: {path} is not a readable minidiff checkpoint "
                         f"({type(e).__name__}: {e})") from None
    if _META_KEY not in arrays:
        raise ValueError(f"load_checkpoint: {path} has no metadata; not a minidiff checkpoint")
    meta = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"load_checkpoint: {path} has format {meta.get('format')!r}, "
                         f"expected {FORMAT!r}")
    return arrays, meta
