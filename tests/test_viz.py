"""Tests for minidiff.viz: grids, GIFs, scatter plots, loss curves and panels, all with Pillow."""
import math
import re

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
def test_grid_refuses_bad_shapes(shape):
    with pytest.raises(ValueError, match=re.escape(f"N >= 1 and C = 1 or 3, got shape {shape}")):
        viz.image_grid(np.zeros(shape, np.float32))


def test_grid_refuses_bad_nrow():
    with pytest.raises(ValueError, match="nrow must be an int >= 1, got 0"):
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
    with pytest.raises(ValueError, match="duration_ms must be a number > 0, got 0"):
        viz.save_gif([Image.new("L", (4, 4))], tmp_path / "x.gif", duration_ms=0)
    assert not (tmp_path / "x.gif").exists()

# ---------------------------------------------------------------------------- scatter plots


def _plot_area(img):
    """The inside of the axes box, found from the image: the long black lines of its frame."""
    black = np.all(np.asarray(img) == 0, axis=2)                      # (H, W)
    cols = np.nonzero(black.sum(axis=0) > 0.5 * img.height)[0]
    rows = np.nonzero(black.sum(axis=1) > 0.5 * img.width)[0]
    assert len(cols) == 2 and len(rows) == 2, (cols, rows)
    return cols[0] + 1, rows[0] + 1, cols[1] - 1, rows[1] - 1         # left, top, right, bottom


def _changed(a, b):
    return np.any(np.asarray(a) != np.asarray(b), axis=2)             # (H, W)


def test_scatter_puts_points_where_they_belong():
    blank = viz.scatter_plot(np.zeros((0, 2)), lim=1)
    left, top, right, bottom = _plot_area(blank)
    for x, y in [(0, 0), (0.5, 0.5), (-0.5, 0.25), (0.9, -0.9)]:
        img = viz.scatter_plot(np.array([[x, y]]), lim=1)
        rows, cols = np.nonzero(_changed(img, blank))
        want_col = left + (x + 1) / 2 * (right - left)               # x to the right
        want_row = bottom - (y + 1) / 2 * (bottom - top)             # y up
        assert abs(cols.mean() - want_col) <= 1 and abs(rows.mean() - want_row) <= 1
        assert np.all(np.asarray(img)[rows, cols].sum(axis=1) < 300)   # dark pixels


def test_scatter_draws_nothing_far_from_the_points():
    blank = viz.scatter_plot(np.zeros((0, 2)), lim=1, size=256)
    left, top, right, bottom = _plot_area(blank)
    points = np.random.default_rng(0).uniform(0.3, 0.9, (300, 2))   # the top-right only
    changed = _changed(viz.scatter_plot(points, lim=1, size=256), blank)
    middle_col, middle_row = (left + right) // 2, (top + bottom) // 2
    assert changed[top:bottom + 1, middle_col:right + 1].sum() > 100
    assert not changed[:, :middle_col].any() and not changed[middle_row:, :].any()


def test_scatter_reference_is_light_grey_and_under_the_points():
    blank = viz.scatter_plot(np.zeros((0, 2)), lim=1, size=200)
    ref = np.array([[0.0, 0.0], [0.5, 0.5]])
    only_ref = viz.scatter_plot(np.zeros((0, 2)), reference=ref, lim=1, size=200)
    rows, cols = np.nonzero(_changed(only_ref, blank))
    assert len(rows) > 0 and np.all(np.asarray(only_ref)[rows, cols] == 200)
    both = viz.scatter_plot(ref[:1], reference=ref, lim=1, size=200)
    centre = np.asarray(both)[np.nonzero(_changed(viz.scatter_plot(ref[:1], lim=1, size=200),
                                                  blank))]
    assert np.all(centre.sum(axis=1) < 300)                          # the point wins


def test_scatter_skips_nan_and_points_outside_lim(tmp_path):
    blank = viz.scatter_plot(np.zeros((0, 2)), lim=1)
    img = viz.scatter_plot(np.array([[np.nan, 0], [5, 5], [0, np.inf]]), tmp_path / "s.png",
                           lim=1)
    np.testing.assert_array_equal(np.asarray(img), np.asarray(blank))
    with Image.open(tmp_path / "s.png") as back:
        assert back.size == (512, 512)


def test_scatter_fits_limits_and_titles():
    img = viz.scatter_plot(np.array([[3.0, -2.0]]), title="hello", size=300)
    left, top, right, bottom = _plot_area(img)
    rows, cols = np.nonzero(np.asarray(img).sum(axis=2) == sum(viz.POINT))
    # lim=None: [-3.3, 3.3] on both axes, so x = 3 sits at 3.3 + 3 = 6.3 of 6.6 widths.
    assert abs(cols.mean() - (left + 6.3 / 6.6 * (right - left))) <= 1
    assert abs(rows.mean() - (bottom - 1.3 / 6.6 * (bottom - top))) <= 1


