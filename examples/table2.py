"""Ho et al. 2020, Table 2, in one place: every row of their ablation (what the network
predicts x its training objective x the reverse variance Σ), plus Nichol & Dhariwal 2021's
hybrid row, trained under one protocol and measured the same way.

    prediction  objective                     Σ
    μ̃           true bound L                  learned diagonal (learned_range)
    μ̃           true bound L                  fixed isotropic (σ_t² = β_t)
    μ̃           ‖μ̃ − μ_θ‖²                    fixed isotropic
    ε           true bound L                  learned diagonal
    ε           true bound L                  fixed isotropic
    ε           L_simple (Ho et al. 2020, Eq. 14)        fixed isotropic
    ε           L_hybrid (Nichol & Dhariwal 2021, Eq. 16, λ = 0.001)   learned diagonal

"True bound L" is the bound's term at a uniform t in bits/dim (Ho et al. 2020, Eq. 5, `--loss
kl`). The learned diagonal Σ is Nichol & Dhariwal 2021's interpolation (their Eq. 15) between
log β̃_t and log β_t: Ho et al. learned Σ_θ directly, which is a different parameterisation.

Two targets, one protocol each, every row with the same data, network, optimiser, steps and T:
    --target 2d      the swiss roll, the 2-D MLP, AdamW 2e-3, batch 256 (the demo's settings);
                     2000 samples by Ho et al. 2020, Algorithm 2
                     from the EMA weights, sliced W1 and MMD² beside their noise floors, for
                     each seed; samples.png per row, and table2_2d.png with every row.
    --target mnist   MNIST-5k resized to 16x16 (--image-size 32 pads it instead, at 4x the
                     cost), the `tiny` U-Net, Adam 2e-4, batch 32; test bits/dim (the bound,
                     Ho et al. 2020, Eq. 5) on the first --n-test held-out digits (5 of each
                     digit per 50) and a grid of samples per row.
A run whose loss or gradient turns NaN, or whose samples blow up, is reported as unstable.

    python examples/table2.py --target 2d --seeds 0 1 --steps 6000 --timesteps 1000
    python examples/table2.py --target mnist --steps 1000 --n-test 50
    python examples/table2.py --target mnist --rows eps-simple-fixed --out-dir part2
    python examples/table2.py --target mnist --merge part1 part2    # one table from both

--rows splits the rows between processes (one per core, say); --merge writes the table of
every row from their results_<target>.json files, without training anything.

Writes --out-dir/table2_<target>.md (the markdown table), results_<target>.json and the
pictures. Nothing is tuned per row.
"""
import argparse
import json
import math
import os
import time

import numpy as np

from minidiff import backend, viz
from minidiff.cli_common import limit_blas_threads
from minidiff.datakinds import DATA_KINDS
from minidiff.diffusion import calc_bpd_loop
from minidiff.train import ModelDiverged, NonFiniteLoss, Trainer, TrainConfig, distances_2d

# (key, prediction, objective, Σ, config fields, Ho et al. 2020 Table 2 on CIFAR-10: IS, FID)
ROWS = [
    ("mu-L-learned", "μ̃", "true bound L", "learned diagonal",
     dict(parameterization="mu", loss="kl", variance="learned_range"), "7.28±0.10, 23.69"),
    ("mu-L-fixed", "μ̃", "true bound L", "fixed isotropic",
     dict(parameterization="mu", loss="kl", variance="fixed_large"), "8.06±0.09, 13.22"),
    ("mu-mse-fixed", "μ̃", "‖μ̃ − μ_θ‖²", "fixed isotropic",
     dict(parameterization="mu", loss="mu_mse", variance="fixed_large"), "— (unstable)"),
    ("eps-L-learned", "ε", "true bound L", "learned diagonal",
     dict(parameterization="eps", loss="kl", variance="learned_range"), "— (unstable)"),
    ("eps-L-fixed", "ε", "true bound L", "fixed isotropic",
     dict(parameterization="eps", loss="kl", variance="fixed_large"), "7.67±0.13, 13.51"),
    ("eps-simple-fixed", "ε", "L_simple", "fixed isotropic",
     dict(parameterization="eps", loss="simple", variance="fixed_large"), "9.46±0.11, 3.17"),
    ("eps-hybrid-learned", "ε", "L_hybrid (N&D)", "learned diagonal",
     dict(parameterization="eps", loss="hybrid", variance="learned_range"), "not in Ho et al."),
]


