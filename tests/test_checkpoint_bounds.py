"""Every checkpoint load is bounded before it allocates (issue 20, point 4; point 9's nested
metadata): hostile files are refused in one line naming them, at a cost of under 100 MB and
a second, measured in a fresh process (its peak RSS, resource.getrusage). The hypothesis
test builds random hostile .npz files by hand (lying headers, shapes, dtypes, sizes,
compression, truncations, flipped bytes): each loads exactly as NumPy's own np.load reads
it, or is refused in one line, with a peak of traced memory under 200 MB.
"""
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
import zlib
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import event, given, settings, strategies as st

from minidiff import run_state
from minidiff.checkpoint import FORMAT, load_checkpoint
from minidiff.config import TrainConfig
from minidiff.datakinds import DATA_KINDS
from minidiff.train import Trainer, build_model

from test_train import tiny

MB = 2**20


# ------------------------------------------------------------------------ hostile files by hand
class Entry(NamedTuple):
    """One zip member as written: `data`, then `zeros` zero bytes (left as a hole in the file,
    so they cost no disk); size, crc and method are what the zip's records claim (None: the
    truth), flags its flag bits."""
    name: str
    data: bytes
    zeros: int = 0
    size: int = None
    crc: int = None
    method: int = 0
    flags: int = 0


def npy_header(shape, descr="<f4", fortran=False, version=(1, 0)):
    """An .npy magic and header declaring anything (NumPy pads it; readers need not)."""
    text = repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}).encode()
    width = 2 if version == (1, 0) else 4
    return b"\x93NUMPY" + bytes(version) + len(text).to_bytes(width, "little") + text


def npy_bytes(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=False)
    return buf.getvalue()


def meta_entry(meta):
    blob = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return Entry("__meta__.npy", npy_bytes(np.frombuffer(blob, np.uint8)))


def crc_of(e):
    crc, zeros = zlib.crc32(e.data), bytes(MB)
    for i in range(0, e.zeros, MB):
        crc = zlib.crc32(zeros[:min(MB, e.zeros - i)], crc)
    return crc


def write_zip(path, entries):
    """A zip archive written field by field, so that any of its records can lie."""
    directory = b""
    with open(path, "wb") as f:
        for e in entries:
            name, offset, on_disk = e.name.encode(), f.tell(), len(e.data) + e.zeros
            fields = (e.flags, e.method, 0, 0, crc_of(e) if e.crc is None else e.crc, on_disk,
                      on_disk if e.size is None else e.size, len(name))
            f.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, *fields, 0) + name + e.data)
            f.seek(e.zeros, 1)                                   # a hole: zeros, no disk
            directory += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, *fields, 0, 0,
                                     0, 0, 0, offset) + name
        start = f.tell()
        f.write(directory + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries),
                                        len(entries), len(directory), start, 0))


def deflate_bomb(header, n_chunks):
    """(deflate stream, its size inflated): the header, then n_chunks x 16 MiB of zeros,
    built from one compressed chunk repeated (each ends in a full flush, so they repeat)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    chunk = c.compress(bytes(16 * MB)) + c.flush(zlib.Z_FULL_FLUSH)
    return head + chunk * n_chunks + b"\x03\x00", len(header) + n_chunks * 16 * MB


# ------------------------------------------------------------------------ a load's cost
CHILD = textwrap.dedent("""
    import json, resource, sys, time
    {setup}
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # MiB
    before, start = peak(), time.perf_counter()
    try:
        {call}
        error = None
    except Exception as e:
        error = f"{{type(e).__name__}}: {{e}}"
    print(json.dumps(dict(mb=peak() - before, s=time.perf_counter() - start, error=error)))
""")


LOAD = "from minidiff.checkpoint import load_checkpoint"


def cost(call, setup=LOAD):
    """(MiB the peak RSS grew by, seconds, the error's text) of `call` in a fresh process."""
    code = CHILD.format(call=call, setup=setup)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(__file__)] + os.environ.get("PYTHONPATH", "").split(os.pathsep))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["mb"], r["s"], r["error"]


def assert_refused_cheaply(path, call, match, setup=LOAD):
    mb, s, error = cost(call, setup)
    assert error is not None and error.startswith("ValueError: "), error
    assert match in error and str(path) in error and "\n" not in error, error
    assert mb < 100 and s < 1.0, (mb, s, error)


