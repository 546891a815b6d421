"""In-place ops (functional/inplace.py) and gradients as Tensors (Tensor.grad), issue 23.

Each op against NumPy's out-of-place result in x's dtype: the same Tensor comes back, holding the
same array, and no graph is built. Each refusal is one line that names what to write instead.
Then the gradients: a leaf's .grad is its own memory (zeroing one leaves every other alone, and
the array given to backward(g) stays the caller's), accumulates into the same Tensor, and is
set to None, a Tensor or an array; float()/double() send the gradient back in x's dtype. The
oracles: NumPy in the same dtype, and gradients in closed form.
"""
import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minidiff
import minidiff.functional as F
from minidiff import Tensor
from minidiff.nn import Linear, Parameter
from minidiff.optim import SGD

DTYPES = (np.float32, np.float64)
WITH_ALPHA = ("add_", "sub_")
BINARY = ("add_", "sub_", "mul_", "div_", "copy_")
OPERATOR = {"add_": operator.iadd, "sub_": operator.isub, "mul_": operator.imul,
            "div_": operator.itruediv}                       # x += y is iadd(x, y)


def reference(op, x, y, alpha):
    """The out-of-place NumPy result, in x's dtype (x, y arrays of one dtype that broadcast)."""
    a = x.dtype.type(alpha)
    return {"add_": lambda: x + a * y, "sub_": lambda: x - a * y, "mul_": lambda: x * y,
            "div_": lambda: x / y, "copy_": lambda: np.broadcast_to(y, x.shape)}[op]()


def apply(op, x, y, alpha, how):
    """x.op(y), F.op(x, y) or x op= y; returns what the user's variable is bound to after."""
    if how == "method":
        return getattr(x, op)(y, alpha=alpha) if op in WITH_ALPHA else getattr(x, op)(y)
    if how == "function":
        return getattr(F, op)(x, y, alpha=alpha) if op in WITH_ALPHA else getattr(F, op)(x, y)
    return OPERATOR[op](x, y)                                  # x op= y binds x to this


def elements(dtype):
    """Finite values away from 0 (div_ divides by them), exact in float32."""
    mag = st.floats(0.25, 8.0, width=32)
    return st.one_of(mag, mag.map(lambda v: -v)).map(dtype)


@st.composite
def cases(draw):
    """(op, x, y in the form given, y's array, alpha, how): y's shape broadcasts into x's."""
    op, dtype = draw(st.sampled_from(BINARY)), draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
    keep = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    lead = draw(st.integers(0, len(shape)))                    # leading axes y leaves out
    yshape = tuple(n if k else 1 for n, k in zip(shape, keep))[lead:]
    x = draw(hnp.arrays(dtype, shape, elements=elements(dtype)))
    form = draw(st.sampled_from(("number", "Tensor", "array")))
    if form == "number":
        y = draw(elements(float))
        yarr = np.asarray(y, dtype)                            # a number takes x's dtype
    else:
        yarr = draw(hnp.arrays(dtype, yshape, elements=elements(dtype)))
        y = Tensor(yarr.copy()) if form == "Tensor" else yarr.copy()
    alpha = draw(st.one_of(st.just(1), st.integers(-3, 3), st.floats(-2, 2, width=32)))
    how = draw(st.sampled_from(("method", "function") + (("operator",) * (op in OPERATOR))))
    alpha = alpha if op in WITH_ALPHA and how != "operator" else 1
    return op, x, y, yarr, alpha, how


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_each_op_matches_numpy_out_of_place_in_the_same_array(case):
    op, x0, y, yarr, alpha, how = case
    x = Tensor(x0.copy())
    arr = x.data
    out = apply(op, x, y, alpha, how)
    assert out is x and x.data is arr                          # the same Tensor, the same memory
    assert x.dtype == x0.dtype and x.shape == x0.shape
    np.testing.assert_array_equal(x.data, reference(op, x0, yarr, alpha))
    np.testing.assert_array_equal(y.data if isinstance(y, Tensor) else y, yarr)   # y untouched
    assert not x.requires_grad and x._prev == () and x._backward is None          # no graph