def protocol(target, args, seed, out_dir):
    """Everything the rows share: data, network, optimiser, budget, T."""
    common = dict(steps=args.steps, timesteps=args.timesteps, seed=seed, ckpt_every=args.steps,
                  grad_clip=1.0, out_dir=out_dir)
    if target == "2d":
        return dict(common, data=args.data, model="mlp", batch_size=256, optimizer="adamw",
                    lr=2e-3, warmup=100, ema_decay=0.995)       # the demo's settings
    return dict(common, data="mnist", model="tiny", image_size=args.image_size,
                batch_size=args.batch_size, optimizer="adam", lr=2e-4, warmup=args.warmup,
                ema_decay=0.999)                               # Ho et al. 2020, Appendix B


def train(cfg):
    """Train one row; (trainer, None) or (trainer or None, 'why it is unstable')."""
    trainer = Trainer(cfg, overwrite=True, quiet=False)         # the training bar on stderr
    try:
        trainer.run(final_samples=False)
    except NonFiniteLoss as e:
        return trainer, f"training diverged: {str(e).split(';')[0]}"
    return trainer, None


def sample(trainer, n):
    try:
        with np.errstate(over="ignore", invalid="ignore"):     # a blow-up is caught below
            return trainer.sample(n)[0], None                  # Ho et al. 2020, Alg. 2
    except ModelDiverged:
        return None, "sampling blew up (NaN or inf)"


def chosen(args):
    """The ROWS this run trains: all of them, or those named by --rows."""
    return [row for row in ROWS if not args.rows or row[0] in args.rows]


def run_2d(args):
    results, panels = {}, []
    for key, *_, fields, _paper in chosen(args):
        results[key] = []
        for seed in args.seeds:
            out = os.path.join(args.out_dir, "2d", key, f"seed{seed}")
            cfg = TrainConfig(**protocol("2d", args, seed, out), **fields)
            t0 = time.perf_counter()
            trainer, why = train(cfg)
            x = None
            if why is None:
                x, why = sample(trainer, args.n_samples)
            r = dict(seed=seed, seconds=time.perf_counter() - t0, unstable=why)
            if x is not None:
                far = int((np.abs(x) > 10).any(axis=1).sum())      # samples flung far out
                r.update(distances_2d(x, cfg), far=far)
                if seed == args.seeds[0]:
                    title = f"{key}: SW {r['sw']:.3g} (floor {r['sw_floor']:.3f})"
                    png = os.path.join(os.path.dirname(out), "samples.png")
                    panels.append(viz.scatter_plot(x, png, reference=trainer.data[:5000],
                                                   lim=1.5, size=320, title=title))
            results[key].append(r)
            print(f"{key} seed {seed}: " + (why or f"SW {r['sw']:.4f} MMD² {r['mmd']:.5f}")
                  + f" ({r['seconds']:.0f} s)", flush=True)
    if panels:
        viz.side_by_side(panels, os.path.join(args.out_dir, "table2_2d.png"))
    return results


