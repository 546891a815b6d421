"""Tests for minidiff.viz: grids, GIFs, GIF frames and panels (Pillow); scatter plots and loss
curves (matplotlib), checked through their pixels: the axes box is found in the image (its
black frame) and a point must land where the linear map from the limits to that box puts it,
a log scale must straighten an exponential, a NaN must act as a missing step."""
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from minidiff import Tensor, viz


def _images(u):
    """uint8 pixels (N, C, H, W) -> the [-1, 1] floats they stand for (Ho et al., Sec. 3.3)."""
    return u.astype(np.float32) / 127.5 - 1

# ---------------------------------------------------------------------------- image grids


@given(n=st.integers(1, 7), c=st.sampled_from([1, 3]), h=st.integers(1, 5),
       w=st.integers(1, 5), nrow=st.one_of(st.none(), st.integers(1, 8)),
       padding=st.integers(0, 3), scale=st.integers(1, 3), seed=st.integers(0, 1000))
def test_grid_puts_each_pixel_where_it_belongs(n, c, h, w, nrow, padding, scale, seed):
    u = np.random.default_rng(seed).integers(0, 256, (n, c, h, w)).astype(np.uint8)
    grid = np.asarray(viz.image_grid(_images(u), nrow=nrow, padding=padding, scale=scale))
    per_row = min(n, math.ceil(math.sqrt(n)) if nrow is None else nrow)
    rows = math.ceil(n / per_row)
    assert grid.shape[:2] == (scale * (padding + rows * (h + padding)),
                              scale * (padding + per_row * (w + padding)))
    grid = grid.reshape(grid.shape[0], grid.shape[1], c)             # (GH, GW, C)
    covered = np.zeros(grid.shape[:2], bool)
    for k in range(n):
        r, col = divmod(k, per_row)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        for i in range(h):
            for j in range(w):
                block = grid[scale * (top + i):scale * (top + i + 1),
                             scale * (left + j):scale * (left + j + 1)]    # (s, s, C)
                assert np.all(block == u[k, :, i, j])
                covered[scale * (top + i):scale * (top + i + 1),
                        scale * (left + j):scale * (left + j + 1)] = True
    assert np.all(grid[~covered] == 255)                              # padding is white


def test_grid_accepts_tensors_and_saves_png(tmp_path):
    u = np.random.default_rng(0).integers(0, 256, (4, 3, 6, 5)).astype(np.uint8)
    img = viz.save_image_grid(Tensor(_images(u)), tmp_path / "sub" / "grid.png", nrow=2)
    assert img.mode == "RGB"
    with Image.open(tmp_path / "sub" / "grid.png") as back:
        np.testing.assert_array_equal(np.asarray(back), np.asarray(img))


@pytest.mark.parametrize("shape", [(3, 6, 6), (2, 2, 6, 6), (0, 1, 4, 4)])
def test_grid_refuses_bad_shapes_and_nrow(shape):
    with pytest.raises(ValueError, match=re.escape(f"N >= 1 and C = 1 or 3, got shape {shape}")):
        viz.image_grid(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="nrow: must be an int >= 1, got 0"):
        viz.image_grid(np.zeros((2, 1, 3, 3), np.float32), nrow=0)

# ---------------------------------------------------------------------------- GIFs


def test_gif_frames_count_size_duration_and_pixels(tmp_path):
    greys = [0, 80, 160, 240]
    frames = [Image.new("L", (20, 10), g) for g in greys]
    path = tmp_path / "anim.gif"
    viz.save_gif(frames, path, duration_ms=50)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.size == (20, 10)
        for k, g in enumerate(greys):
            gif.seek(k)
            assert gif.info["duration"] == 50
            assert np.all(np.asarray(gif.convert("L")) == g)


