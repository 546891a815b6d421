"""Hostile inputs to minidiff.data: files small on disk that claim to be huge.

Each memory test builds the file in tmp_path, runs the loader in a fresh interpreter, and reads
the peak resident memory (ru_maxrss) before and after the call. Every case grows it by under
50 MB now, and grew it by 1 to 5.5 GB before the fix; _MAX_GROWTH_MB sits between the two.
"""
import gzip
import io
import json
import math
import os
import re
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from minidiff import data
from minidiff.data import images

REPO = Path(__file__).resolve().parent.parent
_MAX_GROWTH_MB = 200

# ---------------------------------------------------------------------------- helpers


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


_MEASURE = """
import json, resource, warnings
from minidiff import data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss          # KB on Linux
outcome = "returned"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        result = {call}
        outcome += " " + repr(getattr(result, "images", result).shape)
    except ValueError as e:
        outcome = "ValueError: " + str(e)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"grew_mb": (after - before) / 1024, "outcome": outcome,
                  "warnings": [str(w.message) for w in caught]}}))
"""


def _measure(call):
    """Run `call` (Python source) in a fresh interpreter: its peak memory growth and outcome."""
    done = subprocess.run([sys.executable, "-c", _MEASURE.format(call=call)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _png_header(w, h):
    """A PNG whose header claims w x h grey pixels, with almost no pixel data behind it."""
    def chunk(kind, body):
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)               # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


def _idx_header(shape, code=0x08):
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def _gzip_bomb(header, gib=1):
    """A gzip file of about gib MB: `header`, then gib GiB of zeros, as concatenated members
    (gzip readers decompress them as one stream, so it builds in milliseconds)."""
    mib = bytes(1 << 20)
    return gzip.compress(header + mib) + gzip.compress(mib) * (1024 * gib - 1)

# ---------------------------------------------------------------------------- thin pictures


def test_thin_picture_is_skipped_from_its_header_in_little_memory(tmp_path):
    # 1 KB on disk; the old resize-then-crop made a 32,000,000 x 32 RGB image of it (5.5 GB).
    Image.new("L", (1_000_000, 1), 128).save(tmp_path / "thin.png")
    Image.new("L", (40, 30), 200).save(tmp_path / "fine.png")
    got = _measure(f"data.ImageFolder({str(tmp_path)!r}, image_size=32, channels=3)")
    assert got["grew_mb"] < _MAX_GROWTH_MB, got
    assert got["outcome"] == "returned (1, 3, 32, 32)", got
    [warning] = got["warnings"]
    assert "skipped 1 of 2 image files" in warning and "thin.png" in warning
    assert "aspect ratio 1000000:1 is over MAX_ASPECT = 64:1" in warning


def test_widest_accepted_picture_costs_its_output_not_its_full_resize(tmp_path):
    # 64:1 is accepted. Resized whole to height 2048 it would be 131,072 x 2048 RGB (1 GB);
    # its centre crop is 2048 x 2048 (12 MB), and only that is computed.
    saw = np.tile(np.arange(6400, dtype=np.uint8), (100, 1))               # (100, 6400)
    Image.fromarray(saw, "L").save(tmp_path / "wide.png")
    got = _measure(f"data.ImageFolder({str(tmp_path)!r}, image_size=2048, channels=3)")
    assert got["grew_mb"] < _MAX_GROWTH_MB, got
    assert got["outcome"] == "returned (1, 3, 2048, 2048)" and got["warnings"] == [], got


def test_aspect_ratio_bound_is_inclusive(tmp_path):
    Image.new("L", (128, 2), 0).save(tmp_path / "a_edge.png")              # 64:1, kept
    Image.new("L", (2, 129), 0).save(tmp_path / "b_over.png")              # 64.5:1, skipped
    with pytest.warns(UserWarning, match="aspect ratio 2:129 is over MAX_ASPECT = 64:1"):
        folder = data.ImageFolder(tmp_path, image_size=8, channels=1)
    assert [p.name for p in folder.paths] == ["a_edge.png"]
    assert folder.images.shape == (1, 1, 8, 8)
    [(path, reason)] = folder.skipped
    assert path.name == "b_over.png" and reason.startswith("ValueError: its aspect ratio")


@st.composite
def _picture(draw):
    """An image of noise (the hardest case for resampling) within the accepted aspect ratio."""
    short = draw(st.integers(1, 40))
    long = draw(st.integers(short, min(64 * short, 400)))
    w, h = (long, short) if draw(st.booleans()) else (short, long)
    mode = draw(st.sampled_from(["L", "RGB"]))
    g = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    pixels = g.integers(0, 256, (h, w) if mode == "L" else (h, w, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode), draw(st.integers(1, 48))


@given(_picture(), st.sampled_from([1, 3]))
def test_decode_gives_size_by_size_uint8(picture, channels):
    img, size = picture
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    buf.seek(0)
    out = images._decode(buf, size, channels)
    assert out.shape == (channels, size, size) and out.dtype == np.uint8

# ---------------------------------------------------------------------------- the resize oracle


def _keys_cubic(x, a=-0.5):
    """Keys's cubic convolution kernel with a = -1/2 (Pillow's BICUBIC)."""
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, a * (((x - 5) * x + 8) * x - 4), 0.0))