@pytest.fixture(scope="module")
def run_members(tmp_path_factory):
    """The members (name -> bytes) of a real tiny run's checkpoint."""
    root = tmp_path_factory.mktemp("real")
    t = Trainer(tiny(root, steps=2, ckpt_every=2), quiet=True).run(final_samples=False)
    with zipfile.ZipFile(t.ckpt_path) as z:
        return {n: z.read(n) for n in z.namelist()}


# ------------------------------------------------------------------------ the three
def test_a_266_byte_file_claiming_10e12_floats_is_refused_cheaply(tmp_path):
    path = tmp_path / "claims.npz"
    write_zip(path, [Entry("w.npy", npy_header((10**12,)) + bytes(4))])
    assert os.path.getsize(path) < 300
    assert_refused_cheaply(path, f"load_checkpoint({str(path)!r})",
                           "its header declares (1000000000000,) float32 (4000000000000 bytes)")


def test_a_deflate_bomb_is_refused_before_it_inflates(tmp_path):
    path = tmp_path / "bomb.npz"
    header = npy_header((64 * MB,))                              # 256 MiB of float32 zeros
    data, size = deflate_bomb(header, 16)
    crc = crc_of(Entry("w.npy", header, zeros=size - len(header)))
    write_zip(path, [meta_entry({"format": FORMAT}),
                     Entry("w.npy", data, size=size, crc=crc, method=8)])
    assert os.path.getsize(path) < MB / 2
    with zipfile.ZipFile(path) as z, z.open("w.npy") as m:     # an honest zip: it inflates
        assert m.read(len(header)) == header and m.read(MB) == bytes(MB)
    assert_refused_cheaply(path, f"load_checkpoint({str(path)!r})", "(a zip bomb?)")


DIRECTORY_OF_2_GIB = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, 2**31, 4, 0)


@pytest.mark.parametrize("head, tail, gib, match", [
    (b"", b"", 3, "not an .npz archive"),
    (b"PK\x03\x04", b"", 5, "over this load's limit"),          # over MAX_BYTES
    (b"PK\x03\x04", DIRECTORY_OF_2_GIB, 3, "its zip directory claims 2147483648 bytes"),
])
def test_a_huge_file_is_refused_without_reading_it(tmp_path, head, tail, gib, match):
    path = tmp_path / "huge.npz"
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(gib * 2**30 - len(tail))                      # sparse: no disk
        f.seek(0, 2)
        f.write(tail)
    assert os.path.getsize(path) == gib * 2**30 and os.stat(path).st_blocks * 512 < MB
    assert_refused_cheaply(path, f"load_checkpoint({str(path)!r})", match)


@pytest.mark.parametrize("blob", [b"[" * 100_000 + b"]" * 100_000,
                                  b'{"a": ' * 40 + b"1" + b"}" * 40,
                                  b'{"format": "%s", "x": %s1%s}' % (FORMAT.encode(),
                                                                    b"[" * 33, b"]" * 33)])
def test_deeply_nested_metadata_is_refused_in_one_line(tmp_path, blob):
    path = tmp_path / "nested.npz"
    write_zip(path, [meta_entry(blob), Entry("w.npy", npy_bytes(np.ones(2, np.float32)))])
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    assert str(e.value) == (f"load_checkpoint: {path} is not a readable minidiff checkpoint "
                            "(its metadata nests more than 32 levels deep). Nothing was loaded")


# ------------------------------------------------------------------------ the model's limit
@pytest.mark.parametrize("how", ["from_checkpoint", "resume"])
def test_arrays_beyond_what_the_model_holds_are_refused_before_reading(run_members, tmp_path,
                                                                        how):
    path = tmp_path / "run" / "checkpoint.npz"
    path.parent.mkdir()
    write_zip(path, [Entry(k, v) for k, v in run_members.items()]  # + 200 MiB of float32
              + [Entry("model.extra.npy", npy_header((50 * MB,)), zeros=200 * MB)])
    with zipfile.ZipFile(path) as z:                             # an honest zip
        assert z.testzip() is None and z.getinfo("model.extra.npy").file_size > 200 * MB
    setup = "from minidiff.train import Trainer"
    if how == "from_checkpoint":
        call = f"Trainer.from_checkpoint({str(path)!r})"
    else:                                   # a trainer of the same run resumes from it
        call = f"t.load({str(path)!r})"
        setup += (f"; from pathlib import Path; from test_train import tiny; "
                  f"t = Trainer(tiny(Path({str(tmp_path / 'new')!r})), quiet=True)")
    assert_refused_cheaply(path, call, "bytes, over this load's limit of", setup)