def test_gif_of_colour_arrays(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [_images(np.array(c, np.uint8)[None, :, None, None] * np.ones((2, 1, 4, 4),
                                                                          np.uint8))
              for c in colours]                                      # (2, 3, 4, 4) each
    viz.save_gif(frames, tmp_path / "c.gif", duration_ms=30)
    grid = viz.image_grid(frames[0])
    with Image.open(tmp_path / "c.gif") as gif:
        assert gif.n_frames == 3 and gif.size == grid.size
        for k, colour in enumerate(colours):
            gif.seek(k)
            rgb = np.asarray(gif.convert("RGB"))
            assert tuple(rgb[3, 3]) == colour                        # inside the first image
            assert tuple(rgb[0, 0]) == (255, 255, 255)               # the padding


def test_gif_errors(tmp_path):
    with pytest.raises(ValueError, match="frame 1 is \\(5, 5\\)"):
        viz.save_gif([Image.new("L", (4, 4)), Image.new("L", (5, 5))], tmp_path / "x.gif")
    with pytest.raises(ValueError, match="frames is empty"):
        viz.save_gif([], tmp_path / "x.gif")
    with pytest.raises(ValueError, match=re.escape("duration_ms: must be a finite number in (0, "
                                                   "inf], got 0")):
        viz.save_gif([Image.new("L", (4, 4))], tmp_path / "x.gif", duration_ms=0)
    assert not (tmp_path / "x.gif").exists()


@given(n_colours=st.integers(1, 256), seed=st.integers(0, 1000))
def test_gif_keeps_up_to_256_colours_exactly(tmp_path_factory, n_colours, seed):
    rng = np.random.default_rng(seed)
    palettes = rng.integers(0, 256, (2, n_colours, 3), dtype=np.uint8)    # maybe repeated
    which = np.concatenate([np.arange(n_colours), rng.integers(0, n_colours, 32 * 40)])
    frames = [Image.fromarray(p[which[:32 * 40]].reshape(32, 40, 3), "RGB") for p in palettes]
    path = tmp_path_factory.mktemp("gif") / "exact.gif"
    viz.save_gif(frames, path)
    with Image.open(path) as gif:
        for k, frame in enumerate(frames):
            gif.seek(k)
            np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), np.asarray(frame))


def test_gif_of_more_than_256_colours_is_approximated(tmp_path):
    r, g = np.meshgrid(np.arange(64) * 4, np.arange(64) * 4)          # 4096 colours
    pixels = np.stack([r, g, np.full_like(r, 128)], axis=2).astype(np.uint8)
    viz.save_gif([Image.fromarray(pixels, "RGB")], tmp_path / "a.gif")
    with Image.open(tmp_path / "a.gif") as gif:
        back = np.asarray(gif.convert("RGB")).astype(int)
    assert len(np.unique(back.reshape(-1, 3), axis=0)) <= 256
    assert np.abs(back - pixels).mean() < 8                          # median cut: close

# ---------------------------------------------------------------------------- GIF frames


def test_gif_frames_include_both_ends_and_crowd_towards_x0():
    for n_states, frames in ((1001, 50), (11, 5), (6, 50), (2, 2)):
        idx = sorted(viz.frame_indices(n_states, frames))
        assert idx[0] == 0 and idx[-1] == n_states - 1 and len(idx) <= frames + 1
        gaps = np.diff(idx)
        assert (gaps > 0).all() and (np.diff(gaps) <= 0).all(), gaps   # never widening
    assert viz.frame_indices(1, 10) == {0}
    with pytest.raises(ValueError, match="frames: must be an int >= 1, got 0"):
        viz.frame_indices(10, 0)
    with pytest.raises(ValueError, match="n_states: must be an int >= 1, got 0"):
        viz.frame_indices(0, 10)

# ---------------------------------------------------------------------------- scatter plots


def _plot_area(img):
    """(left, top, right, bottom): where the long black lines of the axes' frame are."""
    black = np.all(np.asarray(img) == 0, axis=2)                      # (H, W)
    cols = np.nonzero(black.sum(axis=0) > 0.5 * img.height)[0]
    rows = np.nonzero(black.sum(axis=1) > 0.5 * img.width)[0]
    assert len(cols) == 2 and len(rows) == 2, (cols, rows)
    return cols[0], rows[0], cols[1], rows[1]


def _changed(a, b):
    return np.any(np.asarray(a) != np.asarray(b), axis=2)             # (H, W)


def _blank(size=512, **kwargs):
    return viz.scatter_plot(np.zeros((0, 2)), size=size, **kwargs)


@pytest.mark.parametrize("size", [128, 301, (200, 150), (1001, 333)])
def test_plots_have_the_requested_pixel_size(tmp_path, size):
    path = tmp_path / "plot.png"
    if np.isscalar(size):
        img, size = viz.scatter_plot(np.zeros((3, 2)), path, size=size, title="t"), (size, size)
    else:
        img = viz.plot_loss_curve([0, 1], [2, 1], path, size=size, title="t")
    assert img.mode == "RGB" and img.size == size
    with Image.open(path) as back:
        np.testing.assert_array_equal(np.asarray(back.convert("RGB")), np.asarray(img))


