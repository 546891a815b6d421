"""The checks every public entry point makes of its plain arguments, written once.

Each takes the argument's name as the user knows it ("lr", "ImageFolder: image_size"), the
value, and what is allowed; it returns the value in its canonical type, or raises ValueError
with one line: the name, what is allowed, and what was given.

    steps = check_int("steps", steps, 1)                       # an int >= 1
    lr = check_number("lr", lr, 0, lo_open=True)               # a finite number > 0
    decay = check_number("ema_decay", d, 0, 1, hi_open=True)   # in [0, 1)
    flip = check_bool("flip", flip)
    rule = check_choice("loss", loss, LOSSES)                  # a key of a registry
"""
import math
import numbers


def _shown(value):
    return f"{value!r:.60}"                     # a huge value is not echoed whole


def check_int(name, value, lo, hi=None):
    """An int (not a bool, not a float that happens to be whole) in [lo, hi]."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and lo <= value and (hi is None or value <= hi)
    if not ok:
        allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name}: must be an int {allowed}, got {_shown(value)}")
    return int(value)


def check_number(name, value, lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False):
    """A finite real number (not a bool) in the interval; returned as a float."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo)
    ok = ok and (value < hi if hi_open else value <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name}: must be a finite number in {interval}, got "
                         f"{_shown(value)}")
    return float(value)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name}: must be True or False, got {_shown(value)}")
    return value


def check_choice(name, value, allowed):
    """One of `allowed` (a sequence, or a registry dict whose keys are the names). A dict gives
    back the entry the name chooses. A bool is no int here: True is not the choice 1."""
    try:
        ok = value in allowed
    except TypeError:                           # an unhashable value is in no dict
        ok = False
    if isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed):
        ok = False                              # True == 1, but True is not the choice 1
    if not ok:
        names = ", ".join(map(str, allowed))
        raise ValueError(f"{name}: got {_shown(value)}, allowed: {names}")
    return allowed[value] if isinstance(allowed, dict) else value
