"""The surface a PyTorch user expects: `minidiff.<subpackage>` after `import minidiff`, Tensor
methods and operators (forward against NumPy, backward against float64 central differences),
and moving tensors and models between devices. (ModuleList, Sequential's names, Identity, ReLU
and modules() are tested in test_nn.py.)

Devices without a GPU: `fake_cuda()` makes "cuda" the current device with a stand-in for CuPy
whose arrays are a NumPy subclass of their own type, so the one thing the device check looks
at (the array's type against the current device's) differs as it does with CuPy. It cannot
show what CuPy itself does with a host array handed to it; the `gpu` test at the end runs the
same steps with CuPy, where CuPy and a GPU are.
"""
import contextlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidiff
import minidiff.nn.module
from minidiff import Tensor, backend
from minidiff.models import UNet
from minidiff.nn import Linear, Module, Parameter, Sequential, SiLU
from minidiff.testing import gradcheck
from cuda_emu.testing import GPU

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- the package
def test_subpackages_are_attributes_loaded_on_first_use():
    """In a fresh interpreter: `import minidiff` alone loads none of data, diffusion, models
    (Pillow, the samplers); using one imports it, with no cycle."""
    code = ("import sys, minidiff\n"
            "lazy = ('minidiff.data', 'minidiff.diffusion', 'minidiff.models')\n"
            "print(sorted(m for m in lazy if m in sys.modules))\n"
            "print(minidiff.diffusion.GaussianDiffusion.__name__, minidiff.models.UNet.__name__,"
            " minidiff.data.make_swiss_roll.__name__, minidiff.nn.Linear.__name__,"
            " minidiff.optim.Adam.__name__)\n"
            "print({'data', 'diffusion', 'models', 'nn', 'optim'} <= set(dir(minidiff)))\n"
            "try:\n    minidiff.nope\nexcept AttributeError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["[]", "GaussianDiffusion UNet make_swiss_roll Linear Adam",
                                     "True", "module 'minidiff' has no attribute 'nope'"]


# ---------------------------------------------------------------------------- Tensor methods
def arrays(shape, seed, lo=-2.0, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, size=shape)


UNARY_METHODS = {                    # method -> (NumPy oracle, range of x)
    "sqrt": (np.sqrt, (0.2, 3)),
    "abs": (np.abs, (-2, 2)),
    "tanh": (np.tanh, (-3, 3)),
    "exp": (np.exp, (-2, 2)),
    "log": (np.log, (0.2, 3)),
}


@pytest.mark.parametrize("name", sorted(UNARY_METHODS))
def test_unary_methods(name):
    ref, (lo, hi) = UNARY_METHODS[name]
    x = arrays((3, 4), 0, lo, hi)
    x = np.where(np.abs(x) < 1e-3, 0.5, x)                   # abs: away from the kink at 0
    np.testing.assert_allclose(getattr(Tensor(x), name)().data, ref(x), rtol=1e-12)
    gradcheck(lambda t: getattr(t, name)(), x)


def test_abs_operator_and_reflected_pow():
    x = arrays((2, 3), 1)
    np.testing.assert_array_equal(abs(Tensor(x)).data, np.abs(x))
    gradcheck(lambda t: abs(t), x)
    np.testing.assert_allclose((2 ** Tensor(x)).data, 2.0 ** x, rtol=1e-12)
    np.testing.assert_allclose((0.5 ** Tensor(x)).data, 0.5 ** x, rtol=1e-12)
    gradcheck(lambda t: 2 ** t, x)                           # d 2^x = 2^x ln 2
    gradcheck(lambda t: 0.5 ** t, x)
    x32 = Tensor(x.astype(np.float32))
    assert (2 ** x32).dtype == np.float32 and abs(x32).dtype == np.float32


