"""GaussianDiffusion: the forward process, its posterior, the reverse process and its losses.

The methods carry the names of Ho et al. 2020 (and of their code, diffusion_utils_2.py), and
every formula line cites its equation. The model is any callable `model(x_t, t)`: x_t is a
constant Tensor (B, ...), t an int64 array (B,), and it returns a Tensor or an array.

Time. Arrays are 0-based, as in Ho et al.'s code: index t holds the paper's step t+1. So
`betas[t]` is the paper's β_{t+1}, `q_sample(x0, t)` draws the paper's x_{t+1}, and
`p_sample(model, x, t)` maps the paper's x_{t+1} to x_t.

Buffers. The schedule is computed once in float64 NumPy, then each buffer is cast once to the
working dtype (float32 by default) and device. `extract(a, t, shape)` reads a buffer at a batch
of timesteps, shaped to broadcast against x.

Seams for the GPU. `q_sample` (Eq. 4) and `reverse_step` (clip x̂0 → Eq. 7 → + σ z) take
arrays and hold all the elementwise math around the network call. On the GPU each is one
fused kernel (kernels/diffusion.cu, through minidiff.cuda), as is the posterior mean of
`q_posterior_mean_variance` on arrays (Eq. 7: the μ-loss target).
"""
import numpy as np

from .. import backend, cuda
from .. import functional as F
from ..tensor import Tensor, no_grad
from . import likelihood, losses
from ._checks import as_data, as_timesteps, check_batch, check_choice, check_same_shape
from .parameterizations import PARAMETERIZATIONS
from .schedules import check_betas
from .variances import VARIANCES


def extract(a, t, shape):
    """a[t] for a batch of timesteps t (B,), shaped (B, 1, …, 1) to broadcast against `shape`."""
    return a[t].reshape((t.shape[0],) + (1,) * (len(shape) - 1))


