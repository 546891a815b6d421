"""DDPM (Ho et al. 2020) in one flat file: the schedule, ε_θ, Algorithms 1 and 2, a swiss roll.

    python examples/ddpm_minimal.py                   # about 50 s on one CPU core
    python examples/ddpm_minimal.py --steps 3000 --timesteps 50 --seed 1 --out roll.png

minidiff.diffusion and minidiff.train do the same with checks, EMA and checkpoints. Small
matrices multiply fastest on one BLAS thread, so main() caps BLAS at one with threadpoolctl
(outside Python, OPENBLAS_NUM_THREADS=1 does the same).
"""
import argparse
import time

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

import minidiff
from minidiff import nn, optim
from minidiff.data import make_swiss_roll
from minidiff.metrics import noise_floor, sliced_wasserstein

BATCH, LR, N = 256, 2e-3, 2000                        # batch size, learning rate, samples drawn


def schedule(T):
    """(T,) float64 arrays. The paper counts t = 1 … T, arrays count from 0: index t holds
    the paper's t + 1 (betas[0] is β_1). Every t in the code below is such a 0-based index."""
    scale = 1000 / T                    # Ho et al. 2020, §4: 1e-4 → 0.02 at T = 1000; ×1000/T
    betas = np.linspace(1e-4 * scale, 0.02 * scale, T)  # keeps ᾱ_T ≈ 0 at small T
    alphas = 1 - betas                                  # α_t := 1 − β_t (Ho et al. 2020, Eq. 4)
    abar = np.cumprod(alphas)                           # ᾱ_t := ∏ α_s (Ho et al. 2020, Eq. 4)
    abar_prev = np.append(1.0, abar[:-1])               # ᾱ_{t−1}, with ᾱ_0 = 1
    c0 = np.sqrt(abar_prev) * betas / (1 - abar)        # μ̃_t(x_t, x_0) = c0 x_0 + ct x_t:
    ct = np.sqrt(alphas) * (1 - abar_prev) / (1 - abar)  # Ho et al. 2020, Eq. 7
    return betas, alphas, abar, c0, ct


def fourier(v, freqs):
    """(B, d) values and (k,) frequencies -> (B, 2·d·k) features [sin(v·f), cos(v·f)]."""
    vf = (v[:, :, None] * freqs).reshape(len(v), -1)                # (B, d·k)
    return np.concatenate([np.sin(vf), np.cos(vf)], axis=1)


T_FREQS = np.exp(-np.log(10000.0) * np.arange(16) / 15)  # t's sinusoids (Ho et al. 2020, App. B)
X_FREQS = np.pi * 2.0 ** np.arange(4)  # x_t's too (not the paper's): a small MLP draws thin curves


