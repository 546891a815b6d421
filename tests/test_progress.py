"""The training bar: a live tqdm bar on a terminal; in a pipe or a log, one whole line about
every tenth of the run (before 2026-12-06 a log got every one of tqdm's redraws, 12000 of them
for the demo, joined by carriage returns)."""
import io
import re
import subprocess
import sys
from pathlib import Path

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


def test_the_2d_experiment_shows_each_run_s_training_bar(tmp_path):
    """examples/two_d_experiment.py runs 3-5 minutes; before 2026-12-07 it trained with
    quiet=True, so nothing showed until each run ended. Now each run's bar is on stderr."""
    example = Path(__file__).resolve().parents[1] / "examples" / "two_d_experiment.py"
    done = subprocess.run([sys.executable, str(example), "--out-dir", str(tmp_path),
                           "--steps", "20", "--timesteps", "25", "--n", "50"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    finished = [line for line in done.stderr.splitlines() if line.startswith("train: 100%")]
    assert len(finished) == 2 and all(" 20/20 " in line for line in finished), done.stderr
    assert "train:" not in done.stdout                       # the results stay on stdout alone
