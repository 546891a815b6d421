"""GaussianDiffusion: Ho et al. 2020 in one class, in the paper's order and with its names.

    q_mean_variance, q_sample         the forward process q(x_t | x0)     Ho et al. 2020, Eq. 4
    q_posterior_mean_variance         its posterior q(x_{t-1} | x_t, x0)  Ho et al. 2020, Eq. 6-7
    model_predictions                 the network, x̂0 from its output    Ho et al. 2020, Eq. 15
    p_mean_variance                   p_θ(x_{t-1} | x_t) = N(μ_θ, σ_t² I)  Ho et al. 2020, Eq. 1
    p_sample, p_sample_loop           one step and the loop of            Ho et al. 2020, Alg. 2
    training_losses                   the loss of                         Ho et al. 2020, Alg. 1
    prior_bpd, calc_bpd_loop          the bound in bits/dim               Ho et al. 2020, Eq. 5

As in Ho et al.'s code (diffusion_utils_2.py), the parameterisation (eps | x0 | mu | v), the
variance (fixed_large | fixed_small | learned_range) and the loss (simple | mu_mse | kl |
hybrid) are names, checked at construction, each branching in one place with if/elif.
Time arrays are 0-based, as in that code: index t holds the paper's step t+1, so `betas[t]` is
β_{t+1} and `p_sample(model, x, t)` maps the paper's x_{t+1} to x_t.

A public method checks its arrays once, at its top; a loop checks x_T or x0 once, not T times.
The model is any callable `model(x_t, t)` (x_t a constant Tensor (B, ...), t int64 (B,)) that
returns a Tensor or an array; the samplers run it under no_grad. On a GPU, `_x_t`, `_posterior`
and `_reverse_step` hand the lines below their `if cuda.use_kernels(...)` to one fused kernel.
"""
import functools
from typing import NamedTuple

import numpy as np

from .. import autograd, backend, cuda
from .. import functional as F
from ..progress import countdown
from ..tensor import Tensor
from ..validate import check_choice, check_int, check_number
from . import likelihood
from ._checks import as_batch, as_start, as_timesteps, check_same_shape
from .likelihood import mean_flat
from .schedules import check_betas

DTYPES = ("float32", "float64")
PARAMETERIZATIONS = ("eps", "x0", "mu", "v")       # what the network predicts
VARIANCES = ("fixed_large", "fixed_small", "learned_range")     # σ_t² of p_θ
LOSSES = ("simple", "mu_mse", "kl", "hybrid")
MU_MSE_WEIGHTS = ("none", "bound")          # loss="mu_mse": 1 or 1/(2σ_t²), Ho et al. 2020, Eq. 8


def extract(a, t, shape):
    """a[t] for a batch of timesteps t (B,), shaped (B, 1, …, 1) to broadcast against `shape`."""
    return a[t].reshape((t.shape[0],) + (1,) * (len(shape) - 1))


class Prediction(NamedTuple):
    """What the network says at (x_t, t): Tensors of x_t's shape (B, C, ...)."""
    out: object            # its prediction of ε, x0, μ or v (learned_range: the first C channels)
    var_out: object        # learned_range: the last C channels, v in [-1, 1]; else None
    pred_x0: object        # x̂0, recovered from `out` by the parameterisation, unclipped


