"""log.csv: one row per logged step, `step,loss,grad_norm,lr`, appended as training goes.

A run killed mid-write can leave a torn last line, and rows past its last checkpoint. Before a
run (re)starts, the log is cut back to the rows of steps 1..step of its checkpoint, and
rewritten atomically; a resumed run then appends exactly the rows the uninterrupted run would.

    log = open_log("runs/roll/log.csv", step)      # cut back, then opened to append
    log.write(format_row(step, loss, grad_norm, lr))
    steps, losses = read_log("runs/roll/log.csv")
"""
import math

import numpy as np

from .rundir import write_atomic

LOG_HEADER = "step,loss,grad_norm,lr"


def format_row(step, loss, grad_norm, lr):
    return f"{step},{loss!r},{grad_norm!r},{lr!r}\n"       # repr: floats round-trip exactly


def read_log_rows(path, last_step):
    """The complete rows of log.csv for steps 1..last_step, in order: a row must have 4
    fields that parse, and steps must increase. A missing file has no rows."""
    rows, prev = [], 0
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return rows
    for line in lines[1:]:
        fields = line.split(",")
        try:
            step = int(fields[0])
            [float(v) for v in fields[1:]]
        except ValueError:
            continue
        if len(fields) == 4 and prev < step <= last_step:
            rows.append(line)
            prev = step
    return rows


def open_log(path, step):
    """Keep exactly the rows of steps 1..step (none for a fresh run), rewritten atomically;
    return the file opened to append."""
    rows = read_log_rows(path, step) if step > 0 else []
    write_atomic(path, "".join(r + "\n" for r in [LOG_HEADER] + rows))
    return open(path, "a")


def read_log(path):
    """(steps, losses) as arrays, from every complete row."""
    rows = read_log_rows(path, math.inf)
    a = np.array([[float(v) for v in r.split(",")[:2]] for r in rows]).reshape(-1, 2)
    return a[:, 0].astype(int), a[:, 1]
