"""Scatter plots and loss curves, drawn by matplotlib and handed back as PIL images.

matplotlib draws the axes, picks round tick values and does the log scale. Two rules keep it
well-behaved inside a library:
- no pyplot: each picture is a `matplotlib.figure.Figure` on its own Agg canvas
  (`FigureCanvasAgg`), so nothing needs a display, no global state is touched, and a figure is
  freed like any other object once nothing refers to it;
- a lazy import: matplotlib takes about a second to import, so the first plot pays for it, not
  `import minidiff`.
Sizes are in pixels: a figure w pixels wide is w / DPI inches at DPI dots per inch, and a
length of one pixel is PX points (matplotlib measures lines, markers and fonts in points).
"""
import numpy as np
from PIL import Image

from ..validate import check_bool, check_int, check_number
from .pictures import INK, PAPER, host, save, save_gif

DPI = 100
PX = 72 / DPI                  # one pixel, in points (1/72 inch)
POINT = (25, 55, 135)          # the plotted points: dark blue
REFERENCE = (200, 200, 200)    # the reference data behind them: light grey
# One colour per curve, in order (the "tab10" palette of Vega / matplotlib).
CURVE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                 (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127))
# The scatter plot's layout in pixels: room for tick labels on the left and below, and for a
# title above when there is one. The plotting area is the largest square that fits.
SCATTER_MARGIN = {"left": 46, "right": 10, "bottom": 24, "top": 10, "title": 20}
# The loss curve's, which also has axis labels. Fixed margins rather than matplotlib's
# "constrained" layout, which measures every label first and takes most of the drawing time.
LOSS_MARGIN = {"left": 84, "right": 14, "bottom": 46, "top": 12, "title": 20}


def _rgb(colour):
    """(r, g, b) in 0..255 as matplotlib's (r, g, b) in [0, 1]."""
    return tuple(c / 255 for c in colour)


def _figure(width, height):
    """An empty white Figure of width x height pixels on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg   # lazily: see the docstring
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor=_rgb(PAPER))
    FigureCanvasAgg(fig)                                   # attaches itself as fig.canvas
    return fig


def _black_frame(ax):
    """The axes' frame ("spines") and tick marks in black, one pixel wide."""
    for spine in ax.spines.values():
        spine.set_linewidth(PX)
        spine.set_color(_rgb(INK))
    ax.tick_params(width=PX, color=_rgb(INK))


def _pixels(fig):
    """What `fig`'s canvas holds now, copied into an RGB PIL image (the next draw reuses the
    canvas)."""
    rgba = np.asarray(fig.canvas.buffer_rgba())            # (H, W, 4), a view of the canvas
    return Image.fromarray(rgba[:, :, :3].copy(), "RGB")

# ---------------------------------------------------------------------------- scatter plots


def _points(p, fn, name):
    if p is None:
        return None
    p = host(p)
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


class _ScatterFigure:
    """A scatter figure drawn once and then re-rendered per frame ("blitting").

    Laying out and drawing the axes, ticks and labels costs far more than a few thousand
    dots, and only the dark-blue points and the title change between frames. So the first
    draw leaves those two out (they are "animated" artists, which `canvas.draw()` skips) and
    keeps the pixels as a background; each frame restores that background and draws just the
    points, the frame over them, and the title.
    """

    def __init__(self, size, limits, reference, titled):
        m = SCATTER_MARGIN
        top = m["top"] + (m["title"] if titled else 0)
        side = min(size - m["left"] - m["right"], size - top - m["bottom"])
        self.fig = _figure(size, size)
        # add_axes takes [left, bottom, width, height] as fractions of the figure, y up
        ax = self.ax = self.fig.add_axes([m["left"] / size, 1 - (top + side) / size,
                                          side / size, side / size])
        # each point a crisp square of 3 x 3 pixels (4 x 4 from size 768): without
        # anti-aliasing a frame keeps few colours, which a GIF stores exactly and quickly
        dots = {"linestyle": "none", "marker": "s", "markeredgewidth": 0, "antialiased": False,
                "markersize": (3 if size < 768 else 4) * PX}
        if reference is not None:
            ax.plot(reference[:, 0], reference[:, 1], color=_rgb(REFERENCE), **dots)
        self.points, = ax.plot([], [], color=_rgb(POINT), animated=True, **dots)
        ax.set_xlim(limits[0], limits[1])
        ax.set_ylim(limits[2], limits[3])
        ax.tick_params(labelsize=7, length=3)
        _black_frame(ax)
        self.title = None
        if titled:           # parse_math=False: shown as written, "$" and all, never as TeX
            self.title = ax.set_title("", fontsize=8, pad=4, parse_math=False, animated=True)
        self.fig.canvas.draw()
        self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def render(self, points, title=None):
        """The figure with `points` (n, 2) in dark blue and `title` above; an RGB PIL image.
        matplotlib skips NaN and inf points and clips the rest to the axes."""
        self.fig.canvas.restore_region(self.background)
        self.points.set_data(points[:, 0], points[:, 1])
        self.ax.draw_artist(self.points)
        for spine in self.ax.spines.values():             # the frame stays on top
            self.ax.draw_artist(spine)
        if self.title is not None:
            self.title.set_text("" if title is None else str(title))
            self.ax.draw_artist(self.title)
        return _pixels(self.fig)


