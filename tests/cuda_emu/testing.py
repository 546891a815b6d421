"""What every kernel test shares: where the kernels run, and the comparison that reports.

    @pytest.mark.parametrize("runner", RUNNERS)
    def test_x(runner):
        with on(runner) as dev:
            y = dev.get(cuda.softmax(*dev.put(x)))
        assert_close(y, ref, atol=1e-6, rtol=1e-5, what="softmax")

RUNNERS are the emulator with blocks (and threads) in ascending, descending and random order,
and a real GPU through CuPy (marked `gpu`, skipped when there is none). assert_close is
minidiff.testing's, re-exported here.
"""
import contextlib

import numpy as np
import pytest

import minidiff
from minidiff import backend, cuda
from minidiff.testing import assert_close

from . import ORDERS, Module, block_order, poisoned_numpy

__all__ = ["GPU", "RUNNERS", "Device", "on", "gpu_available", "assert_close"]


def gpu_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


GPU = pytest.mark.skipif(not gpu_available(), reason="needs CuPy and an NVIDIA GPU")
RUNNERS = [*ORDERS, pytest.param("gpu", marks=(pytest.mark.gpu, GPU))]


class Device:
    def __init__(self, put):
        self._put = put

    def put(self, *arrays):
        """The arrays on the device (CuPy on a GPU; NumPy as they are on the emulator)."""
        return tuple(self._put(a) for a in arrays)

    @staticmethod
    def get(result):
        """A result (an array or a tuple of them) back as NumPy."""
        if isinstance(result, tuple):
            return tuple(backend.to_numpy(r) for r in result)
        return backend.to_numpy(result)


@contextlib.contextmanager
def on(runner, seed=0):
    """Run minidiff.cuda's launches on the emulator in `runner` order, or on the GPU."""
    if runner == "gpu":
        import cupy
        minidiff.set_device("cuda")
        try:
            yield Device(cupy.asarray)
        finally:
            minidiff.set_device("cpu")
    else:
        with cuda.emulate(Module, xp=poisoned_numpy), block_order(runner, seed):
            yield Device(np.asarray)
