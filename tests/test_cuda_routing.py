"""The routing seam, op by op: with the device "cuda" (emulated here) each routed op launches
its kernel and equals its NumPy path; the cases the kernels do not cover (float64, a softmax
over another axis, a learned per-element variance, SGD) stay on the xp code, bit for bit.

Tolerances: the kernels reduce in another order than NumPy. A length-L float32 sum in any order
is within L·u·Σ|terms| of the exact one (u = 2^-24; Higham 2002, Eq. 3.5); the longest here is
L = 2·5·7 = 70 (the conv's weight gradient), so 70·u ≈ 4e-6 of the terms' size, and we allow
RTOL_SCALE = 1e-5 of the array's largest magnitude.
"""
import numpy as np
import pytest

from minidiff import cuda
from minidiff import functional as F
from minidiff.diffusion import GaussianDiffusion
from minidiff.diffusion.schedules import linear_beta_schedule
from minidiff.functional.conv import conv2d
from minidiff.optim import SGD, Adam
from minidiff.tensor import Tensor
from cuda_emu import Module, poisoned_numpy
from cuda_emu.testing import assert_close

RTOL_SCALE = 1e-5


def on_both(fn):
    """fn() on the NumPy path, then on the emulated cuda path: (ref, got), tuples of arrays."""
    ref = fn()
    with cuda.emulate(Module, xp=poisoned_numpy):
        got = fn()
    return ref, got


def assert_all_close(got, ref, what):
    for i, (g, r) in enumerate(zip(got, ref)):
        assert_close(g, r, atol=RTOL_SCALE * np.abs(r).max(), rtol=0, what=f"{what}[{i}]")


@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_routes_both_ways(affine, rng, launched):
    x, dy = rng.standard_normal((2, 2, 8, 15)).astype(np.float32)          # (B, C=8, 3·5)
    x, dy = x.reshape(2, 8, 3, 5), dy.reshape(2, 8, 3, 5)
    w, b = (rng.standard_normal(8).astype(np.float32) for _ in range(2))

    def run():
        xt = Tensor(x, requires_grad=True)
        wt, bt = (Tensor(a, requires_grad=True) if affine else None for a in (w, b))
        y = F.group_norm(xt, 4, wt, bt)
        y.backward(dy)
        grads = (wt.grad.data, bt.grad.data) if affine else ()
        return (y.data, xt.grad.data) + grads

    ref, got = on_both(run)
    assert {"group_norm_forward", "group_norm_backward_input"} <= set(launched)
    assert_all_close(got, ref, f"group_norm (affine={affine})")


@pytest.mark.parametrize("stride, bias", [(1, True), (2, False)])
def test_conv2d_routes_kxk_to_the_kernels_and_1x1_to_a_matmul(stride, bias, rng, launched):
    x = rng.standard_normal((2, 3, 9, 13)).astype(np.float32)              # (B, Cin, H, W)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)               # (Cout, Cin, 3, 3)
    b = rng.standard_normal(4).astype(np.float32)

    def run(w):
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        bt = Tensor(b, requires_grad=True) if bias else None
        y = conv2d(xt, wt, bt, stride=stride, padding=w.shape[-1] // 2)
        y.backward(np.cos(np.arange(y.numel(), dtype=np.float32)).reshape(y.shape))
        return (y.data, xt.grad.data, wt.grad.data) + ((bt.grad.data,) if bias else ())

    ref, got = on_both(lambda: run(w))
    assert launched == ["conv2d_forward", "conv2d_backward_weight", "conv2d_backward_data"]
    assert_all_close(got, ref, f"conv2d 3x3 stride {stride}")
    launched.clear()
    if stride == 1:
        ref, got = on_both(lambda: run(w[:, :, :1, :1].copy()))           # 1x1: cuBLAS GEMM
        assert launched == []
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r)


def test_softmax_routes_the_last_axis_only(rng, launched):
    x, dy = rng.standard_normal((2, 5, 7)).astype(np.float32)

    def run(axis):
        xt = Tensor(x, requires_grad=True)
        y = F.softmax(xt, axis=axis)
        y.backward(dy)
        return y.data, xt.grad.data

    ref, got = on_both(lambda: run(-1))
    assert launched == ["softmax_forward", "softmax_backward"]
    assert_all_close(got, ref, "softmax")
    launched.clear()
    ref, got = on_both(lambda: run(0))                     # no kernel: the xp code, exactly
    assert launched == []
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)


def test_optimizers_route_adam_but_not_sgd(rng, launched):
    p0, g = rng.standard_normal((2, 33)).astype(np.float32)

    def run(opt_class, **kw):
        p = Tensor(p0.copy(), requires_grad=True)
        p.grad = g.copy()
        opt = opt_class([p], lr=1e-2, weight_decay=0.1, **kw)
        opt.step()
        return (p.data,)

    ref, got = on_both(lambda: run(Adam))
    assert launched == ["adam_step"]
    assert_all_close(got, ref, "Adam")
    launched.clear()
    ref, got = on_both(lambda: run(SGD, momentum=0.9))
    assert launched == []
    np.testing.assert_array_equal(got[0], ref[0])


def test_float64_and_a_learned_variance_stay_on_the_xp_code(rng, launched):
    """The kernels are float32 and take one σ_t per sample: a float64 process, and
    learned_range (Nichol & Dhariwal 2021, Eq. 15: σ per element), keep their xp code."""
    x = rng.standard_normal((2, 1, 4, 4))
    t = np.array([0, 7])

    def model(x_t, t):                                     # ε and the variance's v in [-1, 1]
        return F.tanh(F.concat([x_t * 0.5, x_t * 0.3], axis=1))

    def run():
        d64 = GaussianDiffusion(linear_beta_schedule(10), dtype=np.float64)
        learned = GaussianDiffusion(linear_beta_schedule(10), variance="learned_range",
                                    loss="hybrid")
        return (d64.q_sample(x, t, noise=x), d64.q_posterior_mean_variance(x, x, t)[0],
                learned.p_sample(model, x.astype(np.float32), t, z=x.astype(np.float32)))

    ref, got = on_both(run)
    assert launched == []
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)


def test_diffusion_steps_route_with_a_fixed_variance(rng, launched):
    x, noise = rng.standard_normal((2, 2, 1, 4, 4)).astype(np.float32)
    t = np.array([0, 7])

    def run():
        d = GaussianDiffusion(linear_beta_schedule(10), variance="fixed_small")
        x_t = d.q_sample(x, t, noise=noise)                                # Eq. 4
        mean = d.q_posterior_mean_variance(x, x_t, t)[0]                   # Eq. 7
        x_prev = d.p_sample(lambda x_t, t: x_t * 0.5, x_t, t, z=noise)     # Alg. 2
        return x_t, mean, x_prev

    ref, got = on_both(run)
    assert launched == ["q_sample", "posterior_mean", "reverse_step"]
    assert_all_close(got, ref, "diffusion steps")
