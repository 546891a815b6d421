"""The timed steps of common.jobs(), in minidiff and in its PyTorch twin.

A training step (Ho et al. 2020, Algorithm 1): t and ε drawn, x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε
(Ho et al. 2020, Eq. 4), the MSE of the network's ε̂ to ε (Ho et al. 2020, Eq. 14), backward,
an Adam step (lr 2e-4). A sampling step: the network at the paper's t = 500 and the ancestral
update (Ho et al. 2020, Algorithm 2, line 4), without clipping. Each side runs its own code; the
PyTorch side is imported only when a PyTorch workload is asked for.
"""
import numpy as np

import common
import minidiff
from minidiff import no_grad
from minidiff.diffusion import GaussianDiffusion, linear_beta_schedule
from minidiff.optim import Adam


def schedule():
    """(β, ᾱ) of the linear schedule, float64 (T,)."""
    betas = linear_beta_schedule(common.T, common.BETA_START, common.BETA_END)
    return betas, np.cumprod(1.0 - betas)


# ---------------------------------------------------------------------------- minidiff
def minidiff_step(kind, name, batch):
    """One minidiff step of `kind` ("train" or "sample") for a config and batch."""
    d = GaussianDiffusion(schedule()[0])
    model, rng = common.minidiff_model(name), minidiff.backend.rng()
    if model.num_parameters() != common.PARAMS[name]:
        raise SystemExit(f"minidiff {name}: {model.num_parameters():,} parameters, "
                         f"the benchmarks' {name} has {common.PARAMS[name]:,}")
    shape = common.input_shape(name, batch)
    if kind == "train":
        opt, x0 = Adam(model.parameters(), lr=common.LR), rng.random(shape, np.float32) * 2 - 1

        def step():
            loss = d.training_losses(model, x0).mean()         # Ho et al. 2020, Algorithm 1
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step
    x, t = rng.standard_normal(shape, dtype=np.float32), np.full(batch, common.SAMPLE_T)

    def step():
        with no_grad():
            return d.p_sample(model, x, t, clip_denoised=False)
    return step


def minidiff_workloads(only=None):
    """{key: step} for every job of common.jobs(only)."""
    return {key: minidiff_step(kind, name, batch) for key, kind, name, batch in common.jobs(only)}


# ---------------------------------------------------------------------------- PyTorch
def torch_step(kind, name, batch):
    """(step, twin model): one step of the PyTorch twin, on torch's current default device."""
    import torch
    import torch.nn.functional as F
    import torch_twin
    model = torch_twin.twin_of(common.minidiff_model(name))
    betas, abar = (torch.tensor(a, dtype=torch.float32) for a in schedule())
    shape = common.input_shape(name, batch)
    bcast = (-1,) + (1,) * (len(shape) - 1)                    # (B,) -> (B, 1, ...)
    if kind == "train":
        opt, x0 = torch.optim.Adam(model.parameters(), lr=common.LR), torch.rand(shape) * 2 - 1

        def step():
            t = torch.randint(0, common.T, (batch,))
            eps = torch.randn_like(x0)
            a = abar[t].view(bcast)
            loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step, model
    x, t, i = torch.randn(shape), torch.full((batch,), common.SAMPLE_T), common.SAMPLE_T
    c1, c2 = float(1 / (1 - betas[i]).sqrt()), float(betas[i] / (1 - abar[i]).sqrt())
    sigma = float(betas[i].sqrt())

    @torch.no_grad()
    def step():                                     # Ho et al. 2020, Algorithm 2, line 4
        return c1 * (x - c2 * model(x, t)) + sigma * torch.randn_like(x)
    return step, model


def count_flops(step):
    """torch.utils.flop_counter's count for one call: conv, matmul, bmm; 2 per multiply-add."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def torch_workloads(only=None):
    """{key: step} of the PyTorch twin, each checked against the reference sizes first."""
    import torch_twin
    out = {}
    for key, kind, name, batch in common.jobs(only):
        step, model = torch_step(kind, name, batch)
        params, flops = torch_twin.n_params(model), count_flops(step)
        if (params, flops) != (common.PARAMS[name], common.FLOPS[key]):
            raise SystemExit(f"torch {key}: {params:,} parameters and {flops:,} FLOPs, "
                             f"the reference has {common.PARAMS[name]:,} and "
                             f"{common.FLOPS[key]:,}")
        out[key] = step
    return out


def torch_gpu_ms(kind, name, batch, repeats):
    """Median milliseconds of the twin's step on the GPU (CUDA events), after two warm-up calls.
    `minidiff gpu-check` calls this for its PyTorch column."""
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError(f"PyTorch {torch.__version__} sees no CUDA device")
    with torch.device("cuda"):                           # every tensor the step makes
        step, _ = torch_step(kind, name, batch)
        for _ in range(2):
            step()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeats):
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return float(np.median(times))
