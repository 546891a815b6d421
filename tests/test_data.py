"""Tests for minidiff.data: 2-D sets, picture -> points, image folders, digits, IDX files."""
import gzip
import io
import itertools
import re
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import minidiff
from minidiff import data

# ---------------------------------------------------------------------------- uint8 edges


def test_uint8_round_trip_every_value():
    u = np.arange(256, dtype=np.uint8)
    x = data.from_uint8(u)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, u / 127.5 - 1, atol=1e-6)      # Ho et al. 2020, Sec. 3.3
    assert x.min() == -1 and x.max() == 1
    np.testing.assert_array_equal(data.to_uint8(x), u)


@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=20))
def test_to_uint8_is_nearest_pixel_clipped(values):
    got = data.to_uint8(np.array(values))
    assert got.dtype == np.uint8
    for v, g in zip(values, got):
        exact = (v + 1) * 127.5                                  # the pixel value v stands for
        if exact <= 0:
            assert g == 0
        elif exact >= 255:
            assert g == 255
        else:
            assert abs(int(g) - exact) <= 0.5                    # the nearest pixel


def test_to_uint8_refuses_nan():
    with pytest.raises(ValueError, match="1 of its 3 values"):
        data.to_uint8(np.array([0.0, np.nan, 1.0]))


def test_from_uint8_refuses_floats():
    with pytest.raises(ValueError, match="uint8"):
        data.from_uint8(np.zeros(3, dtype=np.float32))

# ---------------------------------------------------------------------------- 2-D sets


@pytest.mark.parametrize("name", sorted(data.TWO_D_SETS))
@given(n=st.integers(1, 60))
def test_two_d_shape_dtype_and_range(name, n):
    x = data.TWO_D_SETS[name](n)
    assert x.shape == (n, 2) and x.dtype == np.float32
    assert np.all(np.abs(x) <= 1.0 + 6 * 0.05)                   # [-1, 1] plus at most 6 sigma


@pytest.mark.parametrize("name", sorted(data.TWO_D_SETS))
def test_two_d_deterministic_under_seed(name):
    make = data.TWO_D_SETS[name]
    minidiff.manual_seed(7)
    a = make(100)
    minidiff.manual_seed(7)
    b = make(100)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, make(100))                      # the generator moved on


