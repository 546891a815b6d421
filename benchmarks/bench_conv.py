"""Time conv2d forward + backward against PyTorch on every conv layer shape of the U-Nets.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .bench/bin/python benchmarks/bench_conv.py
    .bench/bin/python benchmarks/bench_conv.py --threads 1 --only tiny

One timed call: out = conv2d(x, W, b); loss = sum(out * g); backward for x, W and b. The
shapes are those of the `tiny` (batch 32) and `small` (batch 16) U-Net presets (conv_in, the
res-block 3x3 convs and 1x1 skips, the stride-2 downsample, the upsample conv, conv_out and the
attention 1x1 qkv/proj convs), checked against the convs the PyTorch twin (torch_twin.py) runs.
minidiff and PyTorch run interleaved in one process with `common.run_rounds`; without torch
only minidiff is timed. The machine is shared and noisy: quote ratios of medians.

Set-up (the README): python3 -m venv .bench && .bench/bin/pip install -e ".[bench]"
"""
import argparse
import importlib.util
import os
import statistics
import sys

import numpy as np
from threadpoolctl import threadpool_info

import common
from minidiff import Tensor
from minidiff.functional.conv import conv2d
from minidiff.models.unet import PRESETS, unet_from_preset


def conv_layers(cfg):
    """[(role, Cin, Cout, k, stride, H)] for every conv of the U-Net built from `cfg`, in the
    order the U-Net runs them (H is the input height; images are square)."""
    ch, res = cfg["base_channels"], cfg["image_size"]
    layers = [("conv_in", cfg["in_channels"], ch, 3, 1, res)]

    def res_block(cin, cout, r):
        layers.append(("res 3x3", cin, cout, 3, 1, r))
        layers.append(("res 3x3", cout, cout, 3, 1, r))
        if cin != cout:
            layers.append(("res skip 1x1", cin, cout, 1, 1, r))

    def attn_block(c, r):
        layers.append(("attn qkv 1x1", c, 3 * c, 1, 1, r))
        layers.append(("attn proj 1x1", c, c, 1, 1, r))

    skips, cur = [ch], ch
    n_levels = len(cfg["ch_mult"])
    for lvl, mult in enumerate(cfg["ch_mult"]):                      # down path
        for _ in range(cfg["num_res_blocks"]):
            res_block(cur, ch * mult, res)
            cur = ch * mult
            if res in cfg["attn_resolutions"]:
                attn_block(cur, res)
            skips.append(cur)
        if lvl != n_levels - 1:
            layers.append(("down 3x3 s2", cur, cur, 3, 2, res))
            skips.append(cur)
            res //= 2
    res_block(cur, cur, res)                                          # middle
    attn_block(cur, res)
    res_block(cur, cur, res)
    for lvl, mult in reversed(list(enumerate(cfg["ch_mult"]))):      # up path
        for _ in range(cfg["num_res_blocks"] + 1):
            res_block(cur + skips.pop(), ch * mult, res)
            cur = ch * mult
            if res in cfg["attn_resolutions"]:
                attn_block(cur, res)
        if lvl != 0:
            res *= 2
            layers.append(("up 3x3", cur, cur, 3, 1, res))
    layers.append(("conv_out", cur, cfg["in_channels"], 3, 1, res))
    return layers


def torch_conv_layers(name, batch):
    """The same list, read from the PyTorch twin with forward hooks (an independent check)."""
    import torch
    from torch_twin import twin_of
    model, seen = twin_of(unet_from_preset(name)), []

    def hook(mod, inp, out):
        k, s = mod.kernel_size[0], mod.stride[0]
        seen.append((mod.in_channels, mod.out_channels, k, s, inp[0].shape[-1]))
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(common.input_shape(name, batch)), torch.ones(batch, dtype=torch.long))
    return seen


def distinct_shapes(only):
    """{(B, Cin, Cout, k, stride, H): (roles, count)} over the tiny b32 and small b16 U-Nets."""
    shapes = {}
    for name, batch in (("tiny", 32), ("small", 16)):
        if only and name not in only:
            continue
        for role, cin, cout, k, s, h in conv_layers(PRESETS[name]):
            key = (batch, cin, cout, k, s, h)
            roles, n = shapes.get(key, ([], 0))
            if f"{name} {role}" not in roles:
                roles.append(f"{name} {role}")
            shapes[key] = (roles, n + 1)
    return shapes


