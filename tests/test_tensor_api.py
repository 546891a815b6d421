"""A PyTorch user's Tensor habits (issue 23, point 2), checked against NumPy's own answers.

On 71d2250: p.size() said "'int' object is not callable", numel() and cpu() were missing,
int(t) and f"{loss:.4f}" were TypeErrors, and p.grad.zero_() NumPy's AttributeError.
"""
import math
import re

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidiff
from minidiff.nn import Linear
from minidiff.optim import SGD
from minidiff.tensor import Tensor

SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
FINITE = st.floats(-1e6, 1e6, width=32)


@given(shape=SHAPES)
def test_size_is_the_shape_and_numel_the_count(shape):
    a = np.zeros(shape, np.float32)
    t = Tensor(a)
    assert t.size() == a.shape and t.shape == a.shape         # a method, and .shape kept
    assert [t.size(d) for d in range(-a.ndim, a.ndim)] == [a.shape[d] for d in range(-a.ndim,
                                                                                    a.ndim)]
    assert t.numel() == a.size == math.prod(shape)


@pytest.mark.parametrize("dim", [2, -3, 1.0, "0"])
def test_size_of_a_missing_axis_is_refused_in_one_line(dim):
    with pytest.raises(IndexError, match=r"^size: dim must be an int in \[-2, 2\), got .* for "
                                         r"shape \(3, 4\)$"):
        Tensor(np.zeros((3, 4))).size(dim)


@given(x=FINITE, dtype=st.sampled_from([np.float32, np.float64]))
def test_one_element_reads_as_a_python_number(x, dtype):
    want = float(dtype(x))                                   # the stored value, as Python reads it
    for t in (Tensor(np.array(x, dtype)), Tensor(np.array([[x]], dtype))):
        assert t.item() == float(t) == want and type(t.item()) is float
        assert int(t) == math.trunc(want) and type(int(t)) is int


@given(x=FINITE, spec=st.sampled_from([".4f", ".3e", "g", "10.2f", "+.1%"]))
def test_format_spec_formats_the_element(x, spec):
    loss = Tensor(np.array(x, np.float32))
    assert f"{loss:{spec}}" == format(float(np.float32(x)), spec)
    assert f"{loss}" == repr(loss)                            # no spec: as print(t) shows it


def test_format_spec_of_many_elements_is_refused_in_one_line():
    with pytest.raises(TypeError, match=r"^format: spec '\.4f' needs a tensor of 1 element, "
                                        r"this one has shape \(2,\); format t.numpy\(\)"):
        f"{Tensor([1.0, 2.0]):.4f}"
    with pytest.raises(ValueError, match=r"^item: tensor has 2 elements, not 1$"):
        float(Tensor([1.0, 2.0]))


def test_cpu_is_itself_on_the_host_and_cuda_is_to_cuda():
    t = Tensor([1.0, 2.0], requires_grad=True)
    assert t.cpu() is t and t.device == "cpu"
    try:
        want = t.to("cuda").device                          # on a machine with CuPy
    except RuntimeError as e:
        with pytest.raises(RuntimeError, match=f"^{re.escape(str(e))}$"):
            t.cuda()
    else:
        assert t.cuda().device == want == "cuda" and t.cuda().cpu().device == "cpu"


def test_detach_shares_the_data_and_stops_the_gradient():
    """y = Σ stop(x) · x: dy/dx = x, as the detached factor is a constant (without detach it
    would be 2x)."""
    a = np.array([1.0, -2.0, 3.0], np.float32)
    x = Tensor(a, requires_grad=True)
    c = x.detach()
    assert np.shares_memory(c.data, x.data) and not c.requires_grad
    (c * x).sum().backward()
    np.testing.assert_array_equal(x.grad, a)
    np.testing.assert_array_equal(x.numpy(), a)
    assert np.shares_memory(x.numpy(), x.data)                # on the host: no copy, as torch


