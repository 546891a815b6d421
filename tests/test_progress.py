"""The training bar: a live tqdm bar on a terminal; in a pipe or a log, one whole line about
every tenth of the run (before 2026-12-06 a log got every one of tqdm's redraws, 12000 of them
for the demo, joined by carriage returns)."""
import io
import re

from minidiff.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(stream, total=100, start=20):
    bar = Progress(total, start=start, stream=stream)
    for _ in range(total - start):
        bar.update(1, loss=0.5)
    bar.close()
    return stream.getvalue()


def test_a_log_gets_ten_whole_lines_with_the_step_and_the_loss():
    lines = run(io.StringIO()).splitlines()
    assert "\r" not in "".join(lines)
    steps = [int(re.search(r" (\d+)/100 ", line).group(1)) for line in lines]
    assert steps == list(range(28, 101, 8)), lines          # every 8 of the 80 steps run
    assert all(line.startswith("train: ") and "loss=0.5" in line for line in lines)


def test_a_terminal_gets_tqdm_s_live_bar():
    out = run(Terminal())
    assert "\r" in out and "100/100" in out and "loss=0.5" in out
