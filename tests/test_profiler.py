"""minidiff.profile(): per-op time and bytes, forward and backward.

Oracles: time.sleep for the time (a sleep of s seconds takes at least s), nbytes computed
from the shapes for the bytes, a walk of the graph before backward() for the backward counts,
and a run with the profiler off for the numbers.
"""
import time

import numpy as np
import pytest

import minidiff
import minidiff.functional as F
from minidiff import Tensor, no_grad, profiler
from minidiff.functional import shape as shape_module
from minidiff.models import UNet

SMALL_UNET = dict(in_channels=1, image_size=8, base_channels=8, ch_mult=(1, 2),
                  num_res_blocks=1, attn_resolutions=(4,), groups=4, dropout=0.0)


def _rand(*shape, seed=0, requires_grad=False, dtype=np.float32):
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return Tensor(a, requires_grad=requires_grad)


# ------------------------------------------------------------------ forward time, exclusive
def test_a_nested_op_s_time_is_its_own_not_its_caller_s(monkeypatch):
    """unsqueeze calls reshape. Make reshape slow (it sleeps 0.2 s): the 0.2 s must be filed
    under reshape and not again under unsqueeze, whose own work takes microseconds."""
    plain_reshape = shape_module.reshape.__wrapped__
    nap = 0.2

    @profiler.profiled("reshape")
    def slow_reshape(x, *shape):
        time.sleep(nap)
        return plain_reshape(x, *shape)

    monkeypatch.setattr(shape_module, "reshape", slow_reshape)
    x = _rand(3, 4)
    with minidiff.profile() as prof:
        y = F.unsqueeze(x, 0)
    assert y.shape == (1, 3, 4)
    ops = prof.totals()
    assert ops["reshape"]["calls"] == 1 and ops["unsqueeze"]["calls"] == 1
    assert ops["reshape"]["forward_s"] >= nap
    assert ops["unsqueeze"]["forward_s"] < nap / 2          # counted with the child: >= 0.2 s
    assert ops["reshape"]["forward_s"] + ops["unsqueeze"]["forward_s"] <= prof.wall_s


def test_three_levels_each_get_their_own_sleep():
    """parent sleeps 0.05 s and calls child, which sleeps 0.15 s and calls add."""
    @profiler.profiled("test_child")
    def child(x):
        time.sleep(0.15)
        return F.add(x, 1.0)

    @profiler.profiled("test_parent")
    def parent(x):
        time.sleep(0.05)
        return child(x)

    with minidiff.profile() as prof:
        parent(_rand(2, 2))
    ops = prof.totals()
    assert 0.15 <= ops["test_child"]["forward_s"] < 0.15 + 0.1
    assert 0.05 <= ops["test_parent"]["forward_s"] < 0.15      # would be >= 0.2 if inclusive
    assert ops["add"]["calls"] == 1 and ops["add"]["forward_s"] < 0.05
    assert ops["test_parent"]["forward_bytes"] == 0            # the add made it: counted once
    assert ops["test_child"]["forward_bytes"] == 0
    assert ops["add"]["forward_bytes"] == 2 * 2 * 4


# ------------------------------------------------------------------ bytes
def test_forward_bytes_are_the_outputs_nbytes_and_views_are_free():
    a, b = _rand(3, 4), _rand(4, 5, seed=1)
    c = _rand(2, 3, dtype=np.float64)
    with minidiff.profile() as prof:
        for _ in range(2):
            F.matmul(a, b)                                      # (3, 5) float32, twice
        F.add(c, _rand(3, seed=2, dtype=np.float64))            # (2, 3) float64, broadcast
        F.concat([a, a, a], axis=0)                             # (9, 4) float32
        a.reshape(4, 3), a.T, a[1:], F.unsqueeze(a, 0)          # views: nothing new
    ops = prof.totals()
    assert ops["matmul"]["forward_bytes"] == 2 * 3 * 5 * 4
    assert ops["add"]["forward_bytes"] == 2 * 3 * 8
    assert ops["concat"]["forward_bytes"] == 9 * 4 * 4
    for op in ("reshape", "transpose", "getitem", "unsqueeze"):
        assert ops[op]["forward_bytes"] == 0, op


def test_backward_bytes_count_the_fresh_gradient_arrays():
    """L = sum(a*b + c), a, b (2, 3), c (3,), float32. Backward makes: sum, a fresh (2, 3)
    gradient (24 B); add, c's gradient summed to (3,) (12 B) while a*b gets add's own
    gradient passed through (0 B); mul, a's and b's gradients (2 x 24 B)."""
    a, b = _rand(2, 3, requires_grad=True), _rand(2, 3, seed=1, requires_grad=True)
    c = _rand(3, seed=2, requires_grad=True)
    with minidiff.profile() as prof:
        (a * b + c).sum().backward()
    ops = prof.totals()
    assert ops["sum"]["backward_bytes"] == 24
    assert ops["add"]["backward_bytes"] == 12
    assert ops["mul"]["backward_bytes"] == 48
    assert all(ops[k]["backward_calls"] == 1 for k in ("sum", "add", "mul"))


# ------------------------------------------------------------------ backward entries
def _count_nodes(root):
    """{op: number of nodes with a backward} by our own walk of the graph."""
    counts, seen, todo = {}, set(), [root]
    while todo:
        t = todo.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t._backward is not None:
            counts[t._op] = counts.get(t._op, 0) + 1
        todo.extend(t._prev)
    return counts