def test_grad_is_a_tensor_with_zero_and_norm_as_in_pytorch():
    """p.grad is a Tensor (base: a bare array, so p.grad.zero_() and p.grad.norm() were
    NumPy's AttributeErrors), with no graph of its own."""
    layer = Linear(3, 2)
    opt = SGD(layer.parameters(), lr=0.1)
    layer(Tensor(np.ones((4, 3), np.float32))).sum().backward()
    w = layer.weight
    assert isinstance(w.grad, Tensor) and not w.grad.requires_grad
    # d Σ(x Wᵀ + b) / dW = Σ over the batch of x = 4 for every entry: norm √(2·3·16) = √96
    assert w.grad.norm().item() == pytest.approx(math.sqrt(96), rel=1e-6)
    g = w.grad
    assert w.grad.zero_() is g and w.grad is g
    np.testing.assert_array_equal(g.numpy(), np.zeros((2, 3), np.float32))
    opt.zero_grad()
    assert w.grad is None


def test_methods_of_the_ops_are_the_ops():
    """t.sum(0) is F.sum(t, 0), so help(t.sum) is the op's; the values are NumPy's."""
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = Tensor(a)
    assert Tensor.sum is minidiff.functional.sum and Tensor.view is minidiff.functional.reshape
    np.testing.assert_array_equal(t.sum(0).data, a.sum(0))
    np.testing.assert_array_equal(t.max(axis=1, keepdims=True).data, a.max(1, keepdims=True))
    np.testing.assert_array_equal(t.view(3, 2).data, a.reshape(3, 2))
    np.testing.assert_array_equal(t.permute(1, 0).data, a.T)
    np.testing.assert_array_equal(t.clip(min=1.5, max=4).data, np.clip(a, 1.5, 4))


@given(a=hnp.arrays(np.float64, SHAPES, elements=st.floats(-1e6, 1e6)))
def test_clone_copies_and_passes_the_gradient_and_tolist_is_numpys(a):
    """clone: new memory, the same numbers, and d Σ(w · clone(x)) / dx = w (torch's clone);
    tolist: NumPy's nested lists of the same numbers (base: both AttributeErrors)."""
    x = Tensor(a, requires_grad=True)
    c = x.clone()
    assert c.dtype == a.dtype and not np.shares_memory(c.data, x.data)
    np.testing.assert_array_equal(c.data, a)
    assert c.tolist() == a.tolist() and type(x.tolist()) is type(a.tolist())
    w = np.arange(a.size, dtype=np.float64).reshape(a.shape)
    (c * w).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), w)


def test_float_and_double_are_the_tensor_itself_when_it_has_that_dtype():
    """As torch's: t.float() of a float32 t is t; of a float64 t, a cast on the graph."""
    t32, t64 = Tensor(np.ones(2, np.float32)), Tensor(np.ones(2), requires_grad=True)
    assert t32.float() is t32 and t64.double() is t64
    assert t32.double().dtype == np.float64 and t64.float().dtype == np.float32
    (t64.float() * 3).sum().backward()
    assert t64.grad.dtype == np.float64
    np.testing.assert_array_equal(t64.grad.numpy(), [3.0, 3.0])


@pytest.mark.parametrize("dtype", [np.float64, "float64", np.dtype("float64")])
def test_to_a_dtype_casts_a_tensor_and_a_module_as_torch_s_to(dtype):
    """t.to(dtype) and model.to(dtype) cast, as torch's (base: "to: device: got <class
    'numpy.float64'>, allowed: cpu, cuda"); a device still moves; the gradient comes back."""
    x = Tensor(np.array([1.0, -2.0], np.float32), requires_grad=True)
    y = x.to(dtype)
    assert y.dtype == np.float64 and y.to(dtype) is y and x.to("cpu") is x
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, -4.0])            # d Σx² / dx = 2x
    layer = Linear(2, 3)
    assert layer.to(dtype) is layer and layer.weight.dtype == np.float64
    assert layer.to(np.float32).bias.dtype == np.float32


@pytest.mark.parametrize("target, message", [
    (np.int64, "to: dtype must be float32 or float64, got int64"),
    ("float16", "to: dtype must be float32 or float64, got float16"),
    ("cuda:0", "to: device: got 'cuda:0', allowed: cpu, cuda"),
])
def test_to_something_else_is_refused_in_one_line(target, message):
    with pytest.raises(ValueError) as e:
        Tensor(np.ones(2, np.float32)).to(target)
    assert str(e.value) == message
    with pytest.raises(ValueError, match="^Module.to: "):
        Linear(2, 3).to(target)
