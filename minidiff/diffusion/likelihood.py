"""The variational bound in bits per dimension (Ho et al. 2020, Eq. 3 and 5).

    L = L_T + Σ_{t>1} L_{t-1} + L_0                   Ho et al. 2020, Eq. 5
    L_T     = KL(q(x_T | x0) ‖ p(x_T))               prior_bpd
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) ‖ p_θ(x_{t-1} | x_t))
                                normal_kl; Ho et al. 2020, Eq. 6-7 against their Eq. 1
    L_0     = -log p_θ(x0 | x1)  discretized_gaussian_log_likelihood, Ho et al. 2020, Eq. 13

The building blocks take arrays or Tensors and return Tensors, so the same code gives the
training loss (differentiable) and the evaluation (under no_grad); GaussianDiffusion
(training_losses, prior_bpd, calc_bpd_loop) hands them the posterior and p_θ. Data x0 are
integers {0, …, 255} scaled linearly to [-1, 1] (Ho et al. 2020, §3.3). With 0-based time
arrays, index t holds the paper's step t+1, so index 0 is the decoder term L_0 and index t >= 1
is L_t.
"""
import math

from .. import backend
from .. import functional as F
from ..functional._util import as_tensor
from ..autograd import no_grad
from ..tensor import Tensor

LN2 = math.log(2.0)


def _tensors(*xs):
    """Arrays, Tensors and numbers as Tensors; numbers take the dtype of the first array."""
    ref = next((x for x in xs if isinstance(x, Tensor)), None)
    if ref is None:
        ref = Tensor(next(x for x in xs if hasattr(x, "dtype")))
    return [as_tensor(x, like=ref) for x in xs]


def mean_flat(x):
    """Mean over every axis but the batch axis: (B, ...) -> (B,)."""
    return x.mean(axis=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) per element, in nats.

    The KL terms of Ho et al. 2020, Eq. 5 compare Gaussians, so they have this closed form
    (Ho et al. 2020, §2).
    """
    mean1, logvar1, mean2, logvar2 = _tensors(mean1, logvar1, mean2, logvar2)
    return 0.5 * (logvar2 - logvar1 - 1.0                   # log(σ2²/σ1²) - 1
                  + F.exp(logvar1 - logvar2)                # + σ1²/σ2²
                  + (mean1 - mean2) ** 2 * F.exp(-logvar2))  # + (μ1 - μ2)²/σ2²


def approx_standard_normal_cdf(x):
    """Φ(x) ≈ ½(1 + tanh(√(2/π)(x + 0.044715 x³))), the approximation of Ho et al.'s code."""
    (x,) = _tensors(x)
    return 0.5 * (1.0 + F.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log p(x) per element, for x on the 256-level grid of [-1, 1] (Ho et al. 2020, Eq. 13).

    p(x) is the mass of N(means, e^(2·log_scales)) on x's bin [x - 1/255, x + 1/255]; the
    first bin extends to -∞ and the last to +∞, so the 256 masses sum to one.
    """
    x, means, log_scales = _tensors(x, means, log_scales)
    xp = backend.xp()
    centered = x - means
    inv_stdv = F.exp(-log_scales)
    # Ho et al. 2020, Eq. 13: δ+ and δ- are the bin's edges, ±∞ at the first and last bins
    cdf_plus = approx_standard_normal_cdf((centered + 1.0 / 255) * inv_stdv)   # at δ+
    cdf_min = approx_standard_normal_cdf((centered - 1.0 / 255) * inv_stdv)    # at δ-
    log_cdf_plus = F.log(F.maximum(cdf_plus, 1e-12))                # x = -1: ∫ from -∞
    log_one_minus_cdf_min = F.log(F.maximum(1.0 - cdf_min, 1e-12))  # x = 1: ∫ to +∞
    log_cdf_delta = F.log(F.maximum(cdf_plus - cdf_min, 1e-12))     # the inner bins
    # Choose the edge or inner form per element with 0/1 masks (all three are finite).
    first = (x.data < -0.999).astype(x.dtype)
    last = (x.data > 0.999).astype(x.dtype)
    inner = xp.ones_like(x.data) - first - last
    return log_cdf_plus * first + log_one_minus_cdf_min * last + log_cdf_delta * inner


def vb_terms_bpd(true_mean, true_log_variance, model_mean, model_log_variance, x0, t):
    """The bound's term for each example's timestep, in bits/dim, shape (B,).

    Index t >= 1 (the paper's L_t, from step t+1): KL(q(x_t | x_{t+1}, x0) ‖ p_θ), the
    posterior's mean and log-variance (Ho et al. 2020, Eq. 6-7) against the model's (their
    Eq. 1), Ho et al. 2020, Eq. 5. Index 0 (the paper's L_0): the discretized decoder's negative
    log-likelihood (Ho et al. 2020, Eq. 13). x0 is an array; the rest arrays or Tensors.
    """
    kl = normal_kl(true_mean, true_log_variance, model_mean, model_log_variance)
    kl = mean_flat(kl) * (1.0 / LN2)                                # (B,) Ho et al. 2020, Eq. 5
    log_scales = model_log_variance * 0.5
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, log_scales)
    nll = mean_flat(nll) * (1.0 / LN2)                              # (B,) Ho et al. 2020, Eq. 13
    is_decoder = (t == 0).astype(x0.dtype)                          # (B,)
    return nll * is_decoder + kl * (1.0 - is_decoder)               # Ho et al. 2020, Eq. 5


def prior_bpd(mean, log_variance):
    """L_T = KL(N(mean, e^log_variance) ‖ N(0, I)) in bits/dim, a NumPy array (B,), for the
    mean and log-variance of q(x_T | x0) (Ho et al. 2020, Eq. 4 and 5)."""
    with no_grad():
        kl = normal_kl(mean, log_variance, 0.0, 0.0)                # Ho et al. 2020, Eq. 5
    return backend.to_numpy(mean_flat(kl).data) / LN2
