"""The `tiny` U-Net (Ho et al. 2020's design, 0.7M parameters) on scikit-learn's handwritten
digits, resized to 16x16: train, draw a sample grid, and measure the test bits/dim.

    pip install scikit-learn                  # the optional extra: pip install 'minidiff[digits]'
    python examples/train_digits.py --n-test 120           # ~20 min on 2 cores: 3000 steps
                                                          # (~10 min), grid, bits/dim
    python examples/train_digits.py --resume --steps 6000  # carry on from the checkpoint
    python examples/train_digits.py --device cuda --steps 20000

Writes to --out-dir (default digits_out/): checkpoint.npz, log.csv, loss.png, grid.png (64
samples from the EMA weights, Ho et al. 2020's Algorithm 2) and reverse.gif (the reverse process).
The bits/dim is the variational bound (Ho et al. 2020, Eq. 5) summed over all T steps, on the
360 digits of the test split the model never saw (see `minidiff nll`).
"""
import argparse
import time

import numpy as np

from minidiff import backend, data, viz
from minidiff.cli_common import limit_blas_threads
from minidiff.diffusion import calc_bpd_loop
from minidiff.train import Trainer, TrainConfig


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="digits_out")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=360, help="test digits for bits/dim (<= 360)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args()
    backend.set_device(args.device)
    limit_blas_threads(1 if args.device == "cpu" else 0)

    cfg = TrainConfig(data="digits", model="tiny", timesteps=args.timesteps, steps=args.steps,
                      batch_size=args.batch_size, optimizer="adam", lr=args.lr, warmup=200,
                      ema_decay=0.999, ckpt_every=250, out_dir=args.out_dir)
    trainer = Trainer(cfg, resume=args.resume, overwrite=not args.resume)
    print(f"tiny U-Net: {trainer.model.num_parameters():,} parameters; "
          f"{len(trainer.data)} training digits of 16x16")
    trainer.run(final_samples=False)                       # Ho et al. 2020, Alg. 1

    # 64 samples from the EMA weights (Ho et al. 2020, Alg. 2), and the reverse process as a GIF.
    backend.manual_seed(1)
    t0 = time.perf_counter()
    model = trainer.model.eval()
    with trainer.ema.swapped_in(model):                   # a bar over the T steps on stderr
        chain = trainer.diffusion.p_sample_loop_progressive(
            model, (64, 1, 16, 16), every=max(1, cfg.timesteps // 40), progress=True)
        trajectory = [(s, backend.to_numpy(x)) for s, x in chain]       # about 40 states
    x = trajectory[-1][1]                                  # (64, 1, 16, 16) in [-1, 1]
    viz.save_image_grid(x, f"{args.out_dir}/grid.png", nrow=8, scale=3)
    frames = [viz.image_grid(np.clip(s, -1, 1), nrow=8, scale=3) for _, s in trajectory]
    viz.save_gif(frames + frames[-1:] * 10, f"{args.out_dir}/reverse.gif", duration_ms=80)
    print(f"64 samples in {time.perf_counter() - t0:.0f} s -> {args.out_dir}/grid.png")

    # Bits/dim on held-out digits: every term of the bound (Ho et al. 2020, Eq. 5), all T steps.
    test = data.load_digits(size=16, split="test")[:args.n_test]        # (n, 1, 16, 16)
    backend.manual_seed(2)
    t0 = time.perf_counter()
    totals = []
    model = trainer.model.eval()
    with trainer.ema.swapped_in(model):
        for i in range(0, len(test), 120):
            xb = backend.xp().asarray(test[i:i + 120])
            bound = calc_bpd_loop(trainer.diffusion, model, xb, progress=True)  # a bar: T steps
            totals.append(bound["total_bpd"])
    total = np.concatenate(totals)
    print(f"test bits/dim: {total.mean():.3f} ± {total.std(ddof=1) / np.sqrt(len(total)):.3f} "
          f"on {len(total)} test digits, T = {cfg.timesteps} "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
