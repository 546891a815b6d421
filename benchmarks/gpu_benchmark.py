"""Time every fused CUDA kernel of minidiff against the unfused CuPy sequence it replaces,
then one U-Net training step and one sampling step with the kernels and without.

    pip install -e '.[cuda]'
    python benchmarks/gpu_benchmark.py           # needs an NVIDIA GPU
    python benchmarks/gpu_benchmark.py --size 8388608 --repeats 50 --preset cifar10 --batch 128

For each kernel it prints the time of the fused kernel and of the unfused sequence (the same
math as minidiff's NumPy code, run by CuPy one array op at a time), the speed-up, and the
bytes each moves per element (counted from the code, see the README's GPU section): on a
memory-bound GPU the speed-up should approach the ratio of the bytes.

The U-Net steps run minidiff itself on the device "cuda": Ho et al. 2020's Algorithm 1 (q_sample,
forward, loss, backward) + AdamW + EMA, and one ancestral step of Ho et al. 2020's Alg. 2;
"unfused" is the same code inside `cuda.unfused()`, where every op runs its CuPy array code and
no kernel is used. The workloads and the timer are the library's (minidiff/gpubench.py), which
`minidiff gpu-check` reports as well.
"""
import argparse
import sys

from minidiff.gpubench import kernel_rows, timer, unet_step_times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64 * 3 * 64 * 64,
                    help="elements per array (default: a batch of 64 RGB 64x64 images)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--preset", default="small", help="U-Net preset: tiny, small or cifar10")
    ap.add_argument("--batch", type=int, default=32, help="U-Net batch size")
    args = ap.parse_args()
    try:
        import cupy as cp
        import minidiff
        from minidiff import cuda
        minidiff.set_device("cuda")
    except Exception as e:                  # no CuPy or no GPU: say so and stop
        print(f"gpu_benchmark needs CuPy and an NVIDIA GPU: {e}", file=sys.stderr)
        return 1
    print(f"{'kernel':46} {'fused ms':>9} {'unfused ms':>11} {'speed-up':>9} "
          f"{'B/elem fused':>13} {'unfused':>8}")
    rows, _ = kernel_rows(cp, cuda, args.size)
    for name, fused, unfused, bf, bu in rows:
        tf, tu = timer(cp, fused, args.repeats), timer(cp, unfused, args.repeats)
        print(f"{name:46} {tf:9.3f} {tu:11.3f} {tu / tf:8.2f}x {str(bf):>13} {str(bu):>8}")
    print(f"\nU-Net '{args.preset}', batch {args.batch}")
    print(f"{'step':46} {'fused ms':>9} {'unfused ms':>11} {'speed-up':>9}")
    times = unet_step_times(cp, cuda, args.preset, args.batch, max(3, args.repeats // 4))
    for name, t in times.items():
        print(f"{name:46} {t['fused']:9.3f} {t['unfused']:11.3f} "
              f"{t['unfused'] / t['fused']:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