def test_clip_method_takes_numpys_names_and_one_sided_bounds():
    x = np.array([-2.0, -0.5, 0.3, 1.7])
    t = Tensor(x)
    np.testing.assert_array_equal(t.clip(-1, 1).data, np.clip(x, -1, 1))
    np.testing.assert_array_equal(t.clip(min=0).data, np.clip(x, 0, None))
    np.testing.assert_array_equal(t.clip(max=0).data, np.clip(x, None, 0))
    gradcheck(lambda s: s.clip(-1, 1), x)
    gradcheck(lambda s: s.clip(max=0.0), x)
    y = Tensor(np.array([-1.0, 0.0, 1.0, 2.0]), requires_grad=True)
    y.clip(-1, 1).sum().backward()
    np.testing.assert_array_equal(y.grad, [1, 1, 1, 0])     # bounds included, as torch.clamp


@pytest.mark.parametrize("args, match", [
    ((), r"clip: give lo, hi or both"),
    ((1.0, -1.0), r"clip: lo must be <= hi, got lo=1.0, hi=-1.0"),
    ((float("nan"), 1.0), r"clip: lo: must be a finite number"),
    ((None, "1"), r"clip: hi: must be a finite number .* got '1'"),
])
def test_clip_bad_bounds(args, match):
    with pytest.raises(ValueError, match=match):
        Tensor(np.zeros(3)).clip(*args)


@st.composite
def reduction_case(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    nd = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-nd, nd - 1),
                          st.lists(st.integers(0, nd - 1), min_size=1, unique=True).map(tuple)))
    return shape, axis, draw(st.booleans())


@pytest.mark.parametrize("name", ["max", "min"])
@given(case=reduction_case(), seed=st.integers(0, 2**16))
def test_max_and_min_over_any_axes(name, case, seed):
    shape, axis, keep = case
    n = int(np.prod(shape))
    x = np.random.default_rng(seed).permutation(n).reshape(shape) * 0.1   # no ties: gaps 0.1
    ref = getattr(np, name)(x, axis=axis, keepdims=keep)
    got = getattr(Tensor(x), name)(axis, keep)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got.data, ref)
    gradcheck(lambda t: getattr(t, name)(axis=axis, keepdims=keep), x)


def test_max_and_min_split_the_gradient_between_ties():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    x.max(axis=1).backward(np.array([6.0, 6.0]))
    np.testing.assert_array_equal(x.grad, [[0, 3, 3], [2, 2, 2]])
    y = Tensor(np.array([[1.0, 3.0, 1.0], [0.0, 5.0, 4.0]]), requires_grad=True)
    y.min().backward()                                        # one 0.0: all of it
    np.testing.assert_array_equal(y.grad, [[0, 0, 0], [1, 0, 0]])
    z = Tensor(np.array([[1.0, 3.0, 1.0], [4.0, 5.0, 1.0]]), requires_grad=True)
    z.min().backward()                                        # three 1.0s share it
    np.testing.assert_allclose(z.grad, [[1 / 3, 0, 1 / 3], [0, 0, 1 / 3]], rtol=1e-15)
    w = Tensor(np.array([2.0, 2.0], np.float32), requires_grad=True)
    w.max(keepdims=True).backward(np.ones(1, np.float32))
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, [0.5, 0.5])


def test_max_refuses_an_empty_axis_and_a_bad_one():
    with pytest.raises(ValueError, match=r"max: an axis it reduces over has length 0"):
        Tensor(np.zeros((0, 3))).max(axis=0)
    assert Tensor(np.zeros((0, 3))).max(axis=1).shape == (0,)    # nothing reduced over an empty
    with pytest.raises(ValueError, match=r"min: axis 2 is out of range for a 2-d tensor"):
        Tensor(np.zeros((2, 3))).min(axis=2)


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 2**16),
       data=st.data())
def test_permute_unsqueeze_view(shape, seed, data):
    x = arrays(shape, seed)
    nd = len(shape)
    perm = tuple(data.draw(st.permutations(range(nd))))
    np.testing.assert_array_equal(Tensor(x).permute(*perm).data, np.transpose(x, perm))
    np.testing.assert_array_equal(Tensor(x).permute(perm).data, np.transpose(x, perm))
    gradcheck(lambda t: t.permute(*perm), x)
    ax = data.draw(st.integers(-nd - 1, nd))
    assert Tensor(x).unsqueeze(ax).shape == np.expand_dims(x, ax).shape
    gradcheck(lambda t: t.unsqueeze(ax), x)
    np.testing.assert_array_equal(Tensor(x).view(-1).data, x.reshape(-1))
    gradcheck(lambda t: t.view(*reversed(shape)), x)


