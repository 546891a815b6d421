"""minidiff.optim: the first steps of each optimizer against numbers worked out by hand
(AMSGrad too), frozen parameters skipped, zero_grad, clipping, EMA and warm-up in closed form,
and exact resumption from state_dicts. Param groups: test_optim_param_groups.py."""
import json
import math

import numpy as np
import pytest

import minidiff
from minidiff import Tensor, cuda, optim
from minidiff.functional.loss import mse_loss
from minidiff.nn import Linear, Parameter
from minidiff.optim import EMA, SGD, Adam, AdamW, LinearWarmup, clip_grad_norm_

EPS = 1e-8


def param(values):
    return Parameter(np.array(values, dtype=np.float64))


def run(opt, p, grads):
    """Feed the given gradients one step at a time; return p after each step."""
    out = []
    for g in grads:
        p.grad = np.array(g, dtype=np.float64)
        opt.step()
        out.append(p.data.copy())
    return out


# ---------------------------------------------------------------------------- SGD
def test_sgd_momentum_first_three_steps_by_hand():
    p = param([1.0, -2.0])
    got = run(SGD([p], lr=0.1, momentum=0.9), p, [[0.5, -1.0], [1.0, 2.0], [-2.0, 0.0]])
    # b1 = g1 = [0.5, -1]                          p1 = p0 - 0.1 b1 = [0.95, -1.9]
    # b2 = 0.9 b1 + g2 = [1.45, 1.1]               p2 = [0.805, -2.01]
    # b3 = 0.9 b2 + g3 = [-0.695, 0.99]            p3 = [0.8745, -2.109]
    np.testing.assert_allclose(got, [[0.95, -1.9], [0.805, -2.01], [0.8745, -2.109]],
                               rtol=0, atol=1e-14)


