"""Tensor as a Python container, as in PyTorch: len, iteration, unpacking, `in`, bool(),
elementwise comparisons with hashing by identity, refused non-real data, clear TypeErrors, and a
no_grad that is per thread. NumPy's own protocols on the same data are the oracle."""
import operator
import re
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minidiff
from minidiff import Tensor, functional as F, nn, no_grad, optim
from minidiff.autograd import is_grad_enabled

# Few distinct values, so that ties and `in` hits are common (NaN is added where it matters).
VALUES = st.sampled_from([-1.0, 0.0, 0.5, 2.0])
COMPARISONS = [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge]


def arrays(shape, elements=VALUES):
    return hnp.arrays(np.float64, shape, elements=elements)


def with_rows(max_dims=3):
    """Arrays of 1 to max_dims axes whose first axis may be empty."""
    return hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=0, max_side=4).flatmap(arrays)


# ---------------------------------------------------------------------------- len and iteration
@given(x=with_rows())
def test_len_and_iteration_walk_the_first_axis_as_numpy_does(x):
    t = Tensor(x)
    rows = list(t)
    assert len(t) == len(x) == len(rows)
    for got, want in zip(rows, x):
        assert isinstance(got, Tensor) and got.dtype == np.float64
        np.testing.assert_array_equal(got.data, want)


@given(x=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3).map(lambda s: (3,) + s)
       .flatmap(arrays))
def test_unpacking_gives_the_rows(x):
    a, b, c = Tensor(x)
    for got, want in zip((a, b, c), x):
        np.testing.assert_array_equal(got.data, want)
    with pytest.raises(ValueError, match="too many values to unpack"):
        a, b = Tensor(x)                                # as for a list of three


def test_a_0d_tensor_has_no_len_and_does_not_iterate():
    t = Tensor(1.5)
    with pytest.raises(TypeError, match=r"^len\(\) of a 0-d tensor$"):
        len(t)
    with pytest.raises(TypeError, match="^iteration over a 0-d tensor$"):
        iter(t)
    with pytest.raises(TypeError, match="^iteration over a 0-d tensor$"):
        a, = t