@pytest.mark.parametrize("name", sorted(data.TWO_D_SETS))
def test_two_d_uses_the_rng_passed(name):
    make = data.TWO_D_SETS[name]
    state = minidiff.backend.get_rng_state()
    a = make(50, rng=np.random.default_rng(3))
    b = make(50, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert minidiff.backend.get_rng_state() == state             # the library's was untouched


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_two_d_refuses_bad_n(bad):
    with pytest.raises(ValueError, match=f"n: must be an int >= 1, got {bad!r}"):
        data.make_rings(bad)


def test_two_d_refuses_negative_noise():
    with pytest.raises(ValueError, match=r"noise: must be a finite number in \[0, inf\], got -0.1"):
        data.make_swiss_roll(5, noise=-0.1)


def test_swiss_roll_lies_on_its_spiral():
    x = data.make_swiss_roll(2000, noise=0).astype(np.float64)
    r = np.hypot(x[:, 0], x[:, 1])
    t = r * 4.5 * np.pi                                          # the radius is t / (4.5 pi)
    assert t.min() >= 1.5 * np.pi - 1e-4 and t.max() <= 4.5 * np.pi + 1e-4
    np.testing.assert_allclose(x, np.stack([r * np.cos(t), r * np.sin(t)], 1), atol=1e-5)


def test_two_moons_lie_on_two_half_circles():
    n = 1001
    x = data.make_two_moons(n, noise=0).astype(np.float64)
    # scikit-learn's moons: centres (0, 0) and (1, 1/2), radius 1; minus (1/2, 1/4), over 3/2.
    c_up, c_low = np.array([-0.5, -0.25]) / 1.5, np.array([0.5, 0.25]) / 1.5
    up, low = x[: n // 2], x[n // 2:]
    np.testing.assert_allclose(np.linalg.norm(up - c_up, axis=1), 2 / 3, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(low - c_low, axis=1), 2 / 3, atol=1e-6)
    assert np.all(up[:, 1] >= c_up[1] - 1e-6) and np.all(low[:, 1] <= c_low[1] + 1e-6)
    assert x[:, 0].min() >= -1 - 1e-6 and x[:, 0].max() <= 1 + 1e-6


def test_eight_gaussians_have_eight_clusters_at_known_centres():
    n, std = 8000, 0.05
    x = data.make_eight_gaussians(n, noise=std).astype(np.float64)
    angles = np.arange(8) * np.pi / 4
    centres = 0.8 * np.stack([np.cos(angles), np.sin(angles)], 1)   # (8, 2)
    nearest = np.argmin(np.linalg.norm(x[:, None] - centres[None], axis=2), axis=1)
    counts = np.bincount(nearest, minlength=8)
    sigma = np.sqrt(n * (1 / 8) * (7 / 8))                       # binomial standard deviation
    assert np.all(np.abs(counts - n / 8) < 5 * sigma), counts
    for k in range(8):
        members = x[nearest == k]
        assert np.all(np.abs(members.mean(0) - centres[k]) < 5 * std / np.sqrt(len(members)))
        assert np.all(np.abs(members.std(axis=0) - std) < 0.1 * std)


def test_checkerboard_points_are_on_dark_cells_only():
    n = 8000
    x = data.make_checkerboard(n).astype(np.float64)
    assert np.all(x >= -1) and np.all(x < 1)
    col, row = np.floor(2 * (x[:, 0] + 1)), np.floor(2 * (x[:, 1] + 1))
    assert np.all((col + row) % 2 == 0)
    cells = np.bincount((row * 4 + col).astype(int), minlength=16)
    dark = cells[[0, 2, 5, 7, 8, 10, 13, 15]]                    # i + j even
    sigma = np.sqrt(n * (1 / 8) * (7 / 8))
    assert np.all(np.abs(dark - n / 8) < 5 * sigma), cells
    inside = 2 * (x + 1) % 1                                     # uniform place in the cell
    assert np.all(np.abs(inside.mean(0) - 0.5) < 5 * np.sqrt(1 / 12 / n))


def test_rings_radii_and_shares():
    n = 8000
    x = data.make_rings(n, noise=0).astype(np.float64)
    r = np.hypot(x[:, 0], x[:, 1])
    radii = np.array([0.25, 0.5, 0.75, 1.0])
    ring = np.argmin(np.abs(r[:, None] - radii[None]), axis=1)
    np.testing.assert_allclose(r, radii[ring], atol=1e-6)
    p = radii / radii.sum()                                      # proportional to length
    counts = np.bincount(ring, minlength=4)
    assert np.all(np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p))), counts
    assert abs(np.cos(np.arctan2(x[:, 1], x[:, 0])).mean()) < 5 / np.sqrt(2 * n)

# ---------------------------------------------------------------------------- picture -> points


def _grey_picture(dark):
    """A white L image with black where `dark` (H, W) is True."""
    return Image.fromarray(np.where(dark, 0, 255).astype(np.uint8), "L")


def _distance_to_dark(points, dark):
    """Map points back with the documented rule; distance (pixels) to the nearest dark pixel."""
    rows, cols = np.nonzero(dark)
    x_lo, x_hi, y_lo, y_hi = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    half = max(x_hi - x_lo, y_hi - y_lo) / 2
    px = (x_lo + x_hi) / 2 + points[:, 0].astype(np.float64) * half   # image x, rightwards
    py = (y_lo + y_hi) / 2 - points[:, 1].astype(np.float64) * half   # image y, downwards
    dx = np.maximum.reduce([cols[None] - px[:, None], np.zeros((len(px), len(cols))),
                            px[:, None] - (cols[None] + 1)])
    dy = np.maximum.reduce([rows[None] - py[:, None], np.zeros((len(py), len(rows))),
                            py[:, None] - (rows[None] + 1)])
    return np.maximum(dx, dy).min(axis=1)                        # (n,)


@given(st.integers(1, 10), st.integers(1, 10), st.integers(0, 2 ** 32 - 1))
def test_picture_points_fall_on_dark_pixels(h, w, seed):
    gen = np.random.default_rng(seed)
    dark = gen.random((h, w)) < 0.3
    dark[gen.integers(h), gen.integers(w)] = True                # at least one dark pixel
    points = data.points_from_picture(_grey_picture(dark), 300)
    assert points.shape == (300, 2) and points.dtype == np.float32
    assert np.all(np.abs(points) <= 1)
    assert np.all(_distance_to_dark(points, dark) <= 1e-4)       # float32 rounding only


