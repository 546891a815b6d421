"""The GPU's speed: every fused CUDA kernel against the unfused CuPy sequence it replaces, conv2d,
whole U-Net steps with the kernels and without, and the same steps in PyTorch when it is there.

`minidiff gpu-check` (gpucheck.py) reports these; benchmarks/gpu_benchmark.py prints them. The
U-Net steps run minidiff itself on the device "cuda": Ho et al. 2020's Algorithm 1 (q_sample,
forward, loss, backward) + AdamW + EMA, and one ancestral step of Ho et al. 2020's Alg. 2;
"unfused" is the same code inside `cuda.unfused()`, where every op runs its CuPy array code.
CuPy arrives as the argument `cp`: importing this module needs no GPU.
"""
import contextlib
import importlib
import importlib.util
import os
import sys

import numpy as np

from . import backend, optim
from .diffusion import GaussianDiffusion, linear_beta_schedule
from .models.unet import unet_from_preset
from .optim import EMA, AdamW
from .profiler import profile

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


# ------------------------------------------------------------------------------ the check's
def kernel_speed(cp, cuda, copy_GBps, size, repeats):
    """Each fused kernel against its unfused CuPy sequence."""
    rows, n = kernel_rows(cp, cuda, size)
    out = []
    for name, fused, unfused, bf, bu in rows:
        tf, tu = timer(cp, fused, repeats), timer(cp, unfused, repeats)
        row = {"kernel": name, "fused_ms": tf, "unfused_ms": tu, "speedup": tu / tf,
               "bytes_per_elem_fused": bf, "bytes_per_elem_unfused": bu}
        if isinstance(bf, (int, float)):
            row["fused_GBps"] = bf * n / tf / 1e6
            row["share_of_copy"] = row["fused_GBps"] / copy_GBps
        out.append(row)
    return out


CONV_SHAPES = [  # (batch, Cin, H, Cout, k, stride): the small U-Net's kinds of conv at batch 16
    (16, 3, 32, 64, 3, 1), (16, 64, 32, 64, 3, 1), (16, 64, 32, 64, 3, 2),
    (16, 128, 16, 128, 3, 1), (16, 128, 8, 128, 3, 1), (16, 128, 16, 64, 1, 1)]


def conv_speed(cp, cuda, repeats):
    """conv2d forward and both backwards: ms and TFLOP/s (2 flops a multiply-add)."""
    rng = cp.random.default_rng(0)
    out = []
    for B, C, H, K, k, s in CONV_SHAPES:
        pad = k // 2
        x = rng.standard_normal((B, C, H, H), dtype=cp.float32)
        w = rng.standard_normal((K, C, k, k), dtype=cp.float32)
        y = cuda.conv2d_forward(x, w, None, s, pad)
        dy = cp.ones_like(y)
        flops = 2 * y.size * C * k * k
        times = {"forward": timer(cp, lambda: cuda.conv2d_forward(x, w, None, s, pad), repeats),
                 "backward_data": timer(cp, lambda: cuda.conv2d_backward_data(
                     dy, w, x.shape, s, pad), repeats),
                 "backward_weight": timer(cp, lambda: cuda.conv2d_backward_weight(
                     dy, x, w.shape, s, pad), repeats)}
        out.append({"shape": f"{B}x{C}x{H}x{H} -> {K}, {k}x{k}/{s}",
                    **{f"{k_}_ms": v for k_, v in times.items()},
                    **{f"{k_}_TFLOPs": flops / v / 1e9 for k_, v in times.items()}})
    return out


def step_speed(cp, cuda, repeats):
    """Whole U-Net steps: ms, samples/s, kernel launches, and the host-noise share."""
    out, profiles = [], {}
    for preset, batch in (("tiny", 64), ("small", 32), ("cifar10", 128)):
        model, steps = unet_steps(cp, preset, batch)
        for name, step in steps.items():
            launches = []
            real = cuda._core._launch
            cuda._core._launch = lambda *a, **k: (launches.append(a[1]), real(*a, **k))[1]
            try:
                step()
            finally:
                cuda._core._launch = real
            ms = timer(cp, step, repeats)
            with profile() as prof:                  # where the time goes, one step, synced
                step()
            profiles[f"{preset} b{batch} {name.split()[0]}"] = prof.table(top=10)
            out.append({"preset": preset, "batch": batch, "step": name.split()[0], "ms": ms,
                        "samples_per_s": batch / ms * 1e3, "kernel_launches": len(launches),
                        "parameters": model.num_parameters()})
        C, S = model.in_channels, model.image_size
        noise_ms = timer(cp, lambda: backend.rng().standard_normal((batch, C, S, S),
                                                                   dtype=np.float32), repeats)
        out[-1]["host_noise_ms"] = noise_ms
        out[-1]["host_noise_share"] = noise_ms / out[-1]["ms"]
    return out, profiles


def torch_workloads():
    """(benchmarks/workloads.py as a module, None), or (None, why the PyTorch column is skipped):
    PyTorch is a benchmark-only tool, which the library never imports itself, and benchmarks/
    comes with a clone, not with the package."""
    if importlib.util.find_spec("torch") is None:
        return None, "PyTorch is not installed (pip install -e '.[bench]' in a clone)"
    folder = benchmarks_folder()
    if folder is None:
        return None, "no benchmarks/ folder (the PyTorch twin) beside the package or here"
    sys.path.insert(0, folder)
    return importlib.import_module("workloads"), None


def benchmarks_folder():
    """A clone's benchmarks/ folder: beside the package, or in the working folder; or None."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder in (os.path.join(package_root, "benchmarks"), os.path.abspath("benchmarks")):
        if os.path.isfile(os.path.join(folder, "torch_twin.py")):
            return folder
    return None


def torch_speed(steps, repeats):
    """(rows, None): the tiny and small U-Net steps of `steps` in PyTorch eager on the same GPU
    (the benchmarks' twin of minidiff's networks), as ratios to ours; or (None, why not)."""
    workloads, why = torch_workloads()
    if workloads is None:
        return None, why
    out = []
    for row in steps:
        if row["preset"] in ("tiny", "small"):
            try:
                t = workloads.torch_gpu_ms(row["step"], row["preset"], row["batch"], repeats)
            except RuntimeError as e:                  # PyTorch sees no CUDA device
                return None, str(e)
            out.append({"preset": row["preset"], "batch": row["batch"], "step": row["step"],
                        "torch_ms": t, "minidiff_ms": row["ms"], "ratio": row["ms"] / t})
    return out, None
