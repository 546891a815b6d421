"""Pictures with Pillow only: image grids, GIFs, scatter plots, loss curves, side-by-side panels.

Images come in as NCHW float arrays in [-1, 1] (NumPy, CuPy or a Tensor) and leave as uint8
through `minidiff.data.to_uint8`. Every function returns the PIL image it drew, and saves it
when given a path (the parent folder is created).

    save_image_grid(samples, "samples.png", nrow=8, scale=4)        # samples (64, 1, 16, 16)
    save_gif([image_grid(x) for x in trajectory], "reverse.gif", duration_ms=60)
    scatter_plot(points, "points.png", reference=data)              # points, data (n, 2)
    plot_loss_curve(steps, {"eps": losses_eps, "mu": losses_mu}, "loss.png")
"""
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import backend
from .data import to_uint8
from .tensor import Tensor

PAPER = (255, 255, 255)        # background
INK = (0, 0, 0)                # axes, ticks and text
POINT = (25, 55, 135)          # the plotted points: dark blue
REFERENCE = (200, 200, 200)    # the reference data behind them: light grey
# One colour per curve, in order (the "tab10" palette of Vega / matplotlib).
CURVE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                 (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127))

# ---------------------------------------------------------------------------- helpers


def _host(x):
    """A Tensor, CuPy or NumPy array as a NumPy array."""
    if isinstance(x, Tensor):
        x = x.data
    return np.asarray(backend.to_numpy(x))


def _save(img, path, fn):
    """Save `img` at `path` (creating the folder); return the image."""
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


def _font():
    return ImageFont.load_default()


def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _check_int(fn, name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{fn}: {name} must be an int >= {low}, got {value!r}")
    return int(value)


def _as_picture(frame, fn, k):
    """A frame: a PIL image as it is; an array (N, C, H, W) as a grid, (C, H, W) as one image."""
    if isinstance(frame, Image.Image):
        return frame
    x = _host(frame)
    if x.ndim == 4:
        return image_grid(x)
    if x.ndim == 3:
        return image_grid(x[None], padding=0)
    raise ValueError(f"{fn}: item {k} must be a PIL image or an array (N, C, H, W) or "
                     f"(C, H, W) in [-1, 1], got shape {x.shape}")

# ---------------------------------------------------------------------------- image grids


def image_grid(x, nrow=None, padding=2, scale=1):
    """NCHW images in [-1, 1] (C = 1 or 3) tiled into one PIL image, row by row.

    `nrow` images go in each row (default: ceil(sqrt(N)), a square-ish grid). `padding` white
    pixels surround every image. `scale` enlarges the whole grid by pixel repetition, so one
    image pixel becomes a scale x scale block (nearest neighbour, nothing blurred).
    """
    fn = "image_grid"
    x = _host(x)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"{fn}: x must be images (N, C, H, W) with N >= 1 and C = 1 or 3, "
                         f"got shape {x.shape}")
    n, c, h, w = x.shape
    nrow = math.ceil(math.sqrt(n)) if nrow is None else _check_int(fn, "nrow", nrow, 1)
    padding = _check_int(fn, "padding", padding, 0)
    scale = _check_int(fn, "scale", scale, 1)
    cols, rows = min(nrow, n), math.ceil(n / nrow)
    pixels = to_uint8(x).transpose(0, 2, 3, 1)                          # (N, H, W, C)
    canvas = np.full((padding + rows * (h + padding), padding + cols * (w + padding), c),
                     255, dtype=np.uint8)                               # (GH, GW, C) white
    for k in range(n):
        r, col = divmod(k, cols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        canvas[top:top + h, left:left + w] = pixels[k]
    canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)         # (GH*s, GW*s, C)
    return Image.fromarray(canvas[:, :, 0] if c == 1 else canvas, "L" if c == 1 else "RGB")


