"""The GPU check: what a short turn on a GPU machine should run first, in one command.

    python -m minidiff gpu-check --out-dir gpu_report     # the same as this file
    python examples/gpu_check.py --emulate                # no GPU: correctness on the emulator

It writes gpu_report.json and gpu_report.md to --out-dir, in three parts:
1. environment: GPU, driver, CUDA runtime, CuPy, NVRTC, NumPy, and the measured
   device-to-device copy bandwidth (the ceiling of every memory-bound kernel);
2. correctness: the tests marked `gpu` (every kernel compiled by this device's NVRTC against
   its NumPy reference, and a U-Net training step and sampler steps against the NumPy path),
   and a 2-D MLP trained on the GPU and on the CPU from one seed, which must reach one loss;
3. speed: each fused kernel against its unfused CuPy sequence (ms, GB/s, share of the copy
   bandwidth), conv2d's TFLOP/s, whole U-Net steps (tiny, small, cifar10 at batch 128), the
   kernel launches per step, and the share of a sampling step spent drawing noise on the host.

--emulate runs part 2's tests through the g++ CUDA emulator instead (CI does, on every
commit); parts 1 and 3 need a device. Exit status: 0 when every correctness check passed.
It runs from a source checkout: the tests and examples/gpu_benchmark.py are not installed.
"""
import argparse
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The tests that compare every kernel and the whole-step cuda path with NumPy.
EMULATED_TESTS = ["tests/test_cuda_end_to_end.py", "tests/test_cuda_kernels_diffusion.py",
                  "tests/test_cuda_kernels_adam.py", "tests/test_cuda_kernels_groupnorm.py",
                  "tests/test_cuda_kernels_softmax.py", "tests/test_cuda_kernels_conv2d.py"]