def test_picture_y_points_up_and_aspect_is_kept():
    dark = np.zeros((20, 40), bool)
    dark[0, :] = True                                            # a bar along the top edge
    dark[9, 0] = True                                            # one pixel 10 rows below
    points = data.points_from_picture(_grey_picture(dark), 4000)
    top = points[:, 1] > 0
    assert abs(top.mean() - 40 / 41) < 5 * np.sqrt(40 / 41 / 41 / 4000)
    # The box is 40 x 10 pixels: x spans [-1, 1], y spans [-1/4, 1/4] (aspect kept).
    assert points[:, 0].min() < -0.99 and points[:, 0].max() > 0.99
    assert points[:, 1].min() >= -0.25 and points[:, 1].max() <= 0.25
    assert points[top, 1].min() >= 0.2                           # the bar is the top row
    assert np.all(points[~top, 0] < -0.95 + 1e-6)                # the pixel at the left


def test_picture_threshold_and_transparency():
    grey = np.full((4, 4), 255, np.uint8)
    grey[1, 1] = 100
    grey[2, 2] = 20
    img = Image.fromarray(grey, "L")
    both = data.points_from_picture(img, 2000, threshold=128)
    only = data.points_from_picture(img, 2000, threshold=50)
    # The two dark pixels are the top-left and bottom-right quarters of the 2 x 2 pixel box.
    left = both[:, 0] < 0
    assert 0 < left.mean() < 1
    assert np.all(both[left, 1] >= 0) and np.all(both[~left, 1] <= 0)
    assert np.all(np.abs(only) <= 1) and only.std(0).min() > 0.5  # one pixel fills the square
    rgba = np.zeros((4, 4, 4), np.uint8)                         # transparent black ...
    rgba[3, 0] = (0, 0, 0, 255)                                  # ... but one opaque pixel
    pts = data.points_from_picture(Image.fromarray(rgba, "RGBA"), 500)
    assert np.all(np.abs(pts) <= 1) and pts.std(0).min() > 0.5   # only that pixel is dark


def test_picture_errors(tmp_path):
    white = Image.new("L", (5, 5), 255)
    with pytest.raises(ValueError, match="no pixel is darker than threshold=128.*255"):
        data.points_from_picture(white, 10)
    with pytest.raises(ValueError, match="threshold must be a grey level in \\[1, 255\\], got 0"):
        data.points_from_picture(white, 10, threshold=0)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        data.points_from_picture(tmp_path / "nope.png", 10)
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="could not read the picture .*bad.png"):
        data.points_from_picture(tmp_path / "bad.png", 10)
    with pytest.raises(TypeError, match="path or a PIL image"):
        data.points_from_picture(42, 10)


def test_default_picture_is_small_and_matches_its_script(tmp_path):
    path = data.default_picture_path()
    assert path.is_file() and path.stat().st_size < 20_000
    script = path.parent / "make_picture.py"
    out = tmp_path / "redrawn.png"
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True)
    with Image.open(path) as a, Image.open(out) as b:
        np.testing.assert_array_equal(np.asarray(a.convert("L")), np.asarray(b.convert("L")))
        grey = np.asarray(a.convert("L"))
    assert 0.05 < (grey < 128).mean() < 0.5                      # dark strokes on white
    points = data.points_from_picture(path, 1000)
    assert points.shape == (1000, 2) and np.all(np.abs(points) <= 1)

# ---------------------------------------------------------------------------- image folders


