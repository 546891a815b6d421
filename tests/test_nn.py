"""minidiff.nn: parameter naming, state_dict / load_state_dict, train/eval, initialisation,
layers, ModuleList / Sequential and modules()."""
import math

import numpy as np
import pytest

import minidiff
from minidiff import Tensor
from minidiff.nn import (Conv2d, Dropout, GroupNorm, Identity, Linear, Module, ModuleList,
                         Parameter, ReLU, Sequential, SiLU, variance_scaling_uniform, zero_init)
from tests.naive import naive_conv2d


class Block(Module):
    def __init__(self):
        super().__init__()
        self.norm = GroupNorm(2, 4)
        self.skip = None                                   # None and plain values are ignored
        self.width = 4
        self.layers = [Linear(4, 3), Linear(3, 4, bias=False)]
        self.scale = Parameter(np.ones(1, np.float32))
        self.act = SiLU()

    def forward(self, x):
        return self.layers[1](self.act(self.layers[0](self.norm(x)))) * self.scale


class Net(Module):
    def __init__(self):
        super().__init__()
        self.inp = Linear(2, 4)
        self.blocks = (Block(), Block())
        self.drop = Dropout(0.5)
        self.out = Sequential(Linear(4, 2), SiLU())

    def forward(self, x):
        h = self.inp(x)
        h = self.blocks[1](self.blocks[0](h))
        return self.out(self.drop(h))


NET_NAMES = [
    "inp.weight", "inp.bias",
    "blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.0.layers.0.weight",
    "blocks.0.layers.0.bias", "blocks.0.layers.1.weight", "blocks.0.scale",
    "blocks.1.norm.weight", "blocks.1.norm.bias", "blocks.1.layers.0.weight",
    "blocks.1.layers.0.bias", "blocks.1.layers.1.weight", "blocks.1.scale",
    "out.0.weight", "out.0.bias",                            # Sequential: as PyTorch names
]


def snapshot(module):
    return {n: p.data.copy() for n, p in module.named_parameters()}


def assert_unchanged(module, before):
    for n, p in module.named_parameters():
        np.testing.assert_array_equal(p.data, before[n], err_msg=n)


# ---------------------------------------------------------------------------- naming
def test_named_parameters_names_and_order():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == NET_NAMES
    assert list(net.parameters()) == [p for _, p in net.named_parameters()]
    assert all(isinstance(p, Parameter) and p.requires_grad for p in net.parameters())
    assert net.blocks[0].layers[1].bias is None
    assert net.num_parameters() == (8 + 4) + 2 * (4 + 4 + 12 + 3 + 12 + 1) + (8 + 2)


def test_shared_parameter_is_listed_once():
    class Tied(Module):
        def __init__(self):
            super().__init__()
            self.a = Linear(3, 3)
            self.b = self.a
    assert [n for n, _ in Tied().named_parameters()] == ["a.weight", "a.bias"]


def test_module_without_forward_says_so():
    with pytest.raises(NotImplementedError, match="Module defines no forward"):
        Module()(1)


# ---------------------------------------------------------------------------- state_dict
def test_state_dict_round_trip_is_exact():
    minidiff.manual_seed(0)
    a = Net()
    minidiff.manual_seed(1)
    b = Net()
    sd = a.state_dict()
    assert list(sd) == NET_NAMES
    assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in sd.values())
    assert not np.array_equal(sd["inp.weight"], b.state_dict()["inp.weight"])
    b.load_state_dict(sd)
    for n, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[n], err_msg=n)
    x = Tensor(np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32))
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).data, b(x).data)


def test_state_dict_holds_copies():
    net = Net()
    sd = net.state_dict()
    sd["inp.weight"][...] = 123.0
    assert not (net.inp.weight.data == 123.0).any()
    sd2 = net.state_dict()
    net.load_state_dict(sd)
    sd["inp.bias"][...] = 7.0                                # the loaded arrays are copied too
    assert not (net.inp.bias.data == 7.0).any()
    np.testing.assert_array_equal(net.inp.weight.data, 123.0)
    assert not np.array_equal(sd2["inp.weight"], sd["inp.weight"])


