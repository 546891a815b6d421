"""GaussianDiffusion: the forward process, its posterior, the reverse process and its losses.

The methods carry the names of Ho et al. 2020 and of their code (diffusion_utils_2.py in
github.com/hojonathanho/diffusion), and every formula line cites its paper and equation. The model
is any callable `model(x_t, t)`: x_t is a constant Tensor (B, ...), t an int64 array (B,), and it
returns a Tensor or an array.

Time. Arrays are 0-based, as in Ho et al.'s code: index t holds the paper's step t+1. So
`betas[t]` is the paper's β_{t+1}, `q_sample(x0, t)` draws the paper's x_{t+1}, and
`p_sample(model, x, t)` maps the paper's x_{t+1} to x_t.

Buffers. The schedule is computed once in float64 NumPy, then each buffer is cast once to the
working dtype (float32 by default) and device. `extract(a, t, shape)` reads a buffer at a batch
of timesteps, shaped to broadcast against x.

Checks at the door. A public method checks its inputs (finite arrays of the working dtype with
a batch axis, matching shapes, timesteps in range), then calls its private twin (`q_sample` →
`_q_sample`), which trusts them and is what the package calls: a loop of T steps checks its
inputs once, not T times (each finiteness check reads a whole array; on a GPU, it waits for it).

Data. x0, x_t, noise, t and the buffers are arrays. The network's output is a Tensor, and so is
everything computed from it (a Tensor op an array is a Tensor), so a loss built on it is
differentiable. The samplers call the network under no_grad and hand out arrays.

Seams for the GPU. `_q_sample`, the posterior mean of arrays and `reverse_step` (a sampling
step's work after the network call) each open with one `if cuda.use_kernels(...)` that hands
the whole step to a fused kernel (kernels/diffusion.cu, through minidiff.cuda); the lines below
it are the reference.
"""
import numpy as np

from .. import backend, cuda
from .. import functional as F
from ..tensor import Tensor, no_grad
from ..validate import check_choice, check_number
from . import likelihood, losses, sampling
from ._checks import as_data, as_timesteps, check_batch, check_same_shape
from .conversions import Conversions
from .parameterizations import PARAMETERIZATIONS, Prediction
from .schedules import check_betas
from .variances import VARIANCES

DTYPES = ("float32", "float64")


def extract(a, t, shape):
    """a[t] for a batch of timesteps t (B,), shaped (B, 1, …, 1) to broadcast against `shape`."""
    return a[t].reshape((t.shape[0],) + (1,) * (len(shape) - 1))