def test_sgd_weight_decay_by_hand():
    p = param([1.0, -2.0])
    got = run(SGD([p], lr=0.1, weight_decay=0.1), p, [[0.5, -1.0], [1.0, 2.0]])
    # g1' = g1 + 0.1 p0 = [0.6, -1.2]              p1 = [0.94, -1.88]
    # g2' = g2 + 0.1 p1 = [1.094, 1.812]           p2 = [0.8306, -2.0612]
    np.testing.assert_allclose(got, [[0.94, -1.88], [0.8306, -2.0612]], rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------- Adam, AdamW
def test_adam_first_three_steps_by_hand():
    p = param([1.0])
    got = run(Adam([p], lr=0.1, betas=(0.9, 0.999), eps=EPS), p, [[1.0], [3.0], [-2.0]])
    # t=1: m = 0.1, v = 0.001; m̂ = 0.1/0.1 = 1, v̂ = 0.001/0.001 = 1
    p1 = 1.0 - 0.1 * 1.0 / (1.0 + EPS)
    # t=2: m = 0.09 + 0.3 = 0.39, v = 0.000999 + 0.009 = 0.009999; 1-β1² = 0.19, 1-β2² = 0.001999
    p2 = p1 - 0.1 * (0.39 / 0.19) / (math.sqrt(0.009999 / 0.001999) + EPS)
    # t=3: m = 0.351 - 0.2 = 0.151, v = 0.009989001 + 0.004 = 0.013989001;
    #      1-β1³ = 0.271, 1-β2³ = 0.002997001
    p3 = p2 - 0.1 * (0.151 / 0.271) / (math.sqrt(0.013989001 / 0.002997001) + EPS)
    np.testing.assert_allclose(np.ravel(got), [p1, p2, p3], rtol=1e-12)
    assert p1 == pytest.approx(0.9) and p2 == pytest.approx(0.9 - 0.0917781, abs=1e-7)


def test_adam_l2_weight_decay_by_hand():
    p = param([1.0])
    got = run(Adam([p], lr=0.1, eps=EPS, weight_decay=0.5), p, [[1.0], [3.0]])
    # t=1: g' = 1 + 0.5·1 = 1.5, m = 0.15, v = 0.00225; m̂ = 1.5, v̂ = 2.25
    p1 = 1.0 - 0.1 * 1.5 / (1.5 + EPS)
    # t=2: g' = 3 + 0.5 p1; m = 0.135 + 0.1 g', v = 0.00224775 + 0.001 g'²
    g = 3.0 + 0.5 * p1
    m, v = 0.135 + 0.1 * g, 0.00224775 + 0.001 * g * g
    p2 = p1 - 0.1 * (m / 0.19) / (math.sqrt(v / 0.001999) + EPS)
    np.testing.assert_allclose(np.ravel(got), [p1, p2], rtol=1e-12)


def test_adamw_decoupled_decay_by_hand():
    p = param([1.0])
    got = run(AdamW([p], lr=0.1, eps=EPS, weight_decay=0.5), p, [[1.0], [3.0]])
    # t=1: decay p ← p - 0.1·0.5·p = 0.95, then the Adam step with m̂ = v̂ = 1 (g is not decayed)
    p1 = 0.95 - 0.1 / (1.0 + EPS)
    # t=2: p ← 0.95 p1, then m = 0.39, v = 0.009999 exactly as without decay
    p2 = 0.95 * p1 - 0.1 * (0.39 / 0.19) / (math.sqrt(0.009999 / 0.001999) + EPS)
    np.testing.assert_allclose(np.ravel(got), [p1, p2], rtol=1e-12)


def test_adam_constant_gradient_moves_lr_per_step():
    """With g constant, m̂ = g and v̂ = g² at every t, so each step is lr · g / (|g| + ε)."""
    g = np.array([2.0, -0.5, 1e-3])
    p = param([0.0, 0.0, 0.0])
    got = run(Adam([p], lr=0.01, eps=EPS), p, [g] * 10)
    for k, pk in enumerate(got, start=1):
        np.testing.assert_allclose(pk, -k * 0.01 * g / (np.abs(g) + EPS), rtol=1e-9)


def test_optimizers_skip_params_without_grad_and_keep_float32():
    a = Parameter(np.ones(3, np.float32))
    b = Parameter(np.ones(2, np.float32))
    opt = Adam([a, b], lr=0.1)
    a.grad = np.full(3, 0.5, np.float32)
    opt.step()
    np.testing.assert_array_equal(b.data, 1.0)
    assert opt.steps == [1, 0]
    assert a.dtype == np.float32 and opt.buffers["m"][0].dtype == np.float32
    opt.zero_grad()
    assert a.grad is None


def test_a_frozen_parameter_is_kept_and_skipped():
    """PyTorch's habit: freeze one parameter, then hand over model.parameters() as they are."""
    model = Linear(3, 2, dtype=np.float64)
    model.weight.requires_grad = False
    opt = AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    w0, b0 = model.weight.data.copy(), model.bias.data.copy()
    opt.zero_grad()
    model(Tensor(np.ones((4, 3)))).sum().backward()            # d/db = 4 for each row
    model.weight.grad = np.ones((2, 3))                         # a stale grad: still skipped
    opt.step()
    np.testing.assert_array_equal(model.weight.data, w0)       # not even decayed
    step1 = 0.1 * 4.0 / (4.0 + EPS)                            # t = 1: m̂/√v̂ = g/|g|
    np.testing.assert_allclose(model.bias.data, 0.95 * b0 - step1, rtol=1e-12)
    assert opt.steps == [0, 1] and opt.params == [model.weight, model.bias]
    model.weight.requires_grad = True                          # unfrozen: its own t = 1
    opt.step()
    np.testing.assert_allclose(model.weight.data, 0.95 * w0 - 0.1 / (1.0 + EPS), rtol=1e-12)
    assert opt.steps == [1, 2]


def test_zero_grad_sets_to_none_by_default_or_to_zeros_in_place():
    a, b = param([1.0, 2.0]), param([3.0])
    opt = SGD([a, b], lr=0.1)
    a.grad = np.array([5.0, 6.0])
    g = a.grad
    opt.zero_grad(set_to_none=False)                           # in place, as PyTorch's
    assert a.grad is g and a.grad.dtype == np.float64 and b.grad is None
    np.testing.assert_array_equal(g.numpy(), [0.0, 0.0])
    opt.zero_grad()                                            # PyTorch's default
    assert a.grad is None
    with pytest.raises(ValueError, match="SGD.zero_grad: set_to_none: must be True or False"):
        opt.zero_grad(0)


def test_amsgrad_first_three_steps_by_hand():
    """AMSGrad (Reddi et al. 2018) divides by the largest v_t so far; here v_2, v_3 < v_1."""
    p = param([1.0])
    opt = Adam([p], lr=0.1, betas=(0.5, 0.5), eps=0.0, amsgrad=True)
    got = run(opt, p, [[2.0], [1.0], [1.0]])
    # t=1: m = 1, v = 2 = v_max; m̂ = 2, v̂ = 4                    p1 = 1 - 0.1·2/2 = 0.9
    # t=2: m = 1, v = 1.5, v_max = 2; 1-β² = 0.75: m̂ = 4/3, v̂ = 8/3 (Adam's would be 2)
    p2 = 0.9 - 0.1 * (4 / 3) / math.sqrt(8 / 3)
    # t=3: m = 1, v = 1.25, v_max = 2; 1-β³ = 0.875
    p3 = p2 - 0.1 * (1 / 0.875) / math.sqrt(2 / 0.875)
    np.testing.assert_allclose(np.ravel(got), [0.9, p2, p3], rtol=1e-14)
    sd = opt.state_dict()
    assert sd["amsgrad"] is True and sd["v_max.0"].tolist() == [2.0]


@pytest.mark.parametrize("kind", [Adam, AdamW])
def test_amsgrad_takes_the_xp_code_on_the_gpu(kind, launched):
    """The fused kernel keeps no v_max: with amsgrad the step is the xp code on the device."""
    from cuda_emu import Module, poisoned_numpy

    def one_step():
        p = Tensor(np.linspace(-1, 1, 33, dtype=np.float32), requires_grad=True)
        p.grad = np.cos(np.arange(33, dtype=np.float32))
        kind([p], lr=1e-2, weight_decay=0.1, amsgrad=True).step()
        return p.data

    ref = one_step()
    with cuda.emulate(Module, xp=poisoned_numpy):
        got = one_step()
    assert launched == []
    np.testing.assert_array_equal(got, ref)


# ---------------------------------------------------------------------------- clipping
def test_clip_grad_norm_scales_to_max_norm():
    assert optim.clip_grad_norm is clip_grad_norm_             # the older name, kept
    a, b, c = param([0.0, 0.0]), param([[0.0]]), param([0.0])
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([[12.0]])
    original = a.grad.data
    total = clip_grad_norm_([a, b, c], max_norm=6.5)
    assert total == 13.0                                       # √(9 + 16 + 144)
    np.testing.assert_allclose(a.grad, [1.5, 2.0], rtol=1e-15)  # × 6.5 / 13
    np.testing.assert_allclose(b.grad, [[6.0]], rtol=1e-15)
    assert c.grad is None
    np.testing.assert_array_equal(original, [3.0, 4.0])        # a new array, not edited in place


def test_clip_grad_norm_leaves_small_gradients_alone():
    a = param([0.0, 0.0])
    a.grad = np.array([3.0, 4.0])
    assert clip_grad_norm_([a], max_norm=5.0) == 5.0
    assert clip_grad_norm_([a], max_norm=20.0) == 5.0
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])


