"""The autograd engine: accumulation, no_grad, freeing the graph, and its error messages."""
import gc
import weakref

import numpy as np
import pytest

import minidiff
from minidiff import Tensor, no_grad
from minidiff.tensor import unbroadcast


def test_a_tensor_used_twice_accumulates_its_gradient():
    x = Tensor(np.array([1.5, -2.0]), requires_grad=True)
    y = x * x + x                         # dy/dx = 2x + 1, x reaches y along three edges
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * np.array([1.5, -2.0]) + 1)


def test_diamond_graph_sums_both_paths():
    x = Tensor(np.array(0.7), requires_grad=True)
    a = x.exp()
    b = x * 3.0
    (a * b).backward()                    # d(3x e^x)/dx = 3 e^x (1 + x)
    np.testing.assert_allclose(x.grad, 3 * np.exp(0.7) * 1.7, rtol=1e-12)


def test_no_grad_builds_no_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = (x * 2).exp().sum()
    assert not y.requires_grad and y._prev == () and y._backward is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    assert minidiff.is_grad_enabled()


def test_no_grad_restores_the_flag_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert minidiff.is_grad_enabled()


def test_gradients_do_not_leak_between_calls():
    w = Tensor(np.array([2.0]), requires_grad=True)
    (w * 3.0).sum().backward()
    np.testing.assert_array_equal(w.grad, [3.0])
    w.grad = None                          # what Module.zero_grad / optimizer.zero_grad do
    (w * 5.0).sum().backward()
    np.testing.assert_array_equal(w.grad, [5.0])
    (w * 5.0).sum().backward()             # without zeroing, PyTorch semantics: accumulate
    np.testing.assert_array_equal(w.grad, [10.0])


def test_constants_get_no_gradient():
    w = Tensor(np.ones(2), requires_grad=True)
    c = Tensor(np.ones(2))
    (w * c).sum().backward()
    assert c.grad is None and w.grad is not None


def test_backward_frees_intermediate_activations():
    x = Tensor(np.random.default_rng(0).standard_normal(1000), requires_grad=True)
    h = minidiff.functional.tanh(x * 2.0)
    ref = weakref.ref(h.data)
    loss = (h * h).sum()
    del h
    gc.collect()
    assert ref() is not None               # the graph still holds the activation
    loss.backward()
    gc.collect()
    assert ref() is None                   # after backward, nothing references it
    assert loss._prev == () and loss._backward is None


def test_intermediate_gradients_are_not_kept():
    x = Tensor(np.ones(3), requires_grad=True)
    h = x * 2.0
    (h * h).sum().backward()
    assert h.grad is None and x.grad is not None


def test_backward_on_non_scalar_says_what_to_pass():
    y = Tensor(np.ones((2, 3)), requires_grad=True) * 2.0
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\), not a scalar; pass grad="):
        y.backward()
    y.backward(np.ones((2, 3)))            # with the grad it works


def test_backward_with_wrong_grad_shape():
    y = Tensor(np.ones((2, 3)), requires_grad=True) * 2.0
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), output has \(2, 3\)"):
        y.backward(np.ones(3))


def test_deep_graph_does_not_hit_recursion_limit():
    x = Tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.backward()
    assert x.grad == 1.0


def test_unbroadcast_sums_new_and_stretched_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(unbroadcast(g, (3, 4)), g.sum(0))
    np.testing.assert_array_equal(unbroadcast(g, (3, 1)), g.sum(0).sum(1, keepdims=True))
    np.testing.assert_array_equal(unbroadcast(g, (1, 1, 4)), g.sum((0, 1), keepdims=True))
    np.testing.assert_array_equal(unbroadcast(g, ()), g.sum())


def test_dtypes_float32_default_float64_kept():
    assert Tensor(1.0).dtype == np.float32
    assert Tensor(np.arange(3)).dtype == np.float32
    assert Tensor(np.zeros(2, np.float64)).dtype == np.float64
    x = Tensor(np.zeros(2, np.float64), requires_grad=True)
    (x * 2).sum().backward()
    assert x.grad.dtype == np.float64
    with pytest.raises(ValueError, match="float32 or float64"):
        Tensor(np.zeros(2), dtype=np.int32)


def test_item_detach_numpy():
    x = Tensor(np.array([[3.5]]), requires_grad=True)
    assert x.item() == 3.5
    d = x.detach()
    assert not d.requires_grad and d.data is x.data
    assert isinstance(x.numpy(), np.ndarray)
    with pytest.raises(ValueError, match="item: tensor has 2 elements"):
        Tensor(np.ones(2)).item()


def test_manual_seed_makes_draws_reproducible():
    minidiff.manual_seed(7)
    a = minidiff.backend.rng().standard_normal(5)
    minidiff.manual_seed(7)
    b = minidiff.backend.rng().standard_normal(5)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        minidiff.manual_seed(-1)


def test_cuda_without_cupy_says_what_is_missing():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="needs CuPy, which is not installed"):
        minidiff.set_device("cuda")
    assert minidiff.get_device() == "cpu"
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        minidiff.set_device("tpu")


def test_ndarray_on_the_left_still_builds_a_tensor():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = np.array([3.0, 4.0]) * x
    assert isinstance(y, Tensor) and y.dtype == np.float64
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_device_draws_follow_the_host_generator_and_its_state():
    # On a GPU the library draws on the host and moves the numbers over, so that the state
    # can be checkpointed; here NumPy stands in for CuPy, and the numbers must be the host's.
    d = minidiff.backend.DeviceDraws(5)
    ref = np.random.default_rng(5)
    np.testing.assert_array_equal(d.standard_normal((3, 2), dtype=np.float32),
                                  ref.standard_normal((3, 2), dtype=np.float32))
    state = d.bit_generator.state
    a = d.random(4)
    d.bit_generator.state = state
    np.testing.assert_array_equal(d.random(4), a)
    ref.random(4)
    np.testing.assert_array_equal(d.integers(0, 10, size=5), ref.integers(0, 10, size=5))
