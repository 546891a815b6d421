"""Images: folders of png/jpg through Pillow, scikit-learn's digits and MNIST IDX files, all
as NCHW float32 in [-1, 1], and a batch iterator."""
import gzip
import math
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .. import backend
from ..validate import check_bool, check_choice, check_int
from ._common import (_DECODE_ERRORS, _generator, _on_white, _open_image,
                      _permutation, _uniform, from_uint8)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# A picture more than 64 times longer one way than the other keeps under 1/64 of itself in its
# centre square: a sliver, not a picture. Such files are strips, banners or hostile headers (a
# 1 KB PNG can claim 1,000,000 x 1 pixels); ImageFolder skips them before decoding them.
MAX_ASPECT = 64


def _resize_and_crop(img, size):
    """Resize so the shorter side is `size` (Pillow's antialiased bicubic), then crop the centre.

    Only the centre square is ever computed. Resizing all of a 1,000,000 x 1 picture to height
    32 would make 32,000,000 x 32 pixels (1 GB grey, 4 GB RGB), to keep 32 x 32 of them. So we
    map the crop back to a box in source pixels, cut that box out of the source with the margin
    the filter reads around it, and resample only that, with Pillow's `box`. The filter is
    separable; its two passes run one at a time, along rows then along columns, so nothing
    made is bigger than the cut-out or a (size, its height) strip.

    The result is the full resize's crop up to tiny differences: Pillow takes the box in single
    precision, which moves the sampling points by ~1e-6 pixel and may round a pixel to the next
    grey level; and the old full resize let Pillow choose the pass order, whose 8-bit rounding
    in between can differ where bicubic overshoots, at sharp edges.
    """
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))   # the full resize
    left, top = (new_w - size) // 2, (new_h - size) // 2                      # and its crop
    x0, x1 = left * w / new_w, (left + size) * w / new_w           # the crop in source pixels
    y0, y1 = top * h / new_h, (top + size) * h / new_h
    # Bicubic reads 2 pixels each side, 2 output pixels' worth when shrinking; 1 more to spare.
    reach_x, reach_y = 2 * max(1.0, w / new_w) + 1, 2 * max(1.0, h / new_h) + 1
    c0, c1 = max(0, math.floor(x0 - reach_x)), min(w, math.ceil(x1 + reach_x))
    r0, r1 = max(0, math.floor(y0 - reach_y)), min(h, math.ceil(y1 + reach_y))
    cut = img.crop((c0, r0, c1, r1))                          # the crop and the filter's margin
    rows = cut.resize((size, r1 - r0), Image.BICUBIC, box=(x0 - c0, 0, x1 - c0, r1 - r0))
    return rows.resize((size, size), Image.BICUBIC, box=(0, y0 - r0, size, y1 - r0))


