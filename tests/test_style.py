"""House rules, checked on the text of the library, the kernels, the examples and the
benchmarks: every citation of an equation, an algorithm, a section or a table names its paper on
the same line ("Ho et al. 2020, Eq. 12", never a bare "Eq. 12", which would also match DDIM's);
no comment points at a file outside the repository; lines fit in 100 characters, and library
files in 400 lines; only the benchmarks import PyTorch (or JAX, or TensorFlow)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = sorted((ROOT / "minidiff").rglob("*.py"))
FILES = (LIBRARY + sorted((ROOT / "kernels").glob("*.cu"))
         + sorted((ROOT / "examples").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py")))
CITATION = re.compile(r"\b(Eq|Alg|Algorithm|Table|Sec|Relationship)\.? ?\d|§ ?\d")
PAPER = re.compile(r"\b(Ho|Song|Lipman|Xu|Vaswani|Mildenhall|Tancik|Reddi) et al\. (19|20)\d\d\b"
                   r"|\b(Nichol & Dhariwal|Salimans & Ho|Kingma & Ba|Wu & He|Lavin & Gray"
                   r"|Dumoulin & Visin|Loshchilov & Hutter|Higham) (19|20)\d\d\b")
ELSEWHERE = re.compile(r"\bthe notes?\b|\bnote \d|\.\./", re.IGNORECASE)
FRAMEWORK = re.compile(r"^\s*(import|from)\s+(torch|jax|tensorflow)\b")


def lines(files=FILES):
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield f"{path.relative_to(ROOT)}:{number}", line


def test_the_rules_see_what_they_forbid():
    assert CITATION.search("x0 = ...  # Eq. 15") and not PAPER.search("x0 = ...  # Eq. 15")
    assert CITATION.search("(Alg. 2, line 4)") and CITATION.search("§3.2")
    assert PAPER.search("# Ho et al. 2020, Eq. 15") and PAPER.search("Nichol & Dhariwal 2021")
    assert not PAPER.search("Ho et al., Eq. 7") and not PAPER.search("N&D 2021, Eq. 17")
    assert ELSEWHERE.search("see ../outside/bench") and ELSEWHERE.search("as the notes say")
    assert FRAMEWORK.search("    import torch.nn as nn") and FRAMEWORK.search("from jax import")
    assert not FRAMEWORK.search("torch = pytest.importorskip('torch')")
    assert len(LIBRARY) >= 40 and any(p.suffix == ".cu" for p in FILES)


def test_every_citation_names_its_paper():
    bare = [f"{where}: {line.strip()}" for where, line in lines()
            if CITATION.search(line) and not PAPER.search(line)]
    assert not bare, "citations without their paper:\n" + "\n".join(bare)


def test_nothing_points_outside_the_repository():
    found = [f"{where}: {line.strip()}" for where, line in lines() if ELSEWHERE.search(line)]
    assert not found, "\n".join(found)


def test_only_the_benchmarks_import_pytorch():
    code = LIBRARY + sorted((ROOT / "tests").rglob("*.py"))
    found = [f"{where}: {line.strip()}" for where, line in lines(code) if FRAMEWORK.search(line)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_lines_and_files_are_short(path):
    text = path.read_text(encoding="utf-8").splitlines()
    assert path not in LIBRARY or len(text) <= 400, f"{path.name}: {len(text)} lines"
    long = [n for n, line in enumerate(text, 1) if len(line) > 100]
    assert not long, f"{path.name}: lines over 100 characters: {long}"
