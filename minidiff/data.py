"""Data: 2-D toy sets, a picture turned into points, image folders, digits and MNIST files.

Everything here returns NumPy arrays on the host; the training loop moves batches to the device.

- 2-D sets are float32 arrays (n, 2) that fit in the square [-1, 1]^2 up to their noise.
- Images are NCHW float32 in [-1, 1], the scaling of Ho et al. 2020, Sec. 3.3 (x / 127.5 - 1);
  uint8 only at the edges (files on disk, Pillow images), through `from_uint8` and `to_uint8`.
- Every random draw goes through `minidiff.backend.rng()`, unless a generator is passed as `rng`.

    points = make_swiss_roll(1000)                                  # (1000, 2)
    cat = points_from_picture(default_picture_path(), n=5000)       # (5000, 2)
    folder = ImageFolder("photos/", image_size=32, channels=3)
    for x0 in iterate_batches(folder, batch_size=64):               # (64, 3, 32, 32), forever
        ...
"""
import gzip
import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from . import backend

# ---------------------------------------------------------------------------- small helpers


def _generator(rng):
    """The generator to draw from: the one passed in, or the library's seeded one."""
    if rng is None:
        return backend.rng()
    if not (hasattr(rng, "random") and hasattr(rng, "standard_normal")):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng


# The three draws below are all the randomness this module needs. They exist on NumPy's and on
# CuPy's Generator alike, and their results are brought to the host.
def _uniform(g, size):
    return np.asarray(backend.to_numpy(g.random(size)), dtype=np.float64)        # U[0, 1)


def _normal(g, size):
    return np.asarray(backend.to_numpy(g.standard_normal(size)), dtype=np.float64)  # N(0, 1)


def _permutation(g, n):
    """A uniformly random order of range(n): sort n uniform keys."""
    return np.argsort(_uniform(g, n), kind="stable")                             # (n,)


def _check_int(fn, name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{fn}: {name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_noise(fn, noise):
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"{fn}: noise must be a number >= 0, got {noise!r}")
    return float(noise)


def to_uint8(x):
    """[-1, 1] floats -> uint8 pixels: the inverse of Sec. 3.3's x / 127.5 - 1, rounded, clipped.

    Values outside [-1, 1] are clipped to 0 or 255. NaN or inf is refused: it has no pixel value.
    """
    x = np.asarray(backend.to_numpy(x), dtype=np.float64)
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"to_uint8: x must be finite, but {bad} of its {x.size} values are "
                         "NaN or inf")
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(u):
    """uint8 pixels -> float32 in [-1, 1]: x / 127.5 - 1 (Ho et al. 2020, Sec. 3.3)."""
    u = np.asarray(u)
    if u.dtype != np.uint8:
        raise ValueError(f"from_uint8: u must be a uint8 array, got dtype {u.dtype}")
    return u.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


# ---------------------------------------------------------------------------- 2-D sets
# Each returns float32 (n, 2) inside [-1, 1]^2 before noise; `noise` is the standard deviation
# of isotropic Gaussian noise, in those same output units.


def make_swiss_roll(n, rng=None, noise=0.02):
    """A 2-D swiss roll: the spiral (t cos t, t sin t), t in [1.5 pi, 4.5 pi], divided by 4.5 pi.

    The parametrisation is scikit-learn's make_swiss_roll (after Marsland 2009) seen from above;
    dividing by the largest radius 4.5 pi puts the spiral inside the unit disc.
    """
    n = _check_int("make_swiss_roll", "n", n, 1)
    noise = _check_noise("make_swiss_roll", noise)
    g = _generator(rng)
    t = 1.5 * np.pi * (1.0 + 2.0 * _uniform(g, n))                     # (n,) angle = radius
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (4.5 * np.pi)  # (n, 2)
    return (x + noise * _normal(g, (n, 2))).astype(np.float32)


def make_two_moons(n, rng=None, noise=0.03):
    """Two interleaved half circles, as scikit-learn's make_moons, scaled to x in [-1, 1].

    make_moons draws the upper moon (cos a, sin a) and the lower moon (1 - cos a, 1/2 - sin a),
    a in [0, pi], which span x in [-1, 2] and y in [-1/2, 1]. We subtract the centre (1/2, 1/4)
    and divide both axes by 3/2, so the moons keep their shape: radius 2/3, x in [-1, 1],
    y in [-1/2, 1/2]. The first n // 2 points are the upper moon.
    """
    n = _check_int("make_two_moons", "n", n, 1)
    noise = _check_noise("make_two_moons", noise)
    g = _generator(rng)
    n_up = n // 2
    a = np.pi * _uniform(g, n)                                          # (n,) angle on a moon
    upper = np.stack([np.cos(a[:n_up]), np.sin(a[:n_up])], axis=1)      # (n_up, 2)
    lower = np.stack([1.0 - np.cos(a[n_up:]), 0.5 - np.sin(a[n_up:])], axis=1)
    x = (np.concatenate([upper, lower]) - np.array([0.5, 0.25])) / 1.5  # (n, 2)
    return (x + noise * _normal(g, (n, 2))).astype(np.float32)


EIGHT_GAUSSIANS_RADIUS = 0.8


def eight_gaussians_centres():
    """The 8 centres: radius 0.8, at the angles k * 45 degrees, k = 0..7."""
    k = np.arange(8)
    angle = k * np.pi / 4
    return EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (8, 2)


