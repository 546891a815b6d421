"""Pictures with Pillow: image grids, GIFs, side-by-side panels, and which frames a GIF shows.

Images come in as NCHW float arrays in [-1, 1] (NumPy, CuPy or a Tensor) and leave as uint8
through `minidiff.data.to_uint8`. Every function returns what it drew, and saves it when given
a path (the parent folder is created).
"""
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .. import backend
from ..data import to_uint8
from ..tensor import Tensor
from ..validate import check_int, check_number

PAPER = (255, 255, 255)        # background
INK = (0, 0, 0)                # axes, ticks and text

# ---------------------------------------------------------------------------- helpers


def host(x):
    """A Tensor, CuPy or NumPy array as a NumPy array."""
    if isinstance(x, Tensor):
        x = x.data
    return np.asarray(backend.to_numpy(x))


def save(img, path, fn):
    """Save `img` at `path` (creating the folder); return the image. path=None saves nothing."""
    if path is None:
        return img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        img.save(path)
    except (ValueError, KeyError) as e:           # Pillow's "unknown file extension"
        raise ValueError(f"{fn}: cannot save an image to '{path}' ({e}); "
                         "use a .png or .gif path") from e
    return img


def _as_picture(frame, fn, k):
    """A frame: a PIL image as it is; an array (N, C, H, W) as a grid, (C, H, W) as one image."""
    if isinstance(frame, Image.Image):
        return frame
    x = host(frame)
    if x.ndim == 4:
        return image_grid(x)
    if x.ndim == 3:
        return image_grid(x[None], padding=0)
    raise ValueError(f"{fn}: item {k} must be a PIL image or an array (N, C, H, W) or "
                     f"(C, H, W) in [-1, 1], got shape {x.shape}")

# ---------------------------------------------------------------------------- image grids


MIN_WIDTH = 256       # pixels: what save_image_grid's default scale reaches, so it can be seen


def image_grid(x, nrow=None, padding=2, scale=1):
    """NCHW images in [-1, 1] (C = 1 or 3) tiled into one PIL image, row by row.

    `nrow` images go in each row (default: ceil(sqrt(N)), a square-ish grid). `padding` white
    pixels surround every image. `scale` enlarges the whole grid by pixel repetition, so one
    image pixel becomes a scale x scale block (nearest neighbour, nothing blurred); None picks
    the smallest scale that makes the grid at least MIN_WIDTH (256) pixels wide.
    """
    fn = "image_grid"
    x = host(x)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"{fn}: x must be images (N, C, H, W) with N >= 1 and C = 1 or 3, "
                         f"got shape {x.shape}")
    n, c, h, w = x.shape
    nrow = math.ceil(math.sqrt(n)) if nrow is None else check_int(f"{fn}: nrow", nrow, 1)
    padding = check_int(f"{fn}: padding", padding, 0)
    cols, rows = min(nrow, n), math.ceil(n / nrow)
    width = padding + cols * (w + padding)                              # GW, before scaling
    scale = math.ceil(MIN_WIDTH / width) if scale is None else check_int(f"{fn}: scale", scale, 1)
    pixels = to_uint8(x).transpose(0, 2, 3, 1)                          # (N, H, W, C)
    canvas = np.full((padding + rows * (h + padding), padding + cols * (w + padding), c),
                     255, dtype=np.uint8)                               # (GH, GW, C) white
    for k in range(n):
        r, col = divmod(k, cols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        canvas[top:top + h, left:left + w] = pixels[k]
    canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)         # (GH*s, GW*s, C)
    return Image.fromarray(canvas[:, :, 0] if c == 1 else canvas, "L" if c == 1 else "RGB")


def save_image_grid(x, path, nrow=None, padding=2, scale=None):
    """`image_grid(x, nrow, padding, scale)` saved at `path` (PNG); returns the image. By
    default (scale=None) a small grid is enlarged to at least 256 pixels wide: four 16x16
    digits in a row, 74 pixels wide at scale 1, are saved at scale 4 (296 pixels)."""
    return save(image_grid(x, nrow=nrow, padding=padding, scale=scale), path, "save_image_grid")

# ---------------------------------------------------------------------------- GIFs


