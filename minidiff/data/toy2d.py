"""Five 2-D data sets for the MLP denoiser. Each returns float32 (n, 2) points."""
import numpy as np

from ..validate import check_int, check_number
from ._common import _generator, _normal, _uniform

# Each returns float32 (n, 2) inside [-1, 1]^2 before noise; `noise` is the standard deviation
# of isotropic Gaussian noise, in those same output units.


def make_swiss_roll(n, rng=None, noise=0.02):
    """A 2-D swiss roll: the spiral (t cos t, t sin t), t in [1.5 pi, 4.5 pi], divided by 4.5 pi.

    The parametrisation is scikit-learn's make_swiss_roll (after Marsland 2009) seen from above;
    dividing by the largest radius 4.5 pi puts the spiral inside the unit disc.
    """
    n = check_int("make_swiss_roll: n", n, 1)
    noise = check_number("make_swiss_roll: noise", noise, 0)
    g = _generator(rng)
    t = 1.5 * np.pi * (1.0 + 2.0 * _uniform(g, n))                     # (n,) angle = radius
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (4.5 * np.pi)  # (n, 2)
    return (x + noise * _normal(g, (n, 2))).astype(np.float32)


def make_two_moons(n, rng=None, noise=0.03):
    """Two interleaved half circles, as scikit-learn's make_moons, scaled to x in [-1, 1].

    make_moons draws the upper moon (cos a, sin a) and the lower moon (1 - cos a, 1/2 - sin a),
    a in [0, pi], which span x in [-1, 2] and y in [-1/2, 1]. We subtract the centre (1/2, 1/4)
    and divide both axes by 3/2, so the moons keep their shape: radius 2/3, x in [-1, 1],
    y in [-1/2, 1/2]. The first n // 2 points are the upper moon.
    """
    n = check_int("make_two_moons: n", n, 1)
    noise = check_number("make_two_moons: noise", noise, 0)
    g = _generator(rng)
    n_up = n // 2
    a = np.pi * _uniform(g, n)                                          # (n,) angle on a moon
    upper = np.stack([np.cos(a[:n_up]), np.sin(a[:n_up])], axis=1)      # (n_up, 2)
    lower = np.stack([1.0 - np.cos(a[n_up:]), 0.5 - np.sin(a[n_up:])], axis=1)
    x = (np.concatenate([upper, lower]) - np.array([0.5, 0.25])) / 1.5  # (n, 2)
    return (x + noise * _normal(g, (n, 2))).astype(np.float32)


EIGHT_GAUSSIANS_RADIUS = 0.8


def eight_gaussians_centres():
    """The 8 centres: radius 0.8, at the angles k * 45 degrees, k = 0..7."""
    k = np.arange(8)
    angle = k * np.pi / 4
    return EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (8, 2)


def make_eight_gaussians(n, rng=None, noise=0.05):
    """A mixture of 8 equally likely Gaussians (std `noise`) on a circle of radius 0.8.

    The toy set of Grathwohl et al. 2019 (FFJORD), rescaled into [-1, 1]^2.
    """
    n = check_int("make_eight_gaussians: n", n, 1)
    noise = check_number("make_eight_gaussians: noise", noise, 0)
    g = _generator(rng)
    which = np.minimum((_uniform(g, n) * 8).astype(np.int64), 7)        # (n,) cluster index
    x = eight_gaussians_centres()[which]                                # (n, 2)
    return (x + noise * _normal(g, (n, 2))).astype(np.float32)


def make_checkerboard(n, rng=None):
    """Uniform points on the 8 dark cells of a 4 x 4 checkerboard covering [-1, 1]^2.

    Cells are 0.5 wide. The cell of (x, y) is column i = floor(2 (x + 1)), row j = floor(2 (y + 1));
    it is dark when i + j is even. Each dark cell is equally likely (Grathwohl et al. 2019).
    """
    n = check_int("make_checkerboard: n", n, 1)
    g = _generator(rng)
    k = np.minimum((_uniform(g, n) * 8).astype(np.int64), 7)            # (n,) dark cell 0..7
    row = k // 2                                                        # 4 rows, 2 dark cells each
    col = 2 * (k % 2) + row % 2                                         # shifted on odd rows
    inside = _uniform(g, (n, 2))                                        # (n, 2) place in the cell
    x = -1.0 + 0.5 * (col + inside[:, 0])
    y = -1.0 + 0.5 * (row + inside[:, 1])
    return np.stack([x, y], axis=1).astype(np.float32)                  # (n, 2)


RINGS_RADII = (0.25, 0.5, 0.75, 1.0)


def make_rings(n, rng=None, noise=0.01):
    """Points on 4 concentric circles of radii 0.25, 0.5, 0.75 and 1.

    A ring is chosen with probability proportional to its radius, so every ring is equally
    dense along its length; the angle is uniform.
    """
    n = check_int("make_rings: n", n, 1)
    noise = check_number("make_rings: noise", noise, 0)
    g = _generator(rng)
    radii = np.array(RINGS_RADII)
    cdf = np.cumsum(radii) / radii.sum()                                # (4,)
    ring = np.minimum(np.searchsorted(cdf, _uniform(g, n), side="right"), 3)  # (n,)
    angle = 2 * np.pi * _uniform(g, n)                                  # (n,)
    x = radii[ring, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (n, 2)
    return (x + noise * _normal(g, (n, 2))).astype(np.float32)


TWO_D_SETS = {
    "swiss_roll": make_swiss_roll,
    "two_moons": make_two_moons,
    "eight_gaussians": make_eight_gaussians,
    "checkerboard": make_checkerboard,
    "rings": make_rings,
}