def save_image_grid(x, path, nrow=None, padding=2, scale=1):
    """`image_grid(x, nrow, padding, scale)` saved at `path` (PNG); returns the image."""
    return _save(image_grid(x, nrow=nrow, padding=padding, scale=scale), path, "save_image_grid")


def save_gif(frames, path, duration_ms=100, loop=0):
    """An animated GIF of `frames`: PIL images, or [-1, 1] arrays (N, C, H, W) or (C, H, W).

    Every frame must have the same size. Each shows for duration_ms (GIF counts in 10 ms);
    loop=0 repeats forever. Pillow merges identical consecutive frames into one longer frame.
    """
    fn = "save_gif"
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, (int, float)) \
            or not duration_ms > 0:
        raise ValueError(f"{fn}: duration_ms must be a number > 0, got {duration_ms!r}")
    loop = _check_int(fn, "loop", loop, 0)
    pictures = [_as_picture(f, fn, k) for k, f in enumerate(frames)]
    if not pictures:
        raise ValueError(f"{fn}: frames is empty; a GIF needs at least one frame")
    for k, pic in enumerate(pictures):
        if pic.size != pictures[0].size:
            raise ValueError(f"{fn}: every frame must have the size of frame 0, "
                             f"{pictures[0].size}, but frame {k} is {pic.size}")
    mode = "L" if all(p.mode in ("1", "L") for p in pictures) else "RGB"
    pictures = [p.convert(mode) for p in pictures]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=round(duration_ms), loop=loop)
    return pictures

# ---------------------------------------------------------------------------- axes


def _nice_number(x, round_to_nearest):
    """1, 2 or 5 times a power of ten near x (Heckbert 1990, "Nice numbers for graph labels")."""
    exponent = math.floor(math.log10(x))
    fraction = x / 10 ** exponent                                       # in [1, 10)
    if round_to_nearest:
        nice = 1 if fraction < 1.5 else 2 if fraction < 3 else 5 if fraction < 7 else 10
    else:
        nice = 1 if fraction <= 1 else 2 if fraction <= 2 else 5 if fraction <= 5 else 10
    return nice * 10 ** exponent


def nice_ticks(lo, hi, target=5):
    """About `target` round tick values inside [lo, hi] (Heckbert 1990)."""
    if not hi > lo:
        return [lo]
    step = _nice_number(_nice_number(hi - lo, False) / (target - 1), True)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def _label(value):
    """A tick label: '0.5', '1000', '1e-05'; no float noise such as 0.30000000000000004."""
    return f"{value:.6g}" if value != 0 else "0"


class _Axes:
    """A rectangle of the image that shows data coordinates [x0, x1] x [y0, y1], y up."""

    def __init__(self, draw, box, x_range, y_range):
        self.draw, self.font = draw, _font()
        self.left, self.top, self.right, self.bottom = box              # pixels, inclusive
        (self.x0, self.x1), (self.y0, self.y1) = x_range, y_range

    def to_pixels(self, x, y):
        """Data coordinates -> float pixel coordinates (column, row); rows grow downwards."""
        col = self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)
        row = self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)
        return col, row

    def frame(self, x_ticks, y_ticks, y_positions=None):
        """The box one pixel outside the area, tick marks and their labels."""
        d, f = self.draw, self.font
        d.rectangle([self.left - 1, self.top - 1, self.right + 1, self.bottom + 1], outline=INK)
        for value in x_ticks:
            col, _ = self.to_pixels(value, self.y0)
            col = round(col)
            d.line([col, self.bottom + 1, col, self.bottom + 4], fill=INK)
            w, _ = _text_size(d, _label(value), f)
            d.text((col - w / 2, self.bottom + 6), _label(value), fill=INK, font=f)
        positions = y_ticks if y_positions is None else y_positions
        for value, pos in zip(y_ticks, positions):
            _, row = self.to_pixels(self.x0, pos)
            row = round(row)
            d.line([self.left - 4, row, self.left - 1, row], fill=INK)
            w, h = _text_size(d, _label(value), f)
            d.text((self.left - 7 - w, row - h / 2 - 1), _label(value), fill=INK, font=f)

