"""Train on any folder of pictures (png, jpg), on the CPU or a GPU.

    python examples/train_images.py --folder ~/photos --image-size 32 --channels 3 \
        --model small --device cuda --steps 50000 --out-dir runs/photos
    python examples/train_images.py --folder ~/photos ... --resume     # after a stop or a kill

Each picture is resized so its shorter side is --image-size and centre-cropped; unreadable
files are skipped with one warning. Training follows Ho et al. 2020 (Appendix B): Adam at
2e-4 warmed up over 5000 steps, gradients clipped at 1, random horizontal flips, dropout 0.1
and an EMA of the weights, from which the sample grids (every --sample-every steps) are drawn.
A bad --folder (missing, not a folder, no pictures, none readable), or another bad flag, is
one line on stderr and exit status 1. The same run from the command line:

    minidiff train --data folder --data-path ~/photos --image-size 32 --channels 3 \
        --model small --flip --dropout 0.1 --optimizer adam --lr 2e-4 --warmup 5000 \
        --ema-decay 0.9999 --device cuda --out-dir runs/photos
"""
import argparse
import os

from minidiff import backend
from minidiff.cli_common import limit_blas_threads
from minidiff.train import NonFiniteLoss, Trainer, TrainConfig


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", required=True, help="the pictures (searched recursively)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, choices=(1, 3), default=3)
    p.add_argument("--model", choices=("tiny", "small", "cifar10"), default="small")
    p.add_argument("--steps", type=int, default=50000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--sample-every", type=int, default=2000)
    p.add_argument("--out-dir", default="runs/images")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args()
    if not os.path.isdir(args.folder):                     # before CUDA wakes up
        problem = "not a folder" if os.path.exists(args.folder) else "no such folder"
        raise SystemExit(f"{p.prog}: --folder '{args.folder}': {problem}")
    backend.set_device(args.device)                        # CuPy and the CUDA kernels
    if args.device == "cpu":
        limit_blas_threads(1)

    cfg = TrainConfig(data="folder", data_path=args.folder, image_size=args.image_size,
                      channels=args.channels, flip=True, model=args.model, dropout=0.1,
                      optimizer="adam", lr=2e-4, warmup=5000, grad_clip=1.0,
                      ema_decay=0.9999, steps=args.steps, batch_size=args.batch_size,
                      ckpt_every=1000, sample_every=args.sample_every, n_samples=64,
                      out_dir=args.out_dir)
    try:
        trainer = Trainer(cfg, resume=args.resume)         # reads every picture now
    except (ValueError, FileExistsError) as e:
        message = str(e)                                   # one line, naming the field
        if message.startswith("ImageFolder: "):            # the field is --folder
            message = f"--folder '{args.folder}': {message.removeprefix('ImageFolder: ')}"
        raise SystemExit(f"{p.prog}: {message}")
    print(f"{len(trainer.data)} pictures of {trainer.shape}; {args.model} U-Net with "
          f"{trainer.model.num_parameters():,} parameters on {args.device}")
    try:
        trainer.run()
    except NonFiniteLoss as e:
        raise SystemExit(f"error: {e}")
    print(f"done: {args.out_dir}/samples.png, loss.png, checkpoint.npz")


if __name__ == "__main__":
    main()
