"""Whole DDPM steps, minidiff against PyTorch on the CPU, side by side in one run.

    .bench/bin/python benchmarks/bench_steps.py --threads 2      # the bench extra: the README
    .bench/bin/python benchmarks/bench_steps.py --only mlp2d tiny --threads 1
    .bench/bin/python benchmarks/bench_steps.py --only tiny --rounds 1 --profile   # where it goes

The workloads are common.jobs(): one training step (q_sample, forward, MSE to ε, backward, Adam
lr 2e-4) and one sampling step (forward at the paper's t = 500 plus the ancestral update) for the
tiny and small U-Nets and the 2-D MLP (workloads.py). Both libraries run the same networks
(torch_twin.py, checked by parameter and FLOP count), interleaved round by round, and we quote
the ratio of medians (minidiff / torch): lower is better, 1.0 is parity. Without PyTorch,
minidiff is timed alone.

--profile then runs each workload --iters more times under each library's own profiler and
prints the top ops: minidiff.profile()'s table (exclusive time per op, forward and backward),
and torch.profiler's key_averages() sorted by self CPU time (also exclusive of child ops).
"""
import argparse
import importlib.util

import common
import minidiff
import workloads


def profile_workloads(fns, order, iters):
    """Each workload's top ops: minidiff's profiler, then PyTorch's, over `iters` steps."""
    for keys in order.values():
        for key in keys:
            print(f"\n=== {key}: top ops over {iters} steps")
            fn = fns[key]
            if key.startswith("minidiff"):
                with minidiff.profile() as prof:
                    for _ in range(iters):
                        fn()
                print(prof.table(top=10))
            else:
                import torch.profiler as tp
                with tp.profile(activities=[tp.ProfilerActivity.CPU],
                                record_shapes=False) as prof:
                    for _ in range(iters):
                        fn()
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="configs to keep: tiny small mlp2d")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--profile", action="store_true",
                    help="then print each workload's top ops, minidiff's and PyTorch's")
    args = ap.parse_args()
    minidiff.manual_seed(0)
    libs = {"minidiff": workloads.minidiff_workloads(args.only)}
    if importlib.util.find_spec("torch"):
        import torch
        torch.manual_seed(0)
        libs["torch"] = workloads.torch_workloads(args.only)
    else:
        print("PyTorch is not installed (the bench extra); timing minidiff alone")
    common.set_threads(args.threads)
    order = {key: [f"{lib} {key}" for lib in libs] for key, *_ in common.jobs(args.only)}
    interleaved = {f"{lib} {key}": fns[key] for key in order for lib, fns in libs.items()}
    stats = common.run_rounds(interleaved, rounds=args.rounds, iters=args.iters,
                              min_seconds=0.2)
    print(f"threads={args.threads}")
    print("| workload | minidiff | torch | ratio |")
    print("|---|---|---|---|")
    for job in order:
        m = stats[f"minidiff {job}"]["median"]
        t = stats.get(f"torch {job}", {}).get("median")
        tt = f"{t * 1e3:.1f} ms" if t else "-"
        print(f"| {job} | {m * 1e3:.1f} ms | {tt} | {common.ratio(m, t)} |")
    if args.profile:
        profile_workloads(interleaved, order, args.iters)


if __name__ == "__main__":
    main()