def _save(img, path, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def _ramp(w=60, h=30):
    """Grey 4 * column, the same on every row: a linear ramp left to right."""
    return Image.fromarray(np.tile((4 * np.arange(w)).astype(np.uint8), (h, 1)), "L")


@pytest.fixture
def folder(tmp_path):
    """3 good images (one nested, upper-case suffix), 2 corrupt ones and a text file."""
    root = tmp_path / "images"
    _save(_ramp(), root / "a_ramp.png")
    _save(Image.new("RGB", (20, 40), (255, 0, 0)), root / "sub" / "B_RED.JPG", "JPEG")
    _save(Image.new("RGB", (30, 30), (0, 0, 255)), root / "sub" / "deeper" / "c.jpeg", "JPEG")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, format="JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "notes.txt").write_text("not an image, and not counted as one")
    return root


def test_image_folder_skips_bad_files_with_one_warning(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = data.ImageFolder(folder, image_size=10, channels=3)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 2 of 5 image files" in message and str(folder) in message
    assert "broken.png" in message and "truncated.jpg" in message
    assert len(ds) == 3 and ds.images.shape == (3, 3, 10, 10) and ds.images.dtype == np.uint8
    assert [p.name for p in ds.paths] == ["a_ramp.png", "B_RED.JPG", "c.jpeg"]
    x = ds.batch([0, 1, 2])
    assert x.shape == (3, 3, 10, 10) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1


def test_image_folder_resize_crop_and_grey(folder):
    with pytest.warns(UserWarning):
        ds = data.ImageFolder(folder, image_size=10, channels=1, flip=False)
    ramp = ds.images[0, 0].astype(int)                           # (10, 10)
    # 60 x 30 -> 20 x 10, crop columns 5..14. Column k samples the ramp at source pixel
    # 3 (k + 5) + 1; antialiased resampling keeps a linear ramp linear.
    want = 4 * (3 * (np.arange(10) + 5) + 1)
    assert np.all(np.abs(ramp - want[None]) <= 1), ramp[0]
    red = ds.images[1, 0].astype(int)                            # ITU-R 601-2 luma of red
    assert np.all(np.abs(red - 255 * 299 / 1000) <= 2)          # (JPEG rounding)
    np.testing.assert_allclose(ds[0], ds.images[0] / 127.5 - 1, atol=1e-6)


def test_image_folder_reads_16_bit_grey(tmp_path):
    u16 = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)    # up to 63000
    Image.fromarray(u16).save(tmp_path / "deep.png")
    ds = data.ImageFolder(tmp_path, image_size=8, channels=1)
    np.testing.assert_array_equal(ds.images[0, 0], u16 // 256)       # the top 8 bits


def test_image_folder_flips_at_random(folder):
    with pytest.warns(UserWarning):
        ds = data.ImageFolder(folder, image_size=10, channels=1, flip=True)
    original, mirrored = ds[0], ds[0][..., ::-1]
    seen = {"original": 0, "mirrored": 0}
    for _ in range(40):
        x = ds.batch([0])[0]
        if np.array_equal(x, original):
            seen["original"] += 1
        else:
            np.testing.assert_array_equal(x, mirrored)
            seen["mirrored"] += 1
    assert seen["original"] >= 5 and seen["mirrored"] >= 5, seen
    a = ds.batch([0, 0, 0, 0, 0, 0], rng=np.random.default_rng(1))
    b = ds.batch([0, 0, 0, 0, 0, 0], rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def test_image_folder_all_bad_or_empty(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    (tmp_path / "y.JPG").write_bytes(b"")
    message = re.escape(f"none of the 2 image files under '{tmp_path}'")
    with pytest.raises(ValueError, match=message):
        data.ImageFolder(tmp_path, image_size=8)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match="found no .png/.jpg/.jpeg files under"):
        data.ImageFolder(empty, image_size=8)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        data.ImageFolder(tmp_path / "missing", image_size=8)


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 0}, "image_size: must be an int >= 1, got 0"),
    ({"image_size": 8, "channels": 2}, "channels \\(1 grey, 3 RGB\\): got 2, allowed: 1, 3"),
    ({"image_size": 8, "flip": "yes"}, "flip: must be True or False, got 'yes'"),
])
def test_image_folder_refuses_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.ImageFolder(tmp_path, **kwargs)

# ---------------------------------------------------------------------------- batches


@given(n=st.integers(1, 30), batch_size=st.integers(1, 12), drop_last=st.booleans(),
       epochs=st.integers(1, 3))
def test_iterate_batches_visits_each_item_once_per_epoch(n, batch_size, drop_last, epochs):
    if drop_last and batch_size > n:
        with pytest.raises(ValueError, match=f"batch_size={batch_size} is larger"):
            data.iterate_batches(np.arange(n), batch_size, drop_last=drop_last)
        return
    batches = list(data.iterate_batches(np.arange(n), batch_size, drop_last=drop_last,
                                        epochs=epochs))
    per_epoch = n // batch_size if drop_last else -(-n // batch_size)
    assert len(batches) == epochs * per_epoch
    for e in range(epochs):
        epoch = np.concatenate(batches[e * per_epoch:(e + 1) * per_epoch])
        assert len(np.unique(epoch)) == len(epoch)               # no repeats within an epoch
        if drop_last:
            assert all(len(b) == batch_size for b in batches)
            assert len(epoch) == (n // batch_size) * batch_size
        else:
            np.testing.assert_array_equal(np.sort(epoch), np.arange(n))


def test_iterate_batches_forever_and_shuffled():
    x = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)   # (100, 2)
    batches = list(itertools.islice(data.iterate_batches(x, 10), 25))       # 2.5 epochs
    assert len(batches) == 25 and all(b.shape == (10, 2) for b in batches)
    first, second = np.concatenate(batches[:10])[:, 0], np.concatenate(batches[10:20])[:, 0]
    assert not np.array_equal(first, np.arange(100))             # shuffled ...
    assert not np.array_equal(first, second)                     # ... afresh each epoch
    np.testing.assert_array_equal(np.sort(first), np.arange(100))