def test_load_state_dict_missing_unexpected_and_shape_errors_change_nothing():
    net = Net()
    before = snapshot(net)
    good = {n: v + 1.0 for n, v in net.state_dict().items()}   # valid changes for every name

    missing = dict(good)
    del missing["blocks.1.scale"], missing["inp.bias"]
    with pytest.raises(ValueError, match=r"missing names: \['inp.bias', 'blocks.1.scale'\]"):
        net.load_state_dict(missing)
    assert_unchanged(net, before)

    unexpected = dict(good, **{"blocks.2.scale": np.ones(1)})
    with pytest.raises(ValueError, match=r"unexpected names: \['blocks.2.scale'\]"):
        net.load_state_dict(unexpected)
    assert_unchanged(net, before)

    wrong = dict(good, **{"out.0.weight": np.ones((2, 3))})
    with pytest.raises(ValueError, match=r"out.0.weight: expected \(2, 4\), got \(2, 3\)"):
        net.load_state_dict(wrong)
    assert_unchanged(net, before)
    with pytest.raises(ValueError, match="shape mismatch"):
        net.load_state_dict(wrong, strict=False)              # shapes are checked even then
    assert_unchanged(net, before)


def test_load_state_dict_non_strict_loads_the_common_names():
    net = Net()
    before = snapshot(net)
    net.load_state_dict({"inp.bias": np.full(4, 2.5), "nope": np.zeros(3)}, strict=False)
    np.testing.assert_array_equal(net.inp.bias.data, np.full(4, 2.5, np.float32))
    assert net.inp.bias.dtype == np.float32                  # cast to the parameter's dtype
    for n, p in net.named_parameters():
        if n != "inp.bias":
            np.testing.assert_array_equal(p.data, before[n])


# ---------------------------------------------------------------------------- modes, grads
def test_train_eval_propagate_to_every_submodule():
    net = Net()
    subs = [net.inp, net.drop, net.out, *net.out, *net.blocks]
    subs += [m for b in net.blocks for m in (b.norm, b.act, *b.layers)]
    assert net.training and all(m.training for m in subs)
    assert net.eval() is net
    assert not net.training and not any(m.training for m in subs)
    net.train()
    assert net.training and all(m.training for m in subs)


def test_dropout_module_follows_the_mode():
    drop = Dropout(0.5)
    x = Tensor(np.ones((20, 20), np.float32))
    y = drop(x).data
    assert set(np.unique(y)) == {0.0, 2.0}
    drop.eval()
    assert drop(x) is x


def test_zero_grad_clears_every_gradient():
    net = Net()
    x = Tensor(np.random.default_rng(1).standard_normal((3, 2)).astype(np.float32))
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


# ---------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("make, fan_in, fan_out, scale", [
    (lambda: Linear(300, 200), 300, 200, 1.0),
    (lambda: Linear(300, 200, init_scale=2.0), 300, 200, 2.0),
    (lambda: Conv2d(64, 64, 3), 64 * 9, 64 * 9, 1.0),
    (lambda: Conv2d(32, 96, (3, 1), init_scale=0.5), 32 * 3, 96 * 3, 0.5),
])
def test_init_variance_matches_closed_form(make, fan_in, fan_out, scale):
    """W ~ U(-L, L), L = √(3·scale/fan_avg), so Var W = L²/3 = scale/fan_avg (Ho et al.'s
    variance_scaling, mode fan_avg). The sample mean of W² over n draws has relative std
    √(Var(W²))/E[W²] / √n = √(4/5)/√n (E W⁴ = L⁴/5); we allow 5 of those (≤ 3% here)."""
    layer = make()
    w = layer.weight.data.astype(np.float64)
    n = w.size
    limit = math.sqrt(3 * scale / ((fan_in + fan_out) / 2))
    assert np.abs(w).max() <= limit
    var = scale / ((fan_in + fan_out) / 2)
    assert abs((w ** 2).mean() / var - 1) < 5 * math.sqrt(0.8 / n)
    assert abs(w.mean()) < 5 * limit / math.sqrt(3 * n)     # std of the mean of U(-L, L)
    np.testing.assert_array_equal(layer.bias.data, 0.0)


