"""What each kind of training data means for a run, said once and chosen once from cfg.data.

Two families:
- points (the 2-D sets and the picture as points): an MLP denoiser, no clipping, samples drawn
  as a scatter plot over the data, and measured by distances to fresh draws of the data;
- images (NCHW in [-1, 1], Ho et al. 2020 §3.3): a U-Net, x̂0 clipped to [-1, 1] when
  sampling, samples drawn as an image grid, measured in bits/dim (`minidiff nll`).

    kind = DATA_KINDS[cfg.data]
    train_data = kind.load(cfg)           # an array (N, ...) or an ImageFolder
    kind.shape(cfg)                       # (2,) or (C, H, W), without loading anything
    kind.picture(x, "samples.png", reference=train_data[:5000], title="step 100")
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import data, viz


@dataclass(frozen=True)
class DataKind:
    name: str
    images: bool                # True: NCHW images; False: points in the plane
    needs_path: bool            # cfg.data_path must name a file or folder
    load: Callable              # cfg -> the training set
    shape: Callable             # cfg -> the shape of one example
    heldout: Callable = None    # (cfg, path) -> (images (N, C, H, W), where they came from)

    @property
    def clip(self):
        """Clip x̂0 to [-1, 1] while sampling: images live there, points do not."""
        return self.images

    @property
    def n_pictured(self):
        """How many samples a picture shows: a cloud of points, or an 8 x 8 grid."""
        return 64 if self.images else 2000

    def picture(self, x, path, reference=None, title=None):
        """Samples as a picture: a scatter plot over the reference data, or an image grid."""
        if self.images:
            return viz.save_image_grid(x[:64], path, scale=2)
        return viz.scatter_plot(x, path, reference=reference, title=title, lim=1.5)


# ------------------------------------------------------------------------------ points
def draw_points(cfg, n, g):
    """n fresh points of the 2-D distribution cfg.data, drawn with the generator g."""
    if cfg.data == "picture":
        return data.points_from_picture(cfg.data_path or data.default_picture_path(), n, rng=g)
    return data.TWO_D_SETS[cfg.data](n, rng=g)


def _load_points(cfg):
    return draw_points(cfg, cfg.n_points, np.random.default_rng(cfg.seed))  # fixed by seed


def _points_shape(cfg):
    return (2,)


# ------------------------------------------------------------------------------ images
def _load_digits(cfg):
    return data.load_digits(size=16, split="train")                     # (N, 1, 16, 16)


def _load_idx(cfg):
    return data.load_mnist_images(cfg.data_path, size=cfg.image_size)   # (N, 1, S, S)


def _load_mnist_5k(cfg):
    return data.load_mnist_5k("train", cfg.image_size, cfg.data_path or None)   # (4500, 1, S, S)


def _load_fashion(cfg):
    return data.load_fashion_mnist("train", cfg.image_size, cfg.data_path or None)  # (60000, ...)


def _load_folder(cfg):
    return data.ImageFolder(cfg.data_path, cfg.image_size, channels=cfg.channels, flip=cfg.flip)


def _heldout_digits(cfg, path):
    return data.load_digits(size=16, split="test"), "the digits test split"   # (360, 1, 16, 16)


def _heldout_idx(cfg, path):
    return data.load_mnist_images(path, size=cfg.image_size), path


def _heldout_mnist_5k(cfg, path):
    x = data.load_mnist_5k("test", cfg.image_size, path or cfg.data_path or None)
    return x, "the MNIST-5k test split (the last 50 of each digit)"       # (500, 1, S, S)


def _heldout_fashion(cfg, path):
    x = data.load_fashion_mnist("test", cfg.image_size, path or cfg.data_path or None)
    return x, "the Fashion-MNIST test set"                                # (10000, 1, S, S)


def _load_cifar10(cfg):
    return data.load_cifar10(cfg.data_path, "train")                    # (50000, 3, 32, 32)


def _heldout_cifar10(cfg, path):
    return data.load_cifar10(path or cfg.data_path, "test"), "the CIFAR-10 test set"


def _grey(cfg):
    return (1, cfg.image_size, cfg.image_size)


def _heldout_folder(cfg, path):
    folder = data.ImageFolder(path, cfg.image_size, channels=cfg.channels, flip=False)
    return folder.batch(np.arange(len(folder))), path


DATA_KINDS = {
    **{name: DataKind(name, False, False, _load_points, _points_shape)
       for name in data.TWO_D_SETS},
    "picture": DataKind("picture", False, False, _load_points, _points_shape),
    "digits": DataKind("digits", True, False, _load_digits, lambda cfg: (1, 16, 16),
                       _heldout_digits),
    "mnist": DataKind("mnist", True, False, _load_mnist_5k, _grey, _heldout_mnist_5k),
    "fashion-mnist": DataKind("fashion-mnist", True, False, _load_fashion, _grey,
                              _heldout_fashion),
    "idx": DataKind("idx", True, True, _load_idx, _grey, _heldout_idx),
    "cifar10": DataKind("cifar10", True, True, _load_cifar10, lambda cfg: (3, 32, 32),
                        _heldout_cifar10),
    "folder": DataKind("folder", True, True, _load_folder,
                       lambda cfg: (cfg.channels, cfg.image_size, cfg.image_size),
                       _heldout_folder),
}
