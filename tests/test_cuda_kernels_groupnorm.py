"""kernels/groupnorm.cu through minidiff.cuda, naive and block kernels: the forward against
float64 NumPy from Wu & He 2018 (Eq. 1-2, 4), the backward against float64 central finite
differences of that forward (vectorised: groups and channels are independent, so one pair of
evaluations perturbs the same element of every group, or every gamma_c, at once)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff import cuda
from cuda_emu.testing import RUNNERS, assert_close, on

EPS = float(np.finfo(np.float32).eps)

IMPLS = [pytest.param(True, id="naive"), pytest.param(False, id="block")]


@st.composite
def gn_case(draw):
    """(N, C, *spatial) with C = G * Cg; groups of 1 element up to a few hundred (more than a
    256-thread block), batch 1, odd sizes."""
    N = draw(st.integers(1, 3))
    G = draw(st.sampled_from([1, 2, 3, 4]))
    Cg = draw(st.sampled_from([1, 2, 3, 5]))
    spatial = tuple(draw(st.lists(st.integers(1, 9), min_size=0, max_size=2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    shape = (N, G * Cg, *spatial)
    x = (rng.standard_normal(shape) * 2 + rng.uniform(-1, 1)).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, G * Cg).astype(np.float32)
    beta = rng.uniform(-0.5, 0.5, G * Cg).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, gamma, beta, dy, G


class Tolerance:
    """Forward error bounds of float32 group norm. Centering x - mu loses |x| EPS absolutely,
    which normalising multiplies by rstd: xh is good to kappa EPS, kappa = 1 + rstd max|x|
    (large when a group's values nearly agree). Sums of L terms add L roundings. C counts
    the remaining roundings per element. (Finite differences are good to ~1e-9.)"""

    C = 8

    def __init__(self, x, G, rstd):
        N, C = x.shape[:2]
        self.shape, self.G, self.L = x.shape, G, x.size // (N * G)
        xg = np.abs(x.astype(np.float64)).reshape(N, G, -1)
        self.xmax = xg.max(axis=2)                                        # (N, G)
        self.rstd = np.asarray(rstd, np.float64)
        self.kappa = 1 + self.rstd * self.xmax                            # (N, G)
        self.mean = self.C * self.L * EPS * self.xmax
        self.rstd_rel = self.C * self.L * EPS * self.kappa

    def per_element(self, a):                     # (N, G) -> x's shape
        return np.repeat(a[:, :, None], self.L, axis=2).reshape(self.shape)

    def channel(self, v):                         # (C,) -> broadcast against x
        return v.astype(np.float64).reshape((1, -1) + (1,) * (len(self.shape) - 2))

    def y(self, gamma, beta):
        k = self.per_element(self.C * self.L * EPS * self.kappa)
        return k * (np.abs(self.channel(gamma)) * 4 + np.abs(self.channel(beta)) + 1)

    def dx(self, dy, gamma):
        N = self.shape[0]
        dxh = np.abs(dy * self.channel(gamma)).reshape(N, self.G, -1).mean(axis=2)
        return self.per_element(self.C * self.L * EPS * self.kappa * self.rstd * 4 * dxh)

    def dparams(self, dy, gamma):
        N = self.shape[0]
        terms = np.abs(dy) * (4 + self.per_element(self.kappa))          # |dy| (|xh| + kappa)
        per_c = terms.reshape(N, self.shape[1], -1).sum(axis=(0, 2))
        count = dy.size // self.shape[1]                                  # N HW terms summed
        return self.C * (count + 4) * EPS * per_c, self.C * (count + 4) * EPS * per_c


def gn_ref(x, gamma, beta, G, eps):
    """Wu & He 2018 in float64, straight from the equations."""
    N, C = x.shape[:2]
    xg = x.reshape(N, G, -1)
    mu = xg.mean(axis=2, keepdims=True)                                  # Eq. 2
    var = ((xg - mu) ** 2).mean(axis=2, keepdims=True)                   # Eq. 2
    xh = ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape)               # Eq. 1
    bshape = (1, C) + (1,) * (x.ndim - 2)
    y = xh * gamma.reshape(bshape) + beta.reshape(bshape)                # Eq. 4
    return y, mu.reshape(N, G), 1 / np.sqrt(var.reshape(N, G) + eps)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("naive", IMPLS)
@given(case=gn_case())
def test_group_norm_forward(runner, naive, case):
    x, gamma, beta, dy, G = case
    eps = 1e-5
    want_y, want_mu, want_rstd = gn_ref(x.astype(np.float64), gamma.astype(np.float64),
                                        beta.astype(np.float64), G, eps)
    with on(runner) as dev:
        y, mu, rstd = dev.get(cuda.group_norm_forward(*dev.put(x, gamma, beta), G, eps=eps,
                                                      naive=naive))
    tol = Tolerance(x, G, want_rstd)
    assert_close(mu, want_mu, atol=tol.mean, rtol=0, what="mean")
    assert_close(rstd, want_rstd, atol=0, rtol=tol.rstd_rel, what="rstd")
    assert_close(y, want_y, atol=tol.y(gamma, beta), rtol=0, what="y")


def fd_grads(x, gamma, beta, dy, G, eps, h=1e-6):
    """d<y, dy>/d(x, gamma, beta) by central differences of gn_ref, in float64."""
    N, C = x.shape[:2]
    L = x.size // (N * G)

    def per_group(xx):                            # <y, dy> of each group (n, g): (N, G)
        return (gn_ref(xx, gamma, beta, G, eps)[0] * dy).reshape(N, G, L).sum(axis=2)

    def per_channel(gg, bb):                      # <y, dy> of each channel c: (C,)
        y = gn_ref(x, gg, bb, G, eps)[0] * dy
        return y.reshape(N, C, -1).sum(axis=(0, 2))

    dx = np.empty((N, G, L))
    for j in range(L):                            # element j of every group at once
        xp, xm = x.copy().reshape(N, G, L), x.copy().reshape(N, G, L)
        xp[:, :, j] += h
        xm[:, :, j] -= h
        dx[:, :, j] = (per_group(xp.reshape(x.shape)) - per_group(xm.reshape(x.shape))) / (2 * h)
    dgamma = (per_channel(gamma + h, beta) - per_channel(gamma - h, beta)) / (2 * h)
    dbeta = (per_channel(gamma, beta + h) - per_channel(gamma, beta - h)) / (2 * h)
    return dx.reshape(x.shape), dgamma, dbeta


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("naive", IMPLS)
@given(case=gn_case())
def test_group_norm_backward(runner, naive, case):
    x, gamma, beta, dy, G = case
    eps = 1e-5
    x64, g64, b64, dy64 = (a.astype(np.float64) for a in (x, gamma, beta, dy))

    want = fd_grads(x64, g64, b64, dy64, G, eps)
    _, mu, rstd = gn_ref(x64, g64, b64, G, eps)
    with on(runner) as dev:
        dx, dgamma, dbeta = dev.get(cuda.group_norm_backward(
            *dev.put(dy, x, mu.astype(np.float32), rstd.astype(np.float32), gamma, beta), G,
            naive=naive))
    tol = Tolerance(x, G, rstd)
    assert_close(dx, want[0], atol=tol.dx(dy, gamma), rtol=1e-6, what="dx")
    atol_g, atol_b = tol.dparams(dy, gamma)
    assert_close(dgamma, want[1], atol=atol_g, rtol=1e-6, what="dgamma")
    assert_close(dbeta, want[2], atol=atol_b, rtol=1e-6, what="dbeta")


def test_group_norm_rejects_bad_groups():
    x = np.zeros((1, 6, 2, 2), np.float32)
    g = np.ones(6, np.float32)
    with on("ascending"):
        with pytest.raises(ValueError, match="groups"):
            cuda.group_norm_forward(x, g, g, 4)
