"""`minidiff gpu-check`: what a short turn on a GPU machine should run first, in one command.

    python -m minidiff gpu-check --out-dir gpu_report
    python -m minidiff gpu-check --emulate                # no GPU: correctness on the emulator

It writes gpu_report.json and gpu_report.md to --out-dir, in three parts:
1. environment: GPU, driver, CUDA runtime, CuPy, NVRTC, NumPy, and the measured
   device-to-device copy bandwidth (the ceiling of every memory-bound kernel);
2. correctness: the tests marked `gpu` (every kernel compiled by this device's NVRTC against
   its NumPy reference, and a U-Net training step and sampler steps against the NumPy path),
   and a 2-D MLP trained on the GPU and on the CPU from one seed, which must reach one loss;
3. speed: each fused kernel against its unfused CuPy sequence (ms, GB/s, share of the copy
   bandwidth), conv2d's TFLOP/s, whole U-Net steps (tiny, small, cifar10 at batch 128), the
   kernel launches per step, and the share of a sampling step spent drawing noise on the host
   (gpubench.py), and the same U-Net steps in PyTorch when it and benchmarks/ are there.

--emulate runs part 2's tests through the g++ CUDA emulator instead (CI does, on every
commit); parts 1 and 3 need a device. Exit status: 0 when every correctness check passed.
The tests come with a clone, not with the package: installed without one, the check runs the
rest and says the tests were not run.
"""
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from .backend import set_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # a clone's root

# The tests that compare every kernel and the whole-step cuda path with NumPy.
EMULATED_TESTS = ["tests/test_cuda_end_to_end.py", "tests/test_cuda_kernels_diffusion.py",
                  "tests/test_cuda_kernels_adam.py", "tests/test_cuda_kernels_groupnorm.py",
                  "tests/test_cuda_kernels_softmax.py", "tests/test_cuda_kernels_conv2d.py"]


# ------------------------------------------------------------------------------ 1. environment
def environment(cp):
    """Versions, and the device-to-device copy bandwidth in GB/s (bytes read + written)."""
    from .gpubench import timer
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    a = cp.ones(256 * 2**20 // 4, dtype=cp.float32)                 # 256 MiB
    b = cp.empty_like(a)
    ms = timer(cp, lambda: cp.copyto(b, a), 10)
    return {"gpu": name, "driver": cp.cuda.runtime.driverGetVersion(),
            "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(), "cupy": cp.__version__,
            "nvrtc": ".".join(map(str, cp.cuda.nvrtc.getVersion())), "numpy": np.__version__,
            "python": platform.python_version(), "copy_GBps": 2 * a.nbytes / ms / 1e6}


# ------------------------------------------------------------------------------ 2. correctness
def device_test_files(tests):
    """The test files that hold `gpu` tests: only these are collected on the device, so a
    module the device lacks (matplotlib, say) in another test file cannot stop the check."""
    marked = re.compile(r"mark\.gpu|\bRUNNERS\b|\bGPU\b")
    return sorted(os.path.join("tests", f) for f in os.listdir(tests)
                  if f.startswith("test_") and f.endswith(".py") and f != "test_gpu_check.py"
                  and marked.search(open(os.path.join(tests, f), encoding="utf-8").read()))


def run_tests(args):
    """The correctness tests in a pytest subprocess: {"passed", "failed", "skipped", ...}, or
    {"not_run": why, "ok": True} on the device when the package has no clone's tests/ beside it
    (the same training below still compares the GPU with the CPU)."""
    tests = os.path.join(ROOT, "tests")
    if args.pytest_args:
        selection = args.pytest_args.split()
    elif not os.path.isdir(tests):
        return {"not_run": f"no tests/ folder in {ROOT}: they come with a clone", "ok": True}
    elif args.emulate:
        selection = EMULATED_TESTS
    else:
        selection = ["-m", "gpu", *device_test_files(tests)]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)",
                                                r.stdout.strip().splitlines()[-1] if
                                                r.stdout.strip() else "")}
    failures = [line for line in r.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"command": " ".join(cmd[1:]), "seconds": time.perf_counter() - start,
            "returncode": r.returncode, **counts, "failures": failures[:20],
            "ok": r.returncode == 0 and counts.get("passed", 0) > 0}


def mlp_losses(device, steps, out_dir):
    """The losses of a short 2-D MLP run on `device`, from one seed."""
    from .config import TrainConfig
    from .runlog import read_log
    from .train import Trainer
    set_device(device)
    cfg = TrainConfig(data="swiss_roll", n_points=4000, hidden=64, depth=2, time_dim=32,
                      timesteps=100, batch_size=256, steps=steps, ckpt_every=steps, lr=2e-3,
                      warmup=20, seed=0, out_dir=out_dir)
    t = Trainer(cfg, quiet=True)
    t.plot_losses = lambda: None            # no loss.png: the check needs no matplotlib
    t.run(final_samples=False)
    set_device("cpu")
    return read_log(t.log_path)[1]


def same_training(steps=300):
    """Train on the GPU and on the CPU from one seed: both draw the same numbers (the host
    generator), so the losses differ only by float32 rounding, which grows with the steps.
    The check: the mean loss of the last 100 steps agrees within 2%."""
    with tempfile.TemporaryDirectory() as tmp:
        gpu = mlp_losses("cuda", steps, os.path.join(tmp, "gpu"))
        cpu = mlp_losses("cpu", steps, os.path.join(tmp, "cpu"))
    g, c = float(gpu[-100:].mean()), float(cpu[-100:].mean())
    return {"steps": steps, "gpu_loss": g, "cpu_loss": c, "first_loss_gpu_cpu":
            [float(gpu[0]), float(cpu[0])], "ok": abs(g - c) <= 0.02 * abs(c)}


