"""`minidiff gpu-check`: its emulated mode runs, and its report tells the truth.

The oracle for the counts is pytest itself: the report must say what a separate pytest run of
the same selection says, and a selection holding a failing test must make the check fail."""
import importlib.util
import json
import re
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from minidiff import gpubench, gpucheck
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
    r = subprocess.run([sys.executable, "-m", "minidiff", "gpu-check", "--emulate", "--out-dir",
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


def test_installed_without_a_clone_the_emulated_check_says_so_in_one_line(tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.setattr(gpucheck, "ROOT", str(tmp_path))       # a package with no tests/ beside
    out = tmp_path / "r"
    args = Namespace(out_dir=str(out), emulate=True, pytest_args="")
    assert gpucheck.run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tests/ folder" in err[0] and str(tmp_path) in err[0]
    assert not out.exists()
    # on the device the tests are reported as skipped, and nothing runs pytest
    tests = gpucheck.run_tests(Namespace(emulate=False, pytest_args=""))
    assert tests["ok"] and "no tests/ folder" in tests["not_run"]


def test_the_pytorch_column_says_why_it_is_skipped(monkeypatch):
    assert gpubench.benchmarks_folder() == str(ROOT / "benchmarks")   # a clone has the twin
    monkeypatch.setattr(gpubench.importlib.util, "find_spec", lambda name: None)
    assert gpubench.torch_speed([], 3) == (None, "PyTorch is not installed "
                                           "(pip install -e '.[bench]' in a clone)")
    monkeypatch.setattr(gpubench.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(gpubench, "benchmarks_folder", lambda: None)
    rows, why = gpubench.torch_speed([], 3)
    assert rows is None and why.startswith("no benchmarks/ folder")
    md = gpucheck.markdown({"date": "now", "mode": "device", "correctness": {},
                            "speed": {"torch": None, "torch_skipped": why}})
    assert f"## Against PyTorch eager, same GPU\n\nSkipped: {why}." in md