@pytest.mark.parametrize("kwargs, match", [
    ({"points": np.zeros((4, 3))}, "points must be points \\(n, 2\\), got shape \\(4, 3\\)"),
    ({"points": np.zeros((4, 2)), "reference": np.zeros(4)}, "reference must be points"),
    ({"points": np.zeros((4, 2)), "lim": -1}, "lim must be None, a number L > 0"),
    ({"points": np.zeros((4, 2)), "lim": (1, 0, 0, 1)}, "with min < max, got \\(1, 0, 0, 1\\)"),
    ({"points": np.zeros((4, 2)), "size": 64}, "size must be an int >= 128, got 64"),
])
def test_scatter_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.scatter_plot(**kwargs)


def test_scatter_gif(tmp_path):
    sets = [np.full((10, 2), v) for v in (-0.5, 0.0, 0.5)]
    viz.scatter_gif(sets, tmp_path / "flow.gif", reference=np.ones((5, 2)), size=160,
                    titles=["a", "b", "c"])
    with Image.open(tmp_path / "flow.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (160, 160)
    with pytest.raises(ValueError, match="one title per point set \\(3\\), got 1"):
        viz.scatter_gif(sets, tmp_path / "no.gif", titles=["a"])

# ---------------------------------------------------------------------------- loss curves


def _curve_rows(img, colour):
    """For each column holding pixels of `colour`: (column, mean row of those pixels)."""
    mask = np.all(np.asarray(img) == colour, axis=2)
    cols = np.nonzero(mask.any(axis=0))[0]
    return cols, np.array([np.nonzero(mask[:, c])[0].mean() for c in cols])


def _straightness(cols, rows):
    """Largest distance (pixels) of the points from their least-squares line."""
    fit = np.polyval(np.polyfit(cols, rows, 1), cols)
    return np.abs(rows - fit).max()


def test_loss_curve_log_scale_straightens_an_exponential(tmp_path):
    steps = np.arange(1000)
    losses = 10.0 ** (-2 * steps / 999)                              # 1 down to 0.01
    log_img = viz.plot_loss_curve(steps, losses, tmp_path / "log.png", smooth=0)
    cols, rows = _curve_rows(log_img, viz.CURVE_COLOURS[0])
    assert len(cols) > 300 and np.all(np.diff(rows) >= -1)           # going down the image
    assert _straightness(cols, rows) < 2
    lin_img = viz.plot_loss_curve(steps, losses, log_scale=False, smooth=0)
    assert _straightness(*_curve_rows(lin_img, viz.CURVE_COLOURS[0])) > 20
    with Image.open(tmp_path / "log.png") as back:
        assert back.size == (640, 400)


def test_loss_curve_several_labelled_curves_and_nan():
    steps = np.arange(50)
    a, b = np.linspace(1, 0.1, 50), np.linspace(2, 0.5, 50)
    b[10] = np.nan                                                   # skipped, not fatal
    img = viz.plot_loss_curve(steps, {"eps": a, "mu": b}, smooth=0.5)
    for colour in viz.CURVE_COLOURS[:2]:
        assert len(_curve_rows(img, colour)[0]) > 100


@pytest.mark.parametrize("losses, kwargs, match", [
    (np.linspace(1, -1, 10), {}, "log_scale=True needs losses > 0, but curve 'loss' reaches -1"),
    (np.ones(9), {}, "curve 'loss' has shape \\(9,\\), but steps has \\(10,\\)"),
    (np.ones(10), {"smooth": 1.0}, "smooth must be a number in \\[0, 1\\), got 1.0"),
    (np.full(10, np.nan), {}, "no finite loss to plot"),
])
def test_loss_curve_refuses_bad_input(losses, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_loss_curve(np.arange(10), losses, **kwargs)


def test_smooth_curve():
    np.testing.assert_allclose(viz.smooth_curve([1.0, 2.0], 0.5), [1.0, 1.25 / 0.75])
    np.testing.assert_allclose(viz.smooth_curve(np.full(30, 3.0), 0.9), 3.0)   # no bias
    np.testing.assert_array_equal(viz.smooth_curve([4.0, 1.0, 7.0], 0), [4.0, 1.0, 7.0])


@given(st.floats(-1e3, 1e3), st.floats(1e-3, 1e4))
def test_nice_ticks_are_round_and_inside(lo, span):
    hi = lo + span
    ticks = viz.nice_ticks(lo, hi)
    assert 1 <= len(ticks) <= 11
    tol = 1e-9 * max(1.0, abs(lo), abs(hi))
    assert all(lo - tol <= t <= hi + tol for t in ticks)
    if len(ticks) >= 2:
        steps = np.diff(ticks)
        np.testing.assert_allclose(steps, steps[0], rtol=1e-6)
        mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
        assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6

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