@given(n=st.integers(1, 4), m=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_gradients_flow_back_through_the_iterated_rows(n, m, seed):
    x = np.random.default_rng(seed).normal(size=(n, m))
    w = np.arange(1.0, n + 1)
    t = Tensor(x, requires_grad=True)
    loss = sum((i + 1.0) * (row * row).sum() for i, row in enumerate(t))   # Σ_i w_i ‖x_i‖²
    loss.backward()
    np.testing.assert_allclose(t.grad, 2 * w[:, None] * x, rtol=1e-12)     # ∂/∂x_i = 2 w_i x_i


def test_gradients_flow_back_through_unpacking():
    x = np.array([[1.0, -2.0], [3.0, 0.5], [-1.5, 4.0]])
    t = Tensor(x, requires_grad=True)
    a, b, c = t
    (a * b + c).sum().backward()                       # ∂/∂a = b, ∂/∂b = a, ∂/∂c = 1
    np.testing.assert_array_equal(t.grad, np.stack([x[1], x[0], np.ones(2)]))


def test_indexing_past_the_end_is_an_index_error_and_a_wrong_index_a_type_error():
    t = Tensor(np.arange(6.0).reshape(3, 2))
    with pytest.raises(IndexError, match=r"^getitem: index 3 is out of range for shape \(3, 2\)"):
        t[3]
    with pytest.raises(IndexError, match="out of range"):
        t[0, 0, 0]
    with pytest.raises(TypeError, match="^getitem: index 'a' is not an int, a slice"):
        t["a"]
    np.testing.assert_array_equal(t[np.int64(2)].data, t.data[2])      # NumPy ints index too


# ---------------------------------------------------------------------------- `in`
@given(x=with_rows(), v=st.sampled_from([-1.0, 0.0, 0.5, 2.0, 3.0, np.nan]))
def test_in_is_elementwise_equality_anywhere_as_numpy(x, v):
    t = Tensor(x)
    assert (v in t) == (v in x)
    assert (Tensor(np.float64(v)) in t) == (v in x)


@given(x=hnp.array_shapes(min_dims=2, max_dims=2, max_side=4).flatmap(arrays),
       i=st.integers(0, 3))
def test_a_row_is_in_its_tensor(x, i):
    row = x[i % len(x)]
    assert row in Tensor(x) and Tensor(row) in Tensor(x)


def test_in_refuses_what_is_not_a_number():
    with pytest.raises(TypeError, match="^`x in t`: x must be a number, an array or a Tensor, "
                                        "got str$"):
        "a" in Tensor([1.0])


# ---------------------------------------------------------------------------- bool()
@pytest.mark.parametrize("v", [0.0, -0.0, 1.0, -2.5, np.nan])
@pytest.mark.parametrize("shape", [(), (1,), (1, 1, 1)])
def test_bool_of_one_element_is_pythons_bool_of_it(v, shape):
    assert bool(Tensor(np.full(shape, v))) == bool(v)


@pytest.mark.parametrize("n", [0, 2, 3])
def test_bool_of_more_or_fewer_elements_says_why(n):
    with pytest.raises(ValueError, match=f"^the truth value of a tensor with {n} elements is "
                                         r"ambiguous; use \.any\(\) or \.all\(\)$"):
        bool(Tensor(np.zeros(n)))


@given(x=with_rows(), axis=st.sampled_from([None, 0, -1]), keepdims=st.booleans())
def test_any_and_all_match_numpy(x, axis, keepdims):
    for ours, numpys in ((Tensor.any, np.any), (Tensor.all, np.all)):
        got = ours(Tensor(x), axis=axis, keepdims=keepdims)
        want = numpys(x, axis=axis, keepdims=keepdims)
        assert got.dtype == np.float64 and not got.requires_grad
        np.testing.assert_array_equal(got.data, want.astype(np.float64))


# ---------------------------------------------------------------------------- comparisons
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       data=st.data(), op=st.sampled_from(COMPARISONS))
def test_comparisons_are_elementwise_masks_as_numpys(shapes, data, op):
    values = st.sampled_from([-1.0, 0.0, 0.5, np.nan])
    a, b = (data.draw(arrays(s, values)) for s in shapes.input_shapes)
    got = op(Tensor(a, requires_grad=True), Tensor(b))
    assert isinstance(got, Tensor) and got.dtype == np.float64 and not got.requires_grad
    np.testing.assert_array_equal(got.data, op(a, b).astype(np.float64))


@given(x=arrays((2, 3)), s=VALUES, op=st.sampled_from(COMPARISONS))
def test_comparisons_with_a_number_or_an_array_on_either_side(x, s, op):
    t, want = Tensor(x), op(x, s).astype(np.float64)
    np.testing.assert_array_equal(op(t, s).data, want)
    np.testing.assert_array_equal(op(s, t).data, op(s, x).astype(np.float64))  # reflected
    np.testing.assert_array_equal(op(t, np.full(3, s)).data, want)
    np.testing.assert_array_equal(op(np.full(3, s), t).data, op(np.full(3, s), x))


def test_equal_scalars_compare_equal_and_masks_carry_no_gradient():
    assert Tensor(0.0) == Tensor(0.0) and not (Tensor(0.0) != Tensor(0.0))
    x = np.array([-1.5, 0.0, 2.0, 3.0])
    t = Tensor(x, requires_grad=True)
    (t * (t > 0.0)).sum().backward()                   # relu: the mask is a constant
    np.testing.assert_array_equal(t.grad, (x > 0).astype(np.float64))


def test_comparing_with_none_or_a_str_follows_pythons_protocol():
    t = Tensor([1.0, 2.0])
    assert (t == None) is False and (t != None) is True          # noqa: E711
    with pytest.raises(TypeError, match="'<' not supported between instances of 'Tensor' and "
                                        "'str'"):
        t < "a"


def test_tensors_hash_by_identity():
    a, b = Tensor([1.0, 2.0]), Tensor([1.0, 2.0])
    assert hash(a) == object.__hash__(a) and hash(b) == object.__hash__(b)
    assert len({a, b}) == 2 and {a: "a", b: "b"}[b] == "b"       # equal values, two keys


