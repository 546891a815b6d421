"""minidiff.optim.lr_scheduler against closed forms: hand-worked sequences, hypothesis
properties over the constructors' arguments (the lr of every epoch, the optimizer's step taking
it, the end points), PyTorch's last_epoch and initial_lr habits, checkpoints through JSON."""
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff.nn import Parameter
from minidiff.optim import SGD, Adam, LinearWarmup
from minidiff.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LinearLR


def sgd(*lrs):
    """SGD over one scalar parameter per lr, each in its own param group."""
    return SGD([{"params": [Parameter(np.zeros(1))], "lr": lr} for lr in lrs], lr=lrs[0])


def lrs_over(sched, epochs):
    """get_last_lr() at construction and after each step(): one row per epoch."""
    out = [sched.get_last_lr()]
    for _ in range(epochs):
        sched.step()
        out.append(sched.get_last_lr())
    return out


def linear(base, s, e, n, k):
    return base * (s + (e - s) * min(k, n) / n)


def cosine(base, eta_min, T, k):
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * k / T)) / 2


# ---------------------------------------------------------------------------- by hand
def test_sequences_by_hand():
    got = lrs_over(LinearLR(sgd(0.1), start_factor=0.25, total_iters=3), 4)
    np.testing.assert_allclose(np.ravel(got), [0.025, 0.05, 0.075, 0.1, 0.1], rtol=1e-15)
    got = lrs_over(LinearLR(sgd(0.3)), 6)                      # PyTorch's defaults: 1/3, 5
    np.testing.assert_allclose(np.ravel(got), [0.1, 0.14, 0.18, 0.22, 0.26, 0.3, 0.3],
                               rtol=1e-14)
    got = lrs_over(CosineAnnealingLR(sgd(1.0), T_max=4), 6)    # (1 + cos(πk/4)) / 2
    h = math.sqrt(2) / 4
    np.testing.assert_allclose(np.ravel(got), [1, 0.5 + h, 0.5, 0.5 - h, 0, 0.5 - h, 0.5],
                               rtol=1e-14, atol=1e-16)
    got = lrs_over(LambdaLR(sgd(0.6, 0.2), [lambda k: 1 / (k + 1), lambda k: 0.5 ** k]), 2)
    np.testing.assert_allclose(got, [[0.6, 0.2], [0.3, 0.1], [0.2, 0.05]], rtol=1e-15)


# ---------------------------------------------------------------------------- properties
bases = st.floats(1e-4, 1.0)


@given(base=bases, s=st.floats(1e-3, 1.0), e=st.floats(0.0, 1.0), n=st.integers(1, 12),
       epochs=st.integers(0, 20))
def test_linear_lr_is_its_closed_form_and_the_step_takes_it(base, s, e, n, epochs):
    opt = sgd(base)
    sched = LinearLR(opt, start_factor=s, end_factor=e, total_iters=n)
    p, lrs = opt.params[0], []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = np.ones(1)
        opt.step()                                             # p ← p - lr_k · 1
        sched.step()
    want = [linear(base, s, e, n, k) for k in range(epochs + 1)]
    np.testing.assert_allclose(lrs + sched.get_last_lr(), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p.data, [-sum(want[:epochs])], rtol=1e-12, atol=1e-15)
    assert sched.last_epoch == epochs and opt.param_groups[0]["initial_lr"] == base
    if epochs >= n:
        assert sched.get_last_lr()[0] == pytest.approx(base * e, rel=1e-12, abs=1e-15)