def benchmark():
    """examples/gpu_benchmark.py, beside this file: its timer and its workloads."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import gpu_benchmark
    return gpu_benchmark


# ------------------------------------------------------------------------------ 1. environment
def environment(cp):
    """Versions, and the device-to-device copy bandwidth in GB/s (bytes read + written)."""
    timer = benchmark().timer
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
def device_test_files():
    """The test files that hold `gpu` tests: only these are collected on the device, so a
    module the device lacks (matplotlib, say) in another test file cannot stop the check."""
    tests = os.path.join(ROOT, "tests")
    marked = re.compile(r"mark\.gpu|\bRUNNERS\b|\bGPU\b")
    return sorted(os.path.join("tests", f) for f in os.listdir(tests)
                  if f.startswith("test_") and f.endswith(".py") and f != "test_gpu_check.py"
                  and marked.search(open(os.path.join(tests, f), encoding="utf-8").read()))


def run_tests(args):
    """The correctness tests in a pytest subprocess: {"passed", "failed", "skipped", ...}."""
    if args.pytest_args:
        selection = args.pytest_args.split()
    elif args.emulate:
        selection = EMULATED_TESTS
    else:
        selection = ["-m", "gpu", *device_test_files()]
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
    import minidiff
    from minidiff.config import TrainConfig
    from minidiff.runlog import read_log
    from minidiff.train import Trainer
    minidiff.set_device(device)
    cfg = TrainConfig(data="swiss_roll", n_points=4000, hidden=64, depth=2, time_dim=32,
                      timesteps=100, batch_size=256, steps=steps, ckpt_every=steps, lr=2e-3,
                      warmup=20, seed=0, out_dir=out_dir)
    t = Trainer(cfg, quiet=True)
    t.plot_losses = lambda: None            # no loss.png: the check needs no matplotlib
    t.run(final_samples=False)
    minidiff.set_device("cpu")
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


# ------------------------------------------------------------------------------ 3. speed
def kernel_speed(cp, cuda, copy_GBps, size, repeats):
    """Each fused kernel against its unfused CuPy sequence."""
    timer = benchmark().timer
    rows, n = benchmark().kernel_rows(cp, cuda, size)
    out = []
    for name, fused, unfused, bf, bu in rows:
        tf, tu = timer(cp, fused, repeats), timer(cp, unfused, repeats)
        row = {"kernel": name, "fused_ms": tf, "unfused_ms": tu, "speedup": tu / tf,
               "bytes_per_elem_fused": bf, "bytes_per_elem_unfused": bu}
        if isinstance(bf, (int, float)):
            row["fused_GBps"] = bf * n / tf / 1e6
            row["share_of_copy"] = row["fused_GBps"] / copy_GBps
        out.append(row)
    return out


CONV_SHAPES = [  # (batch, Cin, H, Cout, k, stride): the small U-Net's kinds of conv at batch 16
    (16, 3, 32, 64, 3, 1), (16, 64, 32, 64, 3, 1), (16, 64, 32, 64, 3, 2),
    (16, 128, 16, 128, 3, 1), (16, 128, 8, 128, 3, 1), (16, 128, 16, 64, 1, 1)]


def conv_speed(cp, cuda, repeats):
    """conv2d forward and both backwards: ms and TFLOP/s (2 flops a multiply-add)."""
    timer = benchmark().timer
    rng = cp.random.default_rng(0)
    out = []
    for B, C, H, K, k, s in CONV_SHAPES:
        pad = k // 2
        x = rng.standard_normal((B, C, H, H), dtype=cp.float32)
        w = rng.standard_normal((K, C, k, k), dtype=cp.float32)
        y = cuda.conv2d_forward(x, w, None, s, pad)
        dy = cp.ones_like(y)
        flops = 2 * y.size * C * k * k
        times = {"forward": timer(cp, lambda: cuda.conv2d_forward(x, w, None, s, pad), repeats),
                 "backward_data": timer(cp, lambda: cuda.conv2d_backward_data(
                     dy, w, x.shape, s, pad), repeats),
                 "backward_weight": timer(cp, lambda: cuda.conv2d_backward_weight(
                     dy, x, w.shape, s, pad), repeats)}
        out.append({"shape": f"{B}x{C}x{H}x{H} -> {K}, {k}x{k}/{s}",
                    **{f"{k_}_ms": v for k_, v in times.items()},
                    **{f"{k_}_TFLOPs": flops / v / 1e9 for k_, v in times.items()}})
    return out


def step_speed(cp, cuda, repeats):
    """Whole U-Net steps: ms, samples/s, kernel launches, and the host-noise share."""
    timer, unet_steps = benchmark().timer, benchmark().unet_steps
    import minidiff
    from minidiff import backend
    out, profiles = [], {}
    for preset, batch in (("tiny", 64), ("small", 32), ("cifar10", 128)):
        model, steps = unet_steps(cp, preset, batch)
        for name, step in steps.items():
            launches = []
            real = cuda._launch
            cuda._launch = lambda *a, **k: (launches.append(a[1]), real(*a, **k))[1]
            try:
                step()
            finally:
                cuda._launch = real
            ms = timer(cp, step, repeats)
            with minidiff.profile() as prof:         # where the time goes, one step, synced
                step()
            profiles[f"{preset} b{batch} {name.split()[0]}"] = prof.table(top=10)
            out.append({"preset": preset, "batch": batch, "step": name.split()[0], "ms": ms,
                        "samples_per_s": batch / ms * 1e3, "kernel_launches": len(launches),
                        "parameters": model.num_parameters()})
        C, S = model.in_channels, model.image_size
        noise_ms = timer(cp, lambda: backend.rng().standard_normal((batch, C, S, S),
                                                                   dtype=np.float32), repeats)
        out[-1]["host_noise_ms"] = noise_ms
        out[-1]["host_noise_share"] = noise_ms / out[-1]["ms"]
    return out, profiles


def torch_speed(steps, repeats):
    """The same tiny and small U-Net steps in PyTorch eager on the same GPU, from the
    benchmark's PyTorch reference (shared/bench beside the checkout), as ratios to ours.
    None when PyTorch (a benchmark-only tool, never a dependency) or the reference is absent."""
    bench = [d for d in (os.path.join(ROOT, "..", "shared", "bench"),
                         os.path.join(ROOT, "shared", "bench")) if os.path.isdir(d)]
    try:
        import torch
        if not bench or not torch.cuda.is_available():
            return None
        sys.path.insert(0, os.path.abspath(bench[0]))
        import torch_bench
        import torch_unet
    except ImportError:
        return None

    def ms(step):
        for _ in range(2):
            step()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeats):
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return float(np.median(times))
    out = []
    with torch.device("cuda"):                     # every tensor the reference makes
        sch = torch_bench.schedule_tensors()
        for row in steps:
            if row["preset"] not in ("tiny", "small"):
                continue
            model = torch_unet.build(row["preset"])
            make = torch_bench.make_train_step if row["step"] == "train" else \
                torch_bench.make_sample_step
            t = ms(make(model, row["batch"], row["preset"], sch))
            out.append({"preset": row["preset"], "batch": row["batch"], "step": row["step"],
                        "torch_ms": t, "minidiff_ms": row["ms"], "ratio": row["ms"] / t})
    return out


# ------------------------------------------------------------------------------ the report
def markdown(report):
    lines = ["# minidiff GPU check", "", f"Run {report['date']}, mode: {report['mode']}.", ""]
    env = report.get("environment")
    if env:
        lines += ["## Environment", ""] + [f"- {k}: {v:.1f}" if isinstance(v, float)
                                           else f"- {k}: {v}" for k, v in env.items()] + [""]
    lines += ["## Correctness", ""]
    for name, c in report["correctness"].items():
        lines.append(f"- {name}: {'PASS' if c['ok'] else 'FAIL'} "
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
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "mode": "emulated (g++ CUDA emulator)" if args.emulate else "device",
              "correctness": {}, "speed": {}}
    if not args.emulate:
        try:
            import cupy as cp
            import minidiff
            from minidiff import cuda
            minidiff.set_device("cuda")
        except Exception as e:                  # no CuPy or no GPU: say so and stop
            print(f"gpu_check: needs CuPy and an NVIDIA GPU ({e}); --emulate runs the "
                  "correctness part without one", file=sys.stderr)
            return 1
        report["environment"] = environment(cp)
        minidiff.set_device("cpu")
    print("correctness: tests ...", flush=True)
    report["correctness"]["tests"] = run_tests(args)
    if not args.emulate:
        print("correctness: the same training on the GPU and the CPU ...", flush=True)
        report["correctness"]["same_training"] = same_training()
        minidiff.set_device("cuda")
        print("speed ...", flush=True)
        copy = report["environment"]["copy_GBps"]
        report["speed"] = {"kernels": kernel_speed(cp, cuda, copy, args.size, args.repeats),
                           "conv2d": conv_speed(cp, cuda, args.repeats),
                           "steps": None}
        report["speed"]["steps"], report["profiles"] = step_speed(
            cp, cuda, max(3, args.repeats // 4))
        report["speed"]["torch"] = torch_speed(report["speed"]["steps"],
                                               max(3, args.repeats // 4))
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "gpu_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out_dir, "gpu_report.md"), "w") as f:
        f.write(markdown(report))
    ok = all(c["ok"] for c in report["correctness"].values())
    print(f"gpu check: correctness {'PASS' if ok else 'FAIL'}; reports in {args.out_dir}/")
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.path.insert(0, ROOT)                    # a checkout need not be installed
    sys.exit(main())
