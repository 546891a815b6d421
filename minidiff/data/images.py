"""Images: folders of png/jpg through Pillow, scikit-learn's digits and MNIST IDX files, all
as NCHW float32 in [-1, 1], and a batch iterator."""
import gzip
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .. import backend
from ._common import _check_int, _on_white, _generator, _permutation, _uniform, from_uint8


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _resize_and_crop(img, size):
    """Resize so the shorter side is `size` (Pillow's antialiased bicubic), then crop the centre."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def _decode(path, size, channels):
    """One file -> uint8 (C, size, size). Raises one of _DECODE_ERRORS if the file is bad."""
    with Image.open(path) as img:
        img.load()                                  # decode every byte now, not mid-epoch
        img = ImageOps.exif_transpose(img)          # photos stored sideways stand up
        img = _on_white(img).convert("L" if channels == 1 else "RGB")
    pixels = np.asarray(_resize_and_crop(img, size), dtype=np.uint8)   # (H, W) or (H, W, 3)
    if channels == 1:
        return pixels[None]                                             # (1, H, W)
    return pixels.transpose(2, 0, 1)                                    # (3, H, W)


class ImageFolder:
    """Every .png / .jpg / .jpeg under `root` (any letter case, any depth), held in memory.

    Each file is decoded once, here: resized so its shorter side is `image_size`, centre
    cropped, turned grey (channels=1) or RGB (channels=3), and kept as uint8. A file that cannot
    be decoded is skipped, and one warning counts them all. So an epoch never meets a bad file.

    `batch(indices)` returns NCHW float32 in [-1, 1] (Ho et al. 2020, Sec. 3.3), each image
    flipped left-right with probability 1/2 when flip=True (Ho et al. 2020, Appendix B).
    `folder[i]` is image i as stored, (C, H, W) float32, never flipped.
    """

    def __init__(self, root, image_size, channels=3, flip=True):
        fn = "ImageFolder"
        self.root = Path(root)
        self.image_size = _check_int(fn, "image_size", image_size, 1)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"{fn}: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        if not isinstance(flip, bool):
            raise ValueError(f"{fn}: flip must be True or False, got {flip!r}")
        self.channels, self.flip = int(channels), flip
        if not self.root.is_dir():
            raise FileNotFoundError(f"{fn}: root '{self.root}' is not a folder")
        candidates = sorted(p for p in self.root.rglob("*")
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not candidates:
            raise ValueError(f"{fn}: found no {'/'.join(IMAGE_SUFFIXES)} files under "
                             f"'{self.root}'")
        images, self.paths, self.skipped = [], [], []   # skipped: (path, reason) pairs
        for path in candidates:
            try:
                images.append(_decode(path, self.image_size, self.channels))
                self.paths.append(path)
            except _DECODE_ERRORS as e:
                self.skipped.append((path, f"{type(e).__name__}: {e}"))
        if not images:
            raise ValueError(f"{fn}: none of the {len(candidates)} image files under "
                             f"'{self.root}' could be read (first: '{self.skipped[0][0]}', "
                             f"{self.skipped[0][1]})")
        if self.skipped:
            examples = ", ".join(f"'{p.name}'" for p, _ in self.skipped[:3])
            warnings.warn(f"ImageFolder: skipped {len(self.skipped)} of {len(candidates)} image "
                          f"files under '{self.root}' that could not be read (e.g. {examples}; "
                          "see .skipped for the reasons)", stacklevel=2)
        self.images = np.stack(images)                                  # (N, C, H, W) uint8

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return from_uint8(self.images[i])                               # (C, H, W)

    def batch(self, indices, rng=None):
        """Images `indices` as NCHW float32 in [-1, 1], randomly flipped if self.flip."""
        x = self.images[np.asarray(indices, dtype=np.int64)]            # (B, C, H, W) uint8
        if self.flip:
            mirror = _uniform(_generator(rng), len(x)) < 0.5            # (B,)
            x = np.where(mirror[:, None, None, None], x[..., ::-1], x)
        return from_uint8(x)                                            # (B, C, H, W)


def iterate_batches(data, batch_size, rng=None, drop_last=True, epochs=None):
    """Shuffled batches of `data`, an array (N, ...) or an ImageFolder.

    Each epoch visits every item once, in a fresh random order drawn from `rng` when the epoch
    starts. With drop_last=True the short batch at the end of an epoch is dropped, so every
    batch has batch_size items. epochs=None yields forever; epochs=k stops after k epochs.
    Arrays are returned as they are (indexed copies); an ImageFolder gives float32 in [-1, 1].
    """
    fn = "iterate_batches"
    if isinstance(data, ImageFolder):
        def take(idx, g):
            return data.batch(idx, g)
    elif hasattr(data, "shape") and len(data.shape) >= 1:
        data = backend.to_numpy(data)

        def take(idx, g):
            return data[idx]
    else:
        raise TypeError(f"{fn}: data must be an array (N, ...) or an ImageFolder, "
                        f"got {type(data).__name__}")
    n = len(data)
    batch_size = _check_int(fn, "batch_size", batch_size, 1)
    if epochs is not None:
        epochs = _check_int(fn, "epochs", epochs, 1)
    if n == 0:
        raise ValueError(f"{fn}: data is empty")
    if drop_last and batch_size > n:
        raise ValueError(f"{fn}: batch_size={batch_size} is larger than the data ({n} items), "
                         "so drop_last=True would leave no batch; lower batch_size or pass "
                         "drop_last=False")
    stop = n - batch_size + 1 if drop_last else n                       # last batch start + 1

    def batches():
        epoch = 0
        while epochs is None or epoch < epochs:
            g = _generator(rng)
            order = _permutation(g, n)                                  # (N,)
            for start in range(0, stop, batch_size):
                yield take(order[start:start + batch_size], g)
            epoch += 1

    return batches()

# ---------------------------------------------------------------------------- digits and MNIST


DIGITS_TEST_SIZE = 360   # the last 360 of scikit-learn's 1797 digits are the test split


def _resize_all(u8, size):
    """uint8 (N, H, W) -> uint8 (N, size, size), each image resized by Pillow (bilinear)."""
    if u8.shape[1:] == (size, size):
        return u8
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
                     for im in u8])


def load_digits(size=16, split="train", return_labels=False):
    """scikit-learn's 8 x 8 handwritten digits as NCHW float32 in [-1, 1], resized to `size`.

    Ink is bright (+1) on a dark (-1) background, as in MNIST. The split is fixed: the first
    1437 digits are "train", the last 360 "test", "all" is every one of the 1797.
    Needs the optional extra: pip install 'minidiff[digits]'.
    """
    fn = "load_digits"
    size = _check_int(fn, "size", size, 1)
    if split not in ("train", "test", "all"):
        raise ValueError(f"{fn}: split must be 'train', 'test' or 'all', got {split!r}")
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as e:
        raise ImportError(f"{fn} needs scikit-learn, which is not installed: "
                          "pip install 'minidiff[digits]'") from e
    bunch = sklearn_load_digits()
    u8 = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)       # (1797, 8, 8), 0..16 ink
    labels = np.asarray(bunch.target, dtype=np.int64)                   # (1797,)
    n_train = len(u8) - DIGITS_TEST_SIZE
    part = {"train": slice(0, n_train), "test": slice(n_train, None), "all": slice(None)}[split]
    x = from_uint8(_resize_all(u8[part], size))[:, None]                # (N, 1, size, size)
    return (x, labels[part]) if return_labels else x


# IDX type codes (LeCun et al., "THE MNIST DATABASE", file formats) -> big-endian dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path):
    """An IDX file (the MNIST format), gzipped or not, as a NumPy array in native byte order.

    The file opens with a magic number: two zero bytes, a type code (0x08 uint8 ... 0x0E
    float64), and the number of dimensions; then each dimension as a big-endian uint32; then the
    data, big-endian, in C order.
    """
    fn = "load_idx"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: no file at '{path}'")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":                                          # the gzip signature
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{fn}: '{path}' looks gzipped but does not decompress: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        magic = "0x" + raw[:4].hex() if raw else "(empty file)"
        codes = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise ValueError(f"{fn}: '{path}' is not an IDX file: its magic number is {magic}; "
                         f"expected 0x0000, then a type code in ({codes}), then the number "
                         "of dimensions (>= 1)")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{fn}: '{path}' ends inside its header ({len(raw)} bytes, "
                         f"{header} needed for {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{fn}: '{path}' has {len(raw) - header} bytes of data, but its header "
                         f"{shape} of {dtype.name} needs {expected}: the file is truncated "
                         "or corrupt")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))                         # a native, writable copy


def load_mnist_images(path, size=None):
    """An IDX file of uint8 images (N, H, W), e.g. train-images-idx3-ubyte.gz, as NCHW [-1, 1].

    size=None keeps the file's size; an int resizes each image with Pillow (bilinear), e.g.
    28 -> 32 for a U-Net that halves its resolution several times.
    """
    fn = "load_mnist_images"
    u8 = load_idx(path)
    if u8.dtype != np.uint8 or u8.ndim != 3:
        raise ValueError(f"{fn}: '{path}' must hold uint8 images (N, H, W), but holds "
                         f"{u8.dtype} of shape {u8.shape}")
    if size is not None:
        size = _check_int(fn, "size", size, 1)
        if u8.shape[1] != u8.shape[2]:
            raise ValueError(f"{fn}: size={size} needs square images, got {u8.shape[1:]}")
        u8 = _resize_all(u8, size)
    return from_uint8(u8)[:, None]                                      # (N, 1, H, W)

