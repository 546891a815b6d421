"""Training throughput over N ranks: the tiny U-Net at one global batch, on 1 or N processes.

    python benchmarks/bench_ranks.py --threads 2                 # one process, 2 BLAS threads
    mpiexec -n 2 python benchmarks/bench_ranks.py --threads 1    # two ranks, 1 thread each
    python benchmarks/bench_ranks.py --rounds 5                  # all three, interleaved

Each run trains `--steps` steps of the Trainer (data-parallel under mpiexec: the same code as
`mpiexec -n N minidiff train`) on random 16x16 images and prints, from rank 0, the median
step time after `--warmup` steps, and examples per second. With --rounds, this script runs
the three set-ups in turn, round after round (a busy machine slows them alike), and prints
the medians of the rounds.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SETUPS = (("1 process, 2 threads", 0, 2), ("1 process, 1 thread", 0, 1),
          ("2 ranks, 1 thread each", 2, 1))


def one_run(args):
    from PIL import Image
    from minidiff import distributed
    from minidiff.cli_common import limit_blas_threads
    from minidiff.config import TrainConfig
    from minidiff.train import Trainer
    world = distributed.init()
    if world.size > 1:
        distributed.launch.pin_to_share(world.local_rank, world.local_size)
    limit_blas_threads(args.threads)           # BLAS and minidiff's own threads, as the CLI
    tmp = tempfile.mkdtemp() if world.writer else None
    if world.writer:
        (Path(tmp) / "images").mkdir()
        g = np.random.default_rng(0)
        for i in range(64):
            Image.fromarray(g.integers(0, 256, (16, 16), dtype=np.uint8)).save(
                Path(tmp) / "images" / f"{i}.png")
    if world.size > 1:                      # after rank 0 wrote them: one folder for all
        tmp = world._bcast(tmp, "sharing the folder")
    cfg = TrainConfig(data="folder", data_path=str(Path(tmp) / "images"), image_size=16,
                      model="tiny", batch_size=args.batch_size, steps=10**6,
                      out_dir=str(Path(tmp) / "run"))
    trainer = Trainer(cfg, quiet=True)
    times = []
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t0)
    trainer.close()
    if world.writer:
        step = statistics.median(times[args.warmup:])
        print(json.dumps({"ranks": world.size, "threads": args.threads,
                          "step_ms": 1000 * step, "examples_per_s": args.batch_size / step}))
        shutil.rmtree(tmp, ignore_errors=True)


def rounds(args):
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    mpiexec = Path(sys.executable).parent / "mpiexec"
    got = {name: [] for name, _, _ in SETUPS}
    for r in range(args.rounds):
        for name, ranks, threads in SETUPS:
            cmd = [sys.executable, __file__, "--threads", str(threads), "--steps",
                   str(args.steps), "--warmup", str(args.warmup), "--batch-size",
                   str(args.batch_size)]
            cmd = [str(mpiexec), "-n", str(ranks), *cmd] if ranks else cmd
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            got[name].append(result["step_ms"])
            print(f"round {r + 1}: {name}: {result['step_ms']:.0f} ms a step", flush=True)
    base = statistics.median(got[SETUPS[0][0]])
    print(f"\ntiny U-Net, global batch {args.batch_size}, medians of {args.rounds} rounds:")
    for name, _, _ in SETUPS:
        ms = statistics.median(got[name])
        print(f"  {name:24s} {ms:7.0f} ms a step  {1000 * args.batch_size / ms:6.0f} examples/s"
              f"  x{base / ms:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="BLAS threads per process")
    p.add_argument("--batch-size", type=int, default=32, help="the global batch")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=0,
                   help="run the three set-ups this many times each, interleaved")
    args = p.parse_args()
    rounds(args) if args.rounds else one_run(args)


if __name__ == "__main__":
    main()