def _decode(path, size, channels):
    """One file -> uint8 (C, size, size). Raises one of _DECODE_ERRORS if the file is bad."""
    with _open_image(path) as img:                  # reads the header only; refuses bombs
        w, h = img.size
        if max(w, h) > MAX_ASPECT * min(w, h):      # before decoding a single pixel
            raise ValueError(f"its aspect ratio {w}:{h} is over MAX_ASPECT = {MAX_ASPECT}:1")
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
    Skipped too, from their header alone: pictures more than MAX_ASPECT times longer one way
    than the other, and over PIL.Image.MAX_IMAGE_PIXELS pixels (Pillow's decompression-bomb
    limit).
    `.skipped` holds (path, reason) for each.

    `batch(indices)` returns NCHW float32 in [-1, 1] (Ho et al. 2020, Sec. 3.3), each image
    flipped left-right with probability 1/2 when flip=True (Ho et al. 2020, Appendix B).
    `folder[i]` is image i as stored, (C, H, W) float32, never flipped.
    """

    def __init__(self, root, image_size, channels=3, flip=True):
        fn = "ImageFolder"
        self.root = Path(root)
        self.image_size = check_int(f"{fn}: image_size", image_size, 1)
        self.channels = check_choice(f"{fn}: channels (1 grey, 3 RGB)", channels, (1, 3))
        self.flip = check_bool(f"{fn}: flip", flip)
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
                             f"'{self.root}' could be used (first: '{self.skipped[0][0]}', "
                             f"{self.skipped[0][1]})")
        if self.skipped:
            examples = ", ".join(f"'{p.name}'" for p, _ in self.skipped[:3])
            warnings.warn(f"ImageFolder: skipped {len(self.skipped)} of {len(candidates)} image "
                          f"files under '{self.root}' (e.g. {examples}; first: "
                          f"{self.skipped[0][1]}; .skipped holds every reason)", stacklevel=2)
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
    batch_size = check_int(f"{fn}: batch_size", batch_size, 1)
    if epochs is not None:
        epochs = check_int(f"{fn}: epochs", epochs, 1)
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
    size = check_int(f"{fn}: size", size, 1)
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
# Deflate (RFC 1951), gzip's compression, writes at most 258 bytes for a length-distance pair of
# at least 2 bits: one compressed byte never becomes more than 1032. A header that promises
# more than 1032 times the gzip file's size cannot be true, and is refused before decompressing.
DEFLATE_MAX_RATIO = 1032


def load_idx(path):
    """An IDX file (the MNIST format), gzipped or not, as a NumPy array in native byte order.

    The file opens with a magic number: two zero bytes, a type code (0x08 uint8 ... 0x0E
    float64), and the number of dimensions; then each dimension as a big-endian uint32; then the
    data, big-endian, in C order.

    The header is read first, and fixes how many bytes may follow: a header that promises more
    than the file can hold is refused at once, and no more than one byte past the promised data
    is ever decompressed, so a gzip bomb costs at most the array its header claims.
    """
    fn = "load_idx"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: no file at '{path}'")
    on_disk = path.stat().st_size
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"                              # the gzip signature
        f.seek(0)
        stream = gzip.GzipFile(fileobj=f) if gzipped else f
        try:
            dtype, shape = _read_idx_header(stream, path)
            need = math.prod(shape) * dtype.itemsize                    # bytes of data
            header = 4 + 4 * len(shape)
            claim = f"its header {shape} of {dtype.name} needs {need:,}"
            if gzipped and need > DEFLATE_MAX_RATIO * on_disk:
                raise ValueError(f"{fn}: '{path}' cannot be an IDX file: {claim} bytes of data, "
                                 f"more than its {on_disk:,} gzipped bytes can hold (deflate "
                                 f"expands at most {DEFLATE_MAX_RATIO}x)")
            if not gzipped and need != on_disk - header:
                raise ValueError(f"{fn}: '{path}' has {on_disk - header:,} bytes of data, but "
                                 f"{claim}: the file is truncated or corrupt")
            raw = stream.read(need)
            if len(raw) < need:
                raise ValueError(f"{fn}: '{path}' has {len(raw):,} bytes of data, but {claim}: "
                                 "the file is truncated or corrupt")
            if stream.read(1):
                raise ValueError(f"{fn}: '{path}' has more than {need:,} bytes of data, but "
                                 f"{claim}: the file is corrupt")
        except (OSError, EOFError, zlib.error) as e:
            if not gzipped:
                raise
            raise ValueError(f"{fn}: '{path}' looks gzipped but does not decompress: {e}") from e
    data = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return data.astype(dtype.newbyteorder("="))                         # a native, writable copy


def _read_idx_header(stream, path):
    """The dtype and shape an IDX header declares, read from the start of `stream`."""
    fn = "load_idx"
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] or magic[1] or magic[2] not in IDX_DTYPES or magic[3] == 0:
        shown = "0x" + magic.hex() if magic else "(empty file)"
        codes = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise ValueError(f"{fn}: '{path}' is not an IDX file: its magic number is {shown}; "
                         f"expected 0x0000, then a type code in ({codes}), then the number "
                         "of dimensions (>= 1)")
    ndim = magic[3]
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{fn}: '{path}' ends inside its header ({4 + len(dims)} bytes, "
                         f"{4 + 4 * ndim} needed for {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    return np.dtype(IDX_DTYPES[magic[2]]), shape


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
        size = check_int(f"{fn}: size", size, 1)
        if u8.shape[1] != u8.shape[2]:
            raise ValueError(f"{fn}: size={size} needs square images, got {u8.shape[1:]}")
        u8 = _resize_all(u8, size)
    return from_uint8(u8)[:, None]                                      # (N, 1, H, W)