def test_the_limit_admits_any_checkpoint_of_the_model_in_float64(run_members, tmp_path):
    """A run's limit is exactly 4 arrays per parameter in float64 and 1 MiB: the real
    checkpoint with every array in float64 loads, 1 MiB more of arrays loads, 4 bytes more
    does not."""
    arrays = {k[:-4]: np.load(io.BytesIO(v)) for k, v in run_members.items()}
    cfg = TrainConfig(**json.loads(arrays["__meta__"].tobytes())["config"])
    n = sum(p.data.size for p in build_model(cfg, DATA_KINDS[cfg.data].shape(cfg)).parameters())
    wide = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in arrays.items()}
    assert sum(v.nbytes for k, v in wide.items() if k != "__meta__") == 4 * 8 * n
    path = tmp_path / "wide.npz"
    for extra, fits in [(0, True), (MB, True), (MB + 4, False)]:
        write_zip(path, [Entry(k + ".npy", npy_bytes(v)) for k, v in wide.items()]
                  + [Entry("more.npy", npy_header((extra // 4,)), zeros=extra)])
        if fits:
            got, _ = load_checkpoint(path, limit=run_state.checkpoint_limit)
            assert all(got[k].dtype == np.float64 for k in got if k.startswith("model."))
        else:
            with pytest.raises(ValueError, match=f"declares {4 * 8 * n + extra} bytes of "
                               f"arrays, over this load's limit of {4 * 8 * n + MB} "):
                load_checkpoint(path, limit=run_state.checkpoint_limit)


# ------------------------------------------------------------------------ random hostile files
DTYPES = ["<f4", "<f8", ">f4", "<i8", "|u1", "|b1", "<c8", "<f2"]
HOSTILE_DESCRS = DTYPES + ["|O", "<U3", "|V8", "|S4", "<M8[s]", "(2,)<f4", [("a", "<f4")], 7]
DIMS = [-3, -1, 0, 1, 2, 3, 5, 10**12, 2**62, 2**64 + 1]


@st.composite
def arrays(draw):
    """1 to 3 small numeric arrays, C or Fortran order."""
    out = {}
    for i in range(draw(st.integers(1, 3))):
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        a = np.random.default_rng(draw(st.integers(0, 99))).normal(size=shape) * 100
        a = a.astype(draw(st.sampled_from(DTYPES)))
        out[f"a{i}"] = np.asfortranarray(a) if draw(st.booleans()) else a
    return out


def deflate(data, level):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@st.composite
def lie(draw, e):
    """Entry e with one of its records, or its header, lying, or compressed (honestly)."""
    kind = draw(st.sampled_from(["size", "crc", "method", "flags", "header", "header",
                                 "deflate", "deflate", "bomb", "bomb", "rename"]))
    if kind == "size":
        return e._replace(size=draw(st.sampled_from([0, len(e.data) - 1, len(e.data) + 1,
                                                     2**31, 2**32 - 1])))
    if kind == "crc":
        return e._replace(crc=crc_of(e) ^ (1 << draw(st.integers(0, 31))))
    if kind == "method":
        return e._replace(method=draw(st.sampled_from([8, 12, 14, 99])))
    if kind == "flags":
        return e._replace(flags=1)                                 # "encrypted"
    if kind == "header":
        header = npy_header(draw(st.lists(st.sampled_from(DIMS), max_size=3)),
                            draw(st.sampled_from(HOSTILE_DESCRS)), draw(st.booleans()),
                            draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)])))
        return e._replace(data=header + draw(st.binary(max_size=64)))
    if kind == "deflate":
        data = e.data
        return e._replace(data=deflate(data, draw(st.integers(0, 9))), size=len(data),
                          crc=zlib.crc32(data), method=8)
    if kind == "bomb":                                             # up to 4 MiB of zeros
        n = draw(st.integers(0, MB))
        header = npy_header((n,))
        return e._replace(data=deflate(header + bytes(4 * n), 9), size=len(header) + 4 * n,
                          crc=zlib.crc32(header + bytes(4 * n)), method=8)
    return e._replace(name=draw(st.sampled_from(["x.txt", ".npy", "__meta__.npy", "a0.npy"])))


@st.composite
def hostile_files(draw):
    """(the arrays, the entries, then what is done to the file's bytes)."""
    written = draw(arrays())
    meta = {"format": FORMAT, "step": 3}
    if draw(st.integers(0, 5)) == 0:
        meta = draw(st.sampled_from([b"[" * 5000, b"[" * 40 + b"]" * 40, b"\xff", b"[]",
                                     b'{"format": "%s", "s": "%s"}' % (FORMAT.encode(),
                                                                       b"x" * (MB + 1))]))
    entries = [meta_entry(meta)] + [Entry(k + ".npy", npy_bytes(v)) for k, v in written.items()]
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(entries) - 1))
        entries[i] = draw(lie(entries[i]))
    if draw(st.integers(0, 5)) == 0:
        entries.append(draw(st.sampled_from(entries)))             # a duplicate
    edits = draw(st.lists(st.tuples(st.sampled_from(["flip", "flip", "cut", "append"]),
                                    st.floats(0, 1), st.integers(1, 255)), max_size=1))
    return written, meta, entries, edits