def test_clip_grad_norm_with_a_shared_gradient_array_scales_once():
    a, b = param([0.0, 0.0]), param([0.0, 0.0])
    a.grad = b.grad = np.array([3.0, 4.0])                     # one array, set by hand
    total = clip_grad_norm_([a, b], max_norm=math.sqrt(50) / 2)
    assert total == pytest.approx(math.sqrt(50), rel=1e-15)
    np.testing.assert_allclose(a.grad, [1.5, 2.0], rtol=1e-15)
    np.testing.assert_allclose(b.grad, [1.5, 2.0], rtol=1e-15)


# ---------------------------------------------------------------------------- EMA
def test_ema_values_after_k_updates_closed_form():
    p = param([1.0, 2.0])
    ema = EMA([p], decay=0.9)
    p.data[...] = [3.0, 4.0]
    ema.update()                                               # 0.9·[1, 2] + 0.1·[3, 4]
    np.testing.assert_allclose(ema.shadow[0], [1.2, 2.2], rtol=1e-15)
    p.data[...] = [0.0, -6.0]
    ema.update()                                               # 0.9·[1.2, 2.2] + 0.1·[0, -6]
    np.testing.assert_allclose(ema.shadow[0], [1.08, 1.38], rtol=1e-14)
    p.data[...] = [10.0, 10.0]
    for _ in range(5):
        ema.update()
    # constant θ = c: s_{k} = c + d^k (s_0 - c)
    expected = 10.0 + 0.9 ** 5 * (np.array([1.08, 1.38]) - 10.0)
    np.testing.assert_allclose(ema.shadow[0], expected, rtol=1e-13)
    assert ema.num_updates == 7