def frame_indices(n_states, frames):
    """About `frames` of the chain's n_states states (0 = x_T, n_states - 1 = x_0), spaced
    quadratically: the shape appears in the last few percent of the reverse process, so the
    frames crowd there. Always holds the first and the last state."""
    n_states = check_int("frame_indices: n_states", n_states, 1)
    frames = check_int("frame_indices: frames", frames, 1)
    k = np.arange(frames + 1) / frames                                   # 0 … 1
    last = n_states - 1
    return {int(i) for i in np.round(last * (1 - (1 - k) ** 2))} | {0, last}


def save_gif(frames, path, duration_ms=100, loop=0):
    """An animated GIF of `frames`: PIL images, or [-1, 1] arrays (N, C, H, W) or (C, H, W).

    Every frame must have the same size. Each shows for duration_ms (GIF counts in 10 ms);
    loop=0 repeats forever. Pillow merges identical consecutive frames into one longer frame.
    Returns the list of PIL frames.
    """
    fn = "save_gif"
    duration_ms = check_number(f"{fn}: duration_ms", duration_ms, 0, lo_open=True)
    loop = check_int(f"{fn}: loop", loop, 0)
    pictures = [_as_picture(f, fn, k) for k, f in enumerate(frames)]
    if not pictures:
        raise ValueError(f"{fn}: frames is empty; a GIF needs at least one frame")
    for k, pic in enumerate(pictures):
        if pic.size != pictures[0].size:
            raise ValueError(f"{fn}: every frame must have the size of frame 0, "
                             f"{pictures[0].size}, but frame {k} is {pic.size}")
    mode = "L" if all(p.mode in ("1", "L") for p in pictures) else "RGB"
    pictures = [p.convert(mode) for p in pictures]
    stored = [_exact_palette(p) or p for p in pictures] if mode == "RGB" else pictures
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored[0].save(path, format="GIF", save_all=True, append_images=stored[1:],
                   duration=round(duration_ms), loop=loop)
    return pictures


def _exact_palette(picture):
    """An RGB picture with at most 256 colours as a palette ("P") image of exactly those
    colours; None if it has more (Pillow's GIF writer then picks 256 by median cut).

    A GIF stores at most 256 colours a frame. A scatter plot has about 100-250, which Pillow's
    median cut would find too, but several times slower."""
    counted = picture.getcolors(maxcolors=256)                          # None if more
    if counted is None:
        return None
    rgb = np.asarray(picture, dtype=np.uint32)                          # (H, W, 3)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]     # one int per colour
    colours = np.array([c for _, c in counted], dtype=np.uint32)        # (K, 3)
    keys = np.sort((colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2])    # (K,)
    img = Image.fromarray(np.searchsorted(keys, packed).astype(np.uint8), "P")  # key index
    palette = np.stack([keys >> 16, (keys >> 8) & 255, keys & 255], axis=1)     # (K, 3)
    img.putpalette(palette.astype(np.uint8).tobytes())
    return img

# ---------------------------------------------------------------------------- panels


def side_by_side(images, path=None, padding=8, labels=None):
    """Panels (PIL images or [-1, 1] arrays) in one row on white, top-aligned; labels above."""
    fn = "side_by_side"
    padding = check_int(f"{fn}: padding", padding, 0)
    panels = [_as_picture(im, fn, k).convert("RGB") for k, im in enumerate(images)]
    if not panels:
        raise ValueError(f"{fn}: images is empty")
    if labels is not None and len(labels) != len(panels):
        raise ValueError(f"{fn}: labels must give one label per image ({len(panels)}), "
                         f"got {len(labels)}")
    label_height = 16 if labels is not None else 0
    width = padding + sum(p.width + padding for p in panels)
    height = 2 * padding + label_height + max(p.height for p in panels)
    img = Image.new("RGB", (width, height), PAPER)
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    left = padding
    for k, panel in enumerate(panels):
        img.paste(panel, (left, padding + label_height))
        if labels is not None:
            text = str(labels[k])
            x0, _, x1, _ = draw.textbbox((0, 0), text, font=font)
            draw.text((left + (panel.width - (x1 - x0)) / 2, padding), text, fill=INK,
                      font=font)
        left += panel.width + padding
    return save(img, path, fn)