def test_permute_and_unsqueeze_errors_name_the_op():
    t = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"permute: axes \(\) are not a permutation"):
        t.permute()                                           # no axes: not numpy's reverse
    with pytest.raises(ValueError, match=r"permute: axes \(0, 0\) are not a permutation"):
        t.permute(0, 0)
    with pytest.raises(ValueError, match=r"unsqueeze: axis 3 is out of range for a 3-d tensor"):
        t.unsqueeze(3)
    assert t.transpose().shape == (3, 2)                      # transpose keeps numpy's rules


def test_tensor_to_the_device_it_is_on_is_itself():
    t = Tensor(np.ones(2), requires_grad=True)
    assert t.device == "cpu" and t.to("cpu") is t
    assert Tensor(np.ones((2, 2))).sum().device == "cpu"     # a NumPy scalar is on the host
    with pytest.raises(ValueError, match=r"to: device: got 'gpu', allowed: cpu, cuda"):
        t.to("gpu")


# ---------------------------------------------------------------------------- devices
class DeviceArray(np.ndarray):
    """Stands for a CuPy array: a NumPy array of a type of its own (and CuPy's .get())."""

    def get(self):
        return np.asarray(self)


class FakeCupy:
    """Stands for the CuPy module: NumPy, whose `asarray` and `ndarray` are the device's."""
    ndarray = DeviceArray

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asarray(a, dtype=None):
        return np.asarray(a, dtype=dtype).view(DeviceArray)


@contextlib.contextmanager
def fake_cuda():
    saved = dict(backend._state)
    backend._state.update(device="cuda", xp=FakeCupy(), rng=None)
    try:
        yield
    finally:
        backend._state.clear()
        backend._state.update(saved)


class WithBuffers(Module):
    def __init__(self):
        super().__init__()
        self.body = Sequential(Linear(3, 4), SiLU(), Linear(4, 2))
        self.scale = Tensor(np.full(2, 0.5, np.float32))     # a buffer: moved, never trained
        self.extra = [Parameter(np.ones(2, np.float32))]

    def forward(self, x):
        return self.body(x) * self.scale + self.extra[0]


def test_a_model_left_on_the_cpu_is_refused_in_one_line_then_moved():
    net = WithBuffers()
    x = arrays((5, 3), 4).astype(np.float32)
    ref = net(Tensor(x)).data
    params = list(net.parameters())
    for p in params:
        p.grad = np.ones_like(p.data)
    with fake_cuda():
        with pytest.raises(RuntimeError) as e:
            net(Tensor(x))
        assert str(e.value) == ("WithBuffers: tensor 'scale' is on cpu but the current device "
                                "is cuda; move the model with .to('cuda')")
        with pytest.raises(RuntimeError, match=r"^Linear: parameter 'weight' is on cpu but"):
            net.body(Tensor(x))
        assert net.to("cuda") is net
        assert list(net.parameters()) == params                  # the same Parameter objects
        tensors = params + [net.scale]
        assert all(type(t.data) is DeviceArray and t.device == "cuda" for t in tensors)
        assert all(type(p.grad.data) is DeviceArray for p in params)
        got = net(Tensor(x)).data
        assert type(got) is DeviceArray
        np.testing.assert_array_equal(np.asarray(got), ref)
        net.load_state_dict(net.state_dict())               # loads onto the parameters' device
        assert all(type(p.data) is DeviceArray for p in params)
        net.to("cpu")
        assert all(type(t.data) is np.ndarray for t in tensors)
        assert all(type(p.grad.data) is np.ndarray for p in params)
    np.testing.assert_array_equal(net(Tensor(x)).data, ref)


