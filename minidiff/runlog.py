"""log.csv: one row per logged step, `step,loss,grad_norm,lr`, appended as training goes.

A run killed mid-write can leave a torn last line, and rows past its last checkpoint. Before a
run (re)starts, the log is cut back to the rows of steps 1..step of its checkpoint, and
rewritten atomically; a resumed run then appends exactly the rows the uninterrupted run would.

    log, note = open_log("runs/roll/log.csv", step)   # cut back, opened to append
    log.write(format_row(step, loss, grad_norm, lr))
    steps, losses = read_log("runs/roll/log.csv")
"""
import math

import numpy as np

from .atomic import write_atomic

LOG_HEADER = "step,loss,grad_norm,lr"


def format_row(step, loss, grad_norm, lr):
    return f"{step},{loss!r},{grad_norm!r},{lr!r}\n"       # repr: floats round-trip exactly


def read_log_rows(path, last_step):
    """The complete rows of log.csv for steps 1..last_step, in order: a row must have 4
    fields that parse, and steps must increase. A missing file has no rows."""
    return _read(path, last_step)[0]


def _read(path, last_step):
    """(rows, damaged): read_log_rows's rows, and the numbers of the lines (1 = the header)
    that are not rows: a byte that is not UTF-8, a field that is not a number. The last line,
    which a kill may have torn, is not counted."""
    rows, damaged, prev = [], [], 0
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", errors="replace").split("\n")   # bad byte: U+FFFD
    except FileNotFoundError:
        return rows, damaged
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split(",")
        try:
            step = int(fields[0])
            [float(v) for v in fields[1:]]
        except ValueError:
            fields = []
        if len(fields) != 4:
            if number < len(lines):             # the last line may be torn by a kill
                damaged.append(number)
        elif prev < step <= last_step:
            rows.append(line)
            prev = step
    return rows, damaged


def open_log(path, step):
    """Keep exactly the rows of steps 1..step (none for a fresh run), rewritten atomically.
    Returns the file opened to append, and a sentence if damaged lines were dropped."""
    rows, damaged = _read(path, step) if step > 0 else ([], [])
    write_atomic(path, "".join(r + "\n" for r in [LOG_HEADER] + rows))
    note = None
    if damaged:
        lines = ", ".join(map(str, damaged[:5])) + (", ..." if len(damaged) > 5 else "")
        note = (f"{path}: dropped {len(damaged)} damaged line(s), not rows of numbers in "
                f"UTF-8 (line {lines}); the other rows are kept")
    return open(path, "a"), note


def read_log(path):
    """(steps, losses) as arrays, from every complete row."""
    rows = read_log_rows(path, math.inf)
    a = np.array([[float(v) for v in r.split(",")[:2]] for r in rows]).reshape(-1, 2)
    return a[:, 0].astype(int), a[:, 1]
