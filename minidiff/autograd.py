"""Grad mode, under PyTorch's names: no_grad, set_grad_enabled, inference_mode.

All three switch one per-thread flag (`_grad_mode`), which every op reads (Tensor.make): ops of
a thread with it off build no graph, and every other thread's graph is left alone, as in PyTorch.
"""
import contextlib
import threading

from .validate import check_bool


class _GradMode(threading.local):
    """Whether ops build a graph, per thread as in PyTorch: no_grad in one thread leaves every
    other thread's graph alone. A class attribute, so each new thread starts with it on."""
    enabled = True


_grad_mode = _GradMode()


@contextlib.contextmanager
def no_grad():
    """Inside this block, ops of this thread build no graph: nothing is kept for a backward."""
    prev = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = prev


def is_grad_enabled():
    """Whether ops of this thread build a graph now (False inside no_grad)."""
    return _grad_mode.enabled


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
