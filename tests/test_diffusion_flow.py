"""Flow matching: the straight path, the velocity MSE, and the Euler sampler.

Oracles: the formulas written out with NumPy; float64 central differences for the loss's
gradient; and the exact velocity field of analytic data, E[x1 - x0 | x_t] = (x_t - E[x0|x_t])/t
(minidiff.testing.oracles), with which Euler's method must carry N(0, I) to the data. For
Gaussian data Euler's method is a linear chain, so its exact output moments follow from a
recursion (oracles.flow_euler_output_law); the Monte Carlo moments must match them within 4
standard errors, and they must match the data within 5% of s (the recursion gives -1.5% for
100 steps). For the mixture: 4 standard errors plus that 5%.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minidiff import Tensor
from minidiff.diffusion import (flow_euler_sample, flow_matching_loss, flow_path,
                                flow_velocity_target)
from minidiff.testing import assert_normal, gradcheck, oracles
from test_diffusion_analytic import DISCRETISATION, GAUSS, MIXTURE, check_mixture

N = 20000


# ------------------------------------------------------------------ path, target and loss
@given(hnp.arrays(np.float64, (3, 2), elements=st.floats(-2, 2)),
       hnp.arrays(np.float64, (3, 2), elements=st.floats(-3, 3)),
       hnp.arrays(np.float64, 3, elements=st.floats(0, 1)))
def test_path_target_and_loss_match_the_formulas(x0, x1, t):
    path = flow_path(x0, x1, t)
    np.testing.assert_allclose(path, (1 - t[:, None]) * x0 + t[:, None] * x1, rtol=1e-12,
                               atol=1e-15)
    assert np.array_equal(path[t == 0], x0[t == 0]) and np.array_equal(path[t == 1], x1[t == 1])
    np.testing.assert_array_equal(flow_velocity_target(x0, x1), x1 - x0)
    model = (lambda x_t, tt: Tensor(np.tanh(x_t.data) * tt[:, None]))
    loss = flow_matching_loss(model, x0, t=t, noise=x1)
    expected = ((np.tanh(path) * t[:, None] - (x1 - x0)) ** 2).mean(axis=1)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_loss_is_differentiable_in_the_model_parameters():
    rng = np.random.default_rng(0)
    x0, x1, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.random(4)

    def op(w, b):
        model = (lambda x_t, tt: x_t * w + b)                        # v = w·x + b
        return flow_matching_loss(model, x0, t=t, noise=x1)
    gradcheck(op, rng.standard_normal(3), rng.standard_normal(3))


def test_loss_draws_t_and_noise_from_the_library_generator():
    import minidiff
    x0 = np.zeros((5, 2))
    model = (lambda x_t, t: x_t * 0.0)
    minidiff.manual_seed(7)
    a = flow_matching_loss(model, x0).numpy()
    minidiff.manual_seed(7)
    b = flow_matching_loss(model, x0).numpy()
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ Euler with the exact field
def test_euler_with_the_exact_velocity_maps_noise_to_gaussian_data():
    w, (m,), (s,) = GAUSS
    x = flow_euler_sample(oracles.flow_velocity_model(GAUSS), (N, 1), num_steps=100,
                          dtype=np.float64)
    exact_mean, exact_sd = oracles.flow_euler_output_law(GAUSS, 100)
    assert_normal(x, exact_mean, exact_sd, sigmas=4, what="euler")
    assert abs(exact_mean - m) < DISCRETISATION * s
    assert abs(exact_sd - s) < DISCRETISATION * s


def test_euler_with_the_exact_velocity_maps_noise_to_the_mixture():
    model = oracles.flow_velocity_model(MIXTURE)
    check_mixture(flow_euler_sample(model, (N, 1), num_steps=100, dtype=np.float64))


@pytest.mark.parametrize("steps", [1, 5, 50])
def test_euler_on_one_point_returns_the_point(steps):
    x = flow_euler_sample(oracles.flow_velocity_model(oracles.gaussian(0.4, 0.0)), (64, 3),
                          num_steps=steps)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, 0.4, rtol=0, atol=1e-5)


def test_euler_starts_from_the_given_x1():
    x1 = np.linspace(-2, 2, 6).reshape(3, 2)
    zero = (lambda x_t, t: x_t * 0.0)
    np.testing.assert_allclose(flow_euler_sample(zero, x1=x1, num_steps=3), x1, rtol=1e-6)


# ------------------------------------------------------------------ bad input
def test_bad_flow_inputs_raise():
    model = (lambda x_t, t: x_t)
    with pytest.raises(ValueError, match="^num_steps:.*got 0"):
        flow_euler_sample(model, (2, 2), num_steps=0)
    with pytest.raises(ValueError, match="^shape:"):
        flow_euler_sample(model)
    with pytest.raises(ValueError, match=r"^t:.*\[0, 1\]"):
        flow_matching_loss(model, np.zeros((2, 2)), t=np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"^noise:.*\(2, 2\).*\(2, 3\)"):
        flow_matching_loss(model, np.zeros((2, 2)), noise=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="^x0: must be finite"):
        flow_matching_loss(model, np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="^model output:"):
        flow_matching_loss(lambda x_t, t: np.zeros((2, 5)), np.zeros((2, 2)))
