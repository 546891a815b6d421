"""The 2-D experiment, end to end: a picture becomes points, a network learns them, and the
reverse process turns noise back into the picture.

    picture --(dark pixels)--> 20,000 points in [-1, 1]^2
            --> an MLP predicting the posterior mean μ̃_t (Ho et al. 2020, Eq. 7), trained with
                the MSE ‖μ̃_t − μ_θ(x_t, t)‖² and AdamW: the first 2-D experiment one tries
            --> the reverse process x_T ~ N(0, I), x_{t-1} ~ N(μ_θ(x_t, t), β̃_t I), as a GIF
    beside it, with the same budget: an MLP predicting ε with L_simple (Ho et al. 2020, Eq. 14).

Ho et al. 2020 (Table 2) found the unweighted μ̃-MSE unstable on CIFAR-10 with T = 1000. Here both
runs are measured rather than tuned: the sliced Wasserstein distance and MMD between 2000
samples and fresh data, each beside its noise floor (two independent draws of the data).

    python examples/two_d_experiment.py                  # μ and ε at T = 1000, 3-5 minutes
    python examples/two_d_experiment.py --timesteps 1000 --mu-weight bound
    python examples/two_d_experiment.py --sweep          # the table: T x weighting x seeds
    python examples/two_d_experiment.py --flow           # DDPM beside flow matching

Pictures go to --out-dir (default two_d_out/): points.png (the data), mu/ and eps/ (samples,
reverse-process GIF, loss curve) and side_by_side.png; with --flow, flow/<data>-<objective>/
and flow_vs_ddpm.png.
"""
import argparse
import os
import time

from minidiff import data, viz
from minidiff.cli_common import limit_blas_threads, scatter_outputs
from minidiff.metrics import format_distances
from minidiff.train import NonFiniteLoss, Trainer, TrainConfig, distances_2d


def config(kind, timesteps, mu_weight, seed, steps, out_dir):
    """One run's config. Everything but what the network predicts and its loss is shared."""
    shared = dict(data="picture", steps=steps, timesteps=timesteps, batch_size=256,
                  optimizer="adamw", lr=1e-3, weight_decay=0.01,   # torch's AdamW defaults
                  variance="fixed_small",        # σ_t² = β̃_t: p and q share it
                  ema_decay=0.995, seed=seed, ckpt_every=steps, out_dir=out_dir)
    if kind == "mu":                             # a network predicting μ̃, and its MSE
        return TrainConfig(parameterization="mu", loss="mu_mse", mu_mse_weight=mu_weight,
                           **shared)
    return TrainConfig(parameterization="eps", loss="simple", **shared)  # Ho et al. 2020, Eq. 14


def run(cfg, n, frames=0):
    """Train, sample n points from the EMA weights, measure. A NaN ends the run early."""
    t0 = time.perf_counter()
    trainer = Trainer(cfg, overwrite=True)            # the training bar, on stderr
    try:
        trainer.run(final_samples=False)
    except NonFiniteLoss as e:
        return trainer, None, [], {"diverged": str(e)}, time.perf_counter() - t0
    x, trajectory = trainer.sample(n, frames=frames, progress=True)   # Ho et al. 2020, Alg. 2
    return trainer, x, trajectory, distances_2d(x, cfg), time.perf_counter() - t0


def side_by_side(args):
    """μ and ε at one T, the same budget: pictures, GIFs and both distances."""
    os.makedirs(args.out_dir, exist_ok=True)
    points = data.points_from_picture(data.default_picture_path(), 20000)
    viz.scatter_plot(points[:5000], os.path.join(args.out_dir, "points.png"), lim=1.5,
                     title="the picture as points")
    panels, labels = [], []
    for kind in ("mu", "eps"):
        cfg = config(kind, args.timesteps, args.mu_weight, args.seed, args.steps,
                     os.path.join(args.out_dir, kind))
        trainer, x, trajectory, d, seconds = run(cfg, args.n, frames=60)
        name = (f"μ̃-MSE ({'1/(2σ²)-weighted' if args.mu_weight == 'bound' else 'unweighted'})"
                if kind == "mu" else "ε, L_simple")
        print(f"{kind:>3}: {name}, T = {args.timesteps}, {args.steps} steps, {seconds:.0f} s")
        if x is None:
            print(f"     diverged: {d['diverged']}")
            continue
        print(f"     {format_distances(d)}")
        scatter_outputs(trainer, x, trajectory, os.path.join(cfg.out_dir, "samples.png"),
                        os.path.join(cfg.out_dir, "reverse.gif"), f"{kind}: T = {cfg.timesteps}")
        panels.append(viz.scatter_plot(x, reference=trainer.data[:5000], lim=1.5, size=384,
                                       title=f"{kind}: SW {d['sw']:.3f} (floor "
                                             f"{d['sw_floor']:.3f})"))
        labels.append(kind)
    if panels:
        viz.side_by_side(panels, os.path.join(args.out_dir, "side_by_side.png"))
    print(f"pictures in {args.out_dir}/")