def test_init_draws_come_from_the_library_generator():
    """Linear's W is L·(2u - 1) with u = rng.random((out, in)) of the seeded generator."""
    minidiff.manual_seed(3)
    w = Linear(5, 7).weight.data
    u = np.random.default_rng(3).random((7, 5))
    limit = math.sqrt(3 / 6)
    np.testing.assert_array_equal(w, ((2 * u - 1) * limit).astype(np.float32))
    minidiff.manual_seed(3)
    w64 = Linear(5, 7, dtype=np.float64).weight.data
    assert w64.dtype == np.float64
    np.testing.assert_array_equal(w64.astype(np.float32), w)


def test_init_scale_zero_means_1e_minus_10_and_zero_init_is_exact():
    conv = Conv2d(8, 8, 3, init_scale=0.0)
    limit = math.sqrt(3e-10 / 72)                              # Ho et al.: scale 0 -> 1e-10
    w = conv.weight.data
    assert np.abs(w).max() <= limit and np.abs(w).max() > limit / 2
    assert zero_init(conv) is conv
    assert not conv.weight.data.any() and not conv.bias.data.any()
    with pytest.raises(ValueError, match=r"scale: must be a finite number in \[0, inf\], got -1"):
        variance_scaling_uniform((2, 2), 2, 2, scale=-1)


def test_group_norm_starts_as_identity_affine():
    gn = GroupNorm(4, 8, dtype=np.float64)
    np.testing.assert_array_equal(gn.weight.data, np.ones(8))
    np.testing.assert_array_equal(gn.bias.data, np.zeros(8))
    assert gn.weight.dtype == np.float64


# ---------------------------------------------------------------------------- layer forwards
def test_linear_forward_matches_numpy():
    lin = Linear(4, 3, dtype=np.float64)
    lin.bias.data[...] = [1.0, -2.0, 0.5]
    x = np.random.default_rng(2).standard_normal((5, 2, 4))
    np.testing.assert_allclose(lin(Tensor(x)).data, x @ lin.weight.data.T + lin.bias.data,
                               rtol=1e-12)
    assert Linear(4, 3, bias=False).bias is None


def test_group_norm_module_matches_per_group_numpy():
    gn = GroupNorm(2, 4, eps=1e-3, dtype=np.float64)
    gn.weight.data[...] = [1.0, 2.0, 3.0, 4.0]
    gn.bias.data[...] = [0.0, 1.0, 0.0, -1.0]
    x = np.random.default_rng(3).standard_normal((2, 4, 3, 3))
    xg = x.reshape(2, 2, -1)
    ref = ((xg - xg.mean(2, keepdims=True)) / np.sqrt(xg.var(2, keepdims=True) + 1e-3))
    ref = ref.reshape(x.shape) * gn.weight.data[:, None, None] + gn.bias.data[:, None, None]
    np.testing.assert_allclose(gn(Tensor(x)).data, ref, rtol=1e-10, atol=1e-12)


def test_silu_and_sequential():
    x = np.linspace(-4, 4, 9)
    np.testing.assert_allclose(SiLU()(Tensor(x)).data, x / (1 + np.exp(-x)), rtol=1e-12)
    a, b = Linear(3, 4, dtype=np.float64), Linear(4, 2, dtype=np.float64)
    seq = Sequential(a, SiLU(), b)
    xin = np.random.default_rng(4).standard_normal((2, 3))
    h = xin @ a.weight.data.T
    ref = (h / (1 + np.exp(-h))) @ b.weight.data.T
    np.testing.assert_allclose(seq(Tensor(xin)).data, ref, rtol=1e-12)
    assert len(seq) == 3 and seq[2] is b