# ------------------------------------------------------------------------------ the report
def markdown(report):
    lines = ["# minidiff GPU check", "", f"Run {report['date']}, mode: {report['mode']}.", ""]
    env = report.get("environment")
    if env:
        lines += ["## Environment", ""] + [f"- {k}: {v:.1f}" if isinstance(v, float)
                                           else f"- {k}: {v}" for k, v in env.items()] + [""]
    lines += ["## Correctness", ""]
    for name, c in report["correctness"].items():
        verdict = "NOT RUN" if "not_run" in c else "PASS" if c["ok"] else "FAIL"
        lines.append(f"- {name}: {verdict} "
                     + json.dumps({k: v for k, v in c.items() if k != 'failures'}))
        lines += [f"  - {f}" for f in c.get("failures", [])]
    for title, key, cols in (
            ("Fused kernels", "kernels", ("kernel", "fused_ms", "unfused_ms", "speedup",
                                          "fused_GBps", "share_of_copy")),
            ("conv2d", "conv2d", ("shape", "forward_ms", "forward_TFLOPs", "backward_data_ms",
                                  "backward_weight_ms")),
            ("U-Net steps", "steps", ("preset", "batch", "step", "ms", "samples_per_s",
                                      "kernel_launches", "host_noise_share")),
            ("Against PyTorch eager, same GPU", "torch", ("preset", "batch", "step",
                                                         "minidiff_ms", "torch_ms", "ratio"))):
        rows = report.get("speed", {}).get(key)
        if rows:
            lines += ["", f"## {title}", "", "| " + " | ".join(cols) + " |",
                      "|" + " --- |" * len(cols)]
            lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    why = report.get("speed", {}).get("torch_skipped")
    if why:
        lines += ["", "## Against PyTorch eager, same GPU", "", f"Skipped: {why}."]
    for name, table in report.get("profiles", {}).items():
        lines += ["", f"## Op profile: {name}", "", "```", table, "```"]
    return "\n".join(lines) + "\n"


def fmt(v):
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def add_arguments(ap):
    """The check's flags (also `minidiff gpu-check`'s)."""
    ap.add_argument("--out-dir", default="gpu_report", help="where the reports go")
    ap.add_argument("--emulate", action="store_true",
                    help="no GPU: run the correctness tests through the g++ CUDA emulator")
    ap.add_argument("--pytest-args", default="",
                    help="run these tests instead of the default correctness selection")
    ap.add_argument("--size", type=int, default=64 * 3 * 64 * 64,
                    help="elements per array in the kernel timings")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")


def run(args):
    """Run the check; returns the exit status (0: every correctness check passed)."""
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        print(f"gpu_check: --out-dir {args.out_dir}: is a file, not a folder", file=sys.stderr)
        return 2
    if args.emulate and not args.pytest_args and not os.path.isdir(os.path.join(ROOT, "tests")):
        print(f"gpu_check: --emulate runs a clone's tests, and {ROOT} has no tests/ folder",
              file=sys.stderr)
        return 2
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "mode": "emulated (g++ CUDA emulator)" if args.emulate else "device",
              "correctness": {}, "speed": {}}
    if not args.emulate:
        try:
            import cupy as cp
            from . import cuda
            set_device("cuda")
        except Exception as e:                  # no CuPy or no GPU: say so and stop
            print(f"gpu_check: needs CuPy and an NVIDIA GPU ({e}); --emulate runs the "
                  "correctness part without one", file=sys.stderr)
            return 1
        report["environment"] = environment(cp)
        set_device("cpu")
    print("correctness: tests ...", flush=True)
    report["correctness"]["tests"] = run_tests(args)
    if not args.emulate:
        print("correctness: the same training on the GPU and the CPU ...", flush=True)
        report["correctness"]["same_training"] = same_training()
        report["speed"], report["profiles"] = speed(cp, cuda, report["environment"], args)
    write_reports(report, args.out_dir)
    ok = all(c["ok"] for c in report["correctness"].values())
    print(f"gpu check: correctness {'PASS' if ok else 'FAIL'}; reports in {args.out_dir}/")
    return 0 if ok else 1


def speed(cp, cuda, env, args):
    """(speed, op profiles): part 3, on the device, with PyTorch's column when it can run."""
    from . import gpubench
    set_device("cuda")
    print("speed ...", flush=True)
    repeats = max(3, args.repeats // 4)
    out = {"kernels": gpubench.kernel_speed(cp, cuda, env["copy_GBps"], args.size, args.repeats),
           "conv2d": gpubench.conv_speed(cp, cuda, args.repeats)}
    out["steps"], profiles = gpubench.step_speed(cp, cuda, repeats)
    out["torch"], why = gpubench.torch_speed(out["steps"], repeats)
    if why:
        out["torch_skipped"] = why
        print(f"speed: the PyTorch column is skipped: {why}", flush=True)
    return out, profiles


def write_reports(report, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gpu_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out_dir, "gpu_report.md"), "w") as f:
        f.write(markdown(report))


# ------------------------------------------------------------------------------ the command
def cmd_gpu_check(args):
    status = run(args)
    if status:
        raise SystemExit(status)


def add_parser(sub):
    p = sub.add_parser("gpu-check", help="check and time the GPU path; writes gpu_report.*",
                       description="Environment, correctness on the device (or, with "
                       "--emulate, on the g++ CUDA emulator) and speed of the GPU path; "
                       "writes gpu_report.json and gpu_report.md.")
    add_arguments(p)
    p.set_defaults(func=cmd_gpu_check, parser=p)
    return p