def scatter_plot(points, path=None, reference=None, size=512, title=None, lim=None):
    """2-D points (dark blue) over optional reference points (light grey), in an axes box.

    lim: None fits every finite point (both axes alike, so shapes keep their proportions), a
    number L shows [-L, L]^2, or (xmin, xmax, ymin, ymax). Points outside it, and NaN or inf
    points, are not drawn. Returns the RGB PIL image (size x size), saved at `path` if given.
    """
    fn = "scatter_plot"
    size = check_int(f"{fn}: size", size, 128)
    points, reference = _points(points, fn, "points"), _points(reference, fn, "reference")
    limits = _limits(lim, [points, reference], fn)
    img = _ScatterFigure(size, limits, reference, titled=bool(title)).render(points, title)
    return save(img, path, fn)


def scatter_gif(point_sets, path, reference=None, size=384, lim=None, duration_ms=80,
                titles=None):
    """A GIF of scatter plots, one per point set, all on the same axes: points flowing.

    lim=None fits the reference data (x 1.5) when there is one, else every point set.
    `titles` is None or one title per frame (e.g. "t = 999"). Returns the PIL frames.
    """
    fn = "scatter_gif"
    size = check_int(f"{fn}: size", size, 128)
    sets = [_points(p, fn, f"point_sets[{k}]") for k, p in enumerate(point_sets)]
    if not sets:
        raise ValueError(f"{fn}: point_sets is empty; a GIF needs at least one frame")
    if titles is not None and len(titles) != len(sets):
        raise ValueError(f"{fn}: titles must give one title per point set ({len(sets)}), "
                         f"got {len(titles)}")
    reference = _points(reference, fn, "reference")
    if lim is None and reference is not None:
        lim = 1.5 * _max_abs([reference]) or None
    figure = _ScatterFigure(size, _limits(lim, sets, fn), reference, titled=titles is not None)
    frames = [figure.render(p, None if titles is None else titles[k])
              for k, p in enumerate(sets)]
    return save_gif(frames, path, duration_ms=duration_ms)

# ---------------------------------------------------------------------------- loss curves


def smooth_curve(values, smooth):
    """An exponential moving average with bias correction, so it starts at values[0].

    m_k = smooth m_{k-1} + (1 - smooth) v_k, shown as m_k / (1 - smooth^k): the debiasing of
    Kingma & Ba 2015 (Adam), Sec. 3. smooth=0 returns the values unchanged.
    """
    smooth = check_number("smooth_curve: smooth", smooth, 0, 1, hi_open=True)
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    m = 0.0
    for k, v in enumerate(values, start=1):
        m = smooth * m + (1 - smooth) * v
        out[k - 1] = m / (1 - smooth ** k)
    return out


def _curves(steps, losses, fn):
    """{label: (steps, values)} with the non-finite points dropped."""
    steps = host(steps).astype(np.float64)
    named = dict(losses) if isinstance(losses, dict) else {"loss": losses}
    if steps.ndim != 1 or not named:
        raise ValueError(f"{fn}: steps must be 1-D and losses non-empty, got steps of shape "
                         f"{steps.shape} and {len(named)} curves")
    curves = {}
    for label, values in named.items():
        values = host(values).astype(np.float64)
        if values.shape != steps.shape:
            raise ValueError(f"{fn}: curve {label!r} has shape {values.shape}, but steps has "
                             f"{steps.shape}; give one loss per step")
        keep = np.isfinite(values) & np.isfinite(steps)
        curves[label] = (steps[keep], values[keep])
    if not any(len(s) for s, _ in curves.values()):
        raise ValueError(f"{fn}: no finite loss to plot")
    return curves


