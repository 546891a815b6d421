"""`minidiff gpu-check`: its emulated mode runs, and its report tells the truth.

The oracle for the counts is pytest itself: the report must say what a separate pytest run of
the same selection says, and a selection holding a failing test must make the check fail."""
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minidiff.cli import main

ROOT = Path(__file__).resolve().parent.parent
QUICK = "tests/test_cuda_kernels_softmax.py"          # emulated kernels, a few seconds


def pytest_counts(selection):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        *selection], cwd=ROOT, capture_output=True, text=True)
    last = r.stdout.strip().splitlines()[-1]
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped)", last)}


def report(out):
    return json.loads((out / "gpu_report.json").read_text())


def test_emulated_check_reports_what_pytest_reports(tmp_path, capsys):
    out = tmp_path / "report"
    status = None
    try:
        main(["gpu-check", "--emulate", "--out-dir", str(out), "--pytest-args", QUICK])
        status = 0
    except SystemExit as e:
        status = e.code
    assert status == 0
    r = report(out)
    tests = r["correctness"]["tests"]
    assert r["mode"].startswith("emulated") and tests["ok"]
    want = pytest_counts([QUICK])
    assert {k: tests.get(k, 0) for k in want} == want and want["passed"] > 0
    md = (out / "gpu_report.md").read_text()
    assert "- tests: PASS" in md and "correctness PASS" in capsys.readouterr().out


def test_a_failing_test_fails_the_check_and_is_named(tmp_path):
    bad = tmp_path / "test_canary.py"
    bad.write_text("def test_fine():\n    assert 1 + 1 == 2\n\n"
                   "def test_broken_kernel():\n    assert 0.1 + 0.2 == 0.3\n")
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, "examples/gpu_check.py", "--emulate", "--out-dir",
                        str(out), "--pytest-args", str(bad)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    tests = report(out)["correctness"]["tests"]
    assert not tests["ok"] and tests["passed"] == 1 and tests["failed"] == 1
    assert any("test_broken_kernel" in f for f in tests["failures"])
    assert "- tests: FAIL" in (out / "gpu_report.md").read_text()


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_without_a_gpu_the_device_check_says_so_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minidiff", "gpu-check", "--out-dir",
                        str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("gpu_check: needs CuPy and an NVIDIA GPU")
    assert "--emulate runs the correctness part without one" in r.stderr
    assert not (tmp_path / "r").exists()
