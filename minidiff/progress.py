"""A one-line progress bar with loss, it/s and ETA. Uses tqdm when it is installed
(`pip install 'minidiff[progress]'`), else prints its own line; quiet when not a terminal."""
import sys
import time


class Progress:
    def __init__(self, total, start=0, desc="train", stream=None, every=None):
        self.total, self.n, self.desc = total, start, desc
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every or (1 if self.tty else max(1, (total - start) // 10))
        self.t0, self.n0, self.postfix = time.perf_counter(), start, ""
        self._tqdm = None
        if self.tty:
            try:
                from tqdm import tqdm
                self._tqdm = tqdm(total=total, initial=start, desc=desc, file=self.stream,
                                  dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, n=1, **postfix):
        self.n += n
        self.postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in postfix.items())
        if self._tqdm is not None:
            self._tqdm.update(n)
            self._tqdm.set_postfix_str(self.postfix, refresh=False)
        elif (self.n - self.n0) % self.every == 0 or self.n == self.total:
            self._print()

    def _print(self):
        dt = time.perf_counter() - self.t0
        rate = (self.n - self.n0) / dt if dt > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        line = (f"{self.desc} {self.n}/{self.total} [{rate:.1f} it/s, ETA {eta:.0f}s] "
                f"{self.postfix}")
        end = "\r" if self.tty and self.n < self.total else "\n"
        print(line, end=end, file=self.stream, flush=True)

    def close(self):
        if self._tqdm is not None:
            self._tqdm.close()
