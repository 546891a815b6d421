"""norm: the 2-norm ‖x‖ = √(Σ x²) as a differentiable reduction (issue 23: a PyTorch user
writes `p.grad.norm()` and `x.norm()`).

Oracles: a naive float64 loop over every element (the forward), float64 central differences
(the backward, away from ‖x‖ = 0), the closed form d‖x‖/dx = x / ‖x‖, and float64 arithmetic for
float32 values whose squares leave float32's range (1e30² = 1e60, 1e-30² = 1e-60).
On f3618f8 (before norm) every test here fails: there is no F.norm and no Tensor.norm.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidiff
from minidiff import Tensor
from minidiff import functional as F
from minidiff.testing import gradcheck, strategies

EPS32 = 2.0 ** -24                 # float32's unit round-off: one rounding of a float64 result


def naive_norm(x, axes, keepdims):
    """√(Σ x²) over `axes` (a tuple of non-negative axes), one element at a time in float64."""
    kept = [i for i in range(x.ndim) if i not in axes]
    out = np.zeros([x.shape[i] for i in kept])                  # x's shape without `axes`
    for idx in np.ndindex(*x.shape):
        out[tuple(idx[i] for i in kept)] += float(x[idx]) ** 2
    out = np.sqrt(out)
    return out.reshape([1 if i in axes else n for i, n in enumerate(x.shape)]) if keepdims else out


@st.composite
def shape_and_axis(draw, min_side=0):
    """(shape, axis, axes): axis as a caller writes it (None, an int, or a tuple, negatives
    included), axes the same axes as a tuple of non-negative ints."""
    shape = tuple(draw(st.lists(st.integers(min_side, 4), min_size=0, max_size=3)))
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"] if nd else ["none", "tuple"]))
    if kind == "none":
        return shape, None, tuple(range(nd))
    if kind == "int":
        a = draw(st.integers(-nd, nd - 1))
        return shape, a, (a % nd,)
    axes = draw(st.permutations(list(range(nd))))[:draw(st.integers(0, nd))]
    written = tuple(a - nd if draw(st.booleans()) else a for a in axes)
    return shape, written, tuple(sorted(axes))


@given(shape_and_axis(), st.booleans(), st.sampled_from([np.float32, np.float64]), st.data())
def test_forward_matches_a_float64_loop(sa, keepdims, dtype, data):
    shape, axis, axes = sa
    x = data.draw(strategies.arrays(shape, dtype, -3.0, 3.0))
    out = F.norm(Tensor(x), axis=axis, keepdims=keepdims)
    expected = naive_norm(x, axes, keepdims)
    assert out.dtype == dtype and out.shape == expected.shape
    rtol = 2 * EPS32 if dtype == np.float32 else 1e-13      # float32: one rounding, no more
    np.testing.assert_allclose(out.data, expected, rtol=rtol, atol=0)


def test_the_loop_agrees_with_numpy():
    """The oracle itself, against np.linalg.norm (vector norms along one axis, Frobenius)."""
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    np.testing.assert_allclose(naive_norm(x, (1,), False), np.linalg.norm(x, axis=1))
    np.testing.assert_allclose(naive_norm(x, (0, 1, 2), False), np.linalg.norm(x.ravel()))
    np.testing.assert_allclose(naive_norm(x[0], (0, 1), True),
                               np.linalg.norm(x[0], "fro", keepdims=True))


@given(shape_and_axis(min_side=1), st.booleans(), st.data())
def test_backward_matches_central_differences(sa, keepdims, data):
    """Away from ‖x‖ = 0: |x_i| in [0.5, 2] with either sign."""
    shape, axis, _ = sa
    x = data.draw(strategies.arrays(shape, np.float64, 0.5, 2.0))
    x = x * data.draw(strategies.arrays(shape, np.float64, -1.0, 1.0).map(np.sign))
    x = np.where(x == 0, 1.0, x)
    gradcheck(lambda t: F.norm(t, axis=axis, keepdims=keepdims), x)


def test_float32_gradient_is_x_over_its_norm():
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    t = Tensor(x, requires_grad=True)
    t.norm(axis=1).sum().backward()
    x64 = x.astype(np.float64)
    expected = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    assert t.grad.dtype == np.float32
    np.testing.assert_allclose(t.grad.data, expected, rtol=4 * EPS32, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_vector_has_gradient_exactly_zero(dtype):
    """PyTorch's subgradient at ‖x‖ = 0 is 0; a row of zeros beside a non-zero row gets 0 and
    the other row still gets x / ‖x‖ (3, 4 / 5)."""
    x = Tensor(np.array([[0.0, 0.0], [3.0, 4.0]], dtype), requires_grad=True)
    n = x.norm(axis=1)
    assert n.data.tolist() == [0.0, 5.0]
    n.sum().backward()
    g = x.grad.data
    assert np.isfinite(g).all()
    assert g[0].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(g[1], [0.6, 0.8], rtol=4 * EPS32)
    z = Tensor(np.zeros(5, dtype), requires_grad=True)
    z.norm().backward()
    assert z.grad.data.tolist() == [0.0] * 5


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_huge_and_tiny_float32_give_the_right_norm_and_gradient(scale):
    """Squared in float32, 1e30 overflows (1e60 > 3.4e38) and 1e-30 underflows to 0."""
    rng = np.random.default_rng(2)
    x = (rng.uniform(0.5, 2.0, (3, 5)) * rng.choice([-1, 1], (3, 5)) * scale).astype(np.float32)
    x64 = x.astype(np.float64)
    expected = np.sqrt((x64 * x64).sum(axis=1))                           # float64: 1e±60 fit
    with np.errstate(over="ignore", under="ignore"):                    # float32 cannot
        assert np.square(x).sum() in (np.inf, 0.0)
    t = Tensor(x, requires_grad=True)
    n = t.norm(axis=1)
    np.testing.assert_allclose(n.data, expected, rtol=2 * EPS32, atol=0)
    np.testing.assert_allclose(t.norm().item(), math.sqrt((x64 * x64).sum()), rtol=2 * EPS32)
    n.sum().backward()
    np.testing.assert_allclose(t.grad.data, x64 / expected[:, None], rtol=4 * EPS32, atol=0)


@pytest.mark.parametrize("x", [[3e38, 3e38], [3e-45, 4e-45]])
def test_the_gradient_is_right_where_the_norm_leaves_float32(x):
    """‖(3e38, 3e38)‖ = 4.2e38 is past float32's largest, 3.4e38: the norm is inf, as it must
    be, but the gradient x / ‖x‖ = (1/√2, 1/√2) is not. A norm among float32's subnormals
    (1.4e-45 apart) is rounded coarsely, but its gradient (2, 3) / √13 is not."""
    x = np.array(x, np.float32)
    x64 = x.astype(np.float64)
    t = Tensor(x, requires_grad=True)
    with np.errstate(over="ignore"):                    # the cast of 4.2e38 to float32 is inf
        n = t.norm()
        assert n.item() == np.float32(np.linalg.norm(x64))          # float64, rounded once
    n.backward()
    np.testing.assert_allclose(t.grad.data, x64 / np.linalg.norm(x64), rtol=4 * EPS32, atol=0)


@pytest.mark.parametrize("p", [1, 3, float("inf"), 0, "nuc"])
def test_other_p_is_refused_in_one_line_that_says_what_to_write(p):
    x = Tensor(np.array([3.0, -4.0]))
    with pytest.raises(ValueError, match=r"norm: p=") as err:
        x.norm(p)
    message = str(err.value)
    assert "\n" not in message and "(x.abs() ** p).sum(axis) ** (1 / p)" in message


def test_the_suggested_code_computes_the_p_norm():
    """The message's advice works: (x.abs() ** p).sum() ** (1 / p) is np.linalg.norm(x, p)."""
    x64 = np.random.default_rng(3).standard_normal(7)
    x = Tensor(x64)
    for p in (1, 3):
        np.testing.assert_allclose((x.abs() ** p).sum().item() ** (1 / p),
                                   np.linalg.norm(x64, p), rtol=1e-12)


def test_two_and_fro_are_the_same_norm():
    x = Tensor(np.random.default_rng(4).standard_normal((3, 4)))
    expected = np.linalg.norm(x.data)
    for p in (2, 2.0, "fro"):
        np.testing.assert_allclose(x.norm(p).item(), expected, rtol=1e-13)


@pytest.mark.parametrize("axis", [2, -3, (0, 5)])
def test_a_bad_axis_is_refused_in_one_line(axis):
    x = Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^norm: axis -?\d is out of range for a 2-d tensor$"):
        x.norm(axis=axis)


def test_grad_norm_works_after_backward():
    """The PyTorch habit: after loss.backward(), p.grad.norm() is each gradient's 2-norm."""
    lin = minidiff.nn.Linear(3, 2)
    x = Tensor(np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32))
    (lin(x) ** 2).mean().backward()
    for p in lin.parameters():
        g64 = p.grad.data.astype(np.float64)
        n = p.grad.norm()
        assert isinstance(n, Tensor) and n.shape == () and n.dtype == np.float32
        assert n.item() > 0
        np.testing.assert_allclose(n.item(), np.sqrt((g64 * g64).sum()), rtol=2 * EPS32)


def test_the_method_is_the_op():
    assert Tensor.norm is F.norm