@pytest.mark.parametrize("lim, size, dot", [(1, 384, 3), ((-2, 2, 0, 1), 256, 3), (3, 800, 4)])
def test_scatter_puts_points_where_the_axes_map_says(lim, size, dot):
    x0, x1, y0, y1 = (-lim, lim, -lim, lim) if np.isscalar(lim) else lim
    left, top, right, bottom = _plot_area(_blank(size, lim=lim))
    fractions = np.array([[0.5, 0.5], [0.75, 0.75], [0.25, 0.625], [0.95, 0.05], [0.1, 0.9]])
    points = np.array([x0, y0]) + fractions * np.array([x1 - x0, y1 - y0])
    img = np.asarray(viz.scatter_plot(points, lim=lim, size=size))
    rows, cols = np.nonzero(np.all(img == viz.POINT, axis=2))
    assert len(rows) == len(points) * dot * dot                       # dot x dot squares
    assert _changed(img, _blank(size, lim=lim)).sum() == len(rows)    # and nothing else
    for fx, fy in fractions:
        want_col = left + fx * (right - left)                         # x to the right
        want_row = bottom - fy * (bottom - top)                       # y up
        near = (np.abs(cols - want_col) < 8) & (np.abs(rows - want_row) < 8)
        assert near.sum() == dot * dot
        assert abs(cols[near].mean() - want_col) <= 1 and abs(rows[near].mean() - want_row) <= 1


def test_scatter_layers_grey_reference_under_points_under_the_frame():
    blank, ref = _blank(200, lim=1), np.array([[0.0, 0.0], [0.5, 0.5]])
    only_ref = viz.scatter_plot(np.zeros((0, 2)), reference=ref, lim=1, size=200)
    rows, cols = np.nonzero(_changed(only_ref, blank))
    assert len(rows) == 2 * 9 and np.all(np.asarray(only_ref)[rows, cols] == viz.REFERENCE)
    under = _changed(viz.scatter_plot(ref[:1], lim=1, size=200), blank)
    both = viz.scatter_plot(ref[:1], reference=ref, lim=1, size=200)
    assert np.all(np.asarray(both)[under] == viz.POINT)               # the point wins
    on_frame = viz.scatter_plot(np.array([[-1.0, 0.0], [0.3, 1.0]]), lim=1, size=200)
    ink = np.all(np.asarray(blank) == 0, axis=2)                      # frame, ticks, labels
    assert np.all(np.asarray(on_frame)[ink] == 0)                     # the frame wins


def test_scatter_skips_nan_inf_and_points_outside_lim():
    img = viz.scatter_plot(np.array([[np.nan, 0], [5, 5], [0, np.inf], [-1e300, 0]]), lim=1)
    np.testing.assert_array_equal(np.asarray(img), np.asarray(_blank(lim=1)))


def test_scatter_fits_limits_to_the_points():
    img = viz.scatter_plot(np.array([[3.0, -2.0]]), title="hello", size=300)
    left, top, right, bottom = _plot_area(img)
    rows, cols = np.nonzero(np.all(np.asarray(img) == viz.POINT, axis=2))
    # lim=None: [-3.3, 3.3] on both axes, so x = 3 sits at 3.3 + 3 = 6.3 of 6.6 widths.
    assert abs(cols.mean() - (left + 6.3 / 6.6 * (right - left))) <= 1
    assert abs(rows.mean() - (bottom - 1.3 / 6.6 * (bottom - top))) <= 1


def test_scatter_title_is_drawn_above_the_axes_as_written():
    a, b = (viz.scatter_plot(np.zeros((1, 2)), lim=1, size=256, title=t) for t in ("a", "$b$"))
    left, top, right, bottom = _plot_area(a)
    rows, cols = np.nonzero(_changed(a, b))
    assert len(rows) > 0 and rows.max() < top                         # only the title differs
    dollars = viz.scatter_plot(np.zeros((1, 2)), lim=1, size=256, title="$$")
    assert _changed(dollars, _blank(256, lim=1, title=" ")).any()     # "$$" is text, not TeX


@pytest.mark.parametrize("kwargs, match", [
    ({"points": np.zeros((4, 3))}, "points must be points \\(n, 2\\), got shape \\(4, 3\\)"),
    ({"points": np.zeros((4, 2)), "reference": np.zeros(4)}, "reference must be points"),
    ({"points": np.zeros((4, 2)), "lim": -1}, "lim must be None, a number L > 0"),
    ({"points": np.zeros((4, 2)), "lim": (1, 0, 0, 1)}, "with min < max, got \\(1, 0, 0, 1\\)"),
    ({"points": np.zeros((4, 2)), "size": 64}, "size: must be an int >= 128, got 64"),
])
def test_scatter_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.scatter_plot(**kwargs)