def test_ema_copy_to_and_swapped_in():
    minidiff.manual_seed(0)
    model = Linear(3, 2, dtype=np.float64)
    ema = EMA(model, decay=0.5)
    start = model.weight.data.copy()
    model.weight.data[...] += 2.0
    ema.update()                                               # shadow = start + 1
    trained = model.weight.data.copy()
    with ema.swapped_in(model):
        np.testing.assert_allclose(model.weight.data, start + 1.0, rtol=1e-15)
    np.testing.assert_array_equal(model.weight.data, trained)
    with pytest.raises(RuntimeError, match="boom"):
        with ema.swapped_in():
            raise RuntimeError("boom")
    np.testing.assert_array_equal(model.weight.data, trained)  # restored after an error too
    other = Linear(3, 2, dtype=np.float64)
    ema.copy_to(other)
    np.testing.assert_allclose(other.weight.data, start + 1.0, rtol=1e-15)
    with pytest.raises(ValueError, match=r"EMA.copy_to: weight has shape \(2, 3\) in the EMA"):
        ema.copy_to(Linear(3, 3))


def test_ema_state_dict_round_trip_and_errors():
    model = Linear(2, 2, dtype=np.float64)
    ema = EMA(model, decay=0.99)
    model.weight.data[...] = 1.0
    ema.update()
    sd = ema.state_dict()
    assert sorted(sd) == ["decay", "num_updates", "shadow.bias", "shadow.weight"]
    json.dumps({k: v for k, v in sd.items() if not isinstance(v, np.ndarray)})
    ema2 = EMA(model, decay=0.5).load_state_dict(sd)
    for e in (ema, ema2):
        e.update()
    np.testing.assert_array_equal(ema2.shadow[0], ema.shadow[0])
    assert ema2.decay == 0.99 and ema2.num_updates == 2
    before = ema2.shadow[0].copy()
    with pytest.raises(ValueError, match=r"missing \['shadow.bias'\]"):
        ema2.load_state_dict({k: v for k, v in sd.items() if k != "shadow.bias"})
    np.testing.assert_array_equal(ema2.shadow[0], before)


# ---------------------------------------------------------------------------- warm-up
def test_linear_warmup_sequence():
    opt = SGD([param([0.0])], lr=123.0)
    sched = LinearWarmup(opt, warmup_steps=4, base_lr=1e-3)
    lrs = [opt.lr] + [sched.step() for _ in range(6)]
    # Ho et al.: lr = base · min(k / warmup, 1), k = updates already taken
    assert lrs == [0.0, 0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3]
    assert LinearWarmup(opt, 5000, 2e-4).lr_at(2500) == 1e-4
    LinearWarmup(opt, 0, 2e-4)
    assert opt.lr == 2e-4
    with pytest.raises(ValueError, match="warmup_steps: must be an int >= 0, got -1"):
        LinearWarmup(opt, -1, 1.0)


# ---------------------------------------------------------------------------- resumption
def _setup(kind, seed):
    minidiff.manual_seed(seed)
    model = Linear(3, 2)
    make = {"SGD": lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
            "Adam": lambda ps: Adam(ps, lr=1e-2, weight_decay=1e-3),
            "AdamW": lambda ps: AdamW(ps, lr=1e-2),
            "AMSGrad": lambda ps: AdamW(ps, lr=1e-2, amsgrad=True)}[kind]
    opt = make(model.parameters())
    return model, opt, LinearWarmup(opt, 4, opt.lr), EMA(model, decay=0.9)


