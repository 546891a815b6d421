"""One path through the reverse process, checks at the door only, choices made once.

- p_sample is p_mean_variance plus σ_t z (Ho et al. 2020, Alg. 2, line 4), bit for bit on the
  CPU, and the fused kernel behind it agrees with that reference with or without clipping;
- model_predictions recovers x̂0 from every parameterisation, and every sampler calls the
  network once per step;
- a loop of T steps checks its inputs once (the checks are counted), and the public methods
  still refuse bad input;
- the loss's weighting is a name checked at construction.
"""
import functools

import numpy as np
import pytest

import minidiff
from minidiff import cuda
from minidiff.diffusion import (GaussianDiffusion, _checks, calc_bpd_loop, ddim_sample_loop,
                                gaussian_diffusion, get_beta_schedule)
from minidiff.testing import formulas
from cuda_emu import Module, poisoned_numpy
from cuda_emu.testing import assert_close
from test_diffusion_samplers import toy_model          # the same smooth stand-in network

T = 20
BETAS = get_beta_schedule("linear", T, beta_start=1e-3, beta_end=0.2)
PARAMS = ["eps", "x0", "mu", "v"]


def diffusion(param="eps", variance="fixed_large", dtype=np.float32, betas=BETAS):
    loss = "kl" if variance == "learned_range" else "simple"
    return GaussianDiffusion(betas, parameterization=param, variance=variance, loss=loss,
                             dtype=dtype)


