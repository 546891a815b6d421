"""Algorithm 2 of Ho et al. 2020, the ancestral sampler: the loop from x_T down to x_0.

One step is GaussianDiffusion.p_sample: the network's prediction, then p_mean_variance's mean
and variance plus σ_t z (GaussianDiffusion.reverse_step). The loop checks its inputs once, then
runs the unchecked step T times. With 0-based time arrays, loop index i is the paper's t = i+1.
"""
import numpy as np

from .. import backend
from ..validate import check_int
from ._checks import as_data, check_batch


def initial_state(d, name, shape, x_start):
    """The chain's start: the given array (checked), or N(0, I) of the given shape."""
    if x_start is not None:
        x_start = as_data(name, x_start, d.dtype)
        check_batch(name, x_start)
        if shape is not None and tuple(shape) != tuple(x_start.shape):
            raise ValueError(f"{name}: has shape {tuple(x_start.shape)}, but shape="
                             f"{tuple(shape)} was asked for")
        return x_start
    if shape is None or len(shape) < 1 or not all(
            isinstance(n, (int, np.integer)) and n >= 1 for n in shape):
        raise ValueError(f"shape: must be a tuple of ints >= 1 such as (B, C, H, W), "
                         f"got {shape!r}")
    return backend.rng().standard_normal(tuple(shape), dtype=d.dtype)


# Algorithm 2 (Sampling), as Ho et al. 2020 print it:
#   1: x_T ~ N(0, I)
#   2: for t = T, . . . , 1 do
#   3:   z ~ N(0, I) if t > 1, else z = 0
#   4:   x_{t-1} = 1/√α_t (x_t − (1 − α_t)/√(1 − ᾱ_t) ε_θ(x_t, t)) + σ_t z
#   5: end for
#   6: return x_0
# Line 3: z is drawn at every step, and reverse_step multiplies it by 0 at the last one (index
# 0), so every step draws the same numbers from the generator.
# Line 4 as printed is clip_denoised=False with ε-prediction: the mean is Ho et al. 2020, Eq. 11.
# clip_denoised=True (the default, for images in [-1, 1]) is Ho et al.'s code instead of the
# printed line: x̂0 (Ho et al. 2020, Eq. 15) is clipped to [-1, 1] and the mean is the
# posterior mean μ̃_t(x_t, x̂0) at the clipped x̂0 (Ho et al. 2020, Eq. 7), then + σ_t z.
def p_sample_loop_progressive(d, model, shape=None, x_T=None, clip_denoised=True, every=1):
    """Algorithm 2 (Ho et al. 2020), yielding (s, x_s) for the paper's s = T, then every
    `every`-th state, always ending with s = 0 (the sample). x_T ~ N(0, I) is drawn unless
    given."""
    x = initial_state(d, "x_T", shape, x_T)                        # Ho et al. 2020, Alg. 2, 1
    every = check_int("every", every, 1)
    xp = backend.xp()
    yield d.num_timesteps, x
    for i in reversed(range(d.num_timesteps)):                     # Ho et al. 2020, Alg. 2, 2
        t = xp.full((x.shape[0],), i, dtype=np.int64)             # (B,), the paper's t = i+1
        z = backend.rng().standard_normal(x.shape, dtype=d.dtype)  # Ho et al. 2020, Alg. 2, 3
        x = d._p_sample(model, x, t, clip_denoised, z)             # Ho et al. 2020, Alg. 2, 4
        if i % every == 0:
            yield i, x


def p_sample_loop(d, model, shape=None, x_T=None, clip_denoised=True):
    """Algorithm 2 (Ho et al. 2020): from x_T ~ N(0, I) (or the given x_T) down to a sample."""
    for _, x in p_sample_loop_progressive(d, model, shape, x_T, clip_denoised):
        pass
    return x