def test_scatter_gif_frames_are_the_scatter_plots(tmp_path):
    """One figure serves every frame: no frame may keep a trace of the one before."""
    rng = np.random.default_rng(0)
    sets = [rng.uniform(-1, 1, (40, 2)) * s for s in (1.0, 0.5, 0.1)]
    reference = rng.normal(0, 0.3, (200, 2))
    titles = ["t = 999", "t = 500", "t = 0"]
    frames = viz.scatter_gif(sets, tmp_path / "flow.gif", reference=reference, size=160,
                             lim=1.5, titles=titles)
    with Image.open(tmp_path / "flow.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (160, 160)
        for k, (points, title) in enumerate(zip(sets, titles)):
            want = viz.scatter_plot(points, reference=reference, size=160, lim=1.5, title=title)
            np.testing.assert_array_equal(np.asarray(frames[k]), np.asarray(want))
            gif.seek(k)
            np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), np.asarray(want))
    with pytest.raises(ValueError, match="one title per point set \\(3\\), got 1"):
        viz.scatter_gif(sets, tmp_path / "no.gif", titles=["a"])


def test_scatter_gif_fits_limits_to_the_reference(tmp_path):
    """lim=None with a reference: [-1.5 m, 1.5 m]^2, m the reference's largest |coordinate|."""
    point, reference = np.ones((1, 2)), np.full((1, 2), 2.0)
    frames = viz.scatter_gif([point], tmp_path / "a.gif", reference=reference, size=200)
    same = viz.scatter_plot(point, reference=reference, size=200, lim=3.0)
    np.testing.assert_array_equal(np.asarray(frames[0]), np.asarray(same))

# ---------------------------------------------------------------------------- loss curves


def _curve_rows(img, colour, tol=40):
    """For each column holding pixels near `colour`: (column, mean row of those pixels)."""
    mask = np.abs(np.asarray(img).astype(int) - colour).max(axis=2) <= tol
    cols = np.nonzero(mask.any(axis=0))[0]
    return cols, np.array([np.nonzero(mask[:, c])[0].mean() for c in cols])


def _straightness(cols, rows):
    """Largest distance (pixels) of the points from their least-squares line."""
    return np.abs(rows - np.polyval(np.polyfit(cols, rows, 1), cols)).max()


def test_loss_curve_log_scale_straightens_an_exponential():
    steps = np.arange(1000)
    losses = 10.0 ** (-2 * steps / 999)                              # 1 down to 0.01
    log_img = viz.plot_loss_curve(steps, losses, smooth=0)
    cols, rows = _curve_rows(log_img, viz.CURVE_COLOURS[0])
    left, top, right, bottom = _plot_area(log_img)
    assert len(cols) > 0.8 * (right - left) and np.all(np.diff(rows) >= -1)   # going down
    assert _straightness(cols, rows) < 2
    lin_img = viz.plot_loss_curve(steps, losses, log_scale=False, smooth=0)
    assert _straightness(*_curve_rows(lin_img, viz.CURVE_COLOURS[0])) > 20


def test_loss_curve_log_scale_none_chooses_log_iff_every_loss_is_positive():
    steps = np.arange(200)
    positive = np.exp(-steps / 50) + 0.01
    touching_zero = positive - positive.min()                        # one loss is 0
    # np.bool_ as (losses > 0).all() gives it, a plain bool, and a dict with one curve <= 0
    for losses, log in ((positive, np.all(positive > 0)), (touching_zero, False),
                        ({"a": positive, "b": -positive}, False)):
        auto = viz.plot_loss_curve(steps, losses, log_scale=None, size=(320, 200))
        fixed = viz.plot_loss_curve(steps, losses, log_scale=log, size=(320, 200))
        np.testing.assert_array_equal(np.asarray(auto), np.asarray(fixed))


