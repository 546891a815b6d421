"""Bad input raises a ValueError that names the argument, the value it got and what is allowed."""
import numpy as np
import pytest

from minidiff import Tensor
from minidiff.diffusion import GaussianDiffusion, get_beta_schedule
from minidiff.testing import formulas

T = 10


@pytest.fixture
def d():
    return GaussianDiffusion(get_beta_schedule("linear", T))


def zero_model(x_t, t):
    return x_t * 0.0


X = np.zeros((3, 2), dtype=np.float32)


@pytest.mark.parametrize("t, fragment", [
    (np.array([0, 5, 10]), "max 10"),
    (np.array([-1, 0, 0]), "min -1"),
    (T, "max 10"),
])
def test_timestep_out_of_range(d, t, fragment):
    for call in (lambda: d.q_sample(X, t), lambda: d.training_losses(zero_model, X, t=t),
                 lambda: d.p_sample(zero_model, X, t), lambda: d.q_posterior_mean_variance(X, X, t),
                 lambda: d.p_mean_variance(zero_model, X, t)):
        with pytest.raises(ValueError, match=r"^t: indices must lie in \[0, 9\]") as e:
            call()
        assert fragment in str(e.value) and "0-based" in str(e.value)


@pytest.mark.parametrize("t, fragment", [
    (np.array([0, 1]), "shape (B,) = (3,)"),
    (np.zeros((3, 1), dtype=np.int64), "got shape (3, 1)"),
    (np.array([0.0, 1.5, 2.0]), "integer"),
    (np.array([True, False, True]), "integer"),
])
def test_timesteps_that_do_not_fit_the_batch(d, t, fragment):
    with pytest.raises(ValueError, match="^t:") as e:
        d.q_sample(X, t)
    assert fragment in str(e.value)
    with pytest.raises(ValueError, match="^t:"):
        d.training_losses(zero_model, X, t=t)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(d, bad):
    x = X.copy()
    x[1, 1] = bad
    t = np.zeros(3, dtype=np.int64)
    cases = [("x0", lambda: d.q_sample(x, t)), ("noise", lambda: d.q_sample(X, t, noise=x)),
             ("x0", lambda: d.training_losses(zero_model, x)),
             ("noise", lambda: d.training_losses(zero_model, X, noise=x)),
             ("x_t", lambda: d.p_sample(zero_model, x, t)),
             ("x_T", lambda: d.p_sample_loop(zero_model, x_T=x)),
             ("x_prev", lambda: formulas.q_step(d, x, t)), ("x0", lambda: d.prior_bpd(x))]
    for name, call in cases:
        with pytest.raises(ValueError, match=f"^{name}: must be finite") as e:
            call()
        assert "(1, 1)" in str(e.value)


def test_shapes_that_do_not_match(d):
    t = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match=r"^noise: must have the shape of x0, \(3, 2\), got"):
        d.q_sample(X, t, noise=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"^z: must have the shape of x_t, \(3, 2\), got \(3, 1\)"):
        d.p_sample(zero_model, X, t, z=np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"^x0: must have the shape of x_t, \(3, 4\), got \(3, 2"):
        d.q_posterior_mean_variance(np.zeros((3, 2)), np.zeros((3, 4)), t)
    with pytest.raises(ValueError, match=r"^model: output must have shape \(3, 2\).*got \(3, 4\)"):
        d.training_losses(lambda x_t, tt: np.zeros((3, 4), dtype=np.float32), X)
    with pytest.raises(ValueError, match=r"^model: output dtype must be the working dtype"):
        d.p_sample(lambda x_t, tt: Tensor(np.zeros((3, 2), dtype=np.float64)), X, t)
    with pytest.raises(ValueError, match=r"^x_T: has shape \(3, 2\), but shape=\(4, 2\)"):
        d.p_sample_loop(zero_model, shape=(4, 2), x_T=X)
    with pytest.raises(ValueError, match=r"^shape: must be a tuple of ints >= 1"):
        d.p_sample_loop(zero_model, shape=(0, 2))
    with pytest.raises(ValueError, match=r"^every: must be an int >= 1, got 0"):
        next(d.p_sample_loop_progressive(zero_model, (2, 2), every=0))
    with pytest.raises(ValueError, match=r"^x0: must have a leading batch axis"):
        d.q_sample(np.float32(1.0), 0)


@pytest.mark.parametrize("kwargs, fragment", [     # the choices in validate.check_choice's words
    ({"parameterization": "score"}, "parameterization: got 'score', allowed: eps, x0, mu, v"),
    ({"variance": "learned"}, "variance: got 'learned', allowed: fixed_large, fixed_small, "
                              "learned_range"),
    ({"loss": "l1"}, "loss: got 'l1', allowed: simple, mu_mse, kl, hybrid"),
    ({"mu_mse_weight": "snr"}, "mu_mse_weight: got 'snr', allowed: none, bound"),
    ({"variance": "learned_range"}, "loss: 'simple' does not train the variance"),
    ({"loss": "hybrid"}, "loss: 'hybrid' trains a learned variance"),
    ({"dtype": np.float16}, "dtype: got 'float16', allowed: float32, float64"),
    ({"hybrid_lambda": -1.0}, "hybrid_lambda: must be a finite number in [0, inf], got -1.0"),
    ({"hybrid_lambda": float("inf")}, "hybrid_lambda: must be a finite number"),
])
def test_bad_constructor_arguments(kwargs, fragment):
    with pytest.raises(ValueError) as e:
        GaussianDiffusion(get_beta_schedule("linear", T), **kwargs)
    assert fragment in str(e.value)
