"""Shared test set-up: hypothesis profiles and a fresh seed per test."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minidiff

# CI keeps example counts modest; `HYPOTHESIS_PROFILE=thorough pytest` digs deeper.
settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _cpu_and_seeded():
    """Every test starts on the CPU with the library's generator seeded."""
    minidiff.set_device("cpu")
    minidiff.manual_seed(1234)
    yield
    minidiff.set_device("cpu")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a real NVIDIA GPU with CuPy; skipped without")


@pytest.fixture(scope="module")
def one_blas_thread():
    """Cap BLAS at one thread: small matrices (the 2-D MLP's) run fastest so."""
    from minidiff.cli_common import limit_blas_threads
    limits = limit_blas_threads(1)
    yield
    limits.restore_original_limits()


@pytest.fixture
def launched(monkeypatch):
    """The names of the CUDA kernels launched while the test runs, in order."""
    from minidiff.cuda import _core
    names, real_launch = [], _core._launch

    def counting_launch(filename, name, *args, **kwargs):
        names.append(name)
        real_launch(filename, name, *args, **kwargs)

    monkeypatch.setattr(_core, "_launch", counting_launch)
    return names