def test_iterate_batches_of_an_image_folder(folder):
    with pytest.warns(UserWarning):
        ds = data.ImageFolder(folder, image_size=8, channels=3)
    batch = next(data.iterate_batches(ds, 2))
    assert batch.shape == (2, 3, 8, 8) and batch.dtype == np.float32


def test_iterate_batches_refuses_bad_data():
    with pytest.raises(TypeError, match="array .* or an ImageFolder, got list"):
        data.iterate_batches([1, 2, 3], 2)
    with pytest.raises(ValueError, match="batch_size: must be an int >= 1, got 0"):
        data.iterate_batches(np.zeros((4, 2)), 0)

# ---------------------------------------------------------------------------- digits


def test_digits_split_size_and_values():
    datasets = pytest.importorskip("sklearn.datasets")
    raw = datasets.load_digits().images                          # (1797, 8, 8), 0..16
    train, test = data.load_digits(split="train"), data.load_digits(split="test")
    every, labels = data.load_digits(split="all", return_labels=True)
    assert train.shape == (1437, 1, 16, 16) and test.shape == (360, 1, 16, 16)
    assert every.shape == (1797, 1, 16, 16) and labels.shape == (1797,)
    assert train.dtype == np.float32 and every.min() == -1 and every.max() == 1
    np.testing.assert_array_equal(np.concatenate([train, test]), every)
    small = data.load_digits(size=8, split="all")[:, 0]
    np.testing.assert_allclose(small, np.rint(raw * 255 / 16) / 127.5 - 1, atol=1e-6)
    # Upsampled then averaged over 2 x 2 blocks, each digit is close to the original.
    pooled = every[:, 0].reshape(1797, 8, 2, 8, 2).mean(axis=(2, 4))
    assert np.corrcoef(pooled.ravel(), small.ravel())[0, 1] > 0.95


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'minidiff\[digits\]'"):
        data.load_digits()


def test_digits_refuses_bad_split():
    with pytest.raises(ValueError, match="split must be 'train', 'test' or 'all', got 'val'"):
        data.load_digits(split="val")

# ---------------------------------------------------------------------------- IDX files


def _idx_bytes(array, code):
    """An IDX file written by hand: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype, code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                         (np.int32, 0x0C), (np.float32, 0x0D),
                                         (np.float64, 0x0E)])
@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_round_trip(tmp_path, dtype, code, gzipped):
    array = (np.random.default_rng(0).random((3, 4, 5)) * 100).astype(dtype)    # fits int8
    raw = _idx_bytes(array, code)
    path = tmp_path / ("x.idx.gz" if gzipped else "x.idx")
    path.write_bytes(gzip.compress(raw) if gzipped else raw)
    got = data.load_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file: its magic number is 0x12340801"):
        data.load_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(_idx_bytes(np.zeros((2, 3), np.uint8), 0x08)[:-1])
    with pytest.raises(ValueError, match="has 5 bytes of data.*needs 6"):
        data.load_idx(short)
    with pytest.raises(FileNotFoundError, match="missing.idx"):
        data.load_idx(tmp_path / "missing.idx")


def test_mnist_images(tmp_path):
    u = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(u, 0x08)))
    x = data.load_mnist_images(path)
    assert x.shape == (4, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], u / 127.5 - 1, atol=1e-6)
    flat = np.full((2, 28, 28), 77, np.uint8)                    # a constant survives resizing
    path.write_bytes(_idx_bytes(flat, 0x08))
    big = data.load_mnist_images(path, size=32)
    assert big.shape == (2, 1, 32, 32)
    np.testing.assert_allclose(big, 77 / 127.5 - 1, atol=1e-6)
    path.write_bytes(_idx_bytes(np.zeros((2, 3), np.float32), 0x0D))
    with pytest.raises(ValueError, match="must hold uint8 images \\(N, H, W\\).*float32"):
        data.load_mnist_images(path)
