"""A picture turned into 2-D points: its dark pixels become the data."""
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..validate import check_int
from ._common import _DECODE_ERRORS, _generator, _on_white, _open_image, _uniform


def default_picture_path():
    """The project's own picture, a cartoon cat drawn by minidiff/assets/make_picture.py."""
    return Path(__file__).resolve().parent.parent / "assets" / "mascot.png"


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
        with _open_image(path) as img:           # refuses more than Image.MAX_IMAGE_PIXELS
            img.load()
            return img.copy()
    except _DECODE_ERRORS as e:
        raise ValueError(f"{fn}: could not read the picture '{path}': {e}") from e


def points_from_picture(path_or_image, n, threshold=128, rng=None):
    """The dark pixels of a picture as n points in the plane: each dark pixel, jittered.

    A pixel is dark when its grey level (0 black .. 255 white) is below `threshold`. We draw n
    dark pixels uniformly with replacement and a uniform position inside each, so the points are
    uniform on the dark area. The y axis points up. The box around the dark pixels is centred
    on 0 and its longer side scaled to [-1, 1]; the aspect ratio is kept.

    A file that cannot be read, or whose header claims more than PIL.Image.MAX_IMAGE_PIXELS
    pixels (Pillow's decompression-bomb limit), is a ValueError naming the file.
    """
    fn = "points_from_picture"
    n = check_int(f"{fn}: n", n, 1)
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