def _resize_weights(n_in, n_out, first, count):
    """Rows first .. first+count-1 of the matrix resizing n_in samples to n_out, (count, n_in).

    Output i looks at the input at (i + 1/2) n_in / n_out, in pixel units whose centres are at
    j + 1/2. The kernel is stretched by the reduction factor when shrinking (antialiasing),
    kept on the input pixels within its reach (rounded as Pillow rounds), and its weights are
    normalised to sum 1."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    weights = np.zeros((count, n_in))
    for row, i in enumerate(range(first, first + count)):
        centre = (i + 0.5) * scale
        lo = max(int(centre - 2 * stretch + 0.5), 0)
        hi = min(int(centre + 2 * stretch + 0.5), n_in)
        k = _keys_cubic((np.arange(lo, hi) + 0.5 - centre) / stretch)
        weights[row, lo:hi] = k / k.sum()
    return weights


def _full_resize_then_crop(pixels, size):
    """The old definition, computed directly: resize the whole picture so its shorter side is
    `size` (along rows, then along columns, rounding to 8 bits in between as Pillow does),
    then keep the centre square. Only the kept pixels are evaluated. Also returns the largest
    sum of |weights| of the second pass."""
    h, w = pixels.shape[:2]
    scale = size / min(w, h)                # as the old code rounded: 57 x 13/6 is 123, not 124
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    wx = _resize_weights(w, new_w, (new_w - size) // 2, size)          # (size, w)
    wy = _resize_weights(h, new_h, (new_h - size) // 2, size)          # (size, h)
    def to_8_bits(v):
        return np.clip(np.floor(v + 0.5), 0, 255)                       # halves round up

    rows = to_8_bits(np.einsum("ox,yx...->yo...", wx, pixels.astype(np.float64)))
    out = to_8_bits(np.einsum("oy,y...->o...", wy, rows))
    return out.astype(np.int64), np.abs(wy).sum(axis=1).max()


@given(_picture())
def test_crop_then_resize_is_the_full_resize_cropped(picture):
    # The oracle is float64; Pillow rounds its weights to 22-bit fixed point and its box to
    # single precision. So a pixel of the 8-bit rows between the passes may fall on the other
    # side of a half and differ by 1; the second pass carries that with weights whose absolute
    # values sum to under 1.5, and the final rounding adds under 1: at most 2 in all. Noise is
    # the hardest input: bicubic overshoots and clips most there.
    img, size = picture
    got = np.asarray(images._resize_and_crop(img, size)).astype(np.int64)
    want, abs_sum = _full_resize_then_crop(np.asarray(img), size)
    assert abs_sum < 1.5
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 2

# ---------------------------------------------------------------------------- bomb headers


def test_picture_over_the_bomb_limit_is_one_clear_error(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(100_000, 100_000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError) as info:
            data.points_from_picture(path, 10)
    assert type(info.value) is ValueError
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "10000000000 pixels" in message
    assert caught == []


def test_image_folder_skips_a_bomb_header(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    Image.new("RGB", (12, 12), (1, 2, 3)).save(tmp_path / "fine.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = data.ImageFolder(tmp_path, image_size=4)
    assert [p.name for p in folder.paths] == ["fine.png"]
    [warning] = caught
    assert "skipped 1 of 2" in str(warning.message)
    assert "first: DecompressionBombError: Image size (10000000000 pixels)" in str(warning.message)


def test_between_the_limit_and_twice_it_is_refused_without_a_warning(tmp_path, monkeypatch):
    # Pillow only warns for 1 to 2 times MAX_IMAGE_PIXELS, then decodes; we refuse instead.
    Image.new("L", (40, 40), 0).save(tmp_path / "big.png")                  # 1600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        with pytest.raises(ValueError, match=r"big\.png.*1600 pixels.*limit of 1000"):
            data.points_from_picture(tmp_path / "big.png", 10)
        Image.new("L", (20, 20), 0).save(tmp_path / "small.png")            # 400 pixels
        folder = data.ImageFolder(tmp_path, image_size=4, channels=1)
        assert warnings.filters == filters                                # put back as found
    assert [p.name for p in folder.paths] == ["small.png"]
    assert "DecompressionBombWarning" in folder.skipped[0][1]
    assert [type(w.message) for w in caught] == [UserWarning]             # ours, the skip
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)                  # no limit at all
    assert data.points_from_picture(tmp_path / "big.png", 10).shape == (10, 2)

# ---------------------------------------------------------------------------- IDX gzip bombs


def test_idx_gzip_bomb_with_small_dims_stops_after_its_data(tmp_path):
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(_gzip_bomb(_idx_header((10, 28, 28))))               # 1 MB -> 1 GiB
    got = _measure(f"data.load_idx({str(path)!r})")
    assert got["grew_mb"] < _MAX_GROWTH_MB, got
    assert got["outcome"].startswith(f"ValueError: load_idx: '{path}' has more than 7,840 "
                                     "bytes of data"), got


def test_idx_gzip_bomb_with_huge_dims_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "huge-idx3-ubyte.gz"
    path.write_bytes(_gzip_bomb(_idx_header((60_000_000, 28, 28))))       # claims 47 GB
    got = _measure(f"data.load_idx({str(path)!r})")
    assert got["grew_mb"] < _MAX_GROWTH_MB, got
    assert got["outcome"].startswith(f"ValueError: load_idx: '{path}' cannot be an IDX "
                                     "file"), got
    assert f"expands at most {images.DEFLATE_MAX_RATIO}x" in got["outcome"]


def test_most_compressible_true_idx_file_is_within_the_deflate_bound(tmp_path):
    # 10 MB of zeros at zlib's best compression come within 1% of deflate's 1032:1 (1025:1);
    # such a true file must still load.
    path = tmp_path / "zeros.idx.gz"
    path.write_bytes(gzip.compress(_idx_header((10, 1000, 1000)) + bytes(10 ** 7), 9))
    assert 10 ** 7 > 1020 * path.stat().st_size
    got = data.load_idx(path)
    assert got.shape == (10, 1000, 1000) and not got.any()


_IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
              np.float64: 0x0E}


@given(dtype=st.sampled_from(sorted(_IDX_CODES, key=str)),
       shape=st.lists(st.integers(0, 6), min_size=1, max_size=3),
       extra=st.integers(-5, 5), gzipped=st.booleans())
def test_idx_data_must_be_exactly_what_the_header_says(tmp_path_factory, dtype, shape, extra,
                                                      gzipped):
    array = np.arange(math.prod(shape), dtype=dtype).reshape(shape)
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    if extra < 0 and len(body) + extra < 0:
        extra = -len(body)
    body = body[:len(body) + extra] if extra <= 0 else body + b"\x07" * extra
    raw = _idx_header(shape, _IDX_CODES[dtype]) + body
    path = tmp_path_factory.mktemp("idx") / "x.idx"
    path.write_bytes(gzip.compress(raw) if gzipped else raw)
    need = array.nbytes
    if extra == 0:
        np.testing.assert_array_equal(data.load_idx(path), array)
    elif extra < 0:
        with pytest.raises(ValueError, match=f"has {need + extra:,} bytes of data, but its "
                                             rf"header .* needs {need:,}: .*truncated"):
            data.load_idx(path)
    else:
        match = (f"has more than {need:,} bytes of data" if gzipped
                 else f"has {need + extra:,} bytes of data")
        with pytest.raises(ValueError, match=match):
            data.load_idx(path)


def test_idx_corrupt_gzip_is_one_value_error(tmp_path):
    path = tmp_path / "corrupt.idx.gz"
    good = gzip.compress(_idx_header((4, 4)) + bytes(16))
    message = re.escape(f"'{path}' looks gzipped but does not decompress")
    path.write_bytes(good[:10] + b"\xff" * 12 + good[22:])               # a bad deflate block
    with pytest.raises(ValueError, match=message):
        data.load_idx(path)
    path.write_bytes(good[:-6])                                         # cut inside the trailer
    with pytest.raises(ValueError, match=message):
        data.load_idx(path)

# ---------------------------------------------------------------------------- train_images.py


def _bad_folders(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n but no more")
    return {"missing": "no such folder", "a_file": "not a folder",
            "empty": "found no .png/.jpg/.jpeg files", "corrupt": "none of the 1 image files"}


def test_train_images_on_a_bad_folder_is_one_line(tmp_path):
    for name, problem in _bad_folders(tmp_path).items():
        folder = tmp_path / name
        done = subprocess.run([sys.executable, str(REPO / "examples" / "train_images.py"),
                               "--folder", str(folder), "--steps", "1",
                               "--out-dir", str(tmp_path / "run")],
                              env=_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, (name, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1, (name, done.stderr)
        assert lines[0].startswith(f"train_images.py: --folder '{folder}': "), lines
        assert problem in lines[0], lines
