"""The fast path of group_norm, and of SiLU(group_norm(x)), on NumPy arrays.

norm.py's group_norm_reference is Wu & He's algorithm line by line, one NumPy pass per line:
seven passes over the activation forward, and a SiLU after it took eight more. This file
computes the same numbers in fewer passes (nine forward, SiLU included):

1. Per-channel coefficients. With μ and rstd = 1/√(σ² + ε) known per (sample, group), the
   output is one affine map per (sample, channel): y = a·x + k, where a = γ·rstd and
   k = β - μ·a (Wu & He 2018, Eq. 1 and 4 folded). Two passes instead of four.
2. One pass for each sum of products, σ² = mean((x - μ)²) and Σ dh·x̂: a row-wise dot
   product (einsum).
3. SiLU as an epilogue. In the U-Net every norm but the attention block's is followed by
   SiLU (Elfwing et al. 2018). `silu=True` applies it to y in the same sweep, and the
   backward rebuilds y's input from x, μ and rstd instead of keeping it: one activation
   saved per pair, and one op instead of two.

The backward in closed form (Wu & He 2018; the same algebra as groupnorm.py's reference), with
dx̂ = γ·dh and means over each group's M = C/G·H·W numbers:

    dx = rstd · (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂))
    dγ_c = Σ_{b, pixels} dh · x̂              dβ_c = Σ_{b, pixels} dh

where dh = dy, or, after SiLU, dh = dy · σ(h) · (1 + h·(1 - σ(h))).
tests/test_norm_fast.py holds these functions equal to the reference on random shapes.
"""
import numpy as np


def _rows(a, B, G):
    """(B, C, ...) -> (B·G, C/G, H·W): one row per (sample, group), its channels inside."""
    return a.reshape(B * G, a.shape[1] // G, -1)


def _per_row(v, B, G, cg):
    """A per-channel (C,) array as (B·G, C/G, 1), lined up with _rows."""
    return np.broadcast_to(v.reshape(1, G, cg), (B, G, cg)).reshape(B * G, cg, 1)


def _silu_inplace(h, tmp):
    """h <- h · σ(h) = h / (1 + e^-h), using tmp (same shape) as scratch.

    e^-h overflows to inf for h < -88 (float32); h / inf = -0 is the right limit, so the
    overflow warning is silenced rather than avoided."""
    np.negative(h, out=tmp)
    with np.errstate(over="ignore"):
        np.exp(tmp, out=tmp)
    tmp += 1
    h /= tmp


def forward(x, G, gamma, beta, eps, silu):
    """y = [SiLU](γ · (x - μ) · rstd + β) per group; returns y, μ (B, G), rstd (B, G).

    x (B, C, ...) float32 or float64; gamma and beta (C,) arrays of x's dtype."""
    B = x.shape[0]
    xr = _rows(x, B, G)                                            # (B·G, C/G, HW)
    n, cg, hw = xr.shape
    mu = xr.reshape(n, -1).sum(axis=1) / (cg * hw)                 # (n,) μ, Wu & He 2018, Eq. 2
    xc = xr - mu[:, None, None]                                    # (n, C/G, HW) x - μ
    flat = xc.reshape(n, -1)
    var = np.einsum("ij,ij->i", flat, flat) / (cg * hw)           # σ², Wu & He 2018, Eq. 2
    rstd = 1 / np.sqrt(var + eps)                                  # (n,) 1/√(σ² + ε)
    a = _per_row(gamma, B, G, cg) * rstd[:, None, None]            # (n, C/G, 1) γ · rstd
    k = _per_row(beta, B, G, cg) - mu[:, None, None] * a           # β - μ · γ · rstd
    y = np.multiply(xr, a)
    y += k                                              # y = a x + k, Wu & He 2018, Eq. 1, 4
    if silu:
        _silu_inplace(y, xc)                                       # xc is free: reuse it
    return y.reshape(x.shape), mu.reshape(B, G), rstd.reshape(B, G)


def backward(dy, x, mean, rstd, gamma, beta, silu):
    """dx (B, C, ...), dγ (C,), dβ (C,) of forward(), from its saved μ and rstd (B, G)."""
    B, G = mean.shape
    xr, dyr = _rows(x, B, G), _rows(dy, B, G)                     # (B·G, C/G, HW)
    n, cg, hw = xr.shape
    g = _per_row(gamma, B, G, cg)                                  # (n, C/G, 1) γ
    r = rstd.reshape(n, 1, 1)
    x_hat = xr - mean.reshape(n, 1, 1)
    x_hat *= r                                                     # (n, C/G, HW) x̂
    if silu:                                                       # h = γ x̂ + β, rebuilt
        h = x_hat * g
        h += _per_row(beta, B, G, cg)
        s = np.negative(h)
        with np.errstate(over="ignore"):
            np.exp(s, out=s)
        s += 1
        np.reciprocal(s, out=s)                                    # σ(h) = 1 / (1 + e^-h)
        h *= s                                                     # SiLU(h) = h σ(h)
        dh = 1 - s
        dh *= h
        dh += s                                                    # σ + hσ(1 - σ)
        dh *= dyr                                                  # dh = dy · SiLU'(h)
    else:
        dh = dyr.copy()
    sum_dh = dh.sum(axis=2)                                        # (n, C/G) Σ dh
    sum_dh_xhat = np.einsum("ijk,ijk->ij", dh, x_hat)              # (n, C/G) Σ dh · x̂
    M = cg * hw
    mean_dxhat = (g[:, :, 0] * sum_dh).sum(axis=1) / M             # (n,) mean(dx̂), dx̂ = γ dh
    mean_dxhat_xhat = (g[:, :, 0] * sum_dh_xhat).sum(axis=1) / M   # (n,) mean(dx̂ · x̂)
    dh *= g * r                                                    # rstd · dx̂
    x_hat *= r * mean_dxhat_xhat[:, None, None]
    dh -= x_hat                                                    # - rstd · x̂ · mean(dx̂ x̂)
    dh -= r * mean_dxhat[:, None, None]                            # - rstd · mean(dx̂)
    dgamma = sum_dh_xhat.reshape(B, G * cg).sum(axis=0)            # dγ_c = Σ dh · x̂
    dbeta = sum_dh.reshape(B, G * cg).sum(axis=0)                  # dβ_c = Σ dh
    return dh.reshape(x.shape), dgamma, dbeta