# ---------------------------------------------------------------------------- scatter plots


def _points(p, fn, name):
    if p is None:
        return None
    p = _host(p)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"{fn}: {name} must be points (n, 2), got shape {p.shape}")
    return p.astype(np.float64)


def _max_abs(point_sets):
    """The largest |coordinate| over the finite points of every set (0 if there are none)."""
    finite = [np.abs(p[np.isfinite(p).all(axis=1)]) for p in point_sets if p is not None]
    return max((float(a.max()) for a in finite if a.size), default=0.0)


def _limits(lim, point_sets, fn):
    """(x0, x1, y0, y1) from lim: None (fit the points), a number L ([-L, L]^2) or 4 numbers."""
    if lim is None:
        m = _max_abs(point_sets)
        half = 1.1 * m if m > 0 else 1.0
        return -half, half, -half, half
    if isinstance(lim, (int, float)) and not isinstance(lim, bool) and lim > 0:
        return -float(lim), float(lim), -float(lim), float(lim)
    if isinstance(lim, (tuple, list)) and len(lim) == 4 \
            and all(isinstance(v, (int, float)) for v in lim) \
            and lim[0] < lim[1] and lim[2] < lim[3]:
        return tuple(float(v) for v in lim)
    raise ValueError(f"{fn}: lim must be None, a number L > 0 (the square [-L, L]^2) or "
                     f"(xmin, xmax, ymin, ymax) with min < max, got {lim!r}")


def _stamp_points(canvas, axes, p, colour, radius):
    """Paint a (2 radius + 1)^2 square at each finite point inside the axes area (vectorised)."""
    p = p[np.isfinite(p).all(axis=1)]
    col, row = axes.to_pixels(p[:, 0], p[:, 1])
    col, row = np.rint(col).astype(np.int64), np.rint(row).astype(np.int64)
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r, c = row + dr, col + dc
            inside = (r >= axes.top) & (r <= axes.bottom) & (c >= axes.left) & (c <= axes.right)
            canvas[r[inside], c[inside]] = colour


def scatter_plot(points, path=None, reference=None, size=512, title=None, lim=None):
    """2-D points (dark blue) over optional reference points (light grey), in an axes box.

    lim: None fits every finite point (both axes alike, so shapes keep their proportions), a
    number L shows [-L, L]^2, or (xmin, xmax, ymin, ymax). Points outside it, and NaN or inf
    points, are not drawn. Returns the RGB PIL image (size x size), saved at `path` if given.
    """
    fn = "scatter_plot"
    size = _check_int(fn, "size", size, 128)
    points, reference = _points(points, fn, "points"), _points(reference, fn, "reference")
    x0, x1, y0, y1 = _limits(lim, [points, reference], fn)
    img = Image.new("RGB", (size, size), PAPER)
    draw = ImageDraw.Draw(img)
    top = 24 if title else 10
    side = min(size - 50 - 10, size - top - 24)                       # a square plotting area
    axes = _Axes(draw, (50, top, 50 + side - 1, top + side - 1), (x0, x1), (y0, y1))
    canvas = np.array(img)                                              # (size, size, 3)
    radius = 1 if size < 768 else 2
    if reference is not None:
        _stamp_points(canvas, axes, reference, REFERENCE, radius)
    _stamp_points(canvas, axes, points, POINT, radius)
    img.paste(Image.fromarray(canvas))
    axes.frame(nice_ticks(x0, x1), nice_ticks(y0, y1))
    if title:
        w, _ = _text_size(draw, title, axes.font)
        draw.text(((size - w) / 2, 6), title, fill=INK, font=axes.font)
    return _save(img, path, fn)