# ---------------------------------------------------------------------------- refused data
@pytest.mark.parametrize("data, dtype", [
    (1 + 2j, "complex128"), ([1.0, 2j], "complex128"), (np.ones(2, np.complex64), "complex64"),
    ("abc", "<U3"), (None, "object"), (np.array([1.0, "x"], dtype=object), "object"),
    (b"ab", "|S2")])
def test_complex_str_and_object_data_are_refused_naming_the_dtype(data, dtype):
    with pytest.raises(TypeError, match=rf"^Tensor: got \w+ data of dtype {re.escape(dtype)}; "
                                        "a Tensor holds real numbers"):
        Tensor(data)


@pytest.mark.parametrize("data", [True, 3, [1, 2], np.array([True, False]), np.arange(3)])
def test_bools_and_ints_still_become_float32(data):
    t = Tensor(data)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.data, np.asarray(data, dtype=np.float32))


def test_arithmetic_with_a_str_is_a_type_error():
    with pytest.raises(TypeError, match="^Tensor: got str data of dtype <U1"):
        Tensor([1.0]) + "a"


def test_numpy_and_float_read_the_data():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    t = Tensor(x)
    np.testing.assert_array_equal(np.asarray(t), x)
    assert float(Tensor([2.5])) == 2.5
    np.testing.assert_array_equal(Tensor([Tensor(1.0), Tensor(2.0)]).data, [1.0, 2.0])


# ---------------------------------------------------------------------------- clear TypeErrors
@pytest.mark.parametrize("bad", [None, [1.0], "weights.npz"])
def test_load_state_dict_refuses_what_is_not_a_dict(bad):
    layer = nn.Linear(2, 3)
    before = layer.weight.data.copy()
    with pytest.raises(TypeError, match=r"^load_state_dict \(Linear\): expected a dict of "
                                        rf"name -> array, got {type(bad).__name__}$"):
        layer.load_state_dict(bad)
    np.testing.assert_array_equal(layer.weight.data, before)


def test_load_state_dict_takes_tensors_as_values():
    src, dst = nn.Linear(2, 3), nn.Linear(2, 3)
    dst.load_state_dict({k: Tensor(v) for k, v in src.state_dict().items()})
    np.testing.assert_array_equal(dst.weight.data, src.weight.data)


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1), lambda p: optim.Adam(p),
                                  lambda p: optim.EMA(p), lambda p: optim.clip_grad_norm(p, 1.0),
                                  lambda p: F.concat(p)])
def test_a_single_tensor_is_not_taken_for_a_list_of_its_rows(make):
    p = Tensor(np.ones((3, 2)), requires_grad=True)
    p.grad = np.ones((3, 2))
    with pytest.raises(TypeError, match="single Tensor"):
        make(p)


# ---------------------------------------------------------------------------- no_grad per thread
def _in_thread(fn, errors):
    def run():
        try:
            fn()
        except BaseException as e:                     # reported by the main thread
            errors.append(e)
    th = threading.Thread(target=run)
    th.start()
    return th


def test_no_grad_in_one_thread_leaves_another_threads_graph_alone():
    inside, done, seen, errors = threading.Event(), threading.Event(), {}, []
    x = np.array([[1.0, -2.0], [0.5, 3.0]])

    def quiet():                                       # holds no_grad open meanwhile
        with no_grad():
            inside.set()
            seen["quiet"] = is_grad_enabled()
            assert done.wait(10), "the other thread never finished"

    def train():
        try:
            assert inside.wait(10), "the no_grad thread never started"
            t = Tensor(x, requires_grad=True)
            (t * t).sum().backward()                   # d/dx Σ x² = 2x
            seen["grad"], seen["train"] = t.grad, is_grad_enabled()
        finally:
            done.set()

    threads = [_in_thread(quiet, errors), _in_thread(train, errors)]
    for th in threads:
        th.join(20)
    assert not errors, errors
    assert seen["quiet"] is False and seen["train"] is True and is_grad_enabled()
    np.testing.assert_array_equal(seen["grad"], 2 * x)


def test_a_thread_started_inside_no_grad_starts_with_gradients_on():
    seen, errors = [], []
    with no_grad():
        _in_thread(lambda: seen.append(is_grad_enabled()), errors).join(10)
        assert not is_grad_enabled()
    assert not errors and seen == [True] and minidiff.is_grad_enabled()
