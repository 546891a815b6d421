"""kernels/softmax.cu through minidiff.cuda, naive and block kernels, against float64 NumPy:
the softmax from its definition, its backward as the explicit Jacobian diag(y) - y y^T."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff import cuda
from cuda_emu.testing import RUNNERS, assert_close, on

EPS = float(np.finfo(np.float32).eps)
IMPLS = [pytest.param(True, id="naive"), pytest.param(False, id="block")]

# rows x cols, cols from 1 to past a 256-thread block.
softmax_case = st.fixed_dictionaries({
    "lead": st.lists(st.integers(1, 5), min_size=0, max_size=2).map(tuple),
    "cols": st.one_of(st.integers(1, 40), st.sampled_from([63, 64, 65, 255, 256, 257, 300])),
    "scale": st.sampled_from([1.0, 30.0, 300.0]),      # 300: exp overflows without the max
    "seed": st.integers(0, 2**31 - 1),
})


def make(case):
    rng = np.random.default_rng(case["seed"])
    shape = (*case["lead"], case["cols"])
    x = (rng.standard_normal(shape) * case["scale"]).astype(np.float32)
    return x, rng.standard_normal(shape).astype(np.float32)


def softmax_ref(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))                # Vaswani et al. 2017, Eq. 1
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("naive", IMPLS)
@given(case=softmax_case)
def test_softmax_forward(runner, naive, case):
    x, _ = make(case)
    want = softmax_ref(x.astype(np.float64))
    with on(runner) as dev:
        got = dev.get(cuda.softmax(*dev.put(x), naive=naive))
    # exp of an argument of size |x - max| rounds to |x - max| EPS relative; the sum of cols
    # terms to cols EPS.
    spread = np.abs(x - x.max(axis=-1, keepdims=True))
    assert_close(got, want, atol=1e-9, rtol=4 * EPS * (spread + x.shape[-1] + 2),
                 what="softmax")


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("naive", IMPLS)
@given(case=softmax_case)
def test_softmax_backward(runner, naive, case):
    x, dy = make(case)
    y = softmax_ref(x.astype(np.float64)).astype(np.float32)
    y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
    jac = np.einsum("...i,ij->...ij", y64, np.eye(x.shape[-1])) \
        - y64[..., :, None] * y64[..., None, :]                  # diag(y) - y y^T
    want = np.einsum("...ij,...j->...i", jac, dy64)
    with on(runner) as dev:
        got = dev.get(cuda.softmax_backward(*dev.put(y, dy), naive=naive))
    # dx_j = y_j (dy_j - s), s = sum_k dy_k y_k, rounded over cols terms of size |dy_k| y_k.
    s_err = 4 * EPS * (x.shape[-1] + 2) * np.sum(np.abs(dy64) * y64, axis=-1, keepdims=True)
    atol = y64 * (s_err + 4 * EPS * (np.abs(dy64) + np.abs(want / np.maximum(y64, 1e-30))))
    assert_close(got, want, atol=atol + 1e-12, rtol=4 * EPS, what="softmax backward")