def scatter_gif(point_sets, path, reference=None, size=384, lim=None, duration_ms=80,
                titles=None):
    """A GIF of scatter plots, one per point set, all on the same axes: points flowing.

    lim=None fits the reference data (x 1.5) when there is one, else every point set.
    `titles` is None or one title per frame (e.g. "t = 999").
    """
    fn = "scatter_gif"
    sets = [_points(p, fn, f"point_sets[{k}]") for k, p in enumerate(point_sets)]
    if not sets:
        raise ValueError(f"{fn}: point_sets is empty; a GIF needs at least one frame")
    if titles is not None and len(titles) != len(sets):
        raise ValueError(f"{fn}: titles must give one title per point set ({len(sets)}), "
                         f"got {len(titles)}")
    reference = _points(reference, fn, "reference")
    if lim is None and reference is not None:
        lim = 1.5 * _max_abs([reference]) or None
    lim = _limits(lim, sets, fn)
    frames = [scatter_plot(p, reference=reference, size=size, lim=lim,
                           title=None if titles is None else titles[k])
              for k, p in enumerate(sets)]
    return save_gif(frames, path, duration_ms=duration_ms)

# ---------------------------------------------------------------------------- loss curves


def smooth_curve(values, smooth):
    """An exponential moving average with bias correction, so it starts at values[0].

    m_k = smooth m_{k-1} + (1 - smooth) v_k, shown as m_k / (1 - smooth^k): the debiasing of
    Kingma & Ba 2015 (Adam), Sec. 3. smooth=0 returns the values unchanged.
    """
    if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0 <= smooth < 1:
        raise ValueError(f"smooth_curve: smooth must be a number in [0, 1), got {smooth!r}")
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    m = 0.0
    for k, v in enumerate(values, start=1):
        m = smooth * m + (1 - smooth) * v
        out[k - 1] = m / (1 - smooth ** k)
    return out


def _curves(steps, losses, log_scale, fn):
    """{label: (steps, values)} with the non-finite points dropped."""
    steps = _host(steps).astype(np.float64)
    named = dict(losses) if isinstance(losses, dict) else {"loss": losses}
    if steps.ndim != 1 or not named:
        raise ValueError(f"{fn}: steps must be 1-D and losses non-empty, got steps of shape "
                         f"{steps.shape} and {len(named)} curves")
    curves = {}
    for label, values in named.items():
        values = _host(values).astype(np.float64)
        if values.shape != steps.shape:
            raise ValueError(f"{fn}: curve {label!r} has shape {values.shape}, but steps has "
                             f"{steps.shape}; give one loss per step")
        keep = np.isfinite(values) & np.isfinite(steps)
        if log_scale and np.any(values[keep] <= 0):
            raise ValueError(f"{fn}: log_scale=True needs losses > 0, but curve {label!r} "
                             f"reaches {values[keep].min():.4g}; pass log_scale=False")
        curves[label] = (steps[keep], values[keep])
    if not any(len(s) for s, _ in curves.values()):
        raise ValueError(f"{fn}: no finite loss to plot")
    return curves


def _log_ticks(lo, hi):
    """Ticks for a log10 axis showing 10^lo .. 10^hi: (values, log10 positions).

    Powers of ten when at least three fit; else 1, 2 and 5 times them; else round linear values.
    """
    inside = [e for e in range(math.floor(lo), math.ceil(hi) + 1) if lo <= e <= hi]
    values = [10.0 ** e for e in inside]
    if len(values) < 3:
        values = [m * 10.0 ** e for e in range(math.floor(lo), math.ceil(hi) + 1)
                  for m in (1, 2, 5) if lo <= math.log10(m) + e <= hi]
    if len(values) < 2:
        values = [v for v in nice_ticks(10 ** lo, 10 ** hi) if v > 0]
    return values, [math.log10(v) for v in values]


def _blend(colour, amount):
    """`colour` mixed with white: amount=1 is the colour, 0 is white."""
    return tuple(round(255 - amount * (255 - c)) for c in colour)


