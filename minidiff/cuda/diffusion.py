"""The launches of kernels/diffusion.cu: the per-element math of a diffusion step, fused
(Ho et al. 2020; DDIM: Song et al. 2021).

Time index: arrays are 0-based, index t holds the paper's step t + 1 (Ho et al.'s code).
"""
import numpy as np

from .. import backend
from . import _core             # for _core._launch, looked up at each call (see _core.py)
from ._core import BLOCK, _blocks, _f32, _i32, _input, _same_shape

PARAMS = {"eps": 0, "x0": 1}    # what the network predicts, as PARAM_* in diffusion.cu


def _timesteps(t, batch, num_timesteps, what, allow_minus_one=False):
    """t as contiguous int32 of shape (B,), every value a valid index of the buffers."""
    xp = backend.xp()
    t = xp.asarray(t)
    if t.shape != (batch,) or t.dtype.kind not in "iu":
        raise ValueError(f"minidiff.cuda: {what} must be integers of shape ({batch},), got "
                         f"{t.dtype} {t.shape}")
    lo = -1 if allow_minus_one else 0
    if batch and (int(t.min()) < lo or int(t.max()) >= num_timesteps):
        raise ValueError(f"minidiff.cuda: {what} must lie in [{lo}, {num_timesteps}), got "
                         f"[{int(t.min())}, {int(t.max())}]")
    return xp.ascontiguousarray(t, dtype=xp.int32)


def _buffers(num_timesteps, **bufs):
    """Per-timestep buffers (length T) as contiguous float32 arrays, in argument order."""
    out = []
    for name, b in bufs.items():
        b = _input(b, name)
        if b.shape != (num_timesteps,):
            raise ValueError(f"minidiff.cuda: {name} must have shape ({num_timesteps},), "
                             f"got {b.shape}")
        out.append(b)
    return out


def q_sample(x0, noise, t, sqrt_abar, sqrt_1m_abar):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, Eq. 4), one pass."""
    x0, noise = _input(x0, "x0"), _input(noise, "noise")
    _same_shape("q_sample", x0, ("noise", noise))
    T = len(sqrt_abar)
    sa, s1 = _buffers(T, sqrt_abar=sqrt_abar, sqrt_1m_abar=sqrt_1m_abar)
    t = _timesteps(t, x0.shape[0], T, "t")
    x_t = backend.xp().empty(x0.shape, dtype=np.float32)
    if x0.size:
        _core._launch("diffusion.cu", "q_sample", _blocks(x0.size), (BLOCK,),
                      (x0, noise, t, sa, s1, x_t, _i32(x0.size), _i32(x0.size // x0.shape[0])))
    return x_t


def posterior_mean(x0, x_t, t, coef1, coef2):
    """mu~_t(x_t, x0) = coef1_t x0 + coef2_t x_t (Ho et al. 2020, Eq. 7), the mu-loss target."""
    x0, x_t = _input(x0, "x0"), _input(x_t, "x_t")
    _same_shape("posterior_mean", x0, ("x_t", x_t))
    T = len(coef1)
    c1, c2 = _buffers(T, coef1=coef1, coef2=coef2)
    t = _timesteps(t, x0.shape[0], T, "t")
    mean = backend.xp().empty(x0.shape, dtype=np.float32)
    if x0.size:
        _core._launch("diffusion.cu", "posterior_mean", _blocks(x0.size), (BLOCK,),
                      (x0, x_t, t, c1, c2, mean, _i32(x0.size), _i32(x0.size // x0.shape[0])))
    return mean


def reverse_step(x0_hat, x_t, t, z, *, clip, coef1, coef2, sigma):
    """One ancestral step (Ho et al. 2020, Algorithm 2) from x0^, fused: returns x_{t-1}.

    x0_hat is the network's prediction turned into x0^ by the caller, whatever the network
    predicts (Ho et al. 2020, Eq. 15 for eps). clip: clip x0^ to [-1, 1]. sigma (B,): each
    sample's standard deviation sigma_t (sqrt of beta_t or of beta~_t, gathered by the
    caller); z: the caller's standard normal draw, unused where t = 0
    (Ho et al. 2020, Alg. 2, l. 3).
    """
    x0_hat, x_t, z = _input(x0_hat, "x0_hat"), _input(x_t, "x_t"), _input(z, "z")
    _same_shape("reverse_step", x_t, ("x0_hat", x0_hat), ("z", z))
    sigma = _input(sigma, "sigma")
    if sigma.shape != x_t.shape[:1]:
        raise ValueError(f"minidiff.cuda.reverse_step: sigma must have shape ({x_t.shape[0]},), "
                         f"one per sample, got {sigma.shape}")
    T = len(coef1)
    c1, c2 = _buffers(T, coef1=coef1, coef2=coef2)
    t = _timesteps(t, x_t.shape[0], T, "t")
    x_prev = backend.xp().empty(x_t.shape, dtype=np.float32)
    if x_t.size:
        _core._launch("diffusion.cu", "reverse_step", _blocks(x_t.size), (BLOCK,),
                      (x0_hat, x_t, t, z, c1, c2, sigma, x_prev, _i32(bool(clip)),
                       _i32(x_t.size), _i32(x_t.size // x_t.shape[0])))
    return x_prev


def ddim_step(model_out, x_t, t, t_prev, z, abar, *, eta=0.0, param="eps", clip=True):
    """One DDIM step from t to t_prev (Song et al. 2021, Eq. 12), fused: (x_prev, x0^).

    t_prev = -1 marks the step to x0 (abar_prev = 1). eta = 0 is deterministic, eta = 1 the
    ancestral sampler's variance (Song et al. 2021, Eq. 16). eps^ is re-derived from the
    (clipped) x0^.
    """
    if param not in PARAMS:
        raise ValueError(f"minidiff.cuda.ddim_step: param must be 'eps' or 'x0', got {param!r}")
    out, x_t, z = _input(model_out, "model_out"), _input(x_t, "x_t"), _input(z, "z")
    _same_shape("ddim_step", x_t, ("model_out", out), ("z", z))
    T = len(abar)
    (abar,) = _buffers(T, abar=abar)
    t = _timesteps(t, x_t.shape[0], T, "t")
    t_prev = _timesteps(t_prev, x_t.shape[0], T, "t_prev", allow_minus_one=True)
    xp = backend.xp()
    x_prev = xp.empty(x_t.shape, dtype=np.float32)
    x0_hat = xp.empty(x_t.shape, dtype=np.float32)
    if x_t.size:
        _core._launch("diffusion.cu", "ddim_step", _blocks(x_t.size), (BLOCK,),
                      (out, x_t, t, t_prev, z, abar, x_prev, x0_hat, _i32(PARAMS[param]),
                       _i32(bool(clip)), _f32(eta), _i32(x_t.size),
                       _i32(x_t.size // x_t.shape[0])))
    return x_prev, x0_hat