# ------------------------------------------------------------------ p_sample = p_mean_variance + σz
@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small", "learned_range"])
@pytest.mark.parametrize("clip", [True, False])
def test_p_sample_is_p_mean_variance_plus_sigma_z_bit_for_bit(param, variance, clip):
    """Float32, where two routes to the same mean would differ in the last bits."""
    d = diffusion(param, variance)
    model = toy_model(2 if d.variance == "learned_range" else 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    z = rng.standard_normal((5, 2, 3)).astype(np.float32)
    t = np.array([0, 1, 7, 13, 19])
    p = d.p_mean_variance(model, x, t, clip_denoised=clip)
    nonzero = (t > 0).astype(np.float32)[:, None, None]              # no noise at index 0
    expected = p["mean"] + nonzero * np.exp(0.5 * p["log_variance"]) * z
    np.testing.assert_array_equal(d.p_sample(model, x, t, clip_denoised=clip, z=z), expected)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("clip", [True, False])
def test_the_fused_step_agrees_with_the_reference_it_replaces(param, clip, launched):
    """On the emulated GPU, p_sample hands everything after the network call to one kernel,
    which takes the posterior mean at x̂0 (Ho et al. 2020, Eq. 7) even where the reference,
    unclipped, uses the parameterisation's own mean (for ε, Ho et al. 2020, Eq. 11): the same
    number, so both must agree to float32 rounding (1e-5 of the largest magnitude, as in
    test_cuda_routing.py). T = 1000 reaches ᾱ ≈ 4e-5, where x̂0 is ~160 times x_t."""
    rng = np.random.default_rng(1)
    x, z = rng.standard_normal((2, 4, 1, 3, 3)).astype(np.float32)
    t = np.array([0, 1, 500, 999])

    def run():
        d = diffusion(param, "fixed_small", betas=get_beta_schedule("linear", 1000))
        return d.p_sample(toy_model(), x, t, clip_denoised=clip, z=z)

    ref = run()
    with cuda.emulate(Module, xp=poisoned_numpy):
        got = run()
    assert launched == ["reverse_step"]
    assert_close(got, ref, atol=1e-5 * np.abs(ref).max(), rtol=0, what=f"{param} clip={clip}")


# ------------------------------------------------------------------ model_predictions
@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_model_predictions_recovers_x0_from_every_parameterisation(param, variance):
    """A network that outputs the exact target of a known x0 (Ho et al. 2020, Eq. 14's ε; x0;
    μ̃ by Ho et al. 2020, Eq. 7; v by Salimans & Ho 2022) must give back that x0."""
    d = diffusion(param, variance, dtype=np.float64)
    rng = np.random.default_rng(2)
    x0, noise = rng.uniform(-1, 1, (2, 3, 2, 2))
    t = np.array([0, 4, 19])
    x_t = d.q_sample(x0, t, noise)
    target = {"eps": noise, "x0": x0, "mu": d.q_posterior_mean_variance(x0, x_t, t)[0],
              "v": formulas.get_v(d, x0, t, noise)}[param]
    extra = [np.full_like(x0, 0.5)] if variance == "learned_range" else []

    def model(x, tt):
        return np.concatenate([target] + extra, axis=1)
    pred = d.model_predictions(model, x_t, t)
    np.testing.assert_allclose(pred.pred_x0.data, x0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(pred.out.data, target)
    assert (pred.var_out is None) == (variance != "learned_range")


def test_every_sampler_calls_the_network_once_per_step():
    calls = []

    def model(x_t, t):
        calls.append(int(t[0]))
        return x_t * 0.1
    d = diffusion()
    x = np.zeros((2, 1, 2, 2), dtype=np.float32)
    for run, expected in [(lambda: d.p_sample(model, x, 3), [3]),
                          (lambda: d.p_mean_variance(model, x, 3), [3]),
                          (lambda: d.p_sample_loop(model, x_T=x), list(range(T))[::-1]),
                          (lambda: ddim_sample_loop(d, model, x_T=x, timesteps=[0, 9, 19]),
                           [19, 9, 0]),
                          (lambda: calc_bpd_loop(d, model, x), list(range(T))[::-1])]:
        calls.clear()
        run()
        assert calls == expected


# ------------------------------------------------------------------ checks at the door
@pytest.fixture
def checks(monkeypatch):
    """How often each check ran: finiteness scans of an array, and timestep range checks."""
    counts = {"finite": 0, "timesteps": 0}
    real_finite, real_timesteps = _checks.check_finite, gaussian_diffusion.as_timesteps

    def finite(*args):
        counts["finite"] += 1
        return real_finite(*args)

    def timesteps(*args, **kwargs):
        counts["timesteps"] += 1
        return real_timesteps(*args, **kwargs)
    monkeypatch.setattr(_checks, "check_finite", finite)
    monkeypatch.setattr(gaussian_diffusion, "as_timesteps", timesteps)
    return counts


@pytest.mark.parametrize("param", PARAMS)
def test_a_loop_of_T_steps_checks_its_inputs_once(param, checks):
    d = diffusion(param)
    x = np.random.default_rng(3).standard_normal((3, 2)).astype(np.float32)
    for run, finite in [(lambda: d.p_sample_loop(toy_model(), x_T=x), 1),       # x_T
                        (lambda: d.p_sample_loop(toy_model(), (3, 2)), 0),      # drawn
                        (lambda: ddim_sample_loop(d, toy_model(), x_T=x, num_steps=5), 1),
                        (lambda: calc_bpd_loop(d, toy_model(), x.reshape(3, 2, 1)), 1)]:
        checks.update(finite=0, timesteps=0)
        run()
        assert checks == {"finite": finite, "timesteps": 0}


def test_a_training_step_checks_each_input_once(checks):
    d = diffusion("mu")                                          # its target is a posterior
    x0 = np.zeros((3, 2), dtype=np.float32)
    d.training_losses(toy_model(), x0, t=np.array([0, 5, 9]), noise=x0)
    assert checks == {"finite": 2, "timesteps": 1}               # x0 and noise; t


@pytest.mark.parametrize("method, names", [
    ("predict_start_from_noise", ("x_t", "eps")), ("predict_noise_from_start", ("x_t", "x0")),
    ("predict_start_from_mean", ("x_t", "mean")), ("predict_start_from_v", ("x_t", "v")),
    ("predict_noise_from_v", ("x_t", "v")), ("p_mean_from_noise", ("x_t", "eps")),
])
def test_the_public_conversions_still_check_their_arrays(method, names):
    d = diffusion()
    good, bad = np.zeros((3, 2)), np.zeros((3, 2))
    bad[2, 1] = np.nan
    t = np.zeros(3, dtype=np.int64)
    fn = functools.partial(getattr(formulas, method), d)
    with pytest.raises(ValueError, match=rf"^{names[0]}: must be finite.*\(2, 1\)"):
        fn(bad, t, good)
    with pytest.raises(ValueError, match=rf"^{names[1]}: must be finite.*\(2, 1\)"):
        fn(good, t, bad)
    with pytest.raises(ValueError, match=rf"^{names[0]}: must have the shape of {names[1]}"):
        fn(good, t, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"^t: indices must lie in \[0, 19\]"):
        fn(good, np.full(3, T), good)


# ------------------------------------------------------------------ choices made once
@pytest.mark.parametrize("weight", ["none", "bound"])
def test_the_mu_mse_weight_is_a_name_checked_at_construction(weight):
    """Issue 21: choices are names, checked once by the constructor (no strategy objects)."""
    d = GaussianDiffusion(BETAS, parameterization="mu", loss="mu_mse", mu_mse_weight=weight)
    assert d.mu_mse_weight == weight and d.loss == "mu_mse" and not hasattr(d, "loss_fn")


def test_sampling_draws_one_z_per_step_before_its_network_call():
    """The generator's order is part of a seed's meaning: x_T, then z and the network, step by
    step, so a network that draws (dropout left on) still sees the same numbers as before."""
    seen = []

    def model(x_t, t):
        seen.append(minidiff.backend.rng().standard_normal())
        return x_t * 0.0
    d = diffusion()
    minidiff.manual_seed(7)
    d.p_sample_loop(model, (2, 3))
    minidiff.manual_seed(7)
    g = minidiff.backend.rng()
    g.standard_normal((2, 3), dtype=np.float32)                     # x_T
    for _ in range(T):
        g.standard_normal((2, 3), dtype=np.float32)                 # z
        assert seen.pop(0) == g.standard_normal()                   # the network's draw
