"""Whole DDPM steps, minidiff against PyTorch on the CPU, side by side in one run.

    python examples/bench_steps.py --threads 2            # needs torch: see the README
    python examples/bench_steps.py --only mlp2d tiny --threads 1
    python examples/bench_steps.py --only tiny --rounds 1 --profile   # where the time goes

The workloads are ../shared/bench/common.py's jobs(): one training step (q_sample, forward, MSE
to ε, backward, Adam lr 2e-4) and one sampling step (forward at the paper's t = 500 plus the
ancestral update) for the tiny and small U-Nets and the 2-D MLP. Both libraries run the same
configurations, checked by parameter count, interleaved round by round, and we quote the ratio
of medians (minidiff / torch): lower is better, 1.0 is parity.

--profile then runs each workload --iters more times under each library's own profiler and
prints the top ops: minidiff.profile()'s table (exclusive time per op, forward and backward),
and torch.profiler's key_averages() sorted by self CPU time (also exclusive of child ops).
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "..", "shared", "bench")
sys.path.insert(0, os.path.abspath(BENCH))
sys.path.insert(0, os.path.join(HERE, ".."))

import common  # noqa: E402  (../shared/bench)

import minidiff  # noqa: E402
from minidiff import no_grad  # noqa: E402
from minidiff.diffusion import GaussianDiffusion, linear_beta_schedule  # noqa: E402
from minidiff.models import MLPDenoiser, UNet  # noqa: E402
from minidiff.optim import Adam  # noqa: E402


def build(name):
    if name == "mlp2d":
        return MLPDenoiser(**common.MLP2D_CONFIG)
    return UNet(**common.UNET_CONFIGS[name])


def input_shape(name, batch):
    if name == "mlp2d":
        return (batch, common.MLP2D_CONFIG["data_dim"])
    c = common.UNET_CONFIGS[name]
    return (batch, c["in_channels"], c["image_size"], c["image_size"])


def minidiff_workloads(only):
    d = GaussianDiffusion(linear_beta_schedule(common.T, common.BETA_START, common.BETA_END))
    rng = minidiff.backend.rng()
    workloads = {}
    for key, kind, name, batch in common.jobs(only):
        model = build(name)
        assert model.num_parameters() == common.PARAMS[name], (name, model.num_parameters())
        shape = input_shape(name, batch)
        if kind == "train":
            opt = Adam(model.parameters(), lr=2e-4)
            x0 = (rng.random(shape, dtype=np.float32) * 2 - 1)

            def step(model=model, opt=opt, x0=x0):
                loss = d.training_losses(model, x0).mean()      # Ho et al. 2020, Alg. 1
                opt.zero_grad()
                loss.backward()
                opt.step()
        else:
            x = rng.standard_normal(shape, dtype=np.float32)
            t = np.full(batch, 499)                              # the paper's t = 500

            def step(model=model, x=x, t=t):
                with no_grad():
                    return d.p_sample(model, x, t, clip_denoised=False)
        workloads["minidiff " + key] = step
    return workloads


def profile_workloads(workloads, order, iters):
    """Each workload's top ops: minidiff's profiler, then PyTorch's, over `iters` steps."""
    for keys in order.values():
        for key in keys:
            print(f"\n=== {key}: top ops over {iters} steps")
            fn = workloads[key]
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
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    minidiff.manual_seed(0)
    workloads = minidiff_workloads(args.only)
    try:
        import torch
        import torch_bench
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        tw, _, _ = torch_bench.build_workloads(args.only, log=lambda m: None)
        for k, fn in tw.items():
            workloads["torch " + k] = fn
    except ImportError as e:
        print(f"PyTorch not available ({e}); timing minidiff alone")
    order = {}
    for k in workloads:                                      # interleave: A, B, A, B ...
        order.setdefault(k.split(" ", 1)[1], []).append(k)
    interleaved = {k: workloads[k] for ks in order.values() for k in ks}
    stats = common.run_rounds(interleaved, rounds=args.rounds, iters=args.iters,
                              min_seconds=0.2)
    print(f"threads={args.threads}")
    print("| workload | minidiff | torch | ratio |")
    print("|---|---|---|---|")
    for job, keys in order.items():
        m = stats[f"minidiff {job}"]["median"]
        t = stats.get(f"torch {job}", {}).get("median")
        ratio = f"{m / t:.2f}" if t else "-"
        tt = f"{t * 1e3:.1f} ms" if t else "-"
        print(f"| {job} | {m * 1e3:.1f} ms | {tt} | {ratio} |")
    if args.profile:
        profile_workloads(interleaved, order, args.iters)


if __name__ == "__main__":
    main()
