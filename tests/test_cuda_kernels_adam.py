"""kernels/adam.cu through minidiff.cuda: Adam / AdamW and the EMA against float64 NumPy
written from Kingma & Ba 2015 (Algorithm 1) and Loshchilov & Hutter 2019 (Algorithm 2), and
against minidiff.optim's own update rules, which the kernels replace on the GPU."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff import cuda, optim
from cuda_emu.testing import RUNNERS, assert_close, on

EPS = float(np.finfo(np.float32).eps)


adam_case = st.fixed_dictionaries({
    "shape": st.lists(st.integers(1, 37), min_size=1, max_size=2).map(tuple),
    "seed": st.integers(0, 2**31 - 1),
    "t": st.integers(1, 5000), "lr": st.sampled_from([1e-4, 2e-4, 1e-2]),
    "beta1": st.sampled_from([0.0, 0.9]), "beta2": st.sampled_from([0.99, 0.999]),
    "eps": st.sampled_from([1e-8, 1e-6]), "weight_decay": st.sampled_from([0.0, 0.01, 0.1]),
})


def arrays(case):
    """p, g, m, v of the case's shape, and its hyperparameters."""
    h = dict(case)
    shape, rng = h.pop("shape"), np.random.default_rng(h.pop("seed"))
    p, g, m = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    v = rng.uniform(0, 2, shape).astype(np.float32)
    return p, g, m, v, h


def adam_ref(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    """Kingma & Ba 2015, Algorithm 1 (+ Loshchilov & Hutter 2019, Alg. 2), float64."""
    p, g, m, v = (a.astype(np.float64) for a in (p, g, m, v))
    if not decoupled:
        g = g + weight_decay * p                               # L2 penalty in the gradient
    m = beta1 * m + (1 - beta1) * g                            # m_t
    v = beta2 * v + (1 - beta2) * g * g                        # v_t
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)      # bias corrections
    if decoupled:
        p = p - lr * weight_decay * p                          # decoupled decay
    step = lr * m_hat / (np.sqrt(v_hat) + eps)
    return p - step, m, v, np.abs(step)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@given(case=adam_case)
def test_adam_step(runner, decoupled, case):
    p, g, m, v, h = arrays(case)
    p0, m0, v0 = p.copy(), m.copy(), v.copy()          # the emulator updates p, m, v in place
    want_p, want_m, want_v, step = adam_ref(p, g, m, v, decoupled=decoupled, **h)
    update = cuda.adamw_update if decoupled else cuda.adam_update
    with on(runner) as dev:
        dp, dg, dm, dv = dev.put(p, g, m, v)
        update(dp, dg, dm, dv, h["t"], h["lr"], h["beta1"], h["beta2"], h["eps"],
               h["weight_decay"])
        got_p, got_m, got_v = dev.get((dp, dm, dv))
    # m and v: a few roundings of terms of size |m|, |g|; p: of |p| and of the step, whose
    # relative error is a few EPS more (the bias corrections are float32 on the device).
    assert_close(got_m, want_m, atol=8 * EPS * (np.abs(m0) + np.abs(g)), rtol=0, what="m")
    assert_close(got_v, want_v, atol=8 * EPS * (v0 + g * g), rtol=0, what="v")
    assert_close(got_p, want_p, atol=8 * EPS * (np.abs(p0) + 4 * step), rtol=0, what="p")


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@given(case=adam_case)
def test_adam_matches_optim_update_rule(decoupled, case):
    """The kernels are drop-in replacements of optim.adam_update / adamw_update."""
    p, g, m, v, h = arrays(case)
    p0, m0 = p.copy(), m.copy()
    ref = [a.copy() for a in (p, g, m, v)]
    rule = optim.adamw_update if decoupled else optim.adam_update
    rule(ref[0], ref[1], ref[2], ref[3], h["t"], h["lr"], h["beta1"], h["beta2"], h["eps"],
         h["weight_decay"])
    update = cuda.adamw_update if decoupled else cuda.adam_update
    with on("random"):
        update(p, g, m, v, h["t"], h["lr"], h["beta1"], h["beta2"], h["eps"],
               h["weight_decay"])
    # Both sides are float32, each within the bound of test_adam_step: allow the two.
    step = np.abs(ref[0] - p0)
    assert_close(p, ref[0], atol=16 * EPS * (np.abs(p0) + 4 * step), rtol=0, what="p")
    assert_close(m, ref[2], atol=16 * EPS * (np.abs(m0) + np.abs(g)), rtol=0, what="m")


@pytest.mark.parametrize("runner", RUNNERS)
@given(shape=st.lists(st.integers(1, 41), min_size=1, max_size=3),
       decay=st.sampled_from([0.0, 0.5, 0.999, 0.9999]), seed=st.integers(0, 2**31 - 1))
def test_ema_update(runner, shape, decay, seed):
    rng = np.random.default_rng(seed)
    shadow, p = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    want = decay * shadow.astype(np.float64) + (1 - decay) * p    # Ho et al. 2020, App. B
    size = np.abs(shadow) + np.abs(p)                 # before the in-place update
    with on(runner) as dev:
        ds, dp = dev.put(shadow, p)
        cuda.ema_update(ds, dp, decay)
        got = dev.get(ds)
    assert_close(got, want, atol=4 * EPS * size, rtol=0, what="ema")


def test_inplace_arguments_must_be_contiguous_float32():
    p = np.zeros((4, 4), np.float32)
    with on("ascending"):
        with pytest.raises(TypeError, match="in place"):
            cuda.ema_update(p.T, p, 0.9)
        with pytest.raises(TypeError, match="in place"):
            cuda.adam_update(p.astype(np.float64), p, p, p, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
