"""Time every fused CUDA kernel of minidiff against the unfused CuPy sequence it replaces,
then one U-Net training step and one sampling step with the kernels and without.

    pip install -e '.[cuda]'
    python examples/gpu_benchmark.py             # needs an NVIDIA GPU
    python examples/gpu_benchmark.py --size 8388608 --repeats 50 --preset cifar10 --batch 128

For each kernel it prints the time of the fused kernel and of the unfused sequence (the same
math as minidiff's NumPy code, run by CuPy one array op at a time), the speed-up, and the
bytes each moves per element (counted from the code, see the README's GPU section): on a
memory-bound GPU the speed-up should approach the ratio of the bytes.

The U-Net steps run minidiff itself on the device "cuda": Ho et al. 2020's Algorithm 1 (q_sample,
forward, loss, backward) + AdamW + EMA, and one ancestral step of Ho et al. 2020's Alg. 2.
"unfused" is the same
code inside `cuda.unfused()`, where every op runs its CuPy array code and no kernel is used.
"""
import argparse
import contextlib
import sys

import numpy as np


def timer(cp, fn, repeats):
    """Median milliseconds of fn() on the GPU, after two warm-up calls."""
    for _ in range(2):
        fn()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


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


def kernel_rows(cp, cuda, size):
    """(rows, n): a row (name, fused callable, unfused callable, fused bytes/elem, unfused
    bytes/elem) for every fused kernel, each on arrays of n (about `size`) elements."""
    B, T = 64, 1000
    D = max(1, size // B)
    rng = cp.random.default_rng(0)
    x0, eps, x_t, z = (rng.standard_normal((B, D), dtype=cp.float32) for _ in range(4))
    t = rng.integers(0, T, size=B).astype(cp.int32)
    betas = np.linspace(1e-4, 0.02, T)                         # Ho et al. 2020, Sec. 4
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    buf = {k: cp.asarray(v, dtype=cp.float32) for k, v in {
        "sqrt_abar": np.sqrt(abar), "sqrt_1m_abar": np.sqrt(1 - abar), "abar": abar,
        "sqrt_recip_abar": np.sqrt(1 / abar), "sqrt_recipm1_abar": np.sqrt(1 / abar - 1),
        "coef1": betas * np.sqrt(abar_prev) / (1 - abar),
        "coef2": (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar),
        "sigma": np.sqrt(betas)}.items()}

    def at(name, tt=t):
        return buf[name][tt].reshape(B, 1)

    rows = []   # name, fused callable, unfused callable, fused B/elem, unfused B/elem

    rows.append(("q_sample",
                 lambda: cuda.q_sample(x0, eps, t, buf["sqrt_abar"], buf["sqrt_1m_abar"]),
                 lambda: at("sqrt_abar") * x0 + at("sqrt_1m_abar") * eps, 12, 28))
    rows.append(("posterior_mean",
                 lambda: cuda.posterior_mean(x0, x_t, t, buf["coef1"], buf["coef2"]),
                 lambda: at("coef1") * x0 + at("coef2") * x_t, 12, 28))

    def reverse_unfused():
        x0h = cp.clip(x0, -1, 1)
        mean = at("coef1") * x0h + at("coef2") * x_t
        return mean + (at("sigma") * (t > 0).reshape(B, 1)) * z

    rows.append(("reverse_step (from x0^, clip)",
                 lambda: cuda.reverse_step(x0, x_t, t, z, clip=True,
                                           sigma=buf["sigma"][t],      # sigma_t per sample
                                           coef1=buf["coef1"], coef2=buf["coef2"]),
                 reverse_unfused, 16, 56))

    t_prev = cp.maximum(t - 20, -1).astype(cp.int32)

    def ddim_unfused(eta=1.0):
        a, ap = at("abar"), cp.where(t_prev >= 0, buf["abar"][t_prev], 1.0).reshape(B, 1)
        x0h = cp.clip((x_t - cp.sqrt(1 - a) * eps) / cp.sqrt(a), -1, 1)
        e = (x_t - cp.sqrt(a) * x0h) / cp.sqrt(1 - a)
        s = eta * cp.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
        return cp.sqrt(ap) * x0h + cp.sqrt(cp.maximum(1 - ap - s * s, 0)) * e + s * z

    rows.append(("ddim_step (eps, clip, eta=1)",
                 lambda: cuda.ddim_step(eps, x_t, t, t_prev, z, buf["abar"], eta=1.0),
                 ddim_unfused, 20, 112))

    n = B * D
    p, g, m, v, shadow = (rng.standard_normal(n, dtype=cp.float32) for _ in range(5))
    v = cp.abs(v)
    hp = dict(t=100, lr=2e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)

    def adamw_unfused(p=p.copy(), m=m.copy(), v=v.copy()):
        from minidiff import optim
        with cuda.unfused():                 # optim's CuPy array code, not the kernel
            optim.adamw_update(p, g, m, v, hp["t"], hp["lr"], hp["beta1"], hp["beta2"],
                               hp["eps"], hp["weight_decay"])

    rows.append(("adamw_update",
                 lambda: cuda.adamw_update(p, g, m, v, hp["t"], hp["lr"], hp["beta1"],
                                           hp["beta2"], hp["eps"], hp["weight_decay"]),
                 adamw_unfused, 28, 148))

    def ema_unfused(s=shadow.copy()):
        s -= (1 - 0.9999) * (s - p)

    rows.append(("ema_update", lambda: cuda.ema_update(shadow, p, 0.9999), ema_unfused,
                 12, 32))

    C, G = 128, 32
    HW = max(1, n // (B * C))
    xg = rng.standard_normal((B, C, HW), dtype=cp.float32)
    gamma, beta = cp.ones(C, cp.float32), cp.zeros(C, cp.float32)

    def gn_unfused():
        xr = xg.reshape(B, G, -1)
        mu = xr.mean(axis=2, keepdims=True)
        xc = xr - mu
        rstd = 1 / cp.sqrt((xc * xc).mean(axis=2, keepdims=True) + 1e-5)
        return (xc * rstd).reshape(xg.shape) * gamma.reshape(1, C, 1) + beta.reshape(1, C, 1)

    rows.append(("group_norm_forward",
                 lambda: cuda.group_norm_forward(xg, gamma, beta, G),
                 gn_unfused, "8-16", 48))

    cols = 256
    xs = rng.standard_normal((max(1, n // cols), cols), dtype=cp.float32)

    def softmax_unfused():
        e = cp.exp(xs - xs.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    rows.append(("softmax (256 columns)", lambda: cuda.softmax(xs), softmax_unfused, "8-16", 32))

    xc_ = rng.standard_normal((16, 64, 32, 32), dtype=cp.float32)
    wc = rng.standard_normal((64, 64, 3, 3), dtype=cp.float32)
    rows.append(("conv2d 3x3 64->64, 16x32x32 (tiled vs naive)",
                 lambda: cuda.conv2d_forward(xc_, wc, None, 1, 1),
                 lambda: cuda.conv2d_forward(xc_, wc, None, 1, 1, naive=True), "-", "-"))

    return rows, n


def unet_steps(cp, preset, batch):
    """(model, {name: step}): one training step (Ho et al. 2020, Alg. 1 + AdamW + EMA) and one
    sampling step (Ho et al. 2020, Alg. 2) of a U-Net preset, on the current device."""
    from minidiff.diffusion import GaussianDiffusion, linear_beta_schedule
    from minidiff.models.unet import unet_from_preset
    from minidiff.optim import EMA, AdamW

    model = unet_from_preset(preset)
    C, S = model.in_channels, model.image_size
    d = GaussianDiffusion(linear_beta_schedule(1000))             # Ho et al. 2020, Sec. 4
    opt = AdamW(model.parameters())
    ema = EMA(model)
    rng = cp.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (batch, C, S, S)).astype(cp.float32)          # data in [-1, 1]
    x_t = rng.standard_normal((batch, C, S, S), dtype=cp.float32)

    def train_step():                                      # Ho et al. 2020, Algorithm 1
        opt.zero_grad()
        loss = d.training_losses(model, x0).mean()
        loss.backward()
        opt.step()
        ema.update()

    def sample_step():                                     # Ho et al. 2020, Algorithm 2
        d.p_sample(model, x_t, 500)

    return model, {"train (Ho et al. 2020, Alg. 1 + AdamW + EMA)": train_step,
                   "sample (one step of Ho et al. 2020, Alg. 2)": sample_step}


def unet_step_times(cp, cuda, preset, batch, repeats, unfused=True):
    """{step name: {"fused": ms, "unfused": ms}}: median times with the kernels and, if
    unfused, inside cuda.unfused() (every op its CuPy array code)."""
    _, steps = unet_steps(cp, preset, batch)
    modes = (("fused", contextlib.nullcontext),) + ((("unfused", cuda.unfused),) if unfused
                                                     else ())
    times = {}
    for name, step in steps.items():
        times[name] = {}
        for label, mode in modes:
            with mode():
                times[name][label] = timer(cp, step, repeats)
    return times


if __name__ == "__main__":
    sys.exit(main())