def run_mnist(args):
    results, heldout = {}, None
    for key, *_, fields, _paper in chosen(args):
        results[key] = []
        for seed in args.seeds:
            out = os.path.join(args.out_dir, "mnist", key, f"seed{seed}")
            cfg = TrainConfig(**protocol("mnist", args, seed, out), **fields)
            if heldout is None:
                heldout, _ = DATA_KINDS["mnist"].heldout(cfg, "")
                heldout = heldout[:args.n_test]                  # (n_test, 1, S, S)
            t0 = time.perf_counter()
            trainer, why = train(cfg)
            r = dict(seed=seed, train_seconds=time.perf_counter() - t0, unstable=why)
            if why is None:
                t1 = time.perf_counter()
                r["bpd"] = test_bpd(trainer, heldout, args.bpd_batch)
                x, why = sample(trainer, args.n_samples)
                if x is not None:
                    viz.save_image_grid(x, os.path.join(out, "samples.png"), scale=2)
                r.update(unstable=why, eval_seconds=time.perf_counter() - t1)
            results[key].append(r)
            shown = f"{r['bpd'][0]:.3f} ± {r['bpd'][1]:.3f} bits/dim" if "bpd" in r else ""
            print(f"{key} seed {seed}: {shown} {why or ''} ({r['train_seconds']:.0f} s "
                  "training)", flush=True)
    return results


def test_bpd(trainer, x, batch):
    """Mean and standard error of the bound in bits/dim (Ho et al. 2020, Eq. 5), EMA weights."""
    backend.manual_seed(0)
    model, totals = trainer.model.eval(), []
    with trainer.ema.swapped_in(model):
        for i in range(0, len(x), batch):
            xb = backend.xp().asarray(x[i:i + batch])
            bound = calc_bpd_loop(trainer.diffusion, model, xb, progress=True)  # a bar
            totals.append(bound["total_bpd"])
    total = np.concatenate(totals)
    sem = total.std(ddof=1) / math.sqrt(len(total)) if len(total) > 1 else float("nan")
    return float(total.mean()), float(sem)


def cell_2d(runs, name):
    def shown(v):
        return f"{v:.{4 if name == 'sw' else 5}f}" if abs(v) < 1e3 else f"{v:.1e}"
    return " / ".join("unstable" if r["unstable"] else shown(r[name]) for r in runs)


