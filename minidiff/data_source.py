"""What data a run was trained on: the absolute path of --data-path and a fingerprint of what
is there, so that a resumed run, `sample` and `nll` never read other data under the same name.

    rec = record("/home/me/cat.png")     # {"path": ..., "kind": "file", "sha256": ..., ...}
    note = check(rec, "/home/me/cat.png")   # a one-line ValueError if the data is gone or
                                            # changed; a note if only file times changed

A file's fingerprint is the SHA-256 of its bytes. A folder's is the SHA-256 of the sorted list
of its files' names and sizes (a file added, removed, renamed or resized changes it), and beside
it a second one that adds their modification times, which only gives a note: a copy of a folder
(cp -r, a download) keeps names and sizes but not times. Data that minidiff ships or
generates (no --data-path: the 2-D sets, the mascot, digits, the installed MNIST files) has no
record: it is named by cfg.data alone.
"""
import hashlib
import os

CHUNK = 1 << 20                         # hash files 1 MiB at a time: memory stays flat


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _folder_listing(root):
    """(relative name, size, mtime_ns) of every regular file under root, sorted by name."""
    rows = []
    for folder, _, names in os.walk(root):
        for name in names:
            full = os.path.join(folder, name)
            if os.path.isfile(full):
                st = os.stat(full)
                rows.append((os.path.relpath(full, root), st.st_size, st.st_mtime_ns))
    return sorted(rows)


def _sha256_of_lines(lines):
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def record(path):
    """The record of the data at `path` (made absolute); None when path is "" (shipped data)."""
    if not path:
        return None
    path = os.path.abspath(path)
    if os.path.isfile(path):
        return {"path": path, "kind": "file", "bytes": os.path.getsize(path),
                "sha256": _file_sha256(path)}
    if os.path.isdir(path):
        rows = _folder_listing(path)
        return {"path": path, "kind": "folder", "files": len(rows),
                "bytes": sum(size for _, size, _ in rows),
                "sha256": _sha256_of_lines(f"{n}\t{s}" for n, s, _ in rows),
                "mtimes_sha256": _sha256_of_lines(f"{n}\t{s}\t{t}" for n, s, t in rows)}
    raise FileNotFoundError(f"data_path: no file or folder at {path}")


def _size(rec):
    files = f"{rec['files']} file{'s' * (rec['files'] != 1)}, " if rec["kind"] == "folder" else ""
    return f"{files}{rec['bytes']:,} bytes"


def check(saved, path):
    """Refuse, in one line, data at `path` that is not the data `saved` recorded. Returns a
    note (or None) when a folder's files kept their names and sizes but not their times."""
    if saved is None and not path:
        return None
    if saved is None:
        raise ValueError(f"data_path: the run was trained on minidiff's own data, not on "
                         f"{path}; leave --data-path out")
    if not path:
        raise ValueError(f"data_path: the run was trained on {saved['path']}; name it (or its "
                         "moved copy) with --data-path")
    where = os.path.abspath(path)
    moved = "" if where == saved["path"] else f" (the run was trained on {saved['path']})"
    if not os.path.exists(where):
        raise ValueError(f"data_path: the run's data is gone: nothing at {where}{moved}; pass "
                         "--data-path with where it is now")
    now = record(where)
    if now["kind"] != saved["kind"]:
        raise ValueError(f"data_path: {where} is a {now['kind']}; the run was trained on a "
                         f"{saved['kind']}{moved}")
    if now["sha256"] != saved["sha256"]:
        raise ValueError(f"data_path: the data at {where} changed since the run was trained"
                         f"{moved}: it held {_size(saved)}, now {_size(now)}, and its "
                         f"fingerprint differs; train a new run on the new data")
    if saved["kind"] == "folder" and now["mtimes_sha256"] != saved["mtimes_sha256"]:
        return (f"note: the files in {where} have other modification times than when the run "
                "was trained (same names and sizes); they are taken as the same data")
    return None
