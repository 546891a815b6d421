"""Progress bars, by tqdm (a dependency of minidiff), on stderr.

    Progress(steps, desc="train")          the training bar, the loss as its postfix
    countdown(T, "sample", progress)       T-1, ..., 0, with a bar when progress is True
    bar(range(S), "euler", progress)       0, ..., S-1, the same
"""
import sys

from tqdm import tqdm

from .validate import check_bool


class Progress:
    """The training bar: steps done of `total` (from `start` on a resume), the rate, the time
    left, and the last loss."""

    def __init__(self, total, start=0, desc="train", stream=None):
        self._bar = tqdm(total=total, initial=start, desc=desc, file=stream or sys.stderr,
                         dynamic_ncols=True)

    def update(self, n=1, **postfix):
        self._bar.update(n)
        self._bar.set_postfix_str(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                                           f"{k}={v}" for k, v in postfix.items()),
                                  refresh=False)

    def close(self):
        self._bar.close()


def bar(steps, desc, progress):
    """`steps` (a range) itself, or (progress=True) wrapped in a tqdm bar of len(steps) on
    stderr. `progress` is the samplers' and the bound's public argument, checked here."""
    if not check_bool("progress", progress):
        return steps
    return tqdm(steps, total=len(steps), desc=desc, file=sys.stderr, dynamic_ncols=True)


def countdown(n, desc, progress):
    """n-1, n-2, ..., 0, a sampler's steps from the last, as `bar` shows them."""
    return bar(range(n - 1, -1, -1), desc, progress)