def _choose_log_scale(log_scale, curves, fn):
    """True or False as given (True needs every loss > 0), or None: log iff every loss > 0."""
    if isinstance(log_scale, np.bool_):                   # e.g. (losses > 0).all()
        log_scale = bool(log_scale)
    if log_scale is None:
        return all(np.all(v > 0) for _, v in curves.values())
    if check_bool(f"{fn}: log_scale", log_scale):
        for label, (_, v) in curves.items():
            if np.any(v <= 0):
                raise ValueError(f"{fn}: log_scale=True needs losses > 0, but curve {label!r} "
                                 f"reaches {v.min():.4g}; pass log_scale=False or None")
    return log_scale


def plot_loss_curve(steps, losses, path=None, log_scale=True, smooth=0.9, size=(640, 400),
                    title=None):
    """Loss against step, as lines in an axes box with tick labels, saved at `path` if given.

    `losses` is one array (as long as `steps`) or a dict {label: array} for several labelled
    curves sharing `steps`, with a legend. With smooth > 0 each raw curve is drawn pale and its
    smoothed version (`smooth_curve`) over it. NaN and inf losses (a diverged step) are dropped:
    the line joins their neighbours and the smoothing skips them. log_scale: True (every loss
    must be > 0), False, or None to use a log scale exactly when every loss is > 0.
    `size` is (width, height) in pixels. Returns the RGB PIL image.
    """
    fn = "plot_loss_curve"
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise ValueError(f"{fn}: size must be (width, height) in pixels, got {size!r}")
    width = check_int(f"{fn}: size[0]", size[0], 200)
    height = check_int(f"{fn}: size[1]", size[1], 150)
    curves = _curves(steps, losses, fn)
    log_scale = _choose_log_scale(log_scale, curves, fn)
    smoothed = {k: smooth_curve(v, smooth) for k, (_, v) in curves.items()}   # checks smooth
    m = LOSS_MARGIN
    top = m["top"] + (m["title"] if title else 0)
    fig = _figure(width, height)
    ax = fig.add_axes([m["left"] / width, m["bottom"] / height,              # [left, bottom,
                       1 - (m["left"] + m["right"]) / width,                 #  width, height]
                       1 - (m["bottom"] + top) / height])                    # as fractions
    handles = []
    for k, (label, (xs, values)) in enumerate(curves.items()):
        colour = _rgb(CURVE_COLOURS[k % len(CURVE_COLOURS)])
        line = {"color": colour, "marker": "o" if len(xs) == 1 else None}   # a lone point
        if smooth > 0:
            ax.plot(xs, values, linewidth=PX, alpha=0.3, **line)        # raw, pale
            values = smoothed[label]
        handles += ax.plot(xs, values, linewidth=2 * PX, **line)
    if log_scale:
        ax.set_yscale("log")
    _black_frame(ax)
    ax.grid(True, color=(0.92, 0.92, 0.92), linewidth=PX)
    ax.set_axisbelow(True)                                 # the grid behind the curves
    ax.tick_params(which="both", labelsize=8)             # "both": minor ticks' labels too
    ax.set_xlabel("step", fontsize=9)
    # the y label at the figure's left edge, not left of the tick labels: those of a log
    # scale, such as 4 x 10^-4, can be wide enough to push an axis label out of the figure
    fig.text(4 / width, 0.5, "loss (log scale)" if log_scale else "loss", fontsize=9,
             rotation=90, ha="left", va="center")
    if title:
        ax.set_title(str(title), fontsize=10, parse_math=False)
    if isinstance(losses, dict):
        # labels passed explicitly, so one starting with "_" is shown too; never TeX
        legend = ax.legend(handles, [str(label) for label in curves], fontsize=8,
                           loc="upper right")
        for text in legend.get_texts():
            text.set_parse_math(False)
    fig.canvas.draw()
    return save(_pixels(fig), path, fn)
