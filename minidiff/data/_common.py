"""What every data module shares: the generator to draw from, argument checks, opening image
files safely, and the uint8 <-> [-1, 1] conversions at the edges (Ho et al. 2020, Sec. 3.3)."""
import contextlib
import warnings

import numpy as np
from PIL import Image

from .. import backend


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


def to_uint8(x):
    """[-1, 1] floats -> uint8 pixels, rounded and clipped: the inverse of x/127.5 - 1
    (Ho et al. 2020, Sec. 3.3).

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


def _on_white(img):
    """Any Pillow image as RGB, with transparent parts laid on white (not on black)."""
    if img.mode.startswith("I;16"):             # 16-bit grey: keep the top 8 bits (Pillow's
        top = np.asarray(img) >> 8              # own conversion would clip at 255 instead)
        img = Image.fromarray(top.astype(np.uint8), "L")
    img = img.convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, img).convert("RGB")


# What Pillow raises for a bad image file: not an image, truncated, a corrupt header, or a
# header over Image.MAX_IMAGE_PIXELS (the bomb guard, which _open_image makes one error).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                  Image.DecompressionBombWarning)


@contextlib.contextmanager
def _open_image(path):
    """Image.open(path) for a `with` block, refusing more than Image.MAX_IMAGE_PIXELS pixels.

    Pillow's decompression-bomb guard counts the pixels a header claims. Above twice
    MAX_IMAGE_PIXELS (89,478,485 by default) it raises DecompressionBombError; between once and
    twice it only warns (DecompressionBombWarning) and decodes anyway: up to 179 million pixels,
    0.7 GB as RGB, from a PNG of a few hundred KB. Inside this block that warning is an error
    too (some formats check again while loading): one limit, and no warning leaks out as noise.
    Set Image.MAX_IMAGE_PIXELS higher, or to None, to accept bigger pictures.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            yield img