class GaussianDiffusion(Conversions):
    """Every buffer of the schedule, and the paper's quantities as methods.

        diffusion = GaussianDiffusion(get_beta_schedule("linear", 1000))
        loss = diffusion.training_losses(model, x0).mean()      # Ho et al. 2020, Algorithm 1
        x0 = diffusion.p_sample_loop(model, (16, 3, 32, 32))    # Ho et al. 2020, Algorithm 2

    parameterization   eps | x0 | mu | v        what the network predicts
    variance           fixed_large | fixed_small | learned_range     σ_t² of p_θ(x_{t-1} | x_t)
    loss               simple | mu_mse | kl | hybrid
    mu_mse_weight      none | bound: for loss="mu_mse", weight ‖μ̃ − μ_θ‖² by 1 (as in
                       Ho et al. 2020, Table 2) or by 1/(2σ_t²), the bound's (their Eq. 8)
    hybrid_lambda      λ of L_simple + λ L_vlb for loss="hybrid" (Nichol & Dhariwal 2021, Eq. 16)
    dtype              float32 | float64, the working dtype of every buffer and output
    Each choice is a small named function (or a pair of them) picked here, once.
    """

    def __init__(self, betas, parameterization="eps", variance="fixed_large", loss="simple",
                 mu_mse_weight="none", hybrid_lambda=0.001, dtype=np.float32):
        self.dtype = np.dtype(check_choice("dtype", np.dtype(dtype).name, DTYPES))
        self.param = check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        self.variance = check_choice("variance", variance, VARIANCES)
        self.loss_fn = check_choice("loss", loss, losses.LOSSES)
        self.mu_mse_weight = check_choice("mu_mse_weight", mu_mse_weight, losses.MU_MSE_WEIGHTS)
        self.hybrid_lambda = check_number("hybrid_lambda", hybrid_lambda, 0)
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
        # α_t = 1 - β_t and ᾱ_t = Π_{s<=t} α_s (Ho et al. 2020, §2), ᾱ through its log
        alphas = 1.0 - betas
        log_alphas_cumprod = np.cumsum(np.log1p(-betas))            # log ᾱ_t = Σ_{s<=t} log α_s
        alphas_cumprod = np.exp(log_alphas_cumprod)
        # 1 - ᾱ_t through expm1: exact even where ᾱ_t is within 1e-16 of 1 (a tiny β_1)
        one_minus_alphas_cumprod = -np.expm1(log_alphas_cumprod)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])   # ᾱ_{t-1}, with ᾱ_0 = 1
        one_minus_alphas_cumprod_prev = np.append(0.0, one_minus_alphas_cumprod[:-1])

        # q(x_t | x_{t-1}) = N(√α_t x_{t-1}, β_t I), Ho et al. 2020, Eq. 2
        sqrt_alphas = np.sqrt(alphas)
        sqrt_betas = np.sqrt(betas)
        # q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I), Ho et al. 2020, Eq. 4
        sqrt_alphas_cumprod = np.sqrt(alphas_cumprod)
        sqrt_one_minus_alphas_cumprod = np.sqrt(one_minus_alphas_cumprod)
        log_one_minus_alphas_cumprod = np.log(one_minus_alphas_cumprod)
        sqrt_recip_alphas_cumprod = np.sqrt(1.0 / alphas_cumprod)      # Ho et al. 2020, Eq. 15
        sqrt_recipm1_alphas_cumprod = np.sqrt(one_minus_alphas_cumprod / alphas_cumprod)
        # q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I), Ho et al. 2020, Eq. 6-7
        posterior_variance = betas * one_minus_alphas_cumprod_prev / one_minus_alphas_cumprod
        # β̃ is 0 at index 0 (x_0 is known there); clip its log with the next value, as in
        # Ho et al.'s code. With T = 1 there is no next value, so β_1 stands in.
        first = posterior_variance[1] if T > 1 else betas[0]
        posterior_log_variance_clipped = np.log(np.append(first, posterior_variance[1:]))
        # μ̃_t = coef1 x_0 + coef2 x_t, Ho et al. 2020, Eq. 7
        posterior_mean_coef1 = betas * np.sqrt(alphas_cumprod_prev) / one_minus_alphas_cumprod
        posterior_mean_coef2 = (one_minus_alphas_cumprod_prev * sqrt_alphas
                                / one_minus_alphas_cumprod)
        # p_θ(x_{t-1} | x_t) with ε-prediction, Ho et al. 2020, Eq. 11:
        # μ_θ = (x_t - β_t/√(1-ᾱ_t) ε_θ) / √α_t
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
        self.one_minus_alphas_cumprod = to(one_minus_alphas_cumprod)
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

    # -------------------------------------------------------------------- checks, at the door
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
        """Mean, variance and log-variance of q(x_t | x0) (Ho et al. 2020, Eq. 4)."""
        x0 = self._x("x0", x0)
        return self._q_mean_variance(x0, self._t(t, x0))

    def _q_mean_variance(self, x0, t):                                  # Ho et al. 2020, Eq. 4
        mean = x0 * self.extract(self.sqrt_alphas_cumprod, t, x0.shape)
        variance = self.extract(self.one_minus_alphas_cumprod, t, x0.shape)   # 1 - ᾱ_t, exact
        log_variance = self.extract(self.log_one_minus_alphas_cumprod, t, x0.shape)
        return mean, variance, log_variance

    def q_sample(self, x0, t, noise=None):
        """x_t = √ᾱ_t x0 + √(1 - ᾱ_t) ε: a draw of q(x_t | x0) in one step (Ho et al. 2020,
        Eq. 4; Ho et al. 2020, Eq. 9 writes it this way)."""
        x0 = self._x("x0", x0)
        t = self._t(t, x0)
        return self._q_sample(x0, t, self._noise(noise, "x0", x0))

    def _q_sample(self, x0, t, noise):                                  # Ho et al. 2020, Eq. 4
        if cuda.use_kernels(x0, noise):                           # the lines below, one kernel
            return cuda.q_sample(x0, noise, t, self.sqrt_alphas_cumprod,
                                 self.sqrt_one_minus_alphas_cumprod)
        return (x0 * self.extract(self.sqrt_alphas_cumprod, t, x0.shape)
                + noise * self.extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape))

    def q_step(self, x_prev, t, noise=None):
        """One Markov transition x_t = √(1 - β_t) x_{t-1} + √β_t ε (Ho et al. 2020, Eq. 2).

        0-based: index t applies β[t], the paper's β_{t+1}, taking x_t to x_{t+1} in the paper's
        numbering. Iterating q_step over t = 0 … k equals q_sample(x0, k) in distribution.
        """
        x_prev = self._x("x_prev", x_prev)
        t = self._t(t, x_prev)
        noise = self._noise(noise, "x_prev", x_prev)                 # Ho et al. 2020, Eq. 2:
        return (x_prev * self.extract(self.sqrt_alphas, t, x_prev.shape)
                + noise * self.extract(self.sqrt_betas, t, x_prev.shape))

    # -------------------------------------------------------------------- posterior
    def q_posterior_mean_variance(self, x0, x_t, t):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0), arrays in and out
        (Ho et al. 2020, Eq. 6-7)."""
        x0, x_t = self._x("x0", x0), self._x("x_t", x_t)
        check_same_shape("x0", x0, "x_t", x_t)
        return self._q_posterior_mean_variance(x0, x_t, self._t(t, x_t))

    def _q_posterior_mean_variance(self, x0, x_t, t):                  # Ho et al. 2020, Eq. 7
        """x0 an array (then one kernel on the GPU: the μ-loss target) or a Tensor (x̂0)."""
        if cuda.use_kernels(x0, x_t):                             # the lines below, one kernel
            mean = cuda.posterior_mean(x0, x_t, t, self.posterior_mean_coef1,
                                       self.posterior_mean_coef2)
        else:
            mean = (x0 * self.extract(self.posterior_mean_coef1, t, x_t.shape)
                    + x_t * self.extract(self.posterior_mean_coef2, t, x_t.shape))
        variance = self.extract(self.posterior_variance, t, x_t.shape)
        log_variance = self.extract(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance

    def true_bound_eps_weight(self, t):
        """β_t² / (2σ_t² α_t (1 - ᾱ_t)), the weight of ‖ε - ε_θ‖² in L_{t-1} (Ho et al. 2020,
        Eq. 12), which L_simple (Ho et al. 2020, Eq. 14) sets to 1. σ_t² is the fixed variance
        chosen at construction."""
        t = backend.xp().asarray(t)
        t = as_timesteps(t, self.num_timesteps, t.shape[0] if t.ndim == 1 else -1)
        if self.variance.channels != 1:
            raise ValueError("true_bound_eps_weight: needs a fixed variance, got "
                             f"{self.variance.name!r}")
        sigma2 = backend.xp().exp(self.variance.fn(self, None, t, t.shape)[1])
        return (self.betas[t] ** 2                                      # Ho et al. 2020, Eq. 12
                / (2.0 * sigma2 * self.alphas[t] * (1.0 - self.alphas_cumprod[t])))

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

    def predictions(self, out, x_t, t):
        """The network output `out` (a Tensor) as a Prediction: split, and x̂0 recovered by
        the parameterisation (for ε, Ho et al. 2020, Eq. 15)."""
        out, var_out = self.split_output(out)
        return Prediction(out, var_out, self.param.predict_start(self, out, x_t, t))

    def model_predictions(self, model, x_t, t):
        """Run the network once at (x_t, t), under no_grad: its Prediction (Tensors without a
        graph). Every sampler's network call (p_mean_variance, p_sample, DDIM, the bound)."""
        with no_grad():
            return self.predictions(self.call_model(model, x_t, t), x_t, t)

    def model_mean_variance(self, pred, x_t, t, clip_denoised=False):
        """p_θ(x_{t-1} | x_t) = N(μ_θ, σ_t² I) from a Prediction (Ho et al. 2020, Eq. 1).

        Tensor math, so a loss built on it is differentiable. Without clip_denoised the mean is
        the parameterisation's μ_θ (for ε, Ho et al. 2020, Eq. 11). With it, as in Ho et al.'s
        code, x̂0 is clipped to the data range [-1, 1] and the mean is the posterior mean μ̃_t
        at the clipped x̂0 (Ho et al. 2020, Eq. 7). Returns a dict of Tensors: mean, variance,
        log_variance (the last two broadcastable to x_t), pred_x0.
        """
        variance, log_variance = self.variance.fn(self, pred.var_out, t, x_t.shape)
        pred_x0 = pred.pred_x0
        if clip_denoised:
            pred_x0 = F.clip(pred_x0, -1.0, 1.0)                            # x̂0 in [-1, 1]
            mean = self._q_posterior_mean_variance(pred_x0, x_t, t)[0]  # Ho et al. 2020, Eq. 7
        else:
            mean = self.param.predict_mean(self, pred.out, x_t, t)     # Ho et al. 2020, Eq. 11
        return {"mean": mean, "variance": _tensor(variance),
                "log_variance": _tensor(log_variance), "pred_x0": pred_x0}

    def p_mean_variance(self, model, x_t, t, clip_denoised=True):
        """Call the model and return p_θ(x_{t-1} | x_t) as arrays (Ho et al. 2020, Eq. 1).

        Keys: mean, variance, log_variance (broadcastable to x_t), pred_x0 (x̂0).
        """
        x_t = self._x("x_t", x_t)
        return self._p_mean_variance(model, x_t, self._t(t, x_t), clip_denoised)

    def _p_mean_variance(self, model, x_t, t, clip_denoised):
        pred = self.model_predictions(model, x_t, t)                        # the network call
        p = self.model_mean_variance(pred, x_t, t, clip_denoised)      # Ho et al. 2020, Eq. 1
        return {k: v.data for k, v in p.items()}

    def p_sample(self, model, x_t, t, clip_denoised=True, z=None):
        """One reverse step: a draw of x_{t-1} ~ p_θ(x_{t-1} | x_t) (Ho et al. 2020, Alg. 2,
        lines 3-4), p_mean_variance plus σ_t z. 0-based: index t maps the paper's x_{t+1} to
        x_t. z is drawn here unless given."""
        x_t = self._x("x_t", x_t)
        t = self._t(t, x_t)
        z = self._noise(z, "x_t", x_t, "z")                 # Ho et al. 2020, Alg. 2, line 3
        return self._p_sample(model, x_t, t, clip_denoised, z)

    def _p_sample(self, model, x_t, t, clip_denoised, z):
        pred = self.model_predictions(model, x_t, t)                        # the network call
        return self.reverse_step(pred, x_t, t, clip_denoised, z)

    def reverse_step(self, pred, x_t, t, clip_denoised, z):
        """x_{t-1} = μ_θ + σ_t z, z = 0 at index 0 (the paper's t = 1), from the network's
        Prediction (Ho et al. 2020, Alg. 2, line 4). Arrays x_t, t, z in, an array out.

        The reference is the two lines at the end: p_mean_variance's mean and variance, plus
        σ_t z. With a fixed variance (one σ_t per example) on a GPU, one fused kernel does all
        of it instead: clip x̂0, take the posterior mean μ̃_t at it and add σ_t z.
        """
        xp = backend.xp()
        if self.variance.channels == 1 and cuda.use_kernels(x_t, z):
            sigma = xp.exp(0.5 * self.variance.fn(self, None, t, t.shape)[1])   # (B,) σ_t
            return cuda.reverse_step(pred.pred_x0.data, x_t, t, z, clip=clip_denoised,
                                     sigma=sigma, coef1=self.posterior_mean_coef1,
                                     coef2=self.posterior_mean_coef2)
        p = self.model_mean_variance(pred, x_t, t, clip_denoised)      # Ho et al. 2020, Eq. 1
        nonzero = (t != 0).astype(self.dtype).reshape((-1,) + (1,) * (x_t.ndim - 1))  # (B, 1…)
        sigma = xp.exp(0.5 * p["log_variance"].data)                        # σ_t
        return p["mean"].data + nonzero * sigma * z            # Ho et al. 2020, Alg. 2, line 4

    # ---------------------------------------------- the sampling loop (sampling.py has its lines)
    def p_sample_loop_progressive(self, model, shape=None, x_T=None, clip_denoised=True,
                                  every=1):
        """Algorithm 2 (Ho et al. 2020), yielding (s, x_s) for the paper's s = T, then every
        `every`-th state, always ending with s = 0 (the sample). See sampling.py."""
        return sampling.p_sample_loop_progressive(self, model, shape, x_T, clip_denoised, every)

    def p_sample_loop(self, model, shape=None, x_T=None, clip_denoised=True):
        """Algorithm 2 (Ho et al. 2020): from x_T ~ N(0, I) (or the given x_T) down to a
        sample x_0. See sampling.py."""
        return sampling.p_sample_loop(self, model, shape, x_T, clip_denoised)

    # -------------------------------------------------------------------- training
    # Algorithm 1 (Training), as Ho et al. 2020 print it, with t counted from 1:
    #   1: repeat
    #   2:   x_0 ~ q(x_0)
    #   3:   t ~ Uniform({1, . . . , T})
    #   4:   ε ~ N(0, I)
    #   5:   Take gradient descent step on
    #            ∇_θ ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²
    #   6: until converged
    # training_losses is lines 3-5 up to the gradient: it draws t (0-based: from {0, …, T-1})
    # and ε, builds x_t by q_sample and returns the loss chosen at construction, per example;
    # line 5's is loss="simple" (Ho et al. 2020, Eq. 14). The loop, the data (line 2) and the
    # gradient step are the Trainer's (minidiff/train.py).
    def training_losses(self, model, x0, t=None, noise=None):
        """The loss of each example, a Tensor (B,): Algorithm 1 of Ho et al. 2020 up to the
        gradient, differentiable w.r.t. the model. t and ε are drawn unless given."""
        x0 = self._x("x0", x0)                                  # Ho et al. 2020, Alg. 1, line 2
        if t is None:                                           # Ho et al. 2020, Alg. 1, line 3
            t = backend.rng().integers(0, self.num_timesteps, size=x0.shape[0])
        t = self._t(t, x0)
        noise = self._noise(noise, "x0", x0)                    # Ho et al. 2020, Alg. 1, line 4
        x_t = self._q_sample(x0, t, noise)                      # Ho et al. 2020, Alg. 1, line 5
        out = self.call_model(model, x_t, t)                    # ε_θ(x_t, t) for ε-prediction
        return self.loss_fn(self, out, x0, x_t, t, noise)       # Ho et al. 2020, Alg. 1, line 5

    # -------------------------------------------------------------------- likelihood
    def prior_bpd(self, x0):
        """L_T in bits/dim for each example (Ho et al. 2020, Eq. 5). See likelihood.prior_bpd."""
        return likelihood.prior_bpd(self, x0)

    def calc_bpd_loop(self, model, x0, clip_denoised=True):
        """Every term of the bound (Ho et al. 2020, Eq. 5) in bits/dim. See likelihood.py."""
        return likelihood.calc_bpd_loop(self, model, x0, clip_denoised)


def _tensor(x):
    """x as a Tensor, keeping a Tensor (and its graph) as it is."""
    return x if isinstance(x, Tensor) else Tensor(x)
