"""Progress bars, by tqdm (a dependency of minidiff), on stderr.

    Progress(steps, desc="train")          the training bar, the loss as its postfix
    countdown(T, "sample", progress)       T-1, ..., 0, with a bar when progress is True
    bar(range(S), "euler", progress)       0, ..., S-1, the same

On a terminal each is a live tqdm bar; in a pipe or a log, tqdm's line printed whole about
every tenth of the way, so a log holds ten lines, not every redraw.
"""
import sys
import time

from tqdm import tqdm

from .validate import check_bool


class Progress:
    """The training bar: steps done of `total` (from `start` on a resume), the rate, the time
    left, and the last loss. On a terminal a live tqdm bar; in a pipe or a log, tqdm's same line
    printed whole about every tenth of the run, so a log holds ten lines, not every redraw."""

    def __init__(self, total, start=0, desc="train", stream=None):
        self.stream = stream or sys.stderr
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = tqdm(total=total, initial=start, desc=desc, file=self.stream,
                         dynamic_ncols=True) if tty else None
        self.n, self.total, self.desc, self.postfix = start, total, desc, ""
        self.every, self.t0 = max(1, (total - start) // 10), time.perf_counter()
        self.n0 = start

    def update(self, n=1, **postfix):
        self.n += n
        self.postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in postfix.items())
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix_str(self.postfix, refresh=False)
        elif (self.n - self.n0) % self.every == 0 or self.n == self.total:
            print(tqdm.format_meter(self.n, self.total, time.perf_counter() - self.t0,
                                    ncols=0, prefix=self.desc, postfix=self.postfix,
                                    initial=self.n0), file=self.stream, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()


def bar(steps, desc, progress):
    """`steps` (a range) itself, or (progress=True) the same steps shown as the training bar
    shows its own (Progress): a live tqdm bar on a terminal's stderr, ten whole lines in a log.
    `progress` is the samplers' and the bound's public argument, checked here."""
    if not check_bool("progress", progress):
        return steps
    return _shown(steps, desc)


def _shown(steps, desc):
    """Each of `steps`, with the bar moved on after it; closed with the loop, also by an error
    (the samplers' callers close their chains, so the bar ends its line before the message)."""
    shown = Progress(len(steps), desc=desc)
    try:
        for s in steps:
            yield s
            shown.update(1)
    finally:
        shown.close()


def countdown(n, desc, progress):
    """n-1, n-2, ..., 0, a sampler's steps from the last, as `bar` shows them."""
    return bar(range(n - 1, -1, -1), desc, progress)
