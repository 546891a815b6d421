"""minidiff.testing: imported only on demand, and its strategies draw what they promise.

Oracles: a fresh interpreter's sys.modules (nothing imports hypothesis behind a user's back);
an interpreter where hypothesis cannot be imported (the one-line message); check_betas, the
library's conv2d and np.broadcast_shapes on every draw; hypothesis.find for the corners each
strategy must reach (T = 1, non-monotone β, β near 0 and near 1, batch 1, both broadcasting
directions).
"""
import subprocess
import sys

import numpy as np
from hypothesis import HealthCheck, find, given, settings

from minidiff import Tensor
from minidiff.diffusion import check_betas
from minidiff.functional.conv import conv2d
from minidiff.testing import oracles, strategies

FIND = settings(max_examples=500, database=None, suppress_health_check=list(HealthCheck))


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_importing_minidiff_or_its_testing_module_does_not_import_hypothesis():
    r = run_python("import sys, minidiff, minidiff.testing\n"
                   "from minidiff.testing import gradcheck, oracles, assert_close\n"
                   "print('hypothesis' in sys.modules)")
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_without_hypothesis_strategies_says_how_to_get_it_in_one_line():
    r = run_python("import sys; sys.modules['hypothesis'] = None\n"
                   "from minidiff.testing import gradcheck, oracles\n"
                   "try:\n    from minidiff.testing import strategies\n"
                   "except ImportError as e:\n    print(repr(str(e)))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == repr("minidiff.testing.strategies needs hypothesis: "
                                    "pip install 'minidiff[test]'")


def test_the_package_loads_strategies_and_oracles_as_attributes():
    import minidiff.testing as testing
    assert testing.strategies is strategies and testing.oracles is oracles


# ------------------------------------------------------------------ β schedules
@given(strategies.betas())
def test_every_drawn_schedule_is_valid_with_alpha_bar_above_the_floor(betas):
    assert np.array_equal(check_betas(betas), betas)
    assert np.cumsum(np.log1p(-betas))[-1] >= np.log(1e-10) * (1 + 1e-12)


def test_schedules_reach_the_hostile_corners():
    b = strategies.betas(max_T=50)
    assert find(b, lambda x: x.size == 1, settings=FIND).size == 1
    assert (np.diff(find(b, lambda x: x.size >= 3 and (np.diff(x) < 0).any()
                         and (np.diff(x) > 0).any(), settings=FIND)) != 0).any()
    assert find(b, lambda x: x.min() < 1e-6, settings=FIND).min() < 1e-6
    assert find(b, lambda x: x.max() > 0.9, settings=FIND).max() > 0.9
    assert find(strategies.betas(hostile=False), lambda x: True, settings=FIND).max() <= 0.2


@given(strategies.betas(max_T=30).flatmap(
    lambda b: strategies.timesteps(b.size, 4).map(lambda t: (b, t))))
def test_timesteps_index_the_schedule(case):
    betas, t = case
    assert t.dtype == np.int64 and t.shape == (4,)
    assert 0 <= t.min() and t.max() < betas.size


@given(strategies.timestep_subsequences(12))
def test_subsequences_increase_strictly_inside_the_schedule(ts):
    assert ts.dtype == np.int64 and ts.size >= 1
    assert (np.diff(ts) > 0).all() and 0 <= ts[0] and ts[-1] <= 11


# ------------------------------------------------------------------ arrays, shapes, conv
@given(strategies.arrays((2, 3), np.float32, -1e3, 1e3), strategies.tensors((4,)))
def test_arrays_and_tensors_are_finite_of_their_dtype(a, t):
    assert a.dtype == np.float32 and a.shape == (2, 3) and np.isfinite(a).all()
    assert isinstance(t, Tensor) and t.dtype == np.float64 and np.abs(t.data).max() <= 2


@given(strategies.broadcastable_shapes())
def test_broadcastable_shapes_broadcast(shapes):
    np.broadcast_shapes(*shapes)


def test_broadcasting_goes_both_ways():
    pairs = strategies.broadcastable_shapes()
    a, b = find(pairs, lambda p: len(p[0]) < len(p[1]), settings=FIND)
    assert len(a) < len(b)
    a, b = find(pairs, lambda p: any(x == 1 < y for x, y in zip(p[0][::-1], p[1][::-1]))
                and any(y == 1 < x for x, y in zip(p[0][::-1], p[1][::-1])), settings=FIND)
    assert np.broadcast_shapes(a, b) not in (a, b)                 # each side stretched


@given(strategies.conv_configs())
def test_conv_configs_fit_and_give_the_stated_output_shape(c):
    x, w = Tensor(np.zeros(c.x_shape)), Tensor(np.zeros(c.w_shape))
    assert conv2d(x, w, None, c.stride, c.padding).shape == c.out_shape
    assert min(c.out_shape) >= 1


def test_conv_configs_reach_batch_1_odd_sizes_and_wide_padding():
    configs = strategies.conv_configs()
    assert find(configs, lambda c: c.batch == 1 and c.height % 2 == 1 and c.width % 2 == 1,
                settings=FIND).batch == 1
    c = find(configs, lambda c: c.padding[0] >= c.kernel[0] and c.stride[0] > 1, settings=FIND)
    assert c.padding[0] >= c.kernel[0]


# ------------------------------------------------------------------ data for the oracles
@given(strategies.gaussian_data(), strategies.mixture_data())
def test_data_strategies_give_valid_mixtures(g, mix):
    assert len(g.weights) == 1 and g.stds[0] > 0
    assert abs(sum(mix.weights) - 1) < 1e-9 and min(mix.stds) >= 0
    assert oracles.mixture(*mix) == mix
