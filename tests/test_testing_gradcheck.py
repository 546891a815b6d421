"""minidiff.testing.gradcheck: it passes a correct backward and names what a wrong one got wrong.

Oracles: closed-form derivatives (d/dx Σ w x³ = 3 w x²); ops built here with a deliberately
wrong backward, which must fail with the input, the index, both values and the tolerance.
"""
import numpy as np
import pytest
from hypothesis import given

import minidiff.functional as F
from minidiff import Tensor
from minidiff.testing import gradcheck, numerical_grad, strategies


def op_with_backward(forward, backward, name="custom"):
    """A one-input op: forward(x) on arrays, backward(x, out_grad) -> the input's gradient."""
    def op(x):
        out = Tensor.make(forward(x.data), (x,), name)

        def _backward():
            x.accum_grad(backward(x.data, out.grad.data))
        return out.set_backward(_backward)
    return op


def test_numerical_grad_matches_the_closed_form():
    """Central differences at h = 1e-6: truncation h² |f'''| / 6 = 1e-12 |w|, round-off
    u |f| / h <= 1e-16 x 30 / 1e-6 = 3e-9, so 1e-8 bounds the error for |x| <= 2."""
    rng = np.random.default_rng(0)
    x, w = rng.uniform(-2, 2, (3, 4)), rng.standard_normal((3, 4))
    g = numerical_grad(lambda a: float((a ** 3 * w).sum()), [x.copy()], 0)
    np.testing.assert_allclose(g, 3 * x ** 2 * w, rtol=0, atol=1e-8)


@given(strategies.arrays((2, 3), min_value=-3, max_value=3))
def test_a_correct_backward_passes(x):
    gradcheck(op_with_backward(np.sin, lambda a, g: np.cos(a) * g), x)
    gradcheck(F.tanh, x)


def test_a_wrong_backward_fails_naming_input_index_values_and_tolerance():
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    wrong = op_with_backward(np.sin, lambda a, g: np.sin(a) * g)         # sin' taken as sin
    with pytest.raises(AssertionError) as e:
        gradcheck(wrong, x)
    msg = str(e.value)
    for part in ("input 0", "gradient mismatch at index", "expected", "(finite differences)",
                 "got", "tolerance", "atol 1e-06 + rtol 1e-05 |expected|"):
        assert part in msg, msg
    assert "\n" not in msg


def test_one_wrong_element_is_found_by_its_index():
    x = np.linspace(0.1, 1.2, 12).reshape(3, 4)

    def backward(a, g):
        grad = 2 * a * g
        grad[1, 2] *= 1.001                                               # one element off
        return grad
    with pytest.raises(AssertionError, match=r"at index \(1, 2\)"):
        gradcheck(op_with_backward(np.square, backward), x)
    gradcheck(op_with_backward(np.square, lambda a, g: 2 * a * g), x)     # the fix passes


def test_the_second_input_is_named_and_wrt_skips_inputs():
    a, b = np.array([0.5, 1.5]), np.array([2.0, -1.0])

    def op(x, y):                     # x * y with the gradient of y dropped
        out = Tensor.make(x.data * y.data, (x, y), "half_mul")

        def _backward():
            x.accum_grad(y.data * out.grad.data)
            y.accum_grad(0 * out.grad.data)
        return out.set_backward(_backward)
    with pytest.raises(AssertionError, match="^input 1: gradient mismatch"):
        gradcheck(op, a, b)
    gradcheck(op, a, b, wrt=(0,))


def test_an_input_no_gradient_reaches_is_named():
    with pytest.raises(AssertionError, match="input 1: no gradient reached it"):
        gradcheck(lambda x, y: x * 2.0 + Tensor(y.data), np.ones(2), np.ones(2))


@pytest.mark.parametrize("fn, inputs, error, match", [
    (F.tanh, (["a", "b"],), TypeError, r"^gradcheck: input 0 must be an array of real"),
    (F.tanh, ([1.0, np.nan],), ValueError, r"^gradcheck: input 0 must be finite"),
    (lambda x: x.data, (np.ones(2),), TypeError, r"^gradcheck: fn must return a Tensor"),
])
def test_bad_input_gets_one_clear_line(fn, inputs, error, match):
    with pytest.raises(error, match=match) as e:
        gradcheck(fn, *inputs)
    assert "\n" not in str(e.value)
