"""The training losses, one small function each, chosen once when GaussianDiffusion is built.

Each takes (diffusion, out, x0, x_t, t, noise): `out` is the network's output Tensor, x0, x_t
and noise are arrays, t holds 0-based indices (index t is the paper's step t+1). Each returns
a Tensor (B,) of per-example losses, built from Tensor ops so that backward() reaches the
network. Squared errors are averaged over the dimensions of one example, as in Ho et al.'s code
(Ho et al. 2020, Eq. 14 writes the sum: the two differ by the constant factor D).

The μ-MSE's weight is chosen once too, from MU_MSE_WEIGHTS: none (Ho et al. 2020, Table 2's
unweighted MSE) or bound (1/(2σ_t²), Ho et al. 2020, Eq. 8).
"""
from .. import backend
from .. import functional as F
from .likelihood import mean_flat, vb_terms_bpd


def loss_simple(d, out, x0, x_t, t, noise):
    """L_simple: ‖target - output‖², for whatever the network predicts (Ho et al. 2020, Eq. 14).

    For ε-prediction the target is the noise ε (that equation itself); for x0, μ and v it is
    the same unweighted MSE on their own targets.
    """
    target = d.param.target(d, x0, x_t, t, noise)
    return mean_flat((out - target) ** 2)                           # Ho et al. 2020, Eq. 14


def loss_mu_mse(d, out, x0, x_t, t, noise):
    """‖μ̃_t(x_t, x0) - μ_θ(x_t, t)‖², times the weight chosen at construction (d.mu_mse_weight).

    Unweighted, this is the posterior-mean MSE of Ho et al. 2020, Table 2 ("μ̃ prediction,
    MSE"); weighted by 1/(2σ_t²), each term is L_{t-1} up to a constant (Ho et al. 2020, Eq. 8).
    """
    true_mean = d._q_posterior_mean_variance(x0, x_t, t)[0]       # μ̃_t, Ho et al. 2020, Eq. 7
    model_mean = d.param.predict_mean(d, out, x_t, t)               # μ_θ
    mse = mean_flat((model_mean - true_mean) ** 2)                  # (B,)
    return mse * d.mu_mse_weight(d, t)                              # (B,)


def unweighted(d, t):
    """1: the plain MSE of Ho et al. 2020, Table 2."""
    return 1.0


def bound_weight(d, t):
    """1/(2σ_t²) per example (B,), which makes the μ-MSE the bound's L_{t-1} up to a constant
    (Ho et al. 2020, Eq. 8). σ_t² is the fixed variance chosen at construction."""
    log_variance = d.variance.fn(d, None, t, t.shape)[1]           # (B,) log σ_t²
    return 0.5 / backend.xp().exp(log_variance)                     # Ho et al. 2020, Eq. 8


def loss_kl(d, out, x0, x_t, t, noise):
    """The true variational bound's term at t, in bits/dim (Ho et al. 2020, Eq. 5): L_{t-1} for
    t > 1 as a KL between Gaussians (Ho et al. 2020, Eq. 8 and 12 for a fixed σ_t), and L_0
    from the discrete decoder (Ho et al. 2020, Eq. 13).

    L_T does not depend on θ and is left out; T times the mean over uniform t estimates the
    rest of the bound.
    """
    p = d.model_mean_variance(d.predictions(out, x_t, t), x_t, t)
    return vb_terms_bpd(d, p["mean"], p["log_variance"], x0, x_t, t)   # Ho et al. 2020, Eq. 5


def loss_hybrid(d, out, x0, x_t, t, noise):
    """L_simple + λ L_vlb, the bound training only the variance (Nichol & Dhariwal 2021, Eq. 16).

    The mean half of the output is detached in the bound term, so L_simple alone trains the
    mean. L_vlb = Σ_t L_t is estimated by T · L_t for the sampled t.
    """
    mean_out, var_out = d.split_output(out)
    simple = loss_simple(d, mean_out, x0, x_t, t, noise)            # Ho et al. 2020, Eq. 14
    frozen = F.concat([mean_out.detach(), var_out], axis=1)         # (B, 2C, ...)
    p = d.model_mean_variance(d.predictions(frozen, x_t, t), x_t, t)
    vb = vb_terms_bpd(d, p["mean"], p["log_variance"], x0, x_t, t)  # Ho et al. 2020, Eq. 5
    return simple + vb * (d.hybrid_lambda * d.num_timesteps)  # Nichol & Dhariwal 2021, Eq. 16


LOSSES = {
    "simple": loss_simple,
    "mu_mse": loss_mu_mse,
    "kl": loss_kl,
    "hybrid": loss_hybrid,
}

MU_MSE_WEIGHTS = {
    "none": unweighted,
    "bound": bound_weight,
}