@pytest.mark.parametrize("smooth", [0, 0.9])
def test_loss_curve_drops_nan_and_inf_like_a_missing_step(smooth):
    steps = np.arange(100)
    clean = 1 + np.sin(steps / 10) ** 2
    broken = clean.copy()
    broken[[10, 40, 41]] = np.nan, np.inf, -np.inf                    # not the extremes
    keep = np.isfinite(broken)
    got = viz.plot_loss_curve(steps, broken, smooth=smooth)
    want = viz.plot_loss_curve(steps[keep], clean[keep], smooth=smooth)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_loss_curve_draws_each_curve_in_its_colour_at_its_height():
    img = viz.plot_loss_curve(np.arange(50), {"low": np.ones(50), "high": np.full(50, 2.0)},
                              log_scale=False, smooth=0)
    left, top, right, bottom = _plot_area(img)
    # columns 10% to 50% across: inside the data (matplotlib pads x by 5%), clear of the legend
    middle = Image.fromarray(np.asarray(img)[:, left + (right - left) // 10:(left + right) // 2])
    (cols_low, low), (cols_high, high) = (_curve_rows(middle, c) for c in viz.CURVE_COLOURS[:2])
    assert len(cols_low) == len(cols_high) == middle.width          # all the way across
    assert np.ptp(low) <= 1 and np.ptp(high) <= 1                   # flat
    assert high.mean() < low.mean() - 50                            # "high" drawn higher


def test_loss_curve_smoothing_draws_the_raw_curve_pale_behind():
    steps = np.arange(300)
    noisy = 1 + 0.5 * (np.arange(300) % 2)                           # 1, 1.5, 1, 1.5, ...
    img = viz.plot_loss_curve(steps, noisy, log_scale=False, smooth=0.9)
    left, top, right, bottom = _plot_area(img)
    cols, rows = _curve_rows(img, viz.CURVE_COLOURS[0], tol=10)     # the smoothed line
    y_of_row = np.poly1d(np.polyfit([bottom, top], [0.975, 1.525], 1))   # matplotlib's 5%
    settled = cols > left + 0.2 * (right - left)
    np.testing.assert_allclose(y_of_row(rows[settled]), 1.25, atol=0.05)  # the mean, 1.25
    pale = 255 - 0.3 * (255 - np.array(viz.CURVE_COLOURS[0]))        # alpha 0.3 on white
    assert (np.abs(np.asarray(img) - pale).max(axis=2) <= 3).sum() > 1000    # the raw curve


@pytest.mark.parametrize("losses, kwargs, match", [
    (np.linspace(1, -1, 10), {}, "log_scale=True needs losses > 0, but curve 'loss' reaches -1"),
    (np.ones(9), {}, "curve 'loss' has shape \\(9,\\), but steps has \\(10,\\)"),
    (np.ones(10), {"smooth": 1.0}, "smooth: must be a finite number in \\[0, 1\\), got 1.0"),
    (np.full(10, np.nan), {}, "no finite loss to plot"),
    (np.ones(10), {"log_scale": "yes"}, "log_scale: must be True or False, got 'yes'"),
    (np.ones(10), {"size": (100, 400)}, "size\\[0\\]: must be an int >= 200, got 100"),
    (np.ones(10), {"size": 640}, "size must be \\(width, height\\) in pixels, got 640"),
])
def test_loss_curve_refuses_bad_input(losses, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_loss_curve(np.arange(10), losses, **kwargs)


def _naive_ema(values, s):
    """m_k / (1 - s^k) with m_k = (1 - s) sum_{j <= k} s^(k - j) v_j, written out as sums."""
    return [(1 - s) * sum(s ** (k - j) * values[j - 1] for j in range(1, k + 1)) / (1 - s ** k)
            for k in range(1, len(values) + 1)]


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=30),
       st.one_of(st.just(0.0), st.floats(0, 0.99)))                    # 0: the values as given
def test_smooth_curve_is_the_debiased_moving_average(values, s):
    np.testing.assert_allclose(viz.smooth_curve(values, s), _naive_ema(values, s),
                               rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------- matplotlib


def test_matplotlib_is_loaded_by_the_first_plot_and_pyplot_never():
    """pyplot keeps global state (a current figure, an interactive backend): never loaded."""
    code = ("import sys, numpy as np; from minidiff import viz; "
            "assert 'matplotlib' not in sys.modules, 'imported at import time'; "
            "viz.scatter_plot(np.zeros((1, 2))); viz.plot_loss_curve([0, 1], [1.0, 0.5]); "
            "assert 'matplotlib.figure' in sys.modules and 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

# ---------------------------------------------------------------------------- panels


def test_side_by_side_places_panels(tmp_path):
    red, blue = Image.new("RGB", (10, 20), (255, 0, 0)), Image.new("RGB", (30, 15), (0, 0, 255))
    img = viz.side_by_side([red, blue], tmp_path / "pair.png", padding=4)
    assert img.size == (4 + 10 + 4 + 30 + 4, 4 + 20 + 4)
    a = np.asarray(img)
    assert np.all(a[4:24, 4:14] == (255, 0, 0)) and np.all(a[4:19, 18:48] == (0, 0, 255))
    assert np.all(a[19:, 18:48] == 255) and np.all(a[:, :4] == 255)  # white around them
    labelled = viz.side_by_side([red, blue], padding=4, labels=["eps", "mu"])
    assert labelled.size == (52, 28 + 16)
    assert np.all(np.asarray(labelled)[4 + 16:24 + 16, 4:14] == (255, 0, 0))
    with pytest.raises(ValueError, match="one label per image \\(2\\), got 1"):
        viz.side_by_side([red, blue], labels=["x"])