@settings(max_examples=20, deadline=None)
@given(x0=st.sampled_from(DTYPES).flatmap(lambda d: hnp.arrays(d, hnp.array_shapes(
    min_dims=0, max_dims=3, max_side=4), elements=elements(d))), value=elements(float))
def test_zero_and_fill_write_every_element(x0, value):
    x = Tensor(x0.copy())
    arr = x.data
    assert x.fill_(value) is x and x.data is arr
    np.testing.assert_array_equal(x.data, np.full(x0.shape, value, x0.dtype))
    assert x.zero_() is x and x.data is arr
    np.testing.assert_array_equal(x.data, np.zeros_like(x0))


# ---------------------------------------------------------------------------- refusals
def leaf():
    return Tensor(np.arange(3, dtype=np.float32), requires_grad=True)


def non_leaf():
    return leaf() * 2.0


def plain(dtype=np.float32):
    return Tensor(np.arange(3, dtype=dtype))


GRAPH = r"this tensor requires grad.*inside `with minidiff.no_grad\(\):`"
REFUSED = [
    ("leaf add_", lambda: leaf().add_(1), RuntimeError, r"^add_: " + GRAPH),
    ("leaf zero_", lambda: leaf().zero_(), RuntimeError,
     r"^zero_: " + GRAPH + r".*\(x = x \* 0\) to stay on the graph"),
    ("leaf -=", lambda: apply("sub_", leaf(), 1.0, 1, "operator"), RuntimeError, r"^sub_: "),
    ("parameter *=", lambda: apply("mul_", Parameter(np.ones(2)), 2, 1, "operator"),
     RuntimeError, r"^mul_: " + GRAPH),
    ("non-leaf fill_", lambda: non_leaf().fill_(0), RuntimeError, r"^fill_: " + GRAPH),
    ("non-leaf div_", lambda: non_leaf().div_(2), RuntimeError,
     r"^div_: " + GRAPH + r".*\(x = x / y\) to stay on the graph"),
    ("operand on the graph", lambda: plain().add_(non_leaf()), RuntimeError,
     r"^add_: the operand requires grad.*write x = x \+ y.*or pass y\.detach\(\)"),
    ("bigger", lambda: plain().mul_(np.ones((2, 3), np.float32)), ValueError,
     r"^mul_: a \(2, 3\) operand would make x of shape \(3,\) bigger.*write x = x \* y"),
    ("no broadcast", lambda: plain().copy_(np.ones(4, np.float32)), ValueError,
     r"^copy_: shapes \(3,\) and \(4,\) do not broadcast"),
    ("float64 array", lambda: plain().add_(np.ones(3)), ValueError,
     r"^add_: x is float32, the operand float64; cast the operand first: "
     r"y\.astype\(np\.float32\)"),
    ("float32 Tensor", lambda: plain(np.float64).sub_(plain()), ValueError,
     r"^sub_: x is float64, the operand float32; .*y\.astype\(np\.float64\)"),
    ("an array x", lambda: F.zero_(np.ones(3)), TypeError,
     r"^zero_: x must be a Tensor, got ndarray; .*minidiff\.from_numpy\(a\)"),
    ("a list x", lambda: F.add_([1.0], 1), TypeError, r"^add_: x must be a Tensor, got list"),
    ("nan alpha", lambda: plain().add_(1, alpha=float("nan")), ValueError,
     r"^add_: alpha: must be a finite number .*got nan"),
    ("inf alpha", lambda: plain().sub_(1, alpha=float("-inf")), ValueError,
     r"^sub_: alpha: must be a finite number .*got -inf"),
    ("bool alpha", lambda: plain().add_(1, alpha=True), ValueError,
     r"^add_: alpha: must be a finite number .*got True"),
]


