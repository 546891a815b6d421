"""Peak memory of whole DDPM steps, minidiff against PyTorch on the CPU.

    .bench/bin/python benchmarks/bench_memory.py              # the bench extra: the README
    .bench/bin/python benchmarks/bench_memory.py --only small --steps 3

The workloads are bench_steps.py's (common.jobs(), workloads.py). Each library and
workload runs in a fresh process: it builds the model, the optimizer and the inputs, then
resets the kernel's peak-RSS mark (writing 5 to /proc/self/clear_refs) and runs --steps
steps. The figure is the peak resident memory during the steps less the memory resident
before them (VmHWM - VmRSS, /proc/self/status): everything a step allocates, optimizer
state and reused buffers included. The ratio is minidiff / torch; lower is better.
"""
import argparse
import importlib.util
import json
import subprocess
import sys

import common
import workloads


def status_kib(field):
    """A field of /proc/self/status, in KiB (VmRSS: resident now, VmHWM: peak resident)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def build_step(lib, key):
    """The step of workload `key` ("train tiny b32", ...) in `lib`, "minidiff" or "torch"."""
    for k, kind, name, batch in common.jobs():
        if k == key and lib == "torch":
            import torch
            torch.manual_seed(0)
            return workloads.torch_step(kind, name, batch)[0]
        if k == key:
            return workloads.minidiff_step(kind, name, batch)
    raise SystemExit(f"bench_memory: no workload {key!r}")


def child(lib, key, threads, steps):
    """In a fresh process: build, reset the peak mark, run, print the growth as JSON."""
    step = build_step(lib, key)
    common.set_threads(threads)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                       # VmHWM := VmRSS from here on
    before = status_kib("VmRSS")
    for _ in range(steps):
        step()
    print(json.dumps({"growth_mib": (status_kib("VmHWM") - before) / 1024}))


def measure(lib, key, threads, steps):
    cmd = [sys.executable, __file__, "--child", lib, key, "--threads", str(threads),
           "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{lib} {key} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_mib"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="configs to keep: tiny small mlp2d")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("LIB", "KEY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.threads, args.steps)
    libs = ("minidiff", "torch") if importlib.util.find_spec("torch") else ("minidiff",)
    if "torch" not in libs:
        print("PyTorch is not installed (the bench extra); measuring minidiff alone")
    print(f"threads={args.threads}, peak growth over {args.steps} steps")
    print("| workload | minidiff | torch | ratio |")
    print("|---|---|---|---|")
    for key, _, _, _ in common.jobs(args.only):
        m = measure("minidiff", key, args.threads, args.steps)
        t = measure("torch", key, args.threads, args.steps) if "torch" in libs else None
        tt = f"{t:.0f} MiB" if t is not None else "-"
        print(f"| {key} | {m:.0f} MiB | {tt} | {common.ratio(m, t)} |", flush=True)


if __name__ == "__main__":
    main()