@given(base=bases, eta=st.floats(0.0, 1.0), T=st.integers(1, 12), epochs=st.integers(0, 30))
def test_cosine_lr_is_its_closed_form_between_eta_min_and_base(base, eta, T, epochs):
    eta_min = eta * base
    got = np.ravel(lrs_over(CosineAnnealingLR(sgd(base), T_max=T, eta_min=eta_min), epochs))
    want = [cosine(base, eta_min, T, k) for k in range(epochs + 1)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    tol = 1e-12 * base
    assert all(eta_min - tol <= lr <= base + tol for lr in got)
    if epochs >= T:
        assert got[T] == pytest.approx(eta_min, abs=tol)       # down at T_max
    for k in range(max(0, 2 * T - epochs), min(epochs, 2 * T) + 1):
        assert got[k] == pytest.approx(got[2 * T - k], abs=tol)    # symmetric about T_max


@given(bases=st.lists(bases, min_size=1, max_size=3), gamma=st.floats(0.5, 1.0),
       epochs=st.integers(0, 15))
def test_lambda_lr_is_base_times_lambda_for_every_group(bases, gamma, epochs):
    got = lrs_over(LambdaLR(sgd(*bases), lambda k: gamma ** k), epochs)
    want = [[b * gamma ** k for b in bases] for k in range(epochs + 1)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ---------------------------------------------------------------------------- PyTorch's habits
def make(kind, opt):
    return {"linear": lambda: LinearLR(opt, start_factor=0.1, total_iters=4),
            "cosine": lambda: CosineAnnealingLR(opt, T_max=5, eta_min=1e-3),
            "lambda": lambda: LambdaLR(opt, lambda k: 0.9 ** k)}[kind]()


@pytest.mark.parametrize("kind", ["linear", "cosine", "lambda"])
@given(split=st.integers(0, 8))
def test_state_dict_resumes_through_json(kind, split):
    sched = make(kind, Adam([Parameter(np.zeros(2))], lr=0.2))
    lrs_over(sched, split)
    saved = json.loads(json.dumps(sched.state_dict()))
    assert saved["last_epoch"] == split and saved["base_lrs"] == [0.2]
    resumed = make(kind, Adam([Parameter(np.zeros(2))], lr=0.05))   # another lr: base_lrs load
    resumed.load_state_dict(saved)
    assert resumed.get_last_lr() == sched.get_last_lr() and resumed.last_epoch == split
    assert lrs_over(resumed, 4) == lrs_over(sched, 4)


def test_last_epoch_resumes_from_initial_lr_as_pytorch():
    opt = sgd(0.5)
    lrs_over(CosineAnnealingLR(opt, T_max=10), 3)              # sets initial_lr = 0.5
    again = CosineAnnealingLR(opt, T_max=10, last_epoch=3)     # constructing steps once
    assert again.last_epoch == 4
    assert again.get_last_lr() == [pytest.approx(cosine(0.5, 0.0, 10, 4), rel=1e-15)]
    with pytest.raises(ValueError, match=r"LinearLR: last_epoch=2 resumes a schedule, but "
                                         r"param_groups\[0\] has no 'initial_lr'"):
        LinearLR(sgd(0.5), last_epoch=2)


def test_load_state_dict_is_all_or_nothing():
    sched = LinearLR(sgd(0.5), total_iters=3)
    good = sched.state_dict()
    sched.step()
    for bad, match in [(dict(good, kind="CosineAnnealingLR"), "state is for "
                        "'CosineAnnealingLR', not LinearLR"),
                       ({k: v for k, v in good.items() if k != "base_lrs"},
                        r"missing \['base_lrs'\]"),
                       (dict(good, base_lrs=[0.1, 0.2]), "base_lrs: need a list of 1 lrs"),
                       (dict(good, total_iters=0), "LinearLR: total_iters: must be an int >= 1")]:
        with pytest.raises(ValueError, match="^LinearLR.load_state_dict: nothing was loaded; "
                                             + match):
            sched.load_state_dict(bad)
    assert sched.last_epoch == 1 and sched.total_iters == 3


@pytest.mark.parametrize("build, error, match", [
    (lambda o: LinearLR(o, start_factor=0.0), ValueError,
     r"LinearLR: start_factor: must be a finite number in \(0, 1\], got 0.0"),
    (lambda o: LinearLR(o, end_factor=1.5), ValueError, r"LinearLR: end_factor: must be"),
    (lambda o: CosineAnnealingLR(o, T_max=0), ValueError,
     "CosineAnnealingLR: T_max: must be an int >= 1, got 0"),
    (lambda o: LambdaLR(o, [lambda k: 1.0]), ValueError,
     r"LambdaLR: lr_lambda must be a function of the epoch, or a list of 2"),
    (lambda o: LambdaLR(o, lambda k: -1.0), ValueError,
     r"LambdaLR: lr_lambda\(0\) of param group 0: must be a finite number in \[0, inf\]"),
    (lambda o: LinearLR(o.param_groups), TypeError,
     "LinearLR: list is not an optimizer of minidiff.optim"),
])
def test_bad_arguments_are_refused_in_one_line(build, error, match):
    with pytest.raises(error, match=match):
        build(sgd(0.1, 0.2))


def test_linear_warmup_sets_every_group_and_keeps_its_state_format():
    opt = sgd(0.1, 0.2)
    warm = LinearWarmup(opt, warmup_steps=4, base_lr=1e-3)     # Ho et al.: lr 0 first
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    warm.step()
    assert [g["lr"] for g in opt.param_groups] == [0.25e-3, 0.25e-3]
    assert warm.state_dict() == {"warmup_steps": 4, "base_lr": 1e-3, "last_step": 1}