def test_backward_entries_are_the_graph_s_nodes_op_by_op():
    minidiff.manual_seed(0)
    model = UNet(**SMALL_UNET)
    x, t = _rand(2, 1, 8, 8), np.array([3, 700])
    with minidiff.profile() as prof:
        with no_grad():
            model(x, t)                                         # forward only: no nodes
        loss = F.mse_loss(model(x, t), _rand(2, 1, 8, 8, seed=1))
        expected = _count_nodes(loss)
        loss.backward()
    got = {op: s["backward_calls"] for op, s in prof.totals().items() if s["backward_calls"]}
    assert got == expected
    assert {"conv2d", "group_norm", "attention", "silu"} <= set(got)
    for op, s in prof.totals().items():
        if op not in expected:
            assert s["backward_s"] == 0 and s["backward_bytes"] == 0, op
    ops = prof.totals()
    assert ops["conv2d"]["calls"] == 2 * expected["conv2d"]    # both forwards timed


def test_ops_off_the_graph_have_no_backward_entry():
    w = _rand(5, requires_grad=True)
    const = _rand(5, seed=1)                                    # requires_grad=False
    with minidiff.profile() as prof:
        y = F.sum(w * F.exp(const)) + F.sum(F.tanh(F.tanh(w)))
        y.backward()
    ops = prof.totals()
    assert ops["exp"]["calls"] == 1 and ops["exp"]["backward_calls"] == 0
    assert ops["tanh"]["backward_calls"] == 2 and ops["sum"]["backward_calls"] == 2
    assert ops["mul"]["backward_calls"] == 1 and ops["add"]["backward_calls"] == 1


# ------------------------------------------------------------------ off, and leaving it off
def _train_step(profiled):
    minidiff.manual_seed(0)
    model = UNet(**SMALL_UNET)
    x, t = _rand(2, 1, 8, 8), np.array([3, 700])
    if profiled:
        with minidiff.profile():
            loss = F.mse_loss(model(x, t), _rand(2, 1, 8, 8, seed=1))
            loss.backward()
    else:
        loss = F.mse_loss(model(x, t), _rand(2, 1, 8, 8, seed=1))
        loss.backward()
    return loss.numpy(), [p.grad.numpy().copy() for p in model.parameters()]


def test_off_records_nothing_and_on_changes_no_number(monkeypatch):
    prof = minidiff.profile()
    with prof:
        F.add(_rand(2), 1.0)
    before = prof.totals()
    calls = []
    monkeypatch.setattr(profiler.Profile, "_forward", lambda *a: calls.append(a))
    monkeypatch.setattr(profiler.Profile, "_backward", lambda *a: calls.append(a))
    loss_off, grads_off = _train_step(profiled=False)
    assert calls == [] and profiler._current is None
    after = prof.totals()
    assert {k: v for k, v in after.items() if not k.startswith("(")} == \
        {k: v for k, v in before.items() if not k.startswith("(")}
    monkeypatch.undo()
    loss_on, grads_on = _train_step(profiled=True)
    assert np.array_equal(loss_on, loss_off)
    assert len(grads_on) == len(grads_off)
    assert all(np.array_equal(g, h) for g, h in zip(grads_on, grads_off))


def test_nested_profiles_are_refused_and_leave_it_off():
    with minidiff.profile() as outer:
        with pytest.raises(RuntimeError, match="already recording"):
            with minidiff.profile():
                pass
        assert profiler._current is outer                       # the outer one still records
        F.add(_rand(2), 1.0)
    assert profiler._current is None
    assert outer.totals()["add"]["calls"] == 1


def test_an_exception_inside_leaves_it_off_and_the_stack_clean():
    with pytest.raises(ValueError, match="do not broadcast"):
        with minidiff.profile() as prof:
            F.add(_rand(2), 1.0)
            F.add(_rand(2), _rand(3))                           # raises inside the op
    assert profiler._current is None
    assert prof.totals()["add"]["calls"] == 1                   # the failed call is not filed
    with minidiff.profile() as prof:
        try:
            F.add(_rand(2), _rand(3))
        except ValueError:
            pass
        assert prof._stack == []                                # no frame left behind
        F.add(_rand(2), 1.0)
    assert prof.totals()["add"]["calls"] == 1


# ------------------------------------------------------------------ the table, the GPU sync
def test_the_table_lists_the_top_ops_and_adds_up_to_the_wall_time():
    a = _rand(64, 64, requires_grad=True)
    with minidiff.profile() as prof:
        F.sum(F.tanh(a @ a) * 2.0).backward()
    text = prof.table(top=2)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["op", "fwd", "ms"]
    assert "(2 more ops)" in text and "(outside ops)" in text and "total (wall)" in text
    totals = prof.totals()
    in_ops = sum(v["forward_s"] + v["backward_s"] for k, v in totals.items()
                 if not k.startswith("("))
    assert totals["(outside ops)"]["forward_s"] == pytest.approx(prof.wall_s - in_ops)
    assert 0 < in_ops <= prof.wall_s
    top = max((k for k in totals if not k.startswith("(")),
              key=lambda k: totals[k]["forward_s"] + totals[k]["backward_s"])
    assert lines[2].split()[0] == top


def test_on_cuda_every_clock_read_waits_for_the_stream(monkeypatch):
    """A stand-in backend says "cuda": each op is timed between two syncs, each backward node
    too, and the block's wall time also; nothing syncs with the profiler off."""
    syncs = []

    class Stream:
        def synchronize(self):
            syncs.append(1)

    class FakeCupy:
        class cuda:
            @staticmethod
            def get_current_stream():
                return Stream()

    class FakeBackend:
        get_device = staticmethod(lambda: "cuda")
        xp = staticmethod(lambda: FakeCupy)

    monkeypatch.setattr(profiler, "backend", FakeBackend)
    a = _rand(3, requires_grad=True)
    F.sum(a * 2.0).backward()
    assert syncs == []
    with minidiff.profile():
        F.sum(a * 2.0).backward()                               # 2 ops forward, 2 nodes back
    assert len(syncs) == 2 + 2 * 2 + 2 * 2
