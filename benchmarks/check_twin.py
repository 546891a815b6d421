"""Does the PyTorch twin compute minidiff's function, at the benchmarks' sizes?

    .bench/bin/python benchmarks/check_twin.py                 # tiny, small, mlp2d
    .bench/bin/python benchmarks/check_twin.py --only tiny cifar10

For each network: minidiff's model in float64 with every parameter drawn at random (an untrained
U-Net ends in zero convs, and zero equals zero whatever the layers), its weights copied into the
twin, then both outputs on one random x and t, and the gradients of sum(output * g) for every
parameter. Both sides compute in float64, so they agree to float64 rounding: the check fails
above 1e-9 of the largest magnitude. Then the twin's parameter counts and every workload's FLOPs
against the reference sizes of common.py. Exit status 1 when anything differs.
"""
import argparse
import sys

import numpy as np
import torch

import common
import torch_twin
import workloads
from minidiff import Tensor
from minidiff.models import MLPDenoiser
from minidiff.models.unet import unet_from_preset

RTOL = 1e-9


def randomized(name, rng):
    """minidiff's float64 network for `name`, every parameter N(0, 1/fan_in) (norms 1 + N/10)."""
    if name == "mlp2d":
        model = MLPDenoiser(**common.MLP2D, dtype=np.float64)
    else:
        model = unet_from_preset(name, dtype=np.float64)
    for _, p in model.named_parameters():
        fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else 100
        p.data[...] = rng.standard_normal(p.shape) / np.sqrt(fan_in)
    return model


def compare(name, batch=2, seed=0):
    """((max |Δ|, max |value|) of the outputs, the same of the parameter gradients)."""
    rng = np.random.default_rng(seed)
    model = randomized(name, rng).eval()                          # dropout off (cifar10: 0.1)
    twin = torch_twin.load_minidiff(torch_twin.twin_of(model), model).eval()
    shape = common.input_shape(name, batch) if name != "cifar10" else (batch, 3, 32, 32)
    x, t = rng.standard_normal(shape), rng.integers(0, common.T, batch)
    g = rng.standard_normal(shape)                                 # d loss / d output
    y = model(Tensor(x), t)
    (y * Tensor(g)).sum().backward()
    y_twin = twin(torch.tensor(x), torch.tensor(t))
    (y_twin * torch.tensor(g)).sum().backward()
    out = (np.abs(y.numpy() - y_twin.detach().numpy()).max(), np.abs(y.numpy()).max())
    grads = dict(twin.named_parameters())
    worst, scale = 0.0, 0.0
    for pname, p in model.named_parameters():
        worst = max(worst, np.abs(p.grad.numpy() - grads[pname].grad.numpy()).max())
        scale = max(scale, np.abs(p.grad.numpy()).max())
    return out, (worst, scale)


def check_sizes(only):
    """Parameter counts and FLOPs of the twin's workloads against common.py's; True if equal."""
    ok = True
    for key, kind, name, batch in common.jobs(only):
        step, model = workloads.torch_step(kind, name, batch)
        params, flops = torch_twin.n_params(model), workloads.count_flops(step)
        same = (params, flops) == (common.PARAMS[name], common.FLOPS[key])
        ok &= same
        print(f"{key:20s} parameters {params:>10,}  FLOPs {flops:>16,}  "
              f"{'= the reference' if same else 'DIFFERS from the reference'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=["tiny", "small", "mlp2d"],
                    choices=["tiny", "small", "cifar10", "mlp2d"])
    args = ap.parse_args()
    torch.manual_seed(0)
    ok = True
    for name in args.only:
        (dy, y), (dg, g) = compare(name)
        good = dy <= RTOL * y and dg <= RTOL * g
        ok &= good
        print(f"{name:8s} float64: outputs max |Δ| {dy:.1e} (max |y| {y:.2g}), parameter "
              f"gradients max |Δ| {dg:.1e} (max {g:.2g}) {'ok' if good else 'DIFFER'}")
    sizes = [n for n in args.only if n != "cifar10"]          # cifar10 is no workload
    ok &= check_sizes(sizes) if sizes else True
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
