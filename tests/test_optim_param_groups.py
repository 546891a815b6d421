"""optim's param groups, as PyTorch has them: a list of dicts read at every step, each group's
own hyperparameters worked out by hand, add_param_group, their checks, and checkpoints (one
group keeps the format of every checkpoint so far; several resume exactly)."""
import json

import numpy as np
import pytest

from minidiff.optim import SGD, Adam, AdamW


def param(values):
    from minidiff.nn import Parameter
    return Parameter(np.array(values, dtype=np.float64))


def step(opt, *grads):
    for p, g in zip(opt.params, grads):
        p.grad = np.array(g, dtype=np.float64)
    opt.step()


def test_param_groups_hold_every_hyperparameter_and_are_read_every_step():
    p = param([1.0])
    opt = SGD([p], lr=0.1)
    assert opt.param_groups == [{"params": [p], "lr": 0.1, "momentum": 0.0,
                                 "weight_decay": 0.0}]
    assert sorted(Adam([param([0.0])]).param_groups[0]) == [
        "amsgrad", "betas", "eps", "lr", "params", "weight_decay"]
    step(opt, [1.0])                                           # p = 1 - 0.1
    opt.param_groups[0]["lr"] = 0.01                           # as a user or scheduler does
    step(opt, [1.0])                                           # p = 0.9 - 0.01
    np.testing.assert_allclose(p.data, [0.89], rtol=1e-15)
    assert opt.lr == 0.01


def test_each_group_has_its_own_hyperparameters():
    a, b = param([1.0]), param([1.0])
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "momentum": 0.9}], lr=0.1)
    step(opt, [1.0], [1.0])
    step(opt, [1.0], [1.0])
    np.testing.assert_allclose(a.data, [0.8], rtol=1e-15)      # 1 - 0.1 - 0.1
    # b: buf = 1, then 0.9 + 1 = 1.9:  1 - 0.5 - 0.95
    np.testing.assert_allclose(b.data, [-0.45], rtol=1e-15)
    with pytest.raises(ValueError, match=r"SGD.lr: the param groups have different lrs "
                                         r"\[0.1, 0.5\]; read opt.param_groups\[i\]\['lr'\]"):
        opt.lr
    opt.lr = 0.25                                              # every group's
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]


def test_add_param_group_takes_the_defaults_it_leaves_out():
    a, c = param([1.0]), param([2.0])
    opt = AdamW([a], lr=0.1, weight_decay=0.0)
    opt.add_param_group({"params": c, "lr": 0.2})              # one Tensor, as PyTorch takes
    assert opt.param_groups[1]["weight_decay"] == 0.0 and opt.params == [a, c]
    step(opt, [1.0], [-3.0])                                   # t = 1: each moves by lr
    np.testing.assert_allclose([a.data[0], c.data[0]], [0.9, 2.2], rtol=1e-7)
    assert opt.steps == [1, 1]


@pytest.mark.parametrize("make, match", [
    (lambda a, b: SGD([{"params": [a]}, {"params": [b], "betas": (0.9, 0.9)}], lr=0.1),
     r"SGD: param_groups\[1\]: unknown key 'betas'; allowed: params, lr, momentum, "
     r"weight_decay"),
    (lambda a, b: SGD([{"params": [a]}, {"params": [a]}], lr=0.1),
     r"SGD: param_groups\[1\]: the same parameter appears twice"),
    (lambda a, b: Adam([{"params": [a], "lr": -1.0}]),
     r"Adam: param_groups\[0\]: lr: must be a finite number in \[0, inf\], got -1.0"),
    (lambda a, b: Adam([{"lr": 0.1}]), r"Adam: a param group is a dict with 'params'"),
])
def test_bad_param_groups(make, match):
    with pytest.raises(ValueError, match=match):
        make(param([1.0]), param([2.0]))


def test_a_bad_change_to_a_group_is_refused_at_step_and_nothing_moves():
    a, b = param([1.0]), param([2.0])
    opt = SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    opt.param_groups[1]["lr"] = float("nan")
    with pytest.raises(ValueError, match=r"SGD.step: param_groups\[1\]: lr: must be a finite"):
        step(opt, [1.0], [1.0])
    opt.param_groups[1].update(lr=0.1, params=[param([0.0])])
    with pytest.raises(ValueError, match=r"param_groups\[1\]: holds a tensor this optimizer was "
                                         r"not given; add it with add_param_group"):
        opt.step()
    assert a.data[0] == 1.0 and opt.steps == [0, 0]            # group 0 did not move either


def test_one_group_keeps_the_checkpoint_format_and_old_states_load():
    p = param([1.0, 2.0])
    opt = Adam([p], lr=0.1)
    step(opt, [1.0, 1.0])
    sd = opt.state_dict()
    assert sorted(sd) == ["betas", "eps", "kind", "lr", "m.0", "steps", "v.0", "weight_decay"]
    fresh = Adam([param([0.0, 0.0])], amsgrad=True).load_state_dict(sd)
    assert fresh.param_groups[0]["amsgrad"] is False           # a state without it: off
    assert fresh.state_dict().keys() == sd.keys()


def test_several_groups_resume_exactly_through_json():
    def build():
        a, b = param([1.0, -1.0]), param([0.5])
        return AdamW([{"params": [a], "amsgrad": True}, {"params": [b], "lr": 0.3}], lr=0.1)

    grads = [([1.0, -2.0], [0.5]), ([0.1, 3.0], [-1.0]), ([2.0, 2.0], [0.25])]
    opt = build()
    step(opt, *grads[0])
    sd = opt.state_dict()
    assert sd["param_groups"][1] == {"params": [1], "lr": 0.3, "betas": [0.9, 0.999],
                                     "eps": 1e-8, "weight_decay": 0.01}
    arrays = {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}
    saved = {**json.loads(json.dumps({k: v for k, v in sd.items() if k not in arrays})),
             **arrays}
    opt2 = build()
    opt2.load_state_dict(saved)
    for p, q in zip(opt.params, opt2.params):                  # the weights: the model's
        q.data[...] = p.data
    for g in grads[1:]:
        step(opt, *g)
        step(opt2, *g)
    for p, q in zip(opt.params, opt2.params):
        np.testing.assert_array_equal(q.data, p.data)
    with pytest.raises(ValueError, match=r"AdamW.load_state_dict: nothing was loaded; "
                                         r"param_groups: the state has 1, the optimizer 2"):
        opt2.load_state_dict(AdamW([param([0.0, 0.0]), param([0.0])]).state_dict())
    with pytest.raises(ValueError, match=r"param_groups\[0\]: the state's is .*; the "
                                         r"optimizer's holds parameters \[0, 1\]"):
        AdamW([opt.params[0], opt.params[1]]).load_state_dict(
            dict(saved, param_groups=saved["param_groups"][:1]))


def test_a_hyperparameter_changed_by_hand_is_checkpointed_with_its_buffers():
    p = param([1.0])
    opt = Adam([p], lr=0.1)
    step(opt, [2.0])
    opt.param_groups[0]["amsgrad"] = True                      # from the next step on
    sd = opt.state_dict()
    assert sd["amsgrad"] is True and [k for k in sd if "." in k] == ["m.0", "v.0", "v_max.0"]
    opt2 = Adam([param(p.data)]).load_state_dict(sd)
    for o in (opt, opt2):
        step(o, [0.5])
    np.testing.assert_array_equal(opt2.params[0].data, p.data)
    assert opt2.param_groups[0]["amsgrad"] is True
