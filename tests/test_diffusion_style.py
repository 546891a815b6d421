"""The diffusion code's house rules, checked on its text: every citation of an equation, an
algorithm, a section or a table names its paper on the same line ("Ho et al. 2020, Eq. 12",
never a bare "Eq. 12"); no comment points at a file outside the repository; lines fit in 100
characters and files in 400 lines."""
import re
from pathlib import Path

import pytest

import minidiff.diffusion

FILES = sorted(Path(minidiff.diffusion.__file__).parent.glob("*.py"))
CITATION = re.compile(r"\b(Eq|Alg|Algorithm|Table)\.? ?\d|§ ?\d")
PAPER = re.compile(r"\b(Ho|Song|Lipman|Xu) et al\. (19|20)\d\d\b"
                   r"|\b(Nichol & Dhariwal|Salimans & Ho) (19|20)\d\d\b")
ELSEWHERE = re.compile(r"\bthe notes?\b|\bnote \d|shared/|\.\./", re.IGNORECASE)


def lines():
    for path in FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield f"{path.name}:{number}", line


def test_the_rules_see_what_they_forbid():
    assert CITATION.search("x0 = ...  # Eq. 15") and not PAPER.search("x0 = ...  # Eq. 15")
    assert CITATION.search("(Alg. 2, line 4)") and CITATION.search("§3.2")
    assert PAPER.search("# Ho et al. 2020, Eq. 15") and PAPER.search("Nichol & Dhariwal 2021")
    assert not PAPER.search("Ho et al., Eq. 7") and not PAPER.search("N&D 2021, Eq. 17")
    assert ELSEWHERE.search("see ../shared/bench") and ELSEWHERE.search("as the notes say")
    assert len(FILES) >= 10


def test_every_citation_names_its_paper():
    bare = [f"{where}: {line.strip()}" for where, line in lines()
            if CITATION.search(line) and not PAPER.search(line)]
    assert not bare, "citations without their paper:\n" + "\n".join(bare)


def test_nothing_points_outside_the_repository():
    found = [f"{where}: {line.strip()}" for where, line in lines() if ELSEWHERE.search(line)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_lines_and_files_are_short(path):
    text = path.read_text(encoding="utf-8").splitlines()
    assert len(text) <= 400, f"{path.name}: {len(text)} lines"
    long = [n for n, line in enumerate(text, 1) if len(line) > 100]
    assert not long, f"{path.name}: lines over 100 characters: {long}"