class GaussianDiffusion:
    """Every buffer of the schedule, and the paper's quantities as methods.

        diffusion = GaussianDiffusion(get_beta_schedule("linear", 1000))
        loss = diffusion.training_losses(model, x0).mean()          # Algorithm 1
        x0 = diffusion.p_sample_loop(model, (16, 3, 32, 32))        # Algorithm 2

    parameterization   eps | x0 | mu | v        what the network predicts
    variance           fixed_large | fixed_small | learned_range     σ_t² of p_θ(x_{t-1} | x_t)
    loss               simple | mu_mse | kl | hybrid
    mu_mse_weight      none | bound: for loss="mu_mse", weight ‖μ̃ − μ_θ‖² by the true bound's
                       1/(2σ_t²) (Eq. 8) or not (the unweighted MSE, Ho et al. Table 2)
    hybrid_lambda      λ of L_simple + λ L_vlb for loss="hybrid" (Nichol & Dhariwal, Eq. 16)
    dtype              float32 | float64, the working dtype of every buffer and output
    """

    def __init__(self, betas, parameterization="eps", variance="fixed_large", loss="simple",
                 mu_mse_weight="none", hybrid_lambda=0.001, dtype=np.float32):
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype: must be float32 or float64, got {np.dtype(dtype)}")
        self.dtype = np.dtype(dtype)
        self.param = check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        self.variance = check_choice("variance", variance, VARIANCES)
        self.loss_fn = check_choice("loss", loss, losses.LOSSES)
        self.loss_type = loss
        self.mu_mse_weight = check_choice("mu_mse_weight", mu_mse_weight,
                                          {"none": "none", "bound": "bound"})
        if not hybrid_lambda >= 0:
            raise ValueError(f"hybrid_lambda: must be >= 0, got {hybrid_lambda!r}")
        self.hybrid_lambda = float(hybrid_lambda)
        learned = self.variance.channels == 2
        if learned and loss in ("simple", "mu_mse"):
            raise ValueError(f"loss: {loss!r} does not train the variance channels of "
                             f"variance='learned_range'; use 'hybrid' or 'kl'")
        if loss == "hybrid" and not learned:
            raise ValueError("loss: 'hybrid' trains a learned variance; with a fixed variance "
                             f"({variance!r}) use 'simple'")

        # ---------------------------------------------------------------- the schedule (float64)
        betas = check_betas(betas)                                  # (T,) β_t
        T = betas.shape[0]
        self.num_timesteps = T
        self.betas_float64 = betas
        alphas = 1.0 - betas                                        # α_t = 1 - β_t, §2
        log_alphas_cumprod = np.cumsum(np.log1p(-betas))            # log ᾱ_t = Σ_{s<=t} log α_s
        alphas_cumprod = np.exp(log_alphas_cumprod)                 # ᾱ_t = Π_{s<=t} α_s, §2
        # 1 - ᾱ_t through expm1: exact even where ᾱ_t is within 1e-16 of 1 (a tiny β_1)
        one_minus_alphas_cumprod = -np.expm1(log_alphas_cumprod)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])   # ᾱ_{t-1}, with ᾱ_0 = 1
        one_minus_alphas_cumprod_prev = np.append(0.0, one_minus_alphas_cumprod[:-1])

        # q(x_t | x_{t-1}) = N(√α_t x_{t-1}, β_t I), Eq. 2
        sqrt_alphas = np.sqrt(alphas)
        sqrt_betas = np.sqrt(betas)
        # q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I), Eq. 4
        sqrt_alphas_cumprod = np.sqrt(alphas_cumprod)
        sqrt_one_minus_alphas_cumprod = np.sqrt(one_minus_alphas_cumprod)
        log_one_minus_alphas_cumprod = np.log(one_minus_alphas_cumprod)
        sqrt_recip_alphas_cumprod = np.sqrt(1.0 / alphas_cumprod)                     # Eq. 15
        sqrt_recipm1_alphas_cumprod = np.sqrt(one_minus_alphas_cumprod / alphas_cumprod)
        # q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I), Eq. 6-7
        posterior_variance = betas * one_minus_alphas_cumprod_prev / one_minus_alphas_cumprod
        # β̃ is 0 at index 0 (x_0 is known there); clip its log with the next value, as in
        # Ho et al.'s code. With T = 1 there is no next value, so β_1 stands in.
        first = posterior_variance[1] if T > 1 else betas[0]
        posterior_log_variance_clipped = np.log(np.append(first, posterior_variance[1:]))
        posterior_mean_coef1 = (betas * np.sqrt(alphas_cumprod_prev)                   # Eq. 7
                                / one_minus_alphas_cumprod)
        posterior_mean_coef2 = (one_minus_alphas_cumprod_prev * sqrt_alphas            # Eq. 7
                                / one_minus_alphas_cumprod)
        # p_θ(x_{t-1} | x_t) with ε-prediction, Eq. 11: μ_θ = (x_t - β_t/√(1-ᾱ_t) ε_θ) / √α_t
        recip_sqrt_alphas = 1.0 / sqrt_alphas
        eps_coef = betas / sqrt_one_minus_alphas_cumprod
        # σ_t² = β_t, with β̃ of index 1 at index 0 for a finite, better L_0 (Ho et al.'s code)
        large_variance = np.append(first, betas[1:])

        to = self._to_device
        self.betas = to(betas)
        self.log_betas = to(np.log(betas))
        self.alphas = to(alphas)
        self.alphas_cumprod = to(alphas_cumprod)
        self.alphas_cumprod_prev = to(alphas_cumprod_prev)
        self.sqrt_alphas = to(sqrt_alphas)
        self.sqrt_betas = to(sqrt_betas)
        self.sqrt_alphas_cumprod = to(sqrt_alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = to(sqrt_one_minus_alphas_cumprod)
        self.log_one_minus_alphas_cumprod = to(log_one_minus_alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = to(sqrt_recip_alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = to(sqrt_recipm1_alphas_cumprod)
        self.posterior_variance = to(posterior_variance)
        self.posterior_log_variance_clipped = to(posterior_log_variance_clipped)
        self.posterior_mean_coef1 = to(posterior_mean_coef1)
        self.posterior_mean_coef2 = to(posterior_mean_coef2)
        self.recip_sqrt_alphas = to(recip_sqrt_alphas)
        self.eps_coef = to(eps_coef)
        self.large_variance = to(large_variance)
        self.large_log_variance = to(np.log(large_variance))

    def _to_device(self, a):
        return backend.xp().asarray(a, dtype=self.dtype)

    # -------------------------------------------------------------------- helpers
    extract = staticmethod(extract)       # the module-level helper, as self.extract

    def _x(self, name, x):
        """An array input: cast to the working dtype, finite, with a batch axis."""
        x = as_data(name, x, self.dtype)
        check_batch(name, x)
        return x

    def _t(self, t, x, name="t"):
        return as_timesteps(t, self.num_timesteps, x.shape[0], name)

    def _noise(self, noise, like_name, like, name="noise"):
        """The given noise (checked), or a fresh draw ε ~ N(0, I) shaped like `like`."""
        if noise is None:
            return backend.rng().standard_normal(like.shape, dtype=self.dtype)
        noise = as_data(name, noise, self.dtype)
        check_same_shape(name, noise, like_name, like)
        return noise

    # -------------------------------------------------------------------- forward process
    def q_mean_variance(self, x0, t):
        """Mean, variance and log-variance of q(x_t | x0) (Eq. 4)."""
        x0 = self._x("x0", x0)
        t = self._t(t, x0)
        mean = x0 * self.extract(self.sqrt_alphas_cumprod, t, x0.shape)           # Eq. 4
        variance = 1.0 - self.extract(self.alphas_cumprod, t, x0.shape)           # Eq. 4
        log_variance = self.extract(self.log_one_minus_alphas_cumprod, t, x0.shape)
        return mean, variance, log_variance

    def q_sample(self, x0, t, noise=None):
        """x_t = √ᾱ_t x0 + √(1 - ᾱ_t) ε: a draw of q(x_t | x0) in one step (Eq. 4, as in Eq. 9).

        A GPU seam: arrays in, array out, one elementwise expression.
        """
        x0 = self._x("x0", x0)
        t = self._t(t, x0)
        noise = self._noise(noise, "x0", x0)
        if cuda.use_kernels(x0, noise):
            return cuda.q_sample(x0, noise, t, self.sqrt_alphas_cumprod,
                                 self.sqrt_one_minus_alphas_cumprod)
        return (x0 * self.extract(self.sqrt_alphas_cumprod, t, x0.shape)             # Eq. 4
                + noise * self.extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape))

    def q_step(self, x_prev, t, noise=None):
        """One Markov transition x_t = √(1 - β_t) x_{t-1} + √β_t ε (Eq. 2).

        0-based: index t applies β[t], the paper's β_{t+1}, taking x_t to x_{t+1} in the paper's
        numbering. Iterating q_step over t = 0 … k equals q_sample(x0, k) in distribution.
        """
        x_prev = self._x("x_prev", x_prev)
        t = self._t(t, x_prev)
        noise = self._noise(noise, "x_prev", x_prev)
        return (x_prev * self.extract(self.sqrt_alphas, t, x_prev.shape)             # Eq. 2
                + noise * self.extract(self.sqrt_betas, t, x_prev.shape))

    # -------------------------------------------------------------------- posterior
    def q_posterior_mean_variance(self, x0, x_t, t):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0) (Eq. 6-7).

        x0 and x_t are both arrays or both Tensors (then the mean is a Tensor too).
        """
        x0, x_t = self._pair("x0", x0, "x_t", x_t)
        t = self._t(t, x_t)
        if cuda.use_kernels(x0, x_t):                  # arrays, e.g. the μ-loss target
            mean = cuda.posterior_mean(x0, x_t, t, self.posterior_mean_coef1,
                                       self.posterior_mean_coef2)
        else:
            mean = (x0 * self.extract(self.posterior_mean_coef1, t, x_t.shape)       # Eq. 7
                    + x_t * self.extract(self.posterior_mean_coef2, t, x_t.shape))   # Eq. 7
        variance = self.extract(self.posterior_variance, t, x_t.shape)                # Eq. 7
        log_variance = self.extract(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance

    def _pair(self, name_a, a, name_b, b):
        """Two inputs of one kind: Tensors are kept (for gradients), anything else is checked."""
        if not isinstance(a, Tensor):
            a = self._x(name_a, a)
        if not isinstance(b, Tensor):
            b = self._x(name_b, b)
        if isinstance(a, Tensor) != isinstance(b, Tensor):
            a = a if isinstance(a, Tensor) else Tensor(a)
            b = b if isinstance(b, Tensor) else Tensor(b)
        check_same_shape(name_a, a, name_b, b)
        return a, b

    # -------------------------------------------------------------------- conversions
    def predict_start_from_noise(self, x_t, t, eps):
        """x̂0 = (x_t - √(1 - ᾱ_t) ε) / √ᾱ_t (Eq. 15; Eq. 4 solved for x0)."""
        x_t, eps = self._pair("x_t", x_t, "eps", eps)
        t = self._t(t, x_t)
        return (x_t * self.extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape)      # Eq. 15
                - eps * self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def predict_noise_from_start(self, x_t, t, x0):
        """ε = (x_t - √ᾱ_t x0) / √(1 - ᾱ_t) (Eq. 4 solved for ε)."""
        x_t, x0 = self._pair("x_t", x_t, "x0", x0)
        t = self._t(t, x_t)
        return ((x_t * self.extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) - x0)
                / self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))       # Eq. 4

    def predict_start_from_mean(self, x_t, t, mean):
        """x0 = (μ̃ - coef2 · x_t) / coef1 (Eq. 7 solved for x0), for μ-prediction."""
        x_t, mean = self._pair("x_t", x_t, "mean", mean)
        t = self._t(t, x_t)
        return ((mean - x_t * self.extract(self.posterior_mean_coef2, t, x_t.shape))
                / self.extract(self.posterior_mean_coef1, t, x_t.shape))              # Eq. 7

    def get_v(self, x0, t, noise):
        """v = √ᾱ_t ε - √(1 - ᾱ_t) x0 (Salimans & Ho 2022, §4)."""
        x0, noise = self._pair("x0", x0, "noise", noise)
        t = self._t(t, x0)
        return (noise * self.extract(self.sqrt_alphas_cumprod, t, x0.shape)
                - x0 * self.extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape))

    def predict_start_from_v(self, x_t, t, v):
        """x0 = √ᾱ_t x_t - √(1 - ᾱ_t) v (Salimans & Ho 2022, §4)."""
        x_t, v = self._pair("x_t", x_t, "v", v)
        t = self._t(t, x_t)
        return (x_t * self.extract(self.sqrt_alphas_cumprod, t, x_t.shape)
                - v * self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape))

    def predict_noise_from_v(self, x_t, t, v):
        """ε = √(1 - ᾱ_t) x_t + √ᾱ_t v (Salimans & Ho 2022, §4)."""
        x_t, v = self._pair("x_t", x_t, "v", v)
        t = self._t(t, x_t)
        return (x_t * self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape)
                + v * self.extract(self.sqrt_alphas_cumprod, t, x_t.shape))

    def p_mean_from_noise(self, x_t, t, eps):
        """μ_θ = (x_t - β_t/√(1 - ᾱ_t) · ε) / √α_t (Eq. 11; with the true ε it is μ̃_t, Eq. 10)."""
        x_t, eps = self._pair("x_t", x_t, "eps", eps)
        t = self._t(t, x_t)
        return ((x_t - eps * self.extract(self.eps_coef, t, x_t.shape))               # Eq. 11
                * self.extract(self.recip_sqrt_alphas, t, x_t.shape))                 # Eq. 11

    def true_bound_eps_weight(self, t):
        """β_t² / (2σ_t² α_t (1 - ᾱ_t)), the weight of ‖ε - ε_θ‖² in L_{t-1} (Eq. 12).

        L_simple (Eq. 14) sets it to 1. σ_t² is the fixed variance chosen at construction.
        """
        t = backend.xp().asarray(t)
        t = as_timesteps(t, self.num_timesteps, t.shape[0] if t.ndim == 1 else -1)
        if self.variance.channels != 1:
            raise ValueError("true_bound_eps_weight: needs a fixed variance, got "
                             f"{self.variance.name!r}")
        sigma2 = backend.xp().exp(self.variance.fn(self, None, t, (len(t),))[1])
        return (self.betas[t] ** 2                                                     # Eq. 12
                / (2.0 * sigma2 * self.alphas[t] * (1.0 - self.alphas_cumprod[t])))    # Eq. 12

    # -------------------------------------------------------------------- reverse process
    def call_model(self, model, x_t, t):
        """The network output as a Tensor of the expected shape and dtype."""
        out = model(Tensor(x_t), t)
        if not isinstance(out, Tensor):
            out = Tensor(backend.xp().asarray(out, dtype=self.dtype))
        expected = tuple(x_t.shape)
        if self.variance.channels != 1:
            if x_t.ndim < 2:
                raise ValueError(f"x_t: variance={self.variance.name!r} needs a channel axis, "
                                 f"shape (B, C, ...), got {tuple(x_t.shape)}")
            expected = (x_t.shape[0], x_t.shape[1] * self.variance.channels) + expected[2:]
        if out.shape != expected:
            raise ValueError(f"model: output must have shape {expected} (x_t is "
                             f"{tuple(x_t.shape)}, variance={self.variance.name!r}), "
                             f"got {out.shape}")
        if out.dtype != self.dtype:
            raise ValueError(f"model: output dtype must be the working dtype {self.dtype}, "
                             f"got {out.dtype}")
        return out

    def split_output(self, out):
        """(mean part, variance part): learned_range doubles the channels (axis 1)."""
        if self.variance.channels == 1:
            return out, None
        C = out.shape[1] // 2
        return out[:, :C], out[:, C:]

    def model_mean_variance(self, out, x_t, t, clip_denoised=False):
        """p_θ(x_{t-1} | x_t) = N(μ_θ, σ_t² I) from the network output `out` (Eq. 1).

        Tensor math, so a loss built on it is differentiable. With clip_denoised, x̂0 is
        clipped to the data range [-1, 1] and the mean is the posterior mean at the clipped
        x̂0 (Eq. 7); without, the mean comes from the parameterisation (Eq. 11 for ε).
        Returns a dict of Tensors: mean, variance, log_variance, pred_x0.
        """
        x_t = x_t if isinstance(x_t, Tensor) else Tensor(x_t)
        mean_out, var_out = self.split_output(out)
        variance, log_variance = self.variance.fn(self, var_out, t, x_t.shape)
        pred_x0 = self.param.predict_start(self, mean_out, x_t, t)
        if clip_denoised:
            pred_x0 = F.clip(pred_x0, -1.0, 1.0)                      # x̂0 in the data range
            mean = self.q_posterior_mean_variance(pred_x0, x_t, t)[0]  # Eq. 7 at clipped x̂0
        else:
            mean = self.param.predict_mean(self, mean_out, x_t, t)     # μ_θ, e.g. Eq. 11
        return {"mean": mean, "variance": _tensor(variance),
                "log_variance": _tensor(log_variance), "pred_x0": pred_x0}

    def p_mean_variance(self, model, x_t, t, clip_denoised=True):
        """Call the model (under no_grad) and return p_θ(x_{t-1} | x_t) as arrays (Eq. 1).

        Keys: mean, variance, log_variance (broadcastable to x_t), pred_x0 (x̂0).
        """
        x_t = self._x("x_t", x_t)
        t = self._t(t, x_t)
        with no_grad():
            out = self.call_model(model, x_t, t)
            p = self.model_mean_variance(out, x_t, t, clip_denoised)
        return {k: v.data for k, v in p.items()}

    def reverse_step(self, pred_x0, x_t, t, log_variance, z, clip_denoised=True):
        """x_{t-1} = μ̃_t(x_t, x̂0) + σ_t z, with no noise at the last step (Alg. 2).

        The fused seam of sampling: arrays in, array out, all elementwise. `pred_x0` is the
        model's x̂0, `log_variance` log σ_t² (broadcastable), z ~ N(0, I) drawn by the caller.
        Index 0 is the paper's t = 1, where Alg. 2 adds no noise (z = 0).
        """
        per_sample = (x_t.shape[0],) + (1,) * (x_t.ndim - 1)     # a fixed variance: one σ_t each
        if cuda.use_kernels(pred_x0, x_t, z, log_variance) and log_variance.shape == per_sample:
            sigma = backend.xp().exp(0.5 * log_variance).reshape(-1)                  # (B,) σ_t
            return cuda.reverse_step(pred_x0, x_t, t, z, param="x0", clip=clip_denoised,
                                     sqrt_recip_abar=self.sqrt_recip_alphas_cumprod,
                                     sqrt_recipm1_abar=self.sqrt_recipm1_alphas_cumprod,
                                     coef1=self.posterior_mean_coef1,
                                     coef2=self.posterior_mean_coef2, sigma=sigma)[0]
        if clip_denoised:
            pred_x0 = backend.xp().clip(pred_x0, -1.0, 1.0)           # x̂0 in the data range
        mean = (pred_x0 * self.extract(self.posterior_mean_coef1, t, x_t.shape)      # Eq. 7
                + x_t * self.extract(self.posterior_mean_coef2, t, x_t.shape))       # Eq. 7
        nonzero = (t != 0).astype(self.dtype).reshape((-1,) + (1,) * (x_t.ndim - 1))  # (B, 1, …)
        sigma = backend.xp().exp(0.5 * log_variance)                                  # σ_t
        return mean + nonzero * sigma * z                                             # Alg. 2

    def p_sample(self, model, x_t, t, clip_denoised=True, z=None):
        """One reverse step: a draw of x_{t-1} ~ p_θ(x_{t-1} | x_t) (Alg. 2, lines 3-4).

        0-based: index t maps the paper's x_{t+1} to x_t. z is drawn here unless given.
        """
        x_t = self._x("x_t", x_t)
        t = self._t(t, x_t)
        z = self._noise(z, "x_t", x_t, "z")                                   # Alg. 2, line 3
        with no_grad():
            out = self.call_model(model, x_t, t)
            mean_out, var_out = self.split_output(out)
            log_variance = self.variance.fn(self, var_out, t, x_t.shape)[1]
            pred_x0 = self.param.predict_start(self, mean_out, Tensor(x_t), t)
        log_variance = log_variance.data if isinstance(log_variance, Tensor) else log_variance
        return self.reverse_step(pred_x0.data, x_t, t, log_variance, z, clip_denoised)

    def p_sample_loop_progressive(self, model, shape=None, x_T=None, clip_denoised=True,
                                  every=1):
        """Algorithm 2, yielding (s, x_s) for the paper's s = T, then every `every`-th state,
        always ending with s = 0 (the sample). x_T ~ N(0, I) is drawn unless given."""
        x = self.initial_state("x_T", shape, x_T)
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every: must be an int >= 1, got {every!r}")
        yield self.num_timesteps, x                                    # x_T, Alg. 2, line 1
        for i in reversed(range(self.num_timesteps)):                  # Alg. 2, line 2 (t = i+1)
            x = self.p_sample(model, x, i, clip_denoised)              # Alg. 2, lines 3-4
            if i % every == 0:
                yield i, x

    def p_sample_loop(self, model, shape=None, x_T=None, clip_denoised=True):
        """Algorithm 2: from x_T ~ N(0, I) (or the given x_T) down to a sample x_0."""
        for _, x in self.p_sample_loop_progressive(model, shape, x_T, clip_denoised):
            pass
        return x

    def initial_state(self, name, shape, x_start):
        """The chain's start: the given array (checked), or N(0, I) of the given shape."""
        if x_start is not None:
            x_start = self._x(name, x_start)
            if shape is not None and tuple(shape) != tuple(x_start.shape):
                raise ValueError(f"{name}: has shape {tuple(x_start.shape)}, but shape="
                                 f"{tuple(shape)} was asked for")
            return x_start
        if shape is None or len(shape) < 1 or not all(
                isinstance(n, (int, np.integer)) and n >= 1 for n in shape):
            raise ValueError(f"shape: must be a tuple of ints >= 1 such as (B, C, H, W), "
                             f"got {shape!r}")
        return backend.rng().standard_normal(tuple(shape), dtype=self.dtype)

    # -------------------------------------------------------------------- training
    def training_losses(self, model, x0, t=None, noise=None):
        """The per-example loss, a Tensor (B,) differentiable w.r.t. the model (Alg. 1).

        t ~ U{0, …, T-1} (0-based; the paper's t ~ U{1, …, T}) and ε ~ N(0, I) are drawn
        unless given. x_t = q_sample(x0, t, ε) (Alg. 1, line 5), then the loss chosen at
        construction: simple (Eq. 14), mu_mse (Eq. 8), kl (Eq. 5) or hybrid.
        """
        x0 = self._x("x0", x0)
        if t is None:
            t = backend.rng().integers(0, self.num_timesteps, size=x0.shape[0])  # Alg. 1, 3
        t = self._t(t, x0)
        noise = self._noise(noise, "x0", x0)                                 # Alg. 1, line 4
        x_t = self.q_sample(x0, t, noise)                              # Alg. 1, line 5
        out = self.call_model(model, x_t, t)
        return self.loss_fn(self, out, x0, x_t, t, noise)

    # -------------------------------------------------------------------- likelihood
    def prior_bpd(self, x0):
        """L_T in bits/dim for each example (Eq. 5). See likelihood.prior_bpd."""
        return likelihood.prior_bpd(self, x0)

    def calc_bpd_loop(self, model, x0, clip_denoised=True):
        """Every term of the bound (Eq. 5) in bits/dim. See likelihood.calc_bpd_loop."""
        return likelihood.calc_bpd_loop(self, model, x0, clip_denoised)


def _tensor(x):
    """x as a Tensor, keeping a Tensor (and its graph) as it is."""
    return x if isinstance(x, Tensor) else Tensor(x)