def plot_loss_curve(steps, losses, path=None, log_scale=True, smooth=0.9, size=(640, 400),
                    title=None):
    """Loss against step, as lines in an axes box with tick labels, saved at `path` if given.

    `losses` is one array (as long as `steps`) or a dict {label: array} for several labelled
    curves sharing `steps`. With smooth > 0 each raw curve is drawn pale and its smoothed
    version (`smooth_curve`) over it. NaN and inf are skipped; log_scale needs losses > 0.
    """
    fn = "plot_loss_curve"
    width, height = size
    _check_int(fn, "size[0]", width, 200)
    _check_int(fn, "size[1]", height, 150)
    curves = _curves(steps, losses, log_scale, fn)
    smoothed = {k: smooth_curve(v, smooth) for k, (_, v) in curves.items()}   # checks smooth

    def y_of(v):
        return np.log10(v) if log_scale else v

    all_x = np.concatenate([s for s, _ in curves.values()])
    all_y = y_of(np.concatenate([v for _, v in curves.values()]))
    x0, x1 = float(all_x.min()), float(all_x.max())
    y0, y1 = float(all_y.min()), float(all_y.max())
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = 0.05 * (y1 - y0) if y1 > y0 else 0.5
    y0, y1 = y0 - pad, y1 + pad
    img = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(img)
    top = 26 if title else 12
    axes = _Axes(draw, (62, top, width - 14, height - 40), (x0, x1), (y0, y1))
    for k, (label, (xs, values)) in enumerate(curves.items()):
        colour = CURVE_COLOURS[k % len(CURVE_COLOURS)]
        layers = [(values, colour, 2)] if smooth == 0 else \
            [(values, _blend(colour, 0.3), 1), (smoothed[label], colour, 2)]
        for ys, fill, line_width in layers:
            cols, rows = axes.to_pixels(xs, y_of(ys))
            draw.line(list(zip(cols.tolist(), rows.tolist())), fill=fill, width=line_width)
    if log_scale:
        y_values, y_positions = _log_ticks(y0, y1)
        axes.frame(nice_ticks(x0, x1), y_values, y_positions)
    else:
        axes.frame(nice_ticks(x0, x1), nice_ticks(y0, y1))
    w, _ = _text_size(draw, "step", axes.font)
    draw.text(((axes.left + axes.right - w) / 2, height - 18), "step", fill=INK, font=axes.font)
    draw.text((4, 2), "loss (log scale)" if log_scale else "loss", fill=INK, font=axes.font)
    if title:
        w, _ = _text_size(draw, title, axes.font)
        draw.text(((width - w) / 2, 2), title, fill=INK, font=axes.font)
    if isinstance(losses, dict):                                        # the legend
        for k, label in enumerate(curves):
            colour = CURVE_COLOURS[k % len(CURVE_COLOURS)]
            w, _ = _text_size(draw, str(label), axes.font)
            row = axes.top + 8 + 14 * k
            draw.line([axes.right - w - 34, row, axes.right - w - 14, row], fill=colour, width=3)
            draw.text((axes.right - w - 8, row - 6), str(label), fill=INK, font=axes.font)
    return _save(img, path, fn)

# ---------------------------------------------------------------------------- panels


def side_by_side(images, path=None, padding=8, labels=None):
    """Panels (PIL images or [-1, 1] arrays) in one row on white, top-aligned; labels above."""
    fn = "side_by_side"
    padding = _check_int(fn, "padding", padding, 0)
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
    draw = ImageDraw.Draw(img)
    left = padding
    for k, panel in enumerate(panels):
        img.paste(panel, (left, padding + label_height))
        if labels is not None:
            w, _ = _text_size(draw, str(labels[k]), _font())
            draw.text((left + (panel.width - w) / 2, padding), str(labels[k]), fill=INK,
                      font=_font())
        left += panel.width + padding
    return _save(img, path, fn)