def make_eight_gaussians(n, rng=None, noise=0.05):
    """A mixture of 8 equally likely Gaussians (std `noise`) on a circle of radius 0.8.

    The toy set of Grathwohl et al. 2019 (FFJORD), rescaled into [-1, 1]^2.
    """
    n = _check_int("make_eight_gaussians", "n", n, 1)
    noise = _check_noise("make_eight_gaussians", noise)
    g = _generator(rng)
    which = np.minimum((_uniform(g, n) * 8).astype(np.int64), 7)        # (n,) cluster index
    x = eight_gaussians_centres()[which]                                # (n, 2)
    return (x + noise * _normal(g, (n, 2))).astype(np.float32)


def make_checkerboard(n, rng=None):
    """Uniform points on the 8 dark cells of a 4 x 4 checkerboard covering [-1, 1]^2.

    Cells are 0.5 wide. The cell of (x, y) is column i = floor(2 (x + 1)), row j = floor(2 (y + 1));
    it is dark when i + j is even. Each dark cell is equally likely (Grathwohl et al. 2019).
    """
    n = _check_int("make_checkerboard", "n", n, 1)
    g = _generator(rng)
    k = np.minimum((_uniform(g, n) * 8).astype(np.int64), 7)            # (n,) dark cell 0..7
    row = k // 2                                                        # 4 rows, 2 dark cells each
    col = 2 * (k % 2) + row % 2                                         # shifted on odd rows
    inside = _uniform(g, (n, 2))                                        # (n, 2) place in the cell
    x = -1.0 + 0.5 * (col + inside[:, 0])
    y = -1.0 + 0.5 * (row + inside[:, 1])
    return np.stack([x, y], axis=1).astype(np.float32)                  # (n, 2)


RINGS_RADII = (0.25, 0.5, 0.75, 1.0)


def make_rings(n, rng=None, noise=0.01):
    """Points on 4 concentric circles of radii 0.25, 0.5, 0.75 and 1.

    A ring is chosen with probability proportional to its radius, so every ring is equally
    dense along its length; the angle is uniform.
    """
    n = _check_int("make_rings", "n", n, 1)
    noise = _check_noise("make_rings", noise)
    g = _generator(rng)
    radii = np.array(RINGS_RADII)
    cdf = np.cumsum(radii) / radii.sum()                                # (4,)
    ring = np.minimum(np.searchsorted(cdf, _uniform(g, n), side="right"), 3)  # (n,)
    angle = 2 * np.pi * _uniform(g, n)                                  # (n,)
    x = radii[ring, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (n, 2)
    return (x + noise * _normal(g, (n, 2))).astype(np.float32)


TWO_D_SETS = {
    "swiss_roll": make_swiss_roll,
    "two_moons": make_two_moons,
    "eight_gaussians": make_eight_gaussians,
    "checkerboard": make_checkerboard,
    "rings": make_rings,
}

# ---------------------------------------------------------------------------- picture -> points


def default_picture_path():
    """The project's own picture, a cartoon cat drawn by minidiff/assets/make_picture.py."""
    return Path(__file__).resolve().parent / "assets" / "mascot.png"


def _on_white(img):
    """Any Pillow image as RGB, with transparent parts laid on white (not on black)."""
    if img.mode.startswith("I;16"):             # 16-bit grey: keep the top 8 bits (Pillow's
        top = np.asarray(img) >> 8              # own conversion would clip at 255 instead)
        img = Image.fromarray(top.astype(np.uint8), "L")
    img = img.convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, img).convert("RGB")


def _open_picture(path_or_image, fn):
    if isinstance(path_or_image, Image.Image):
        return path_or_image
    if not isinstance(path_or_image, (str, os.PathLike)):
        raise TypeError(f"{fn}: path_or_image must be a path or a PIL image, "
                        f"got {type(path_or_image).__name__}")
    path = Path(path_or_image)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: no picture at '{path}'")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{fn}: could not read the picture '{path}': {e}") from e


def points_from_picture(path_or_image, n, threshold=128, rng=None):
    """The dark pixels of a picture as n points in the plane: the notes' `scatter_pixels`.

    A pixel is dark when its grey level (0 black .. 255 white) is below `threshold`. We draw n
    dark pixels uniformly with replacement and a uniform position inside each, so the points are
    uniform on the dark area. The y axis points up. The box around the dark pixels is centred
    on 0 and its longer side scaled to [-1, 1]; the aspect ratio is kept.
    """
    fn = "points_from_picture"
    n = _check_int(fn, "n", n, 1)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 1 <= threshold <= 255:
        raise ValueError(f"{fn}: threshold must be a grey level in [1, 255], got {threshold!r}")
    grey = np.asarray(_on_white(_open_picture(path_or_image, fn)).convert("L"))  # (H, W)
    rows, cols = np.nonzero(grey < threshold)                           # (D,) each
    if rows.size == 0:
        raise ValueError(f"{fn}: no pixel is darker than threshold={threshold}; the darkest "
                         f"grey level in the picture is {int(grey.min())}")
    g = _generator(rng)
    pick = np.minimum((_uniform(g, n) * rows.size).astype(np.int64), rows.size - 1)  # (n,)
    jitter = _uniform(g, (n, 2))                                        # (n, 2) in the pixel
    x = cols[pick] + jitter[:, 0]                                       # (n,) pixel units
    y = -(rows[pick] + jitter[:, 1])                                    # (n,) up is +y
    # The dark pixels' box, in the same units: columns [c0, c1 + 1), rows [r0, r1 + 1).
    x_lo, x_hi = cols.min(), cols.max() + 1.0
    y_lo, y_hi = -(rows.max() + 1.0), -float(rows.min())
    half = max(x_hi - x_lo, y_hi - y_lo) / 2
    points = np.stack([(x - (x_lo + x_hi) / 2) / half, (y - (y_lo + y_hi) / 2) / half], axis=1)
    return points.astype(np.float32)                                    # (n, 2)

# ---------------------------------------------------------------------------- image folders


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