def markdown(target, args, results):
    """The table: each row of Ho et al. 2020, Table 2, beside what this protocol measured."""
    seeds = " / ".join(str(s) for s in args.seeds)
    if target == "2d":
        head = (f"| prediction | objective | Σ | Ho et al. (IS, FID) | sliced W1, seeds {seeds} "
                f"| MMD², seeds {seeds} | minutes |")
    else:
        head = ("| prediction | objective | Σ | Ho et al. (IS, FID) | test bits/dim "
                f"(first {args.n_test}), seeds {seeds} | minutes (train + eval) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key, pred, objective, sigma, _fields, paper in ROWS:
        if key not in results:                                  # not trained (--rows)
            continue
        runs = results[key]
        if target == "2d":
            mins = sum(r["seconds"] for r in runs) / 60
            cells = f"{cell_2d(runs, 'sw')} | {cell_2d(runs, 'mmd')} | {mins:.1f}"
        else:
            some = [r["seed"] for r in runs] != list(args.seeds)     # merged: not every seed
            bpd = " / ".join((f"{r['bpd'][0]:.3f} ± {r['bpd'][1]:.3f}" if "bpd" in r else
                              "unstable") + (f" (seed {r['seed']})" if some else "")
                             for r in runs)
            mins = sum(r["train_seconds"] + r.get("eval_seconds", 0) for r in runs) / 60
            cells = f"{bpd} | {mins:.1f}"
        lines.append(f"| {pred} | {objective} | {sigma} | {paper} | {cells} |")
    notes = [f"why unstable, {k} seed {r['seed']}: {r['unstable']}"
             for k, runs in results.items() for r in runs if r["unstable"]]
    notes += [f"{k} seed {r['seed']}: {r['far']} of {args.n_samples} samples beyond |x| = 10"
              for k, runs in results.items() for r in runs if r.get("far")]
    if target == "2d":
        r = next((r for runs in results.values() for r in runs if "sw_floor" in r), None)
        if r:
            notes.append(f"noise floor: sliced W1 {r['sw_floor']:.4f}, MMD² "
                         f"{r['mmd_floor']:.5f}; N(0, I): sliced W1 {r['sw_noise']:.4f}, "
                         f"MMD² {r['mmd_noise']:.5f}")
    budget = (f"{args.steps} steps, T = {args.timesteps}" +
              (f", data {args.data}" if target == "2d" else f", {args.image_size}x"
               f"{args.image_size}, batch {args.batch_size}"))
    return "\n".join(lines + ["", budget] + notes) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=("2d", "mnist"), default="2d")
    p.add_argument("--out-dir", default="table2_out")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per row (default: 6000 for 2d, 1000 for mnist)")
    p.add_argument("--timesteps", type=int, default=1000, help="T (Ho et al. 2020: 1000)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds per row (default: 0 1 for 2d, 0 for mnist)")
    p.add_argument("--data", default="swiss_roll", help="the 2-D set (2d)")
    p.add_argument("--n-samples", type=int, default=None,
                   help="samples per row (default: 2000 points, 25 images)")
    p.add_argument("--image-size", type=int, default=16,
                   help="mnist: 16 resizes the 28x28 digits (default), 32 pads them by 2")
    p.add_argument("--batch-size", type=int, default=32, help="mnist batch")
    p.add_argument("--warmup", type=int, default=200, help="mnist learning-rate warm-up")
    p.add_argument("--n-test", type=int, default=50, help="mnist: held-out digits measured")
    p.add_argument("--bpd-batch", type=int, default=50, help="mnist: images per bound pass")
    p.add_argument("--rows", nargs="+", choices=[row[0] for row in ROWS], default=None,
                   help="train only these rows (default: every row)")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="train nothing: write one table from these folders' results files")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args)
    mnist = args.target == "mnist"
    args.steps = args.steps or (1000 if mnist else 6000)
    args.seeds = args.seeds or ([0] if mnist else [0, 1])
    args.n_samples = args.n_samples or (25 if mnist else 2000)
    limits = limit_blas_threads(0 if mnist else 1)     # the MLP's small matrices: one thread
    t0 = time.perf_counter()
    try:
        results = run_mnist(args) if mnist else run_2d(args)
    finally:
        if limits is not None:
            limits.restore_original_limits()
    table = write_table(args, results)
    with open(os.path.join(args.out_dir, f"results_{args.target}.json"), "w") as f:
        json.dump(dict(args=vars(args), results=results), f, indent=1, default=str)
    print(table + f"\n{(time.perf_counter() - t0) / 60:.1f} minutes in all")
    return results


# Arguments that may differ between runs joined by --merge; every other one is the protocol.
MERGE_MAY_DIFFER = ("out_dir", "rows", "merge", "seeds")


def merge(args):
    """One table from the results of several runs of this script (each with its --rows)."""
    results, first = {}, None
    for folder in args.merge:
        path = os.path.join(folder, f"results_{args.target}.json")
        if not os.path.isfile(path):
            raise SystemExit(f"table2.py: --merge: no {path} (run --target {args.target} "
                             f"with --out-dir {folder} first)")
        with open(path) as f:
            saved = json.load(f)
        protocol = {k: v for k, v in saved["args"].items() if k not in MERGE_MAY_DIFFER}
        if first is not None and protocol != first:
            raise SystemExit(f"table2.py: --merge: {path} was run under another protocol "
                             "than the first folder's (compare their 'args')")
        first = protocol
        for key, runs in saved["results"].items():
            results.setdefault(key, []).extend(runs)
    seeds = sorted({r["seed"] for runs in results.values() for r in runs})
    args = argparse.Namespace(**dict(first, out_dir=args.out_dir, target=args.target,
                                     seeds=seeds))
    print(write_table(args, results))
    return results


def write_table(args, results):
    """Write --out-dir/table2_<target>.md and return its text."""
    table = markdown(args.target, args, results)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, f"table2_{args.target}.md"), "w") as f:
        f.write(table)
    return table


if __name__ == "__main__":
    main()
