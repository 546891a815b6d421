"""DDIM sampling (Song, Meng & Ermon 2021) over any increasing subsequence of the timesteps.

Song et al. write α for Ho et al.'s ᾱ; here ᾱ keeps Ho et al.'s name. For a subsequence
τ_1 < … < τ_S of 0-based indices (index τ is the paper's step τ+1), one step goes from the
state at τ_i to the state at τ_{i-1}, so the "previous" ᾱ is ᾱ[τ_{i-1}], and after τ_1 it is
ᾱ = 1 (clean data). With every index and η = 1 the step is DDPM's with σ_t² = β̃_t; with η = 0
it is deterministic.

Seam for the GPU: `ddim_reverse_step` holds all the elementwise math after the network call
(clip x̂0, ε̂ from x̂0, then Song et al. 2021, Eq. 12); it opens with one
`if cuda.use_kernels(...)` that hands it to a fused kernel (kernels/diffusion.cu, through
minidiff.cuda).
"""
import numpy as np

from .. import backend, cuda
from ..progress import countdown
from ..autograd import no_grad
from ..validate import check_int, check_number
from ._checks import as_start
from .gaussian_diffusion import extract


def ddim_timesteps(num_timesteps, num_steps):
    """`num_steps` indices spread evenly over 0 … T-1, always including both ends."""
    num_steps = check_int("num_steps", num_steps, 1, num_timesteps)
    if num_steps == 1:
        return np.array([num_timesteps - 1], dtype=np.int64)
    return np.unique(np.round(np.linspace(0, num_timesteps - 1, num_steps)).astype(np.int64))


def check_timesteps(timesteps, num_timesteps):
    """A strictly increasing int array of indices in [0, T-1]."""
    ts = np.asarray(backend.to_numpy(timesteps))
    if ts.dtype.kind not in "iu" or ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"timesteps: must be a 1-d array of int indices, got dtype {ts.dtype}, "
                         f"shape {ts.shape}")
    if ts.min() < 0 or ts.max() >= num_timesteps or (np.diff(ts) <= 0).any():
        raise ValueError(f"timesteps: must increase strictly inside [0, {num_timesteps - 1}] "
                         f"(0-based indices), got {ts.tolist()}")
    return ts.astype(np.int64)


def ddim_step(pred_x0, eps, alpha_bar, alpha_bar_prev, eta, z):
    """x_prev = √ᾱ_prev x̂0 + √(1 - ᾱ_prev - σ²) ε̂ + σ z (Song et al. 2021, Eq. 12), with
    σ = η √((1 - ᾱ_prev)/(1 - ᾱ)) √(1 - ᾱ/ᾱ_prev) (Song et al. 2021, Eq. 16).

    Arrays in, array out.
    """
    xp = backend.xp()
    sigma = (eta * xp.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar))
             * xp.sqrt(1.0 - alpha_bar / alpha_bar_prev))             # Song et al. 2021, Eq. 16
    # Song et al. 2021, Eq. 12: "the direction pointing to x_t", then x_prev
    direction = eps * xp.sqrt(xp.maximum(1.0 - alpha_bar_prev - sigma ** 2, 0.0))
    return pred_x0 * xp.sqrt(alpha_bar_prev) + direction + z * sigma  # Song et al. 2021, Eq. 12


def ddim_reverse_step(d, pred_x0, x_t, t, t_prev, eta, z, clip_denoised=True):
    """One DDIM step from index t to index t_prev (-1: to the clean data, ᾱ = 1), given the
    model's x̂0: clip x̂0, take ε̂ from it (Ho et al. 2020, Eq. 4 solved for ε), then take
    the step (Song et al. 2021, Eq. 12).

    Arrays in, array out: the fused seam of DDIM sampling. t, t_prev: int arrays (B,).
    """
    if cuda.use_kernels(pred_x0, x_t, z):                         # the lines below, one kernel
        return cuda.ddim_step(pred_x0, x_t, t, t_prev, z, d.alphas_cumprod, eta=eta,
                              param="x0", clip=clip_denoised)[0]
    xp = backend.xp()
    if clip_denoised:
        pred_x0 = xp.clip(pred_x0, -1.0, 1.0)                                # x̂0 in range
    eps = ((x_t * extract(d.sqrt_recip_alphas_cumprod, t, x_t.shape) - pred_x0)
           / extract(d.sqrt_recipm1_alphas_cumprod, t, x_t.shape))  # Ho et al. 2020, Eq. 4 for ε
    abar_or_1 = xp.append(d.alphas_cumprod, xp.ones(1, dtype=d.dtype))      # index -1: ᾱ = 1
    a = extract(d.alphas_cumprod, t, x_t.shape)                              # ᾱ at τ_i
    a_prev = extract(abar_or_1, t_prev, x_t.shape)                           # ᾱ at τ_{i-1}
    return ddim_step(pred_x0, eps, a, a_prev, eta, z)              # Song et al. 2021, Eq. 12


def ddim_sample_loop_progressive(d, model, shape=None, timesteps=None, num_steps=50, eta=0.0,
                                 x_T=None, clip_denoised=True, progress=False):
    """DDIM from x_T ~ N(0, I) (or the given x_T) over `timesteps` (default: `num_steps` of
    them, evenly spread). Yields (s, x_s) with s in the paper's numbering, as
    p_sample_loop_progressive does: first the start (s = τ_S + 1), then the state after each
    step (s = τ_{i-1} + 1), and last the sample (s = 0). The inputs are checked once.
    progress=True shows a bar of the S steps on stderr."""
    eta = check_number("eta", eta, 0)
    xp = backend.xp()
    ts = (ddim_timesteps(d.num_timesteps, num_steps) if timesteps is None
          else check_timesteps(timesteps, d.num_timesteps))
    x = as_start("x_T", shape, x_T, d.dtype)
    yield int(ts[-1]) + 1, x
    for i in countdown(len(ts), "ddim", progress):
        t = xp.full((x.shape[0],), int(ts[i]), dtype=np.int64)                   # τ_i
        t_prev = xp.full((x.shape[0],), int(ts[i - 1]) if i > 0 else -1, dtype=np.int64)
        with no_grad():
            pred = d.model_predictions(model, x, t)                # the network call
        z = backend.rng().standard_normal(x.shape, dtype=d.dtype)
        x = ddim_reverse_step(d, pred.pred_x0.data, x, t, t_prev, eta, z, clip_denoised)
        yield (int(ts[i - 1]) + 1 if i > 0 else 0), x


def ddim_sample_loop(d, model, shape=None, timesteps=None, num_steps=50, eta=0.0, x_T=None,
                     clip_denoised=True, progress=False):
    """DDIM sampling (Song et al. 2021, Eq. 12): returns the final sample. progress=True shows
    a bar of the steps on stderr."""
    x = None
    for _, x in ddim_sample_loop_progressive(d, model, shape, timesteps, num_steps, eta, x_T,
                                             clip_denoised, progress):
        pass
    return x