def test_a_parameter_left_on_the_gpu_is_refused_on_the_cpu():
    """The other direction: a "cuda" array here is any array that is not NumPy's; it has
    CuPy's .get(), so .to('cpu') brings it back."""
    class Foreign:
        def __init__(self, a):
            self.a, self.shape, self.dtype = a, a.shape, a.dtype

        def get(self):
            return self.a

    net = WithBuffers()
    w = net.body[2].weight
    host = w.data
    w.data = Foreign(host)
    with pytest.raises(RuntimeError, match=r"^Linear: parameter 'weight' is on cuda but the "
                                           r"current device is cpu; move the model with "
                                           r"\.to\('cpu'\)$"):
        net(Tensor(np.ones((1, 3), np.float32)))
    net.extra[0].data = Foreign(net.extra[0].data)
    with pytest.raises(RuntimeError, match=r"^WithBuffers: parameter 'extra.0' is on cuda"):
        net(Tensor(np.ones((1, 3), np.float32)))
    net.to("cpu")
    assert w.data is host and type(net.extra[0].data) is np.ndarray


def test_a_unet_is_refused_at_its_first_layer_and_moved_whole():
    minidiff.manual_seed(0)
    unet = UNet(in_channels=1, image_size=8, base_channels=8, ch_mult=(1, 2), num_res_blocks=1,
                attn_resolutions=(4,), groups=4)
    x, t = Tensor(arrays((2, 1, 8, 8), 5).astype(np.float32)), np.array([3, 7])
    ref = unet(x, t).data
    with fake_cuda():
        with pytest.raises(RuntimeError, match=r"^Linear: parameter 'weight' is on cpu but the "
                                               r"current device is cuda"):
            unet(x, t)
        unet.to("cuda")
        assert all(type(p.data) is DeviceArray for p in unet.parameters())
    unet.to("cpu")
    np.testing.assert_array_equal(unet(x, t).data, ref)


def test_module_to_is_all_or_nothing_and_checks_the_name(monkeypatch):
    net = WithBuffers()
    before = [t.data for t in [*net.parameters(), net.scale]]
    calls = []

    def failing_array_on(a, device):
        calls.append(device)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return FakeCupy.asarray(a)

    monkeypatch.setattr(minidiff.nn.module, "array_on", failing_array_on)
    with pytest.raises(RuntimeError, match="out of memory"):
        net.to("cuda")
    after = [t.data for t in [*net.parameters(), net.scale]]
    assert all(a is b for a, b in zip(after, before))        # not one array was replaced
    with pytest.raises(ValueError, match=r"Module.to: device: got 'gpu', allowed: cpu, cuda"):
        net.to("gpu")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_module_to_cuda_without_cupy_says_so():
    net = WithBuffers()
    w = net.body[0].weight.data
    with pytest.raises(RuntimeError, match="device 'cuda' needs CuPy, which is not installed"):
        net.to("cuda")
    assert net.body[0].weight.data is w


def test_tensor_to_moves_the_data_and_its_gradient_back():
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    with fake_cuda():
        y = x.to("cuda")
        assert type(y.data) is DeviceArray and y.device == "cuda" and x.device == "cpu"
        assert y.to("cuda") is y
        (y * y).sum().backward()
    assert type(x.grad.data) is np.ndarray and x.grad.device == "cpu"
    np.testing.assert_array_equal(x.grad.data, [2.0, -4.0, 6.0])


@pytest.mark.gpu
@GPU
def test_on_a_real_gpu_a_stale_model_is_refused_and_to_moves_it():
    import cupy
    net = WithBuffers()
    x = arrays((5, 3), 6).astype(np.float32)
    ref = net(Tensor(x)).data
    minidiff.set_device("cuda")
    try:
        with pytest.raises(RuntimeError, match=r"is on cpu but the current device is cuda"):
            net(Tensor(x))
        net.to("cuda")
        assert all(isinstance(p.data, cupy.ndarray) for p in net.parameters())
        got = net(Tensor(x)).data
        assert isinstance(got, cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(got), ref, rtol=1e-5, atol=1e-6)
    finally:
        minidiff.set_device("cpu")
    with pytest.raises(RuntimeError, match=r"is on cuda but the current device is cpu"):
        net(Tensor(x))
    net.to("cpu")
    assert all(type(p.data) is np.ndarray for p in net.parameters())
    np.testing.assert_allclose(net(Tensor(x)).data, ref, rtol=1e-5, atol=1e-6)
