"""Pictures: image grids, GIFs and panels with Pillow; scatter plots and loss curves with
matplotlib (imported on the first plot, never by `import minidiff`). Every drawing function
returns what it drew (a PIL image; a GIF's list of frames) and saves it when given a path
(the parent folder is created).

    save_image_grid(samples, "samples.png", nrow=8, scale=4)        # samples (64, 1, 16, 16)
    keep = frame_indices(len(trajectory), 50)                       # which states become frames
    save_gif([image_grid(x) for x in trajectory], "reverse.gif", duration_ms=60)
    scatter_plot(points, "points.png", reference=data)              # points, data (n, 2)
    plot_loss_curve(steps, {"eps": losses_eps, "mu": losses_mu}, "loss.png")

pictures.py holds the Pillow half, plots.py the matplotlib half.
"""
from .pictures import (INK, PAPER, frame_indices, image_grid, save_gif, save_image_grid,
                       side_by_side)
from .plots import (CURVE_COLOURS, POINT, REFERENCE, plot_loss_curve, scatter_gif, scatter_plot,
                    smooth_curve)

__all__ = ["CURVE_COLOURS", "INK", "PAPER", "POINT", "REFERENCE", "frame_indices", "image_grid",
           "plot_loss_curve", "save_gif", "save_image_grid", "scatter_gif", "scatter_plot",
           "side_by_side", "smooth_curve"]
