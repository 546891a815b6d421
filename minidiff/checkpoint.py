"""Checkpoints without pickle: named arrays plus JSON metadata in one .npz file, written
atomically (temp file, fsync, rename), so a crash mid-write never harms the last good one.

    save_checkpoint("run/ckpt.npz", {"model.conv_in.weight": w, ...}, {"step": 100, ...})
    arrays, meta = load_checkpoint("run/ckpt.npz")
    check_like(path, arrays, meta, template_arrays, template_meta)   # before trusting them
"""
import io
import json
import math
import os
import zipfile

import numpy as np

from .rundir import write_atomic

FORMAT = "minidiff-checkpoint-v1"
_META_KEY = "__meta__"
_ZIP_MAGIC = b"PK\x03\x04"          # an .npz is a zip archive


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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, buf.getbuffer())


def load_checkpoint(path):
    """(arrays, meta) from a file written by save_checkpoint. Never unpickles anything.
    The whole file is read through one open, so a checkpoint replaced meanwhile by a running
    trainer is seen whole: the old one or the new one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {path}")
    not_ours = f"load_checkpoint: {path} is not a readable minidiff checkpoint"
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:4] != _ZIP_MAGIC:
        raise ValueError(f"{not_ours} (not an .npz archive)")
    arrays = {}
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            for k in z.files:
                arrays[k] = z[k]
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickle" in str(e):   # an object array: never unpickled
            raise ValueError(f"{not_ours} (an array holds pickled Python objects, which "
                             "minidiff never loads)") from None
        raise ValueError(f"{not_ours} ({type(e).__name__}: {e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"{not_ours} ({type(e).__name__}: {e})") from None
    if _META_KEY not in arrays:
        raise ValueError(f"load_checkpoint: {path} has no metadata; not a minidiff checkpoint")
    try:
        meta = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{not_ours} (its metadata is not JSON: {e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{not_ours} (its metadata is a JSON {type(meta).__name__}, not an "
                         "object)")
    if meta.get("format") != FORMAT:
        raise ValueError(f"load_checkpoint: {path} has format {meta.get('format')!r}, "
                         f"expected {FORMAT!r}")
    return arrays, meta


# ------------------------------------------------------------------------------ trust nothing
def _kind(v):
    """The JSON kind of a metadata value; ints count as numbers where a float is expected."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "int" if isinstance(v, int) else "float"
    return {str: "str", list: "list", dict: "object", type(None): "null"}.get(type(v), "?")


def _check_meta(where, got, want, problems):
    """Walk `got` beside `want` (a fresh state's metadata): same keys, same kinds, finite
    numbers, lists of the same length. Appends one line per difference to `problems`."""
    k_got, k_want = _kind(got), _kind(want)
    if k_want == "float" and k_got == "int":
        k_got = "float"                     # JSON may write 1.0 as 1
    if k_got != k_want:
        problems.append(f"{where}: expected a JSON {k_want}, got {got!r:.60}")
    elif k_want == "float" and not math.isfinite(got):
        problems.append(f"{where}: must be finite, got {got!r}")
    elif k_want == "object":
        for key in sorted(set(want) - set(got)):
            problems.append(f"{where}.{key}: missing")
        for key in sorted(set(got) - set(want)):
            problems.append(f"{where}.{key}: unexpected")
        for key in sorted(set(got) & set(want)):
            _check_meta(f"{where}.{key}", got[key], want[key], problems)
    elif k_want == "list":
        if len(got) != len(want):
            problems.append(f"{where}: expected {len(want)} entries, got {len(got)}")
        else:
            for i, (g, w) in enumerate(zip(got, want)):
                _check_meta(f"{where}[{i}]", g, w, problems)


def _check_arrays(arrays, want, problems):
    """Every expected array present, no others, exact shape, float32/float64, all finite."""
    for name in sorted(set(want) - set(arrays)):
        problems.append(f"array {name}: missing")
    for name in sorted(set(arrays) - set(want)):
        problems.append(f"array {name}: unexpected")
    for name in sorted(set(arrays) & set(want)):
        a, w = arrays[name], want[name]
        if a.shape != w.shape:
            problems.append(f"array {name}: expected {w.shape}, got {a.shape}")
        elif a.dtype not in (np.float32, np.float64):
            problems.append(f"array {name}: dtype {a.dtype}, expected float32 or float64")
        elif not np.isfinite(a).all():
            problems.append(f"array {name}: holds {int((~np.isfinite(a)).sum())} NaN/inf")


def check_like(path, arrays, meta, template_arrays, template_meta, skip=("format",)):
    """Refuse a checkpoint whose contents do not have the form of `template_*`, the state of
    a freshly built run of the same config. The error names every field that is off and says
    nothing was changed. Meta keys in `skip` are the caller's to check."""
    problems = []
    _check_meta("meta", {k: v for k, v in meta.items() if k not in skip},
                {k: v for k, v in template_meta.items() if k not in skip}, problems)
    _check_arrays(arrays, template_arrays, problems)
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more"
                                            if len(problems) > 4 else "")
        raise ValueError(f"checkpoint {path} does not fit this model and run: {shown}. "
                         "Nothing was loaded or changed")