@pytest.mark.parametrize("make, match", [
    (lambda: Linear(0, 3), r"Linear: in_features: must be an int >= 1, got 0"),
    (lambda: Conv2d(3, 4, 0), r"Conv2d: kernel_size: must be an int >= 1, got 0"),
    (lambda: Conv2d(3, 4.0, 3), r"Conv2d: out_channels: must be an int >= 1, got 4.0"),
    (lambda: GroupNorm(True, 4), r"GroupNorm: num_groups: must be an int >= 1, got True"),
    (lambda: GroupNorm(3, 8), r"num_channels=8 is not divisible by num_groups=3"),
    (lambda: Dropout(1.0), r"p .* must be a number in \[0, 1\), got 1.0"),
    (lambda: Sequential(Linear(2, 2), 3), r"Sequential: argument 1 is a int, not a Module"),
])
def test_layer_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 1)])
def test_conv2d_layer_matches_loops(stride, padding):
    conv = Conv2d(3, 4, 3, stride=stride, padding=padding, dtype=np.float64)
    conv.bias.data[...] = [0.5, -1.0, 2.0, 0.0]
    x = np.random.default_rng(5).standard_normal((2, 3, 7, 6))
    ref = naive_conv2d(x, conv.weight.data, conv.bias.data, (stride,) * 2, (padding,) * 2)
    np.testing.assert_allclose(conv(Tensor(x)).data, ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------- rows, modules()
class Stack(Module):
    def __init__(self):
        super().__init__()
        self.blocks = ModuleList([Linear(3, 3), Linear(3, 3, bias=False)])
        self.head = Sequential(Linear(3, 2), ReLU(), Identity(), Linear(2, 2))
        self.tied = self.blocks[0]                            # the same module twice

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def test_module_list_and_sequential_take_pytorchs_names():
    net = Stack()
    assert list(net.state_dict()) == ["blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
                                      "head.0.weight", "head.0.bias", "head.3.weight",
                                      "head.3.bias"]
    assert list(net.head.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    x = np.random.default_rng(2).uniform(-2, 2, (4, 3))
    b0, b1, h0, h3 = net.blocks[0], net.blocks[1], net.head[0], net.head[-1]
    h = (x @ b0.weight.data.T + b0.bias.data) @ b1.weight.data.T
    h = np.maximum(h @ h0.weight.data.T + h0.bias.data, 0)
    np.testing.assert_allclose(net(Tensor(x.astype(np.float32))).data,
                               h @ h3.weight.data.T + h3.bias.data, rtol=1e-5, atol=1e-6)


def test_module_list_indexing_appending_and_errors():
    a, b, c = Linear(2, 2), SiLU(), Linear(2, 1)
    row = ModuleList([a, b])
    assert row.append(c) is row and len(row) == 3 and list(row) == [a, b, c]
    assert row[-1] is c and row[1] is b
    assert isinstance(row[1:], ModuleList) and list(row[1:]) == [b, c]
    seq = Sequential(a, b, c)
    assert isinstance(seq[:2], Sequential) and list(seq[:2]) == [a, b]
    d = Linear(2, 1)
    seq[2] = d
    assert list(seq) == [a, b, d] and list(seq.state_dict())[-1] == "2.bias"
    assert list(seq[1:].state_dict()) == ["1.weight", "1.bias"]     # renumbered from 0
    with pytest.raises(IndexError, match=r"ModuleList: index 3 is out of range for 3 modules"):
        row[3]
    with pytest.raises(ValueError, match=r"ModuleList: argument 3 is a float, not a Module"):
        row.append(1.0)
    with pytest.raises(NotImplementedError, match="ModuleList defines no forward"):
        row(Tensor(np.ones(2)))


def test_identity_and_relu():
    x = Tensor(np.random.default_rng(3).uniform(-2, 2, (2, 3)))
    assert Identity()(x) is x
    np.testing.assert_array_equal(ReLU()(x).data, np.maximum(x.data, 0))
    assert list(Identity().parameters()) == [] and list(ReLU().parameters()) == []


def test_named_modules_walks_depth_first_and_lists_a_shared_module_once():
    net = Stack()
    names = [n for n, _ in net.named_modules()]
    assert names == ["", "blocks", "blocks.0", "blocks.1", "head", "head.0", "head.1",
                     "head.2", "head.3"]                     # `tied` is blocks.0 again
    assert net.modules() == [m for _, m in net.named_modules()]
    assert net.modules()[0] is net and net.modules()[2] is net.tied
    assert [n for n, _ in net.head.named_modules("head")][:2] == ["head", "head.0"]


def test_train_mode_must_be_a_bool():
    with pytest.raises(ValueError, match=r"train: mode: must be True or False, got 1"):
        Stack().train(1)
