"""mse_loss against closed forms and finite differences; dropout's mask statistics."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidiff
from minidiff import Tensor
from minidiff.functional.loss import dropout, mse_loss
from minidiff.testing import gradcheck


# ---------------------------------------------------------------------------- mse_loss
@pytest.mark.parametrize("reduction, expected", [
    ("mean", 3.0),                       # ((1-0)² + (2-0)² + (3-5)²) / 3 = (1 + 4 + 4) / 3
    ("sum", 9.0),                        # 1 + 4 + 4
    ("none", [1.0, 4.0, 4.0]),
])
def test_mse_loss_closed_form(reduction, expected):
    loss = mse_loss(Tensor([1.0, 2.0, 3.0]), Tensor([0.0, 0.0, 5.0]), reduction=reduction)
    np.testing.assert_array_equal(loss.data, np.array(expected, np.float32))
    assert loss.dtype == np.float32


def test_mse_loss_mean_gradient_closed_form():
    pred = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    target = Tensor([0.0, 0.0, 5.0], requires_grad=True)
    mse_loss(pred, target).backward()
    # d/dpred mean((pred - y)²) = 2 (pred - y) / n = 2 [1, 2, -2] / 3
    np.testing.assert_allclose(pred.grad, [2 / 3, 4 / 3, -4 / 3], rtol=1e-6)
    np.testing.assert_allclose(target.grad, [-2 / 3, -4 / 3, 4 / 3], rtol=1e-6)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=3),
       st.sampled_from(["mean", "sum", "none"]), st.integers(0, 2**31 - 1))
def test_mse_loss_backward_matches_finite_differences(shape, reduction, seed):
    r = np.random.default_rng(seed)
    pred, target = r.standard_normal(shape), r.standard_normal(shape)
    gradcheck(lambda a, b: mse_loss(a, b, reduction), pred, target, atol=1e-7, rtol=1e-6)
    reduce = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction]
    expected = reduce((pred - target) ** 2)
    np.testing.assert_allclose(mse_loss(Tensor(pred), Tensor(target), reduction).data, expected,
                               rtol=1e-12)


def test_mse_loss_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"pred has shape \(4, 1\) but target has shape \(4,\)"):
        mse_loss(Tensor(np.zeros((4, 1))), Tensor(np.zeros(4)))


def test_mse_loss_bad_reduction_and_dtype():
    a = Tensor(np.zeros(3))
    with pytest.raises(ValueError, match=r"reduction must be one of .* got 'avg'"):
        mse_loss(a, a, reduction="avg")
    with pytest.raises(ValueError, match="mse_loss: dtype mismatch"):
        mse_loss(a, Tensor(np.zeros(3, np.float32)))


# ---------------------------------------------------------------------------- dropout
def test_dropout_mask_statistics():
    """Fraction zeroed ~ p; survivors are exactly x / (1 - p); E[output] = x.

    n = 100_000 Bernoulli draws: the zero fraction has std √(p(1-p)/n) = 0.00145 and the
    mean of the output (x = 1) has std √(p/((1-p)n)) = 0.00207; we allow 5 std.
    """
    p, n = 0.3, 100_000
    x = Tensor(np.ones(n, np.float32))
    y = dropout(x, p).data
    zero = y == 0
    assert abs(zero.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_array_equal(y[~zero], np.float32(1 / (1 - p)))
    assert abs(y.mean() - 1.0) < 5 * np.sqrt(p / ((1 - p) * n))


def test_dropout_expectation_is_x_elementwise():
    """Each element's average over K = 4000 independent masks is x (5 std: |x|·√(p/((1-p)K)))."""
    p, K = 0.5, 4000
    x = np.linspace(-3, 3, 25)
    y = dropout(Tensor(np.broadcast_to(x, (K, 25)).copy()), p).data
    tol = 5 * np.abs(x) * np.sqrt(p / ((1 - p) * K))
    assert (np.abs(y.mean(axis=0) - x) <= tol + 1e-12).all()


def test_dropout_backward_uses_the_forward_mask():
    x = Tensor(np.full((50, 40), 2.0), requires_grad=True)
    y = dropout(x, 0.25)
    g = np.random.default_rng(0).standard_normal(y.shape)
    y.backward(g)
    mask = y.data / 2.0                                  # 0 or 1/(1 - p), read off the output
    assert set(np.unique(mask)) == {0.0, 1 / 0.75}
    np.testing.assert_array_equal(x.grad, g * mask)


def test_dropout_draws_from_the_library_generator():
    """The keep-mask is rng.random(shape) >= p with the generator seeded by manual_seed."""
    minidiff.manual_seed(7)
    y = dropout(Tensor(np.ones((30, 30), np.float32)), 0.4).data
    keep = np.random.default_rng(7).random((30, 30), dtype=np.float32) >= 0.4
    np.testing.assert_array_equal(y != 0, keep)
    minidiff.manual_seed(7)
    np.testing.assert_array_equal(dropout(Tensor(np.ones((30, 30), np.float32)), 0.4).data, y)


def test_dropout_identity_when_not_training_or_p_zero():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert dropout(x, 0) is x


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), "0.5", True, None])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError, match=r"dropout: p .* must be a number in \[0, 1\), got"):
        dropout(Tensor(np.ones(3)), p)