def sweep(args):
    """The table: for each T, ε (L_simple) and μ (unweighted and bound-weighted MSE)."""
    print("| T | network, loss | seed | sliced W1 (floor) | MMD² (floor) | time |")
    print("|---|---|---|---|---|---|")
    for T in args.sweep_timesteps:
        for kind, weight in (("eps", "none"), ("mu", "none"), ("mu", "bound")):
            for seed in range(args.seeds):
                out = os.path.join(args.out_dir, "sweep", f"{kind}-{weight}-T{T}-s{seed}")
                _, x, _, d, seconds = run(config(kind, T, weight, seed, args.steps, out),
                                          args.n)
                name = "ε, L_simple" if kind == "eps" else f"μ, MSE weight {weight}"
                if x is None:
                    print(f"| {T} | {name} | {seed} | diverged | | {seconds:.0f} s |",
                          flush=True)
                    continue
                print(f"| {T} | {name} | {seed} | {d['sw']:.4f} ({d['sw_floor']:.4f}) | "
                      f"{d['mmd']:.5f} ({d['mmd_floor']:.5f}) | {seconds:.0f} s |", flush=True)


def flow_config(objective, data_name, args):
    """The demo's recipe (minidiff/demo.py) for both objectives: the same MLP (8 levels of
    positional encoding), steps, batch, optimiser, EMA and seed."""
    return TrainConfig(data=data_name, objective=objective, steps=args.steps, batch_size=256,
                       lr=2e-3, warmup=100, ema_decay=0.995, fourier_levels=8, seed=args.seed,
                       ckpt_every=args.steps,
                       out_dir=os.path.join(args.out_dir, "flow", f"{data_name}-{objective}"))


def flow_vs_ddpm(args):
    """DDPM (ε, L_simple, Ho et al. 2020's Algorithm 2 over T = 1000 steps) beside flow
    matching (the velocity MSE, Euler over --euler-steps steps) with the same budget, on two
    2-D sets: a table row each, and flow_vs_ddpm.png."""
    os.makedirs(args.out_dir, exist_ok=True)
    print(f"{args.steps} steps at batch 256 each; {args.n} samples from the EMA weights")
    print("| data | objective, sampler | sliced W1 (floor) | MMD² (floor) | train | sample |")
    print("|---|---|---|---|---|---|")
    panels = []
    for name in ("swiss_roll", "picture"):
        for objective in ("ddpm", "flow"):
            cfg = flow_config(objective, name, args)
            t0 = time.perf_counter()
            trainer = Trainer(cfg, overwrite=True).run(final_samples=False)   # a bar
            t1 = time.perf_counter()
            x, _ = trainer.sample(args.n, euler_steps=args.euler_steps,   # the run's sampler
                                  progress=True)
            t2 = time.perf_counter()
            d = distances_2d(x, cfg)
            how = ("DDPM, ancestral 1000 steps" if objective == "ddpm" else
                   f"flow, Euler {args.euler_steps} steps")
            print(f"| {name} | {how} | {d['sw']:.4f} ({d['sw_floor']:.4f}) | {d['mmd']:.5f} "
                  f"({d['mmd_floor']:.5f}) | {t1 - t0:.0f} s | {t2 - t1:.0f} s |", flush=True)
            panels.append(viz.scatter_plot(x, reference=trainer.data[:5000], lim=1.5, size=384,
                                           title=f"{name}, {objective}: SW {d['sw']:.3f} "
                                                 f"(floor {d['sw_floor']:.3f})"))
    viz.side_by_side(panels, os.path.join(args.out_dir, "flow_vs_ddpm.png"))
    print(f"pictures in {args.out_dir}/")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="two_d_out", help="where the pictures go")
    p.add_argument("--steps", type=int, default=4000, help="training steps per run")
    p.add_argument("--timesteps", type=int, default=1000, help="T for the side-by-side run")
    p.add_argument("--mu-weight", choices=("none", "bound"), default="none",
                   help="μ̃-MSE weighting: none (plain) or bound (1/(2σ_t²): "
                        "Ho et al. 2020, Eq. 8)")
    p.add_argument("--n", type=int, default=2000, help="samples per run")
    p.add_argument("--seed", type=int, default=0, help="seed of the side-by-side runs")
    p.add_argument("--sweep", action="store_true", help="print the table instead")
    p.add_argument("--flow", action="store_true",
                   help="DDPM beside flow matching (train --objective flow), the demo's "
                        "recipe and --steps for both, on the swiss roll and the picture")
    p.add_argument("--euler-steps", type=int, default=100, help="Euler steps of --flow")
    p.add_argument("--sweep-timesteps", type=int, nargs="+", default=[50, 100, 250, 1000],
                   help="the values of T in the table")
    p.add_argument("--seeds", type=int, default=2, help="seeds per cell of the table")
    args = p.parse_args()
    limit_blas_threads(1)                  # small matrices: one BLAS thread is fastest
    if args.flow:
        flow_vs_ddpm(args)
    else:
        sweep(args) if args.sweep else side_by_side(args)


if __name__ == "__main__":
    main()