@pytest.mark.parametrize("name, call, error, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_refusals_are_one_line_and_name_what_to_write(name, call, error, message):
    with pytest.raises(error, match=message) as e:
        call()
    assert "\n" not in str(e.value)


def test_a_refused_op_leaves_x_as_it_was():
    x, w = plain(), leaf()
    for call in (lambda: x.add_(np.ones(3)), lambda: x.add_(1, alpha=True),
                 lambda: x.mul_(np.ones((2, 3), np.float32)), lambda: w.sub_(1)):
        with pytest.raises((ValueError, RuntimeError)):
            call()
    np.testing.assert_array_equal(x.data, np.arange(3))
    np.testing.assert_array_equal(w.data, np.arange(3))


@pytest.mark.parametrize("op, args", [("zero_", ()), ("fill_", (2.0,)), ("copy_", (3.0,)),
                                      ("add_", (1.0,)), ("sub_", (1.0,)), ("mul_", (2.0,)),
                                      ("div_", (2.0,))])
def test_a_parameter_changes_in_place_under_no_grad(op, args):
    p = Parameter(np.array([1.0, 2.0, 4.0], np.float32))
    arr = p.data
    with minidiff.no_grad():
        assert getattr(p, op)(*args) is p
    want = {"zero_": [0, 0, 0], "fill_": [2, 2, 2], "copy_": [3, 3, 3], "add_": [2, 3, 5],
            "sub_": [0, 1, 3], "mul_": [2, 4, 8], "div_": [0.5, 1, 2]}[op]
    np.testing.assert_array_equal(p.data, want)
    assert p.data is arr and p.requires_grad                   # still a trainable parameter


def test_manual_sgd_under_no_grad_updates_the_module():
    """p -= lr * p.grad, the PyTorch habit, against the closed-form gradient of
    L = Σ (x Wᵀ + b - y)²: dL/dW = 2 rᵀ x, dL/db = 2 Σ_rows r, with r = x Wᵀ + b - y."""
    rng = np.random.default_rng(0)
    lin = Linear(3, 2, dtype=np.float64)
    lin.bias.data[...] = rng.standard_normal(2)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    W, b, lr = lin.weight.data.copy(), lin.bias.data.copy(), 0.1
    ((lin(x) - y) ** 2).sum().backward()
    r = x @ W.T + b - y                                        # (5, 2)
    weight, arrays = lin.weight, [p.data for p in lin.parameters()]
    with minidiff.no_grad():
        for p in lin.parameters():
            p -= lr * p.grad
    np.testing.assert_allclose(lin.weight.data, W - lr * 2 * r.T @ x, rtol=1e-12)
    np.testing.assert_allclose(lin.bias.data, b - lr * 2 * r.sum(0), rtol=1e-12)
    assert lin.weight is weight and all(p.data is a for p, a in zip(lin.parameters(), arrays))
    with minidiff.no_grad():
        lin.bias -= lin.bias                                   # through Module.__setattr__
    assert dict(lin.named_parameters())["bias"] is lin.bias
    np.testing.assert_array_equal(lin.state_dict()["bias"], [0.0, 0.0])


# ---------------------------------------------------------------------------- gradients
def leaves(*shape):
    rng = np.random.default_rng(1)
    return [Tensor(rng.standard_normal(shape), requires_grad=True) for _ in range(2)]


def test_zeroing_one_leafs_grad_leaves_the_other():
    a, b = leaves(2, 3)
    (a + b).sum().backward()                                   # add hands both one array
    assert a.grad.zero_() is a.grad
    np.testing.assert_array_equal(a.grad.data, np.zeros((2, 3)))
    np.testing.assert_array_equal(b.grad.data, np.ones((2, 3)))     # d Σ(a + b) / db = 1
    b.grad.add_(1.0)
    np.testing.assert_array_equal(a.grad.data, np.zeros((2, 3)))


@pytest.mark.parametrize("view", [lambda x: x.reshape(6), lambda x: x.transpose(1, 0)])
def test_a_leaf_seen_through_a_view_owns_its_grad(view):
    x, _ = leaves(2, 3)
    y = view(x)
    g = np.arange(6.0).reshape(y.shape)
    y.backward(g)                                              # x.grad: g, back in x's layout
    want = np.arange(6.0).reshape(2, 3) if y.shape == (6,) else np.arange(6.0).reshape(3, 2).T
    np.testing.assert_array_equal(x.grad.data, want)
    y.grad.zero_()
    np.testing.assert_array_equal(x.grad.data, want)
    x.grad.zero_()
    np.testing.assert_array_equal(g, np.arange(6.0).reshape(y.shape))   # the caller's array


@pytest.mark.parametrize("form", [np.asarray, Tensor])
def test_the_array_given_to_backward_stays_the_callers(form):
    a, _ = leaves(3)
    g = np.array([1.0, -2.0, 3.0])
    y = a * 2.0                                                # not a leaf: keeps g's copy
    y.backward(form(g))
    y.grad.zero_()
    a.backward(form(g))                                        # a leaf: accumulates g
    a.backward(form(g))
    np.testing.assert_array_equal(g, [1.0, -2.0, 3.0])
    np.testing.assert_array_equal(a.grad.data, 2 * g + g + g)  # d(2a)/da · g, then g twice


def test_two_backwards_sum_into_the_same_grad_tensor():
    p, _ = leaves(4)
    (p * p).sum().backward()                                   # 2p
    grad = p.grad
    (3.0 * p).sum().backward()                                 # + 3
    assert p.grad is grad and not grad.requires_grad
    np.testing.assert_allclose(grad.data, 2 * p.data + 3, rtol=1e-15)


def test_the_grad_setter_takes_none_a_tensor_or_an_array():
    p, _ = leaves(2)
    g = Tensor(np.ones(2))
    p.grad = g
    assert p.grad is g
    arr = np.full(2, 5.0)
    p.grad = arr
    assert isinstance(p.grad, Tensor) and p.grad.data is arr
    p.grad = None
    assert p.grad is None


@pytest.mark.parametrize("value, error, message", [
    (np.ones(3), ValueError, r"^grad: got shape \(3,\), float64 on cpu for a tensor of shape "
                             r"\(2,\), float64 on cpu; a gradient matches all three"),
    (np.ones(2, np.float32), ValueError, r"^grad: got shape \(2,\), float32 .* float64 on cpu"),
    (Tensor(np.ones((2, 1))), ValueError, r"^grad: got shape \(2, 1\)"),
    ([1.0, 2.0], TypeError, r"^grad: assign None, a Tensor or an array, got list"),
])
def test_the_grad_setter_refuses_in_one_line_and_keeps_the_grad(value, error, message):
    p, _ = leaves(2)
    (p * 1.0).sum().backward()
    grad = p.grad
    with pytest.raises(error, match=message) as e:
        p.grad = value
    assert "\n" not in str(e.value) and p.grad is grad
    np.testing.assert_array_equal(grad.data, [1.0, 1.0])


def test_zero_grad_without_set_to_none_zeroes_the_same_tensor():
    lin = Linear(3, 2)
    opt = SGD(lin.parameters(), lr=0.1)
    lin(np.ones((4, 3), np.float32)).sum().backward()
    grads = [(p.grad, p.grad.data) for p in lin.parameters()]
    opt.zero_grad(set_to_none=False)
    for p, (g, arr) in zip(lin.parameters(), grads):
        assert p.grad is g and g.data is arr
        np.testing.assert_array_equal(arr, np.zeros(p.shape))
    opt.zero_grad()
    assert all(p.grad is None for p in lin.parameters())


@pytest.mark.parametrize("cast, src, dst", [("double", np.float32, np.float64),
                                            ("float", np.float64, np.float32)])
def test_float_and_double_cast_and_send_the_gradient_back(cast, src, dst):
    x = Tensor(np.array([0.5, -1.25, 3.0], src), requires_grad=True)
    y = getattr(x, cast)()
    assert y.dtype == dst and y.requires_grad
    np.testing.assert_array_equal(y.data, x.data.astype(dst))
    (y * y).sum().backward()                                   # d Σ y² / dx = 2x
    assert x.grad.dtype == src
    np.testing.assert_array_equal(x.grad.data, 2 * x.data)
