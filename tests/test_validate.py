"""minidiff.validate: each check accepts exactly what its rule allows (the oracle: the rule
written out by hand) and names the argument when it refuses."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minidiff.validate import check_bool, check_choice, check_int, check_number

ANYTHING = st.one_of(st.integers(-10**30, 10**30), st.floats(), st.booleans(), st.none(),
                     st.text(max_size=5), st.lists(st.integers(), max_size=2),
                     st.integers(-5, 5).map(np.int64), st.floats(-5, 5).map(np.float32))


def refuses(check, name, *args):
    with pytest.raises(ValueError) as e:
        check(name, *args)
    assert str(e.value).startswith(f"{name}: ") and "\n" not in str(e.value)
    assert len(str(e.value)) < 200


@given(value=ANYTHING, lo=st.integers(-3, 3), width=st.none() | st.integers(0, 5))
def test_check_int(value, lo, width):
    hi = None if width is None else lo + width
    allowed = (type(value) is int or isinstance(value, np.integer)) and lo <= value and \
        (hi is None or value <= hi)
    if allowed:
        assert check_int("k", value, lo, hi) == int(value)
        assert type(check_int("k", value, lo, hi)) is int
    else:
        refuses(check_int, "k", value, lo, hi)


@given(value=ANYTHING, lo=st.floats(-3, 3), hi=st.floats(-3, 3), lo_open=st.booleans(),
       hi_open=st.booleans())
def test_check_number(value, lo, hi, lo_open, hi_open):
    real = isinstance(value, (int, float, np.integer, np.floating)) and \
        not isinstance(value, bool)
    allowed = real and math.isfinite(value) and (value > lo if lo_open else value >= lo) and \
        (value < hi if hi_open else value <= hi)
    if allowed:
        assert check_number("x", value, lo, hi, lo_open, hi_open) == float(value)
    else:
        refuses(check_number, "x", value, lo, hi, lo_open, hi_open)


@given(value=ANYTHING)
def test_check_bool_and_choice(value):
    if value is True or value is False:
        assert check_bool("b", value) is value
    else:
        refuses(check_bool, "b", value)
    registry = {"simple": 1, "kl": 2}
    if isinstance(value, str) and value in registry:
        assert check_choice("loss", value, registry) == registry[value]
    else:
        refuses(check_choice, "loss", value, registry)
    assert check_choice("loss", "kl", registry) == 2
    assert check_choice("channels", 3, (1, 3)) == 3
    refuses(check_choice, "channels", True, (1, 3))         # True == 1, but is not the choice