class Denoiser(nn.Module):
    """ε_θ(x_t, t): 50 features -> 3 × (Linear, SiLU) -> Linear -> ε̂, the shape of x_t."""

    def __init__(self, hidden=128):
        super().__init__()
        self.layers = [nn.Linear(50, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                       nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2)]

    def forward(self, x, t):                            # x: (B, 2) array, t: (B,) int array
        h = np.concatenate([x, fourier(x, X_FREQS), fourier(t[:, None], T_FREQS)], axis=1)
        h = minidiff.Tensor(h.astype(np.float32))       # (B, 2 + 16 + 32), a constant
        for layer in self.layers:
            h = layer(h)                                # (B, hidden) … and last (B, 2)
        return h


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10000, help="training steps (default: 10000)")
    p.add_argument("--timesteps", type=int, default=100, help="T, at least 21 (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--out", default="ddpm_minimal.png", help="picture (default: %(default)s)")
    args = p.parse_args(argv)
    T = args.timesteps
    if T < 21 or args.steps < 1:
        p.error("need --timesteps >= 21 (so that β_T = 20/T < 1) and --steps >= 1")
    betas, alphas, abar, c0, ct = schedule(T)
    rng = np.random.default_rng(args.seed)              # draws x_0, t, ε, z
    minidiff.manual_seed(args.seed)                     # draws the initial weights
    model = Denoiser()
    opt = optim.Adam(model.parameters(), lr=LR)
    blas, start = threadpool_limits(limits=1, user_api="blas"), time.perf_counter()

    # Ho et al. 2020, Algorithm 1  Training
    #   1: repeat
    #   2:   x_0 ~ q(x_0)
    #   3:   t ~ Uniform({1, …, T})
    #   4:   ε ~ N(0, I)
    #   5:   Take gradient descent step on ∇_θ ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²
    #   6: until converged
    for step in range(args.steps):
        x0 = make_swiss_roll(BATCH, rng)                # (B, 2) a fresh batch of data
        t = rng.integers(0, T, BATCH)                   # (B,) uniform in {0, …, T−1}
        eps = rng.standard_normal((BATCH, 2))           # (B, 2)
        a = abar[t][:, None]                            # (B, 1) ᾱ_t of each row
        xt = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps     # (B, 2) Ho et al. 2020, Eq. 4
        err = minidiff.Tensor(eps.astype(np.float32)) - model(xt, t)  # (B, 2) ε − ε_θ
        loss = (err ** 2).mean()                        # Ho et al. 2020, Eq. 14: L_simple
        opt.zero_grad()                                 # p.grad = None for every parameter
        loss.backward()                                 # p.grad = ∇_θ loss
        opt.step()                                      # Adam, as Ho et al.
        # A cosine decay of the step size to 0 does here what Ho et al.'s EMA of the weights does.
        opt.lr = LR * 0.5 * (1 + np.cos(np.pi * (step + 1) / args.steps))
        if step % 1000 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}", flush=True)
    trained = time.perf_counter()

    # Ho et al. 2020, Algorithm 2  Sampling
    #   1: x_T ~ N(0, I)
    #   2: for t = T, …, 1 do
    #   3:   z ~ N(0, I) if t > 1, else z = 0
    #   4:   x_{t−1} = 1/√α_t (x_t − (1 − α_t)/√(1 − ᾱ_t) ε_θ(x_t, t)) + σ_t z
    #   5: end for
    #   6: return x_0
    # with σ_t² = β_t (Ho et al. 2020, §3.2; the posterior's β̃_t of Eq. 7 is the other one).
    x = rng.standard_normal((N, 2))                     # (N, 2) x_T
    with minidiff.no_grad():                            # no graph: nothing to differentiate
        for t in reversed(range(T)):                    # t = T−1, …, 0
            z = rng.standard_normal((N, 2)) if t > 0 else 0.0   # t > 0 is the paper's t > 1
            e = model(x, np.full(N, t)).numpy()         # (N, 2) ε_θ(x_t, t)
            # Ho et al. 2020: the mean by Eq. 11; x̂_0 by Eq. 15; Eq. 11 is Eq. 7's μ̃ at x̂_0
            mean = (x - betas[t] / np.sqrt(1 - abar[t]) * e) / np.sqrt(alphas[t])
            x0_hat = (x - np.sqrt(1 - abar[t]) * e) / np.sqrt(abar[t])
            assert np.allclose(mean, c0[t] * x0_hat + ct[t] * x)
            x = mean + np.sqrt(betas[t]) * z            # (N, 2) x_{t−1}
    sampled = time.perf_counter()
    blas.restore_original_limits()

    # How good: sliced Wasserstein-1 to fresh data, beside the floor (another draw of the data,
    # the best N points can do) and pure noise N(0, I) (where the sampler starts).
    data = make_swiss_roll(N, rng)                      # (N, 2) fresh data
    sw = sliced_wasserstein(x, data)
    sw_floor = noise_floor(lambda n: make_swiss_roll(n, rng), N, sliced_wasserstein)
    sw_noise = sliced_wasserstein(rng.standard_normal((N, 2)), data)
    print(f"trained {args.steps} steps in {trained - start:.1f} s, drew {N} samples "
          f"in {sampled - trained:.1f} s (T = {T})")
    print(f"sliced W1 to fresh data: samples {sw:.4f}, another draw of the data (the floor) "
          f"{sw_floor:.4f}, N(0, I) {sw_noise:.4f}")

    plt.switch_backend("agg")                           # draw into a file, no window
    plt.figure(figsize=(5, 5))
    plt.scatter(*data.T, s=2, c="lightgray", label="data")
    plt.scatter(*x.T, s=2, c="tab:blue", label="samples")
    plt.gca().set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal",
                  title=f"DDPM, T = {T}: sliced W1 {sw:.3f}"), plt.legend(loc="upper right")
    plt.savefig(args.out, dpi=100), plt.close()
    print(f"picture: {args.out}")
    return dict(samples=x, sw=sw, sw_floor=sw_floor, sw_noise=sw_noise, loss=loss.item())


if __name__ == "__main__":
    main()
