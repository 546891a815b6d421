"""max and min where several elements attain the extreme: the gradient each tied element gets.

At a tie max is not differentiable, but two things about its gradient still hold exactly:
  * along the all-ones direction it is: max(x + h·1) = max(x) + h, so the directional
    derivative, and hence the sum of the gradient over each reduced slice, is 1;
  * the elements below the extreme get nothing, and tied elements are interchangeable, so they
    get equal shares.
Together these say each of k tied elements gets 1/k (the convention of torch.amax and
tf.reduce_max). The oracle is central differences along the ones direction, per slice.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minidiff import Tensor
from minidiff import functional as F


def slice_sums_by_differences(op, x, axis, h=0.25):
    """d/dh op(x + h·1_slice) for each reduced slice, by central differences (exact here: the
    extreme moves with the whole slice). Shape: op(x)'s."""
    up = op(Tensor(x + h), axis=axis).numpy()
    down = op(Tensor(x - h), axis=axis).numpy()
    return (up - down) / (2 * h)


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 5)),
                  elements=st.integers(-2, 2).map(float)),          # small integers: many ties
       st.sampled_from([0, 1, None]), st.sampled_from(["max", "min"]))
def test_tied_extremes_share_the_gradient_equally(x, axis, which):
    op = getattr(F, which)
    t = Tensor(x, requires_grad=True)
    op(t, axis=axis).sum().backward()
    g = t.grad.numpy()                                               # (R, C)
    extreme = getattr(np, which)(x, axis=axis, keepdims=True)
    np.testing.assert_allclose(g.sum(axis=axis), slice_sums_by_differences(op, x, axis),
                               rtol=1e-12)
    np.testing.assert_array_equal(g[x != extreme], 0.0)              # below the extreme: none
    share = np.broadcast_to(g.max(axis=axis, keepdims=True), x.shape)
    np.testing.assert_array_equal(g[x == extreme], share[x == extreme])   # equal shares


def test_three_way_tie_gets_a_third_each():
    t = Tensor(np.array([[1.0, 3.0, 3.0, 3.0], [0.0, -1.0, 2.0, 2.0]]), requires_grad=True)
    F.max(t, axis=1).sum().backward()
    np.testing.assert_allclose(t.grad, [[0, 1 / 3, 1 / 3, 1 / 3], [0, 0, 0.5, 0.5]], rtol=1e-15)