class GaussianDiffusion:
    """Every buffer of the schedule, and the paper's quantities as methods.

        diffusion = GaussianDiffusion(get_beta_schedule("linear", 1000))
        loss = diffusion.training_losses(model, x0).mean()      # Ho et al. 2020, Algorithm 1
        x0 = diffusion.p_sample_loop(model, (16, 3, 32, 32))    # Ho et al. 2020, Algorithm 2

    mu_mse_weight: ‖μ̃ − μ_θ‖² times 1 (Ho et al. 2020, Table 2) or 1/(2σ_t²) (their Eq. 8).
    hybrid_lambda: λ of L_simple + λ L_vlb (Nichol & Dhariwal 2021, Eq. 16).
    """

    def __init__(self, betas, parameterization="eps", variance="fixed_large", loss="simple",
                 mu_mse_weight="none", hybrid_lambda=0.001, dtype=np.float32):
        self.dtype = np.dtype(check_choice("dtype", np.dtype(dtype).name, DTYPES))
        self.parameterization = check_choice("parameterization", parameterization,
                                             PARAMETERIZATIONS)
        self.variance = check_choice("variance", variance, VARIANCES)
        self.loss = check_choice("loss", loss, LOSSES)
        self.mu_mse_weight = check_choice("mu_mse_weight", mu_mse_weight, MU_MSE_WEIGHTS)
        self.hybrid_lambda = check_number("hybrid_lambda", hybrid_lambda, 0)
        learned = variance == "learned_range"
        if learned and loss in ("simple", "mu_mse"):
            raise ValueError(f"loss: {loss!r} does not train the variance channels of "
                             f"variance='learned_range'; use 'hybrid' or 'kl'")
        if loss == "hybrid" and not learned:
            raise ValueError("loss: 'hybrid' trains a learned variance; with a fixed variance "
                             f"({variance!r}) use 'simple'")

        # ------------------------------------------ the schedule: float64, each buffer cast once
        betas = check_betas(betas)                                  # (T,) β_t
        T = self.num_timesteps = betas.shape[0]
        self.betas_float64 = betas
        to = functools.partial(backend.xp().asarray, dtype=self.dtype)     # float64 -> dtype
        # α_t = 1 - β_t and ᾱ_t = Π_{s<=t} α_s (Ho et al. 2020, §2), ᾱ through its log
        alphas = 1.0 - betas
        log_alphas_cumprod = np.cumsum(np.log1p(-betas))            # log ᾱ_t = Σ_{s<=t} log α_s
        alphas_cumprod = np.exp(log_alphas_cumprod)
        # 1 - ᾱ_t through expm1: exact even where ᾱ_t is within 1e-16 of 1 (a tiny β_1)
        one_minus_alphas_cumprod = -np.expm1(log_alphas_cumprod)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])   # ᾱ_{t-1}, with ᾱ_0 = 1
        one_minus_alphas_cumprod_prev = np.append(0.0, one_minus_alphas_cumprod[:-1])
        self.betas, self.log_betas, self.alphas = to(betas), to(np.log(betas)), to(alphas)
        self.alphas_cumprod, self.alphas_cumprod_prev = to(alphas_cumprod), to(alphas_cumprod_prev)
        # q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I), Ho et al. 2020, Eq. 4
        self.sqrt_alphas_cumprod = to(np.sqrt(alphas_cumprod))
        self.one_minus_alphas_cumprod = to(one_minus_alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = to(np.sqrt(one_minus_alphas_cumprod))
        self.log_one_minus_alphas_cumprod = to(np.log(one_minus_alphas_cumprod))
        # x̂0 = √(1/ᾱ_t) x_t - √(1/ᾱ_t - 1) ε, Ho et al. 2020, Eq. 15
        self.sqrt_recip_alphas_cumprod = to(np.sqrt(1.0 / alphas_cumprod))
        self.sqrt_recipm1_alphas_cumprod = to(np.sqrt(one_minus_alphas_cumprod / alphas_cumprod))
        # q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I), Ho et al. 2020, Eq. 6-7
        posterior_variance = betas * one_minus_alphas_cumprod_prev / one_minus_alphas_cumprod
        self.posterior_variance = to(posterior_variance)
        # β̃ is 0 at index 0 (x_0 is known there); clip its log with the next value, as in
        # Ho et al.'s code. With T = 1 there is no next value, so β_1 stands in.
        first = posterior_variance[1] if T > 1 else betas[0]
        self.posterior_log_variance_clipped = to(np.log(np.append(first, posterior_variance[1:])))
        # μ̃_t = coef1 x_0 + coef2 x_t, Ho et al. 2020, Eq. 7
        self.posterior_mean_coef1 = to(betas * np.sqrt(alphas_cumprod_prev)
                                       / one_minus_alphas_cumprod)
        self.posterior_mean_coef2 = to(one_minus_alphas_cumprod_prev * np.sqrt(alphas)
                                       / one_minus_alphas_cumprod)
        # p_θ(x_{t-1} | x_t): μ_θ = (x_t - β_t/√(1-ᾱ_t) ε_θ) / √α_t, Ho et al. 2020, Eq. 11
        self.recip_sqrt_alphas = to(1.0 / np.sqrt(alphas))
        self.eps_coef = to(betas / np.sqrt(one_minus_alphas_cumprod))
        # σ_t² = β_t, with β̃ of index 1 at index 0 for a finite, better L_0 (Ho et al.'s code)
        large_variance = np.append(first, betas[1:])
        self.large_variance = to(large_variance)
        self.large_log_variance = to(np.log(large_variance))

    # -------------------------------------------------------------------- forward process
    def q_mean_variance(self, x0, t):
        """Mean, variance and log-variance of q(x_t | x0) (Ho et al. 2020, Eq. 4)."""
        x0 = as_batch("x0", x0, self.dtype)
        t = as_timesteps(t, self.num_timesteps, x0.shape[0])
        mean = x0 * extract(self.sqrt_alphas_cumprod, t, x0.shape)          # √ᾱ_t x0
        variance = extract(self.one_minus_alphas_cumprod, t, x0.shape)      # 1 - ᾱ_t, exact
        return mean, variance, extract(self.log_one_minus_alphas_cumprod, t, x0.shape)

    def q_sample(self, x0, t, noise=None):
        """x_t = √ᾱ_t x0 + √(1 - ᾱ_t) ε, a draw of q(x_t | x0) (Ho et al. 2020, Eq. 4)."""
        x0 = as_batch("x0", x0, self.dtype)
        t = as_timesteps(t, self.num_timesteps, x0.shape[0])
        noise = (backend.rng().standard_normal(x0.shape, dtype=self.dtype) if noise is None
                 else as_batch("noise", noise, self.dtype, like_name="x0", like=x0))
        return self._x_t(x0, t, noise)

    def _x_t(self, x0, t, noise):
        """q_sample's line, for arrays q_sample, training_losses or calc_bpd_loop checked."""
        if cuda.use_kernels(x0, noise):                           # the lines below, one kernel
            return cuda.q_sample(x0, noise, t, self.sqrt_alphas_cumprod,
                                 self.sqrt_one_minus_alphas_cumprod)
        return (x0 * extract(self.sqrt_alphas_cumprod, t, x0.shape)        # Ho et al. 2020, Eq. 4
                + noise * extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape))

    # -------------------------------------------------------------------- posterior
    def q_posterior_mean_variance(self, x0, x_t, t):
        """Mean, variance, clipped log-variance of q(x_{t-1} | x_t, x0), Ho et al. 2020, Eq. 7."""
        x0, x_t = as_batch("x0", x0, self.dtype), as_batch("x_t", x_t, self.dtype)
        check_same_shape("x0", x0, "x_t", x_t)
        return self._posterior(x0, x_t, as_timesteps(t, self.num_timesteps, x_t.shape[0]))

    def _posterior(self, x0, x_t, t):
        """q_posterior_mean_variance's lines, for the losses' and the bound's checked arrays."""
        if cuda.use_kernels(x0, x_t):                             # the lines below, one kernel
            mean = cuda.posterior_mean(x0, x_t, t, self.posterior_mean_coef1,
                                       self.posterior_mean_coef2)
        else:
            mean = (x0 * extract(self.posterior_mean_coef1, t, x_t.shape)  # Ho et al. 2020, Eq. 7
                    + x_t * extract(self.posterior_mean_coef2, t, x_t.shape))
        variance = extract(self.posterior_variance, t, x_t.shape)   # β̃_t, Ho et al. 2020, Eq. 7
        return mean, variance, extract(self.posterior_log_variance_clipped, t, x_t.shape)

    # -------------------------------------------------------------------- the network
    def model_predictions(self, model, x_t, t):
        """The network at (x_t, t) and x̂0 recovered from its output: a Prediction. x_t and t
        are the caller's checked arrays; the samplers call it under no_grad."""
        out = model(Tensor(x_t), t)
        if not isinstance(out, Tensor):
            out = Tensor(backend.xp().asarray(out, dtype=self.dtype))
        expected = tuple(x_t.shape)
        if self.variance == "learned_range":      # the mean's C channels, then the variance's C
            if x_t.ndim < 2:
                raise ValueError(f"x_t: variance='learned_range' needs a channel axis, shape "
                                 f"(B, C, ...), got {tuple(x_t.shape)}")
            expected = (x_t.shape[0], 2 * x_t.shape[1]) + expected[2:]
        if out.shape != expected:
            raise ValueError(f"model: output must have shape {expected} (x_t is "
                             f"{tuple(x_t.shape)}, variance={self.variance!r}), got {out.shape}")
        if out.dtype != self.dtype:
            raise ValueError(f"model: output dtype must be the working dtype {self.dtype}, "
                             f"got {out.dtype}")
        out, var_out = out, None
        if self.variance == "learned_range":                    # (out, var_out): C channels each
            out, var_out = out[:, :x_t.shape[1]], out[:, x_t.shape[1]:]
        if self.parameterization == "eps":      # x̂0 from ε_θ, Ho et al. 2020, Eq. 15
            pred_x0 = (x_t * extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape)
                       - out * extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))
        elif self.parameterization == "x0":
            pred_x0 = out
        elif self.parameterization == "mu":     # x̂0 from μ, Ho et al. 2020, Eq. 7 solved
            pred_x0 = ((out - x_t * extract(self.posterior_mean_coef2, t, x_t.shape))
                       / extract(self.posterior_mean_coef1, t, x_t.shape))
        else:                                   # x̂0 = √ᾱ_t x_t - √(1-ᾱ_t) v, Salimans & Ho 2022
            pred_x0 = (x_t * extract(self.sqrt_alphas_cumprod, t, x_t.shape)
                       - out * extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape))
        return Prediction(out, var_out, pred_x0)

    # -------------------------------------------------------------------- reverse process
    def p_mean_variance(self, model, x_t, t, clip_denoised=True):
        """Call the model and return p_θ(x_{t-1} | x_t) as arrays (Ho et al. 2020, Eq. 1): mean,
        variance, log_variance (broadcastable to x_t) and pred_x0 (x̂0)."""
        x_t = as_batch("x_t", x_t, self.dtype)
        t = as_timesteps(t, self.num_timesteps, x_t.shape[0])
        with autograd.no_grad():
            pred = self.model_predictions(model, x_t, t)                    # the network call
            p = self._mean_variance(pred, x_t, t, clip_denoised)
        return {k: v.data for k, v in p.items()}

    def _mean_variance(self, pred, x_t, t, clip_denoised=False):
        """N(μ_θ, σ_t² I) from the network's Prediction, as Tensors (Ho et al. 2020, Eq. 1).
        With clip_denoised, x̂0 is clipped to [-1, 1] and μ_θ is the posterior mean at it
        (Ho et al.'s code); without, μ_θ is the parameterisation's own mean."""
        shape = x_t.shape
        if self.variance == "fixed_large":      # σ_t² = β_t, Ho et al. 2020, §3.2 (β̃ at index 0)
            variance = Tensor(extract(self.large_variance, t, shape))
            log_variance = Tensor(extract(self.large_log_variance, t, shape))
        elif self.variance == "fixed_small":    # σ_t² = β̃_t, Ho et al. 2020, §3.2
            variance = Tensor(extract(self.posterior_variance, t, shape))
            log_variance = Tensor(extract(self.posterior_log_variance_clipped, t, shape))
        else:                      # between log β̃_t and log β_t, Nichol & Dhariwal 2021, Eq. 15
            min_log = extract(self.posterior_log_variance_clipped, t, shape)
            max_log = extract(self.log_betas, t, shape)
            log_variance = (pred.var_out * 0.5 + 0.5) * (max_log - min_log) + min_log
            variance = F.exp(log_variance)
        pred_x0 = pred.pred_x0
        if clip_denoised:
            pred_x0 = F.clip(pred_x0, -1.0, 1.0)                                # x̂0 in [-1, 1]
        if self.parameterization == "eps" and not clip_denoised:   # Ho et al. 2020, Eq. 11
            mean = ((x_t - pred.out * extract(self.eps_coef, t, shape))
                    * extract(self.recip_sqrt_alphas, t, shape))
        elif self.parameterization == "mu" and not clip_denoised:
            mean = pred.out
        else:                                     # μ̃_t(x_t, x̂0), Ho et al. 2020, Eq. 7
            mean = (pred_x0 * extract(self.posterior_mean_coef1, t, shape)
                    + x_t * extract(self.posterior_mean_coef2, t, shape))
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_x0": pred_x0}

    def p_sample(self, model, x_t, t, clip_denoised=True, z=None):
        """One reverse step, a draw of x_{t-1} ~ p_θ(x_{t-1} | x_t) (Ho et al. 2020, Alg. 2,
        lines 3-4). 0-based: index t maps the paper's x_{t+1} to x_t. z is drawn unless given."""
        x_t = as_batch("x_t", x_t, self.dtype)
        t = as_timesteps(t, self.num_timesteps, x_t.shape[0])
        z = (backend.rng().standard_normal(x_t.shape, dtype=self.dtype) if z is None  # line 3
             else as_batch("z", z, self.dtype, like_name="x_t", like=x_t))
        with autograd.no_grad():
            pred = self.model_predictions(model, x_t, t)                    # the network call
        return self._reverse_step(pred, x_t, t, clip_denoised, z)  # Ho et al. 2020, Alg. 2

    def _reverse_step(self, pred, x_t, t, clip_denoised, z):
        """x_{t-1} = μ_θ + σ_t z from the network's Prediction, z unused at index 0 (t = 1).
        With a fixed variance on a GPU, one kernel clips x̂0, takes μ̃_t at it, adds σ_t z."""
        xp = backend.xp()
        if self.variance != "learned_range" and cuda.use_kernels(x_t, z):  # one kernel
            log_var = (self.large_log_variance if self.variance == "fixed_large"
                       else self.posterior_log_variance_clipped)
            return cuda.reverse_step(pred.pred_x0.data, x_t, t, z, clip=clip_denoised,
                                     sigma=xp.exp(0.5 * log_var[t]),        # (B,) σ_t
                                     coef1=self.posterior_mean_coef1,
                                     coef2=self.posterior_mean_coef2)
        p = self._mean_variance(pred, x_t, t, clip_denoised)            # Ho et al. 2020, Eq. 1
        nonzero = (t != 0).astype(self.dtype).reshape((-1,) + (1,) * (x_t.ndim - 1))  # (B, 1…)
        sigma = xp.exp(0.5 * p["log_variance"].data)                        # σ_t
        return p["mean"].data + nonzero * sigma * z            # Ho et al. 2020, Alg. 2, line 4

    # Algorithm 2 (Sampling), as Ho et al. 2020 print it:
    #   1: x_T ~ N(0, I)
    #   2: for t = T, . . . , 1 do
    #   3:   z ~ N(0, I) if t > 1, else z = 0
    #   4:   x_{t-1} = 1/√α_t (x_t − (1 − α_t)/√(1 − ᾱ_t) ε_θ(x_t, t)) + σ_t z
    #   5: end for
    #   6: return x_0
    # Line 3: z is drawn at every step, before the network, and multiplied by 0 at the last.
    # Line 4 as printed is clip_denoised=False with ε-prediction (Ho et al. 2020, Eq. 11).
    # clip_denoised=True is their code: x̂0 (Ho et al. 2020, Eq. 15) clipped to [-1, 1], then
    # μ̃_t(x_t, x̂0) (Ho et al. 2020, Eq. 7) + σ_t z.
    def p_sample_loop_progressive(self, model, shape=None, x_T=None, clip_denoised=True,
                                  every=1, progress=False):
        """Ho et al. 2020, Algorithm 2 (progress: a bar), yielding (s, x_s) for the paper's s = T,
        then every `every`-th state, ending with s = 0 (the sample). x_T ~ N(0, I) unless given."""
        x = as_start("x_T", shape, x_T, self.dtype)               # Ho et al. 2020, Alg. 2, l. 1
        every = check_int("every", every, 1)
        yield self.num_timesteps, x
        for i in countdown(self.num_timesteps, "sample", progress):  # Ho et al. 2020, Alg. 2, l. 2
            t = backend.xp().full((x.shape[0],), i, dtype=np.int64)   # (B,), the paper's i+1
            z = backend.rng().standard_normal(x.shape, dtype=self.dtype)   # line 3
            with autograd.no_grad():
                pred = self.model_predictions(model, x, t)
            x = self._reverse_step(pred, x, t, clip_denoised, z)  # Ho et al. 2020, Alg. 2, l. 4
            if i % every == 0:
                yield i, x

    def p_sample_loop(self, model, shape=None, x_T=None, clip_denoised=True, progress=False):
        """Ho et al. 2020, Algorithm 2: from x_T ~ N(0, I) (or x_T) to a sample; progress: a bar."""
        for _, x in self.p_sample_loop_progressive(model, shape, x_T, clip_denoised, 1, progress):
            pass
        return x

    # -------------------------------------------------------------------- training
    # Algorithm 1 (Training), as Ho et al. 2020 print it, with t counted from 1:
    #   1: repeat
    #   2:   x_0 ~ q(x_0)
    #   3:   t ~ Uniform({1, . . . , T})
    #   4:   ε ~ N(0, I)
    #   5:   Take gradient descent step on
    #            ∇_θ ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²
    #   6: until converged
    # training_losses is lines 3-5 up to the gradient, per example, with 0-based t. Line 5 is
    # loss="simple" (Ho et al. 2020, Eq. 14), averaged over dims as in their code.
    def training_losses(self, model, x0, t=None, noise=None):
        """The loss of each example, a Tensor (B,), differentiable w.r.t. the model. t and ε
        are drawn unless given."""
        x0 = as_batch("x0", x0, self.dtype)                     # Ho et al. 2020, Alg. 1, line 2
        if t is None:                                           # Ho et al. 2020, Alg. 1, line 3
            t = backend.rng().integers(0, self.num_timesteps, size=x0.shape[0])
        t = as_timesteps(t, self.num_timesteps, x0.shape[0])
        noise = (backend.rng().standard_normal(x0.shape, dtype=self.dtype) if noise is None
                 else as_batch("noise", noise, self.dtype, like_name="x0", like=x0))  # line 4
        x_t = self._x_t(x0, t, noise)                           # Ho et al. 2020, Alg. 1, line 5
        pred = self.model_predictions(model, x_t, t)            # ε_θ(x_t, t) for ε-prediction
        if self.loss == "kl":       # the bound's term at t, bits/dim, Ho et al. 2020, Eq. 5
            return self._vb_terms_bpd(self._mean_variance(pred, x_t, t), x0, x_t, t)
        if self.loss == "mu_mse":   # ‖μ̃_t - μ_θ‖², × 1/(2σ_t²) for Ho et al. 2020, Eq. 8
            true_mean = self._posterior(x0, x_t, t)[0]                      # μ̃_t
            p = self._mean_variance(pred, x_t, t)
            mse = mean_flat((p["mean"] - true_mean) ** 2)                   # (B,)
            if self.mu_mse_weight == "none":
                return mse * 1.0
            return mse * (0.5 / backend.xp().exp(p["log_variance"].data.reshape(t.shape)))
        if self.parameterization == "eps":      # L_simple's target, Ho et al. 2020, Eq. 14
            target = noise
        elif self.parameterization == "x0":
            target = x0
        elif self.parameterization == "mu":
            target = self._posterior(x0, x_t, t)[0]                           # μ̃_t
        else:                                   # v = √ᾱ_t ε - √(1-ᾱ_t) x0, Salimans & Ho 2022
            target = (noise * extract(self.sqrt_alphas_cumprod, t, x0.shape)
                      - x0 * extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape))
        simple = mean_flat((pred.out - target) ** 2)                # Ho et al. 2020, Eq. 14
        if self.loss == "simple":
            return simple
        # hybrid: L_simple + λ T L_t, the bound training the variance only: its mean half is
        # detached, so L_simple alone trains the mean (Nichol & Dhariwal 2021, Eq. 16)
        frozen = Prediction(pred.out.detach(), pred.var_out, pred.pred_x0.detach())
        vb = self._vb_terms_bpd(self._mean_variance(frozen, x_t, t), x0, x_t, t)
        return simple + vb * (self.hybrid_lambda * self.num_timesteps)

    # -------------------------------------------------------------------- the bound
    def _vb_terms_bpd(self, p, x0, x_t, t):
        """The bound's term at each example's t, in bits/dim (B,): KL(q(x_{t-1} | x_t, x0) ‖
        p_θ) (Ho et al. 2020, Eq. 5-7), or the decoder's L_0 at index 0 (Eq. 13)."""
        true_mean, _, true_log_variance = self._posterior(x0, x_t, t)      # q(x_{t-1} | x_t, x0)
        return likelihood.vb_terms_bpd(true_mean, true_log_variance, p["mean"],
                                       p["log_variance"], x0, t)

    def prior_bpd(self, x0):
        """L_T = KL(q(x_T | x0) ‖ N(0, I)) in bits/dim per example (Ho et al. 2020, Eq. 5)."""
        x0 = as_batch("x0", x0, self.dtype)
        return likelihood.prior_bpd(x0 * self.sqrt_alphas_cumprod[-1],     # q(x_T | x0)
                                    self.log_one_minus_alphas_cumprod[-1])

    def calc_bpd_loop(self, model, x0, clip_denoised=True, progress=False):
        """Every term of the bound (Ho et al. 2020, Eq. 5) per example, one draw of x_t per
        step, as NumPy arrays in bits/dim: total_bpd (B,) = L_T + Σ L_t + L_0 (the bound),
        prior_bpd (B,) = L_T, terms_bpd (B, T) with column t holding L_t (column 0: L_0),
        rate_bpd (B,) = L_1 + … + L_T, distortion_bpd (B,) = L_0, and the errors of x̂0
        and ε̂ at each step, xstart_mse and eps_mse (B, T). x0 is checked once; progress: a bar."""
        x0 = as_batch("x0", x0, self.dtype, min_ndim=2)
        B, T = x0.shape[0], self.num_timesteps
        terms, xstart_mse, eps_mse = np.zeros((B, T)), np.zeros((B, T)), np.zeros((B, T))
        for i in countdown(T, "bits/dim", progress):
            t = backend.xp().full((B,), i, dtype=np.int64)
            noise = backend.rng().standard_normal(x0.shape, dtype=self.dtype)
            x_t = self._x_t(x0, t, noise)                                   # x_t ~ q(x_t | x0)
            with autograd.no_grad():
                p = self._mean_variance(self.model_predictions(model, x_t, t), x_t, t,
                                        clip_denoised)                      # p_θ
                terms[:, i] = backend.to_numpy(self._vb_terms_bpd(p, x0, x_t, t).data)
            pred_x0 = p["pred_x0"].data
            xstart_mse[:, i] = backend.to_numpy(mean_flat((pred_x0 - x0) ** 2))
            eps = ((x_t * extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) - pred_x0)
                   / extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))  # ε̂ from x̂0
            eps_mse[:, i] = backend.to_numpy(mean_flat((eps - noise) ** 2))
        prior = likelihood.prior_bpd(x0 * self.sqrt_alphas_cumprod[-1],
                                     self.log_one_minus_alphas_cumprod[-1])
        return {"total_bpd": terms.sum(axis=1) + prior, "prior_bpd": prior,
                "terms_bpd": terms, "rate_bpd": terms[:, 1:].sum(axis=1) + prior,
                "distortion_bpd": terms[:, 0], "xstart_mse": xstart_mse, "eps_mse": eps_mse}


# calc_bpd_loop(diffusion, model, x0) and prior_bpd(diffusion, x0): the methods themselves.
calc_bpd_loop = GaussianDiffusion.calc_bpd_loop
prior_bpd = GaussianDiffusion.prior_bpd