def conv_flops(key):
    """Forward + backward (dX, dW) multiply-adds x 2, as torch's flop counter counts them."""
    B, cin, cout, k, s, h = key
    ho = (h + 2 * (k // 2) - k) // s + 1
    return 3 * 2 * B * ho * ho * cout * cin * k * k


def minidiff_step(key, rng):
    B, cin, cout, k, s, h = key
    x = Tensor(rng.standard_normal((B, cin, h, h), dtype=np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((cout, cin, k, k), dtype=np.float32) * 0.1,
               requires_grad=True)
    b = Tensor(rng.standard_normal(cout, dtype=np.float32), requires_grad=True)
    g = Tensor(rng.standard_normal(conv2d(x, w, b, s, k // 2).shape, dtype=np.float32))

    def step():
        x.grad = w.grad = b.grad = None
        (conv2d(x, w, b, s, k // 2) * g).sum().backward()
    return step


def torch_step(key, rng):
    import torch
    import torch.nn.functional as F
    B, cin, cout, k, s, h = key
    x = torch.tensor(rng.standard_normal((B, cin, h, h), dtype=np.float32), requires_grad=True)
    w = torch.tensor(rng.standard_normal((cout, cin, k, k), dtype=np.float32) * 0.1,
                     requires_grad=True)
    b = torch.tensor(rng.standard_normal(cout, dtype=np.float32), requires_grad=True)
    with torch.no_grad():
        g = torch.tensor(rng.standard_normal(F.conv2d(x, w, b, s, k // 2).shape,
                                             dtype=np.float32))

    def step():
        x.grad = w.grad = b.grad = None
        (F.conv2d(x, w, b, s, k // 2) * g).sum().backward()
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", choices=["tiny", "small"], default=None)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=0.15)
    args = ap.parse_args()
    torch = None
    if importlib.util.find_spec("torch"):
        import torch
    else:
        print("torch is not installed: timing minidiff only (see the docstring for the "
              "set-up of the .bench venv)")

    shapes = distinct_shapes(args.only)
    if torch is not None:                       # our list of shapes must be the model's
        for name, batch in (("tiny", 32), ("small", 16)):
            if args.only and name not in args.only:
                continue
            ours = sorted((c, o, k, s, h) for _, c, o, k, s, h in conv_layers(PRESETS[name]))
            if ours != sorted(torch_conv_layers(name, batch)):
                sys.exit(f"bench_conv: conv layers of {name} differ from torch_twin.py's")

    common.set_threads(args.threads)
    for info in threadpool_info():
        print(f"{info['user_api']}: {info.get('internal_api')} {info.get('version')} "
              f"{info.get('architecture', '')} (threads are set to {args.threads})")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            print(f"note: {var}={os.environ[var]} is set; it may select a slower BLAS kernel")

    rng = np.random.default_rng(0)
    work = {}
    for key in shapes:
        work[("minidiff", key)] = minidiff_step(key, rng)
        if torch is not None:
            work[("torch", key)] = torch_step(key, rng)
    named = {f"{lib} {key}": fn for (lib, key), fn in work.items()}
    stats = common.run_rounds(named, rounds=args.rounds, iters=args.iters,
                              min_seconds=args.min_seconds)
    report(shapes, stats, torch is not None, args.threads)


def report(shapes, stats, with_torch, threads):
    print(f"\nconv2d forward + backward (dX, dW, db), float32, {threads} thread(s); "
          f"median ms over {next(iter(stats.values()))['n']}+ calls")
    head = f"{'B':>3} {'Cin':>4} {'Cout':>4} {'k':>2} {'s':>2} {'H':>3} {'n':>3} {'minidiff':>9}"
    if with_torch:
        head += f" {'torch':>8} {'ratio':>6} {'clean':>6}"
    print(head + "  GFLOP/s  layers")
    ratios, clean_ratios, tot_md, tot_t, busy, blocks = [], [], 0.0, 0.0, 0, 0
    for key, (roles, n) in sorted(shapes.items(), key=lambda kv: (kv[0][0], -kv[0][5],
                                                                 kv[0][1:5])):
        runs = [stats[f"minidiff {key}"]] + ([stats[f"torch {key}"]] if with_torch else [])
        busy += sum(st["contended"] for st in runs)
        blocks += sum(st["blocks"] for st in runs)
        md = runs[0]
        line = " ".join(f"{v:>{w}}" for v, w in zip(key, (3, 4, 4, 2, 2, 3)))
        line += f" {n:>3} {md['median'] * 1e3:9.2f}"
        if with_torch:
            t = runs[1]
            ratios.append(md["median"] / t["median"])
            tot_md += n * md["median"]
            tot_t += n * t["median"]
            clean = md["clean"] / t["clean"] if md["clean"] and t["clean"] else None
            if clean is not None:
                clean_ratios.append(clean)
            line += f" {t['median'] * 1e3:8.2f} {ratios[-1]:6.2f} "
            line += f"{clean:6.2f}" if clean is not None else f"{'-':>6}"
        line += f"  {conv_flops(key) / md['median'] / 1e9:7.0f}  {', '.join(roles)}"
        print(line)
    if with_torch:
        print(f"\nmedian ratio minidiff/torch over {len(ratios)} shapes: "
              f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
        print(f"total-time ratio (each shape x its layer count; FLOP-weighted): "
              f"{tot_md / tot_t:.2f}  ({tot_md * 1e3:.1f} ms vs {tot_t * 1e3:.1f} ms)")
        if clean_ratios:
            print(f"median ratio over uncontended blocks only ('clean', "
                  f"{len(clean_ratios)} shapes): {statistics.median(clean_ratios):.2f}")
    if busy:
        print(f"warning: {busy} of {blocks} timed blocks ran while other processes kept a "
              f"core busy; the 'clean' column leaves them out")


if __name__ == "__main__":
    main()
