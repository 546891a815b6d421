"""Checkpoints without pickle: named arrays plus JSON metadata in one .npz file, written
atomically (temp file, fsync, rename), so a crash mid-write never harms the last good one.

    save_checkpoint("run/ckpt.npz", {"model.conv_in.weight": w, ...}, {"step": 100, ...})
    arrays, meta = load_checkpoint("run/ckpt.npz")
    arrays, meta = load_checkpoint(path, limit=lambda path, meta: n)   # n bytes of arrays
    check_like(path, arrays, meta, template_arrays, template_meta)     # before trusting them

Loading is bounded before it allocates, whatever the file claims: through one open file,
    1. the file's size against MAX_BYTES, and its first 4 bytes (a zip's), nothing else read;
    2. the zip directory, its entries and their .npy headers, against each other and the
       file's size (minidiff/npzread.py: numeric dtypes, exact sizes, no zip bombs);
    3. the metadata: at most MAX_META bytes of JSON, nested at most MAX_DEPTH deep;
    4. the arrays' total against limit(path, meta), the most a checkpoint of that run can
       hold (train.checkpoint_limit derives it from the model), and the file's size too;
    5. only then the arrays, in pieces, each CRC-checked.
A refused file costs at most ~20 MB (1 MiB of metadata parsed) and well under a second,
and gets one line naming it.
"""
import contextlib
import io
import json
import math
import os
import re

import numpy as np

from .npzread import NUMERIC, Npz
from .atomic import write_atomic

FORMAT = "minidiff-checkpoint-v1"
MAX_BYTES = 4 * 2**30       # arrays and file, when the caller knows no tighter limit
MAX_META = 2**20            # bytes of metadata JSON (a run's is a few KB)
MAX_DEPTH = 32              # how deeply the metadata may nest (a run's: 4 levels)
_SLACK = 8 * 2**20          # a file's bytes beyond its arrays: metadata, zip and .npy records
_META_KEY = "__meta__"


def save_checkpoint(path, arrays, meta):
    """Write arrays (name -> array) and meta (JSON-able dict) to `path`, atomically."""
    for name in arrays:
        if name == _META_KEY or not isinstance(name, str):
            raise ValueError(f"save_checkpoint: invalid array name {name!r}")
        dtype = np.asarray(arrays[name]).dtype
        if dtype.hasobject:
            raise ValueError(f"save_checkpoint: array {name!r} holds Python objects; only "
                             f"numeric arrays are saved (no pickle)")
        if dtype.kind not in NUMERIC or dtype.subdtype is not None:
            raise ValueError(f"save_checkpoint: array {name!r} has dtype {dtype}; only numeric "
                             "arrays are saved (load_checkpoint reads no others)")
    meta = {"format": FORMAT, **meta}
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **{_META_KEY: blob}, **{k: np.asarray(v) for k, v in arrays.items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, buf.getbuffer())


def load_checkpoint(path, limit=None):
    """(arrays, meta) from a file written by save_checkpoint. Never unpickles anything.
    `limit(path, meta)`: the most bytes the arrays may take (default MAX_BYTES), asked once
    the metadata is read and before any array is. The whole file is read through one open,
    so a checkpoint replaced meanwhile by a running trainer is seen whole: old or new."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {path}")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        _check_size(path, size, MAX_BYTES)
        with _unreadable(path):
            npz = Npz(f, size)
        meta = _parse_meta(path, _read_meta(path, npz))
        max_bytes = MAX_BYTES if limit is None else limit(path, meta)
        keys = [k for k in npz.members if k != _META_KEY]
        _check_size(path, size, max_bytes, sum(npz.members[k].nbytes for k in keys))
        with _unreadable(path):
            return {k: npz.read(k) for k in keys}, meta


def _not_ours(path, why):
    return ValueError(f"load_checkpoint: {path} is not a readable minidiff checkpoint ({why}). "
                      "Nothing was loaded")


@contextlib.contextmanager
def _unreadable(path):
    """A malformed file's one-line error (npzread's), naming the file."""
    try:
        yield
    except ValueError as e:
        raise _not_ours(path, e) from None


def _check_size(path, size, max_bytes, arrays=0):
    """The file, and the bytes of arrays it declares, within this load's limit."""
    if size > max_bytes + _SLACK:
        raise ValueError(f"load_checkpoint: {path} is {size} bytes, over this load's limit of "
                         f"{max_bytes} bytes of arrays + {_SLACK} of records. Nothing was loaded")
    if arrays > max_bytes:
        raise ValueError(f"load_checkpoint: {path} declares {arrays} bytes of arrays, over this "
                         f"load's limit of {max_bytes} (for a run: what its model's checkpoint "
                         "can hold). Nothing was loaded")


def _read_meta(path, npz):
    """The metadata's bytes: a 1-D uint8 array of at most MAX_META bytes."""
    m = npz.members.get(_META_KEY)
    if m is None:
        raise ValueError(f"load_checkpoint: {path} has no metadata; not a minidiff checkpoint. "
                         "Nothing was loaded")
    if m.dtype != np.uint8 or len(m.shape) != 1 or m.nbytes > MAX_META:
        raise _not_ours(path, f"its metadata is {str(m.shape):.40} {m.dtype}, not a string of "
                        f"at most {MAX_META} bytes")
    with _unreadable(path):
        return npz.read(_META_KEY).tobytes()


def _parse_meta(path, blob):
    """The metadata's JSON object, nested at most MAX_DEPTH deep."""
    try:
        text = blob.decode("utf-8")
        meta = json.loads(text)
    except RecursionError:                  # deeper than the parser goes
        raise _not_ours(path, f"its metadata nests more than {MAX_DEPTH} levels deep") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise _not_ours(path, f"its metadata is not JSON: {' '.join(str(e).split()):.120}") \
            from None
    if _depth(text) > MAX_DEPTH:
        raise _not_ours(path, f"its metadata nests more than {MAX_DEPTH} levels deep")
    if not isinstance(meta, dict):
        raise _not_ours(path, f"its metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise ValueError(f"load_checkpoint: {path} has format {meta.get('format')!r:.80}, "
                         f"expected {FORMAT!r}. Nothing was loaded")
    return meta


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')       # a JSON string, escapes and all


def _depth(text):
    """How deeply lists and objects nest in valid JSON text: the deepest running count of
    brackets, once the strings (which may hold brackets) are taken out. No recursion."""
    bare = np.frombuffer(_STRING.sub("", text).encode(), np.uint8)        # (n,)
    steps = np.isin(bare, list(b"[{")).astype(np.int32) - np.isin(bare, list(b"]}"))
    return int(np.cumsum(steps).max(initial=0))


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
