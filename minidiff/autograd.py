"""Grad mode under PyTorch's names: set_grad_enabled and inference_mode, beside no_grad.

All three switch the one per-thread flag of tensor.py (`_grad_mode`): ops of a thread with it
off build no graph, and every other thread's graph is left alone, as in PyTorch.
"""
import contextlib

from .tensor import _grad_mode
from .validate import check_bool


class set_grad_enabled:
    """Turn graph building on or off for this thread, now, as PyTorch's does:

        minidiff.set_grad_enabled(False)         # from here on, in this thread
        with minidiff.set_grad_enabled(is_train):
            loss = ...                           # the mode before is back after the block
    """

    def __init__(self, mode):
        mode = check_bool("set_grad_enabled: mode", mode)
        self.prev = _grad_mode.enabled
        _grad_mode.enabled = mode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self.prev
        return False


@contextlib.contextmanager
def inference_mode(mode=True):
    """A block that builds no graph (mode=True), as no_grad: minidiff keeps no version
    counters, so PyTorch's inference mode and no_grad are one thing here. mode=False leaves
    the grad mode as it is, as PyTorch's does."""
    mode = check_bool("inference_mode: mode", mode)
    prev = _grad_mode.enabled
    _grad_mode.enabled = prev and not mode
    try:
        yield
    finally:
        _grad_mode.enabled = prev