def _train(model, opt, sched, ema, steps, data):
    x, y = data
    for _ in range(steps):
        opt.zero_grad()
        mse_loss(model(x), y).backward()
        clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        sched.step()
        ema.update()


def _through_json(sd):
    """What a checkpoint file keeps: scalars through JSON, arrays as copies."""
    arrays = {k: v.copy() for k, v in sd.items() if isinstance(v, np.ndarray)}
    scalars = json.loads(json.dumps({k: v for k, v in sd.items() if k not in arrays}))
    return {**scalars, **arrays}


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW", "AMSGrad"])
def test_state_dict_resume_is_bitwise_identical(kind):
    r = np.random.default_rng(0)
    data = (Tensor(r.standard_normal((8, 3)).astype(np.float32)),
            Tensor(r.standard_normal((8, 2)).astype(np.float32)))
    model, opt, sched, ema = _setup(kind, 0)
    _train(model, opt, sched, ema, 3, data)
    saved = [_through_json(o.state_dict()) for o in (model, opt, sched, ema)]
    _train(model, opt, sched, ema, 3, data)

    model2, opt2, sched2, ema2 = _setup(kind, 1)                # different initial weights
    for o, sd in zip((model2, opt2, sched2, ema2), saved):
        o.load_state_dict(sd)
    _train(model2, opt2, sched2, ema2, 3, data)
    for n, v in model.state_dict().items():
        np.testing.assert_array_equal(model2.state_dict()[n], v, err_msg=n)
    for n, v in opt.state_dict().items():
        np.testing.assert_array_equal(opt2.state_dict()[n], v, err_msg=n)
    np.testing.assert_array_equal(ema2.shadow[0], ema.shadow[0])
    assert opt2.lr == opt.lr


def test_optimizer_load_state_dict_errors_change_nothing():
    p = param([1.0, 2.0])
    opt = Adam([p], lr=0.1)
    run(opt, p, [[1.0, 1.0]])
    good = opt.state_dict()
    m_before = opt.buffers["m"][0].copy()
    with pytest.raises(ValueError, match="state is for 'SGD', not Adam"):
        opt.load_state_dict(dict(good, kind="SGD"))
    with pytest.raises(ValueError, match=r"m.0: expected shape \(2,\), got \(3,\)"):
        opt.load_state_dict(dict(good, lr=5.0, **{"m.0": np.zeros(3)}))
    with pytest.raises(ValueError, match=r"unexpected key 'm.1'"):
        opt.load_state_dict(dict(good, **{"m.1": np.zeros(2)}))
    assert opt.lr == 0.1
    np.testing.assert_array_equal(opt.buffers["m"][0], m_before)


@pytest.mark.parametrize("make, match", [
    (lambda p: SGD([p], lr=-1.0), r"SGD: lr: must be a finite number in \[0, inf\], got -1.0"),
    (lambda p: SGD([p], lr=0.1, momentum=1.0), r"momentum: must be a finite number in \[0, 1\)"),
    (lambda p: Adam([p], betas=(1.0, 0.9)),
     r"Adam: betas\[0\]: must be a finite number in \[0, 1\)"),
    (lambda p: Adam([p], betas=0.9), r"betas must be a pair"),
    (lambda p: AdamW([p], eps=-1.0), r"AdamW: eps: must be a finite number"),
    (lambda p: Adam([]), r"Adam: got an empty parameter list"),
    (lambda p: Adam([p, p]), r"the same parameter appears twice"),
    (lambda p: Adam(Linear(2, 2)), r"pass module.parameters\(\), not the module"),
    (lambda p: Adam([1.0]), r"Adam: parameter 0 is 1.0; need Tensors \(e.g. module.parameters"),
    (lambda p: clip_grad_norm_([p], 0.0), r"clip_grad_norm_: max_norm must be > 0"),
    (lambda p: EMA([p], decay=1.5), r"EMA: decay: must be a finite number in \[0, 1\]"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(param([1.0]))