def load_traced(path):
    """(load_checkpoint's (arrays, meta), or its ValueError's text; the peak of traced memory)."""
    tracemalloc.start()
    try:
        return load_checkpoint(path), tracemalloc.get_traced_memory()[1]
    except ValueError as e:
        return str(e), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def pristine(written, meta):
    return [meta_entry(meta)] + [Entry(k + ".npy", npy_bytes(v)) for k, v in written.items()]


@settings(max_examples=200)
@given(hostile_files())
def test_random_hostile_files_load_exactly_or_are_refused_in_one_line(tmp_path_factory, f):
    written, meta, entries, edits = f
    path = tmp_path_factory.mktemp("h") / "c.npz"
    write_zip(path, entries)
    data = bytearray(path.read_bytes())
    for how, where, value in edits:
        at = int(where * (len(data) - 1))
        if how == "flip":
            data[at] ^= value
        elif how == "cut":
            del data[at:]
        else:
            data += bytes([value]) * at
    path.write_bytes(bytes(data))
    untouched = isinstance(meta, dict) and entries == pristine(written, meta) and not edits
    got, peak = load_traced(path)
    assert peak < 200 * MB
    if isinstance(got, str):
        assert str(path) in got and "\n" not in got and not untouched, got
        event(f"refused: {got.split('(', 1)[-1][:50]}")
        return
    event("loaded an untouched file" if untouched else "loaded a hostile file")
    arrays, got_meta = got
    with np.load(path, allow_pickle=False) as z:                  # NumPy's reading: the oracle
        want = {k: z[k] for k in z.files}
    assert json.loads(want.pop("__meta__").tobytes()) == got_meta
    assert sorted(arrays) == sorted(want)
    for k in want:
        assert arrays[k].dtype == want[k].dtype and arrays[k].shape == want[k].shape
        assert arrays[k].tobytes("A") == want[k].tobytes("A"), k
    if untouched:                                                  # and the round trip
        assert got_meta == meta and sorted(arrays) == sorted(written)
        assert all(arrays[k].tobytes("A") == written[k].tobytes("A") for k in written)


def test_an_npy_header_that_numpy_must_tokenize_is_refused_in_one_line(tmp_path):
    # A 1.0 header that is not a Python literal: NumPy tokenizes it to mend old files, and an
    # unclosed bracket ends that in tokenize.TokenError, which once escaped the loader.
    text = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,"
    npy = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + bytes(4)
    path = tmp_path / "checkpoint.npz"
    write_zip(path, [meta_entry({"format": FORMAT}), Entry("a.npy", npy)])
    with pytest.raises(ValueError, match=r"^load_checkpoint: .*checkpoint\.npz") as e:
        load_checkpoint(str(path))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("flags, version, what", [
    (0x40, 20, "strong encryption"),          # flag bit 6
    (0x20, 20, "patched data"),               # flag bit 5
    (0, 84, "zip file version 8.4"),          # zipfile reads versions up to 6.3
])
def test_zip_features_zipfile_cannot_read_are_refused_in_one_line(tmp_path, flags, version,
                                                                  what):
    # zipfile raises NotImplementedError for these; it once escaped the loader as a traceback
    # (found by the hostile-file test above).
    path = tmp_path / "checkpoint.npz"
    entries = [meta_entry({"format": FORMAT}), Entry("a.npy", npy_bytes(np.ones(3, np.float32)),
                                                     flags=flags)]
    write_zip(path, entries)
    data = bytearray(path.read_bytes())
    for at in range(len(data) - 3):           # every record's "version needed to extract"
        if data[at:at + 4] == b"PK\x01\x02":
            data[at + 6:at + 8] = struct.pack("<H", version)
        elif data[at:at + 4] == b"PK\x03\x04":
            data[at + 4:at + 6] = struct.pack("<H", version)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"^load_checkpoint: .*checkpoint\.npz") as e:
        load_checkpoint(str(path))
    assert what in str(e.value) and "\n" not in str(e.value)
