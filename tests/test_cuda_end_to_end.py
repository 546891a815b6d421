"""One training step and one sampling step of a small U-Net: the cuda path equals the NumPy path.

The cuda path is minidiff with the device set to "cuda": group norm, softmax, conv2d, q_sample,
the posterior mean, both reverse steps, AdamW and the EMA run as kernels/*.cu through
minidiff.cuda, while matmuls and elementwise ops stay xp ops. Here the kernels run on the g++
emulator with NumPy standing in for CuPy (`cuda.emulate`); marked `gpu`, on a real device.
The NumPy path (device "cpu") is the specification, so it is the oracle.

Random draws (t, ε, z) come from the library's generator, seeded alike on both paths and drawn
by the caller, never in a kernel: the paths see the same numbers, and the test checks that both
end in the same generator state. On a GPU too the library draws with NumPy's generator on the
host (`backend.DeviceDraws`), so one seed gives the same numbers on both devices.

Tolerance. Both paths round every operation to float32 (unit roundoff u = 2^-24 ≈ 6e-8). They
differ in the order of additions: a conv kernel sums its K = Cin·kh·kw (or N·Ho·Wo) products
in tiles, group norm and softmax reduce in blocks, BLAS and NumPy's pairwise sums in their own
order; and expf may differ from NumPy's exp by an ulp. A K-term float32 sum in any order is
within K·u·Σ|terms| of the exact sum (Higham 2002, "Accuracy and Stability of Numerical
Algorithms", Eq. 3.5), but independent roundings grow like √K·u (Higham 2002, §2.8): for the
largest sum here, K = 32·3·3 = 288, that is ~1e-6 of the terms' size. The longest chain,
forward then backward through the U-Net, is ~100 such ops; independent errors add in
quadrature, √100 · 1e-6 ≈ 1e-5. So every compared array must agree within

    TOL · max|numpy array|,  TOL = 1e-4        (10x the estimate)

plus whatever tolerance an upstream array carries in through a step's own math: AdamW divides
by √v̂ (adamw_tolerance), the EMA takes 1 - decay of that, and a sampler step multiplies the
network's error by a known gain (sampler_gains). The worst-case bound, 100 · 288 · u ≈ 2e-3,
would be safe but too loose to see a slip such as Adam's L2 decay in place of AdamW's, which
moves weights by lr·λ·|p| = 1e-3 |p| (test_the_comparison_sees_adam_in_place_of_adamw).
"""
import itertools

import numpy as np
import pytest

import minidiff
from minidiff import backend, cuda
from minidiff.diffusion import GaussianDiffusion, ddim_sample_loop_progressive
from minidiff.diffusion.schedules import linear_beta_schedule
from minidiff.models.unet import UNet
from minidiff.optim import EMA, AdamW
from minidiff.autograd import no_grad
from minidiff.tensor import Tensor
from cuda_emu import Module, block_order, poisoned_numpy
from cuda_emu.testing import GPU, assert_close

UNET = dict(in_channels=1, image_size=8, base_channels=8, ch_mult=(1, 2), num_res_blocks=1,
            attn_resolutions=(4,), groups=4)                  # attention at 4x4, 16 channels
BATCH, T, SEED = 2, 1000, 0
LR, WEIGHT_DECAY, ADAM_EPS, EMA_DECAY = 1e-2, 0.1, 1e-8, 0.9  # each term of the update shows
T_ANCESTRAL = (0, T // 2)     # p_sample per sample: the last step (no noise), a middle one
DDIM_TAUS, DDIM_ETA = (100, 300), 0.5                         # one DDIM step, 300 -> 100

U = 2.0 ** -24                # float32 unit roundoff
TOL = 1e-4                    # reassociation, relative to an array's largest magnitude

_data = np.random.default_rng(SEED + 1)
X0 = _data.uniform(-1, 1, (BATCH, 1, 8, 8)).astype(np.float32)       # data in [-1, 1]
X_T = _data.standard_normal((BATCH, 1, 8, 8)).astype(np.float32)     # a sampler's state


def random_unet():
    """Ho et al.'s U-Net with every parameter random. Their zero-initialised output layers
    would make the output 0 and most gradients vanish, leaving little to compare."""
    model = UNet(**UNET)
    rng = np.random.default_rng(SEED)         # host numbers: the same weights on every path
    for name, p in model.named_parameters():
        if p.ndim > 1:                                            # weights, variance 1/fan_in
            v = rng.standard_normal(p.shape) / np.sqrt(np.prod(p.shape[1:]))
        elif "norm" in name and name.endswith("weight"):          # GroupNorm γ, around 1
            v = 1 + 0.1 * rng.standard_normal(p.shape)
        else:                                                     # biases, GroupNorm β
            v = 0.1 * rng.standard_normal(p.shape)
        p.data[...] = backend.xp().asarray(v, dtype=p.dtype)
    return model


def sample_then_train(loss_type, adamw=AdamW):
    """On the current device: one ancestral step (Algorithm 2) and one DDIM step with the
    initial weights, then one training step (Algorithm 1), AdamW and the EMA. Returns every
    result as a NumPy array, and the generator's final state."""
    xp = backend.xp()
    model = random_unet()
    d = GaussianDiffusion(linear_beta_schedule(T), loss=loss_type)
    x0, x_T = xp.asarray(X0), xp.asarray(X_T)
    r = {}

    def keep(name, a):
        r[name] = np.array(backend.to_numpy(a), dtype=np.float32)          # a copy, on the host

    t = xp.asarray(T_ANCESTRAL)
    with no_grad():                                  # the network output each sampler sees
        keep("eps_hat.ancestral", model(Tensor(x_T), t).data)
        keep("eps_hat.ddim", model(Tensor(x_T), xp.full(BATCH, DDIM_TAUS[1])).data)
    keep("p_sample", d.p_sample(model, x_T, t))                          # z from the generator
    chain = ddim_sample_loop_progressive(d, model, x_T=x_T, timesteps=np.array(DDIM_TAUS),
                                         eta=DDIM_ETA)
    keep("ddim", list(itertools.islice(chain, 2))[1][1])                 # after the first step

    opt = adamw(model.parameters(), lr=LR, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
    ema = EMA(model, decay=EMA_DECAY)
    loss = d.training_losses(model, x0).mean()                           # t, ε drawn here
    loss.backward()
    keep("loss", loss.data)
    for name, p in model.named_parameters():
        keep("grad." + name, p.grad)
    opt.step()
    ema.update()
    for name, p in model.named_parameters():
        keep("param." + name, p.data)
    for name, s in zip(ema.names, ema.shadow):
        keep("ema." + name, s)
    return r, backend.get_rng_state()


def numpy_path(loss_type):
    minidiff.set_device("cpu")
    minidiff.manual_seed(SEED)
    return sample_then_train(loss_type)


def emulated_path(loss_type, adamw=AdamW):
    with cuda.emulate(Module, xp=poisoned_numpy), block_order("random", seed=SEED):
        minidiff.manual_seed(SEED)
        return sample_then_train(loss_type, adamw)


# ---------------------------------------------------------------------------- tolerances
def sampler_gains():
    """|∂ x_prev / ∂ ε̂| of each sampler step at its timesteps, for an unclipped x̂0 (clipping
    only lowers it): how much of the network's error reaches the sample.
      ancestral: x̂0 = (x_t - √(1-ᾱ) ε̂)/√ᾱ (Eq. 15), then c1 x̂0 + c2 x_t + σ z (Eq. 7), so
                 c1 √(1-ᾱ)/√ᾱ = β_t / (√α_t √(1 - ᾱ_t))      (Ho et al. 2020, Eq. 11)
      DDIM:      √ᾱ_prev x̂0 + √(1 - ᾱ_prev - σ²) ε̂(x̂0) + σ z, with ε̂(x̂0) = ε̂ unclipped,
                 so at most √(ᾱ_prev (1 - ᾱ)/ᾱ) + √(1 - ᾱ_prev)   (Song et al. 2021, Eq. 12)
    """
    betas = linear_beta_schedule(T)
    abar = np.cumprod(1 - betas)
    t = np.array(T_ANCESTRAL)
    ancestral = (betas[t] / np.sqrt((1 - betas[t]) * (1 - abar[t]))).max()
    a, a_prev = abar[DDIM_TAUS[1]], abar[DDIM_TAUS[0]]
    return {"p_sample": (ancestral, "eps_hat.ancestral"),
            "ddim": (np.sqrt(a_prev * (1 - a) / a) + np.sqrt(1 - a_prev), "eps_hat.ddim")}


def adamw_tolerance(ref, name):
    """What the gradient's tolerance δ does to AdamW's first step (Kingma & Ba 2015, Alg. 1
    at t = 1: m̂ = g, v̂ = g²): p' = p (1 - lr λ) - lr g / (|g| + ε). The step's slope in g is
    ε / (|g| + ε)², at most ε / (max(|g| - δ, 0) + ε)² within δ of g, and g / (|g| + ε) moves
    by at most 2 in all: a gradient that is only rounding noise (|g| < δ, such as the
    attention's key bias, whose exact gradient is 0 since softmax ignores a shift) may step
    either way."""
    g = ref["grad." + name]
    delta = TOL * np.abs(g).max()
    slope = ADAM_EPS / (np.maximum(np.abs(g) - delta, 0) + ADAM_EPS) ** 2
    return LR * np.minimum(2.0, delta * slope)


def tolerance(ref, key):
    """|cuda - numpy| allowed for ref[key]: reassociation, plus what flows in from upstream."""
    own = TOL * np.abs(ref[key]).max()
    kind, _, name = key.partition(".")
    if kind == "param":
        return own + adamw_tolerance(ref, name)
    if kind == "ema":                         # s' = s - (1 - decay)(s - p'), s = p at the start
        return own + (1 - EMA_DECAY) * adamw_tolerance(ref, name)
    if key in sampler_gains():
        gain, eps_hat = sampler_gains()[key]
        return own + gain * TOL * np.abs(ref[eps_hat]).max()
    return own                                # loss, gradients, network outputs


def assert_paths_agree(got, ref):
    assert got.keys() == ref.keys()
    for key in ref:
        assert_close(got[key], ref[key], atol=tolerance(ref, key), rtol=0, what=key)


# ---------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("loss_type", ["simple", "mu_mse"])
def test_emulated_cuda_step_equals_numpy_step(loss_type):
    """loss_type "simple" is Eq. 14; "mu_mse" (Eq. 8) also routes its target μ̃ (Eq. 7)."""
    ref, ref_state = numpy_path(loss_type)
    got, got_state = emulated_path(loss_type)
    assert got_state == ref_state, "the paths drew different numbers from the generator"
    n_params = sum(k.startswith("param.") for k in ref)
    assert n_params == len(list(UNet(**UNET).parameters())) and ref["loss"] > 0
    assert_paths_agree(got, ref)


def test_the_comparison_sees_adam_in_place_of_adamw():
    """A plausible routing slip, Adam's L2 decay in place of AdamW's decoupled one, moves the
    weights by about lr·λ·|p| = 1e-3 |p|: ten times TOL, so the comparison must fail."""
    class AdamL2(AdamW):
        update_rule = staticmethod(cuda.adam_update)

    ref, _ = numpy_path("simple")
    got, _ = emulated_path("simple", adamw=AdamL2)
    with pytest.raises(AssertionError, match="param"):
        assert_paths_agree(got, ref)


def test_cuda_routes_every_kernel_the_step_needs(launched):
    """The agreement above means something only if the cuda path ran the kernels."""
    emulated_path("mu_mse")
    expected = {"q_sample", "posterior_mean", "reverse_step", "ddim_step", "adam_step",
                "ema_update", "group_norm_forward", "group_norm_backward_input",
                "group_norm_backward_params", "softmax_forward", "softmax_backward",
                "conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"}
    assert expected <= set(launched), f"never launched: {sorted(expected - set(launched))}"


def test_unfused_launches_nothing_and_is_the_numpy_path(launched):
    """cuda.unfused() (the benchmark's baseline) runs every op's xp code on the device: no
    kernel, and on the emulator, where xp is NumPy, exactly the NumPy path's numbers."""
    ref, _ = numpy_path("simple")
    with cuda.unfused():
        got, _ = emulated_path("simple")
    assert launched == []
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("loss_type", ["simple", "mu_mse"])
def test_gpu_step_equals_numpy_step(loss_type):
    """The same comparison on a real device (cuBLAS matmuls, the GPU's expf and FMAs)."""
    ref, ref_state = numpy_path(loss_type)
    minidiff.set_device("cuda")          # the library's generator on a GPU draws on the host
    try:
        minidiff.manual_seed(SEED)
        got, got_state = sample_then_train(loss_type)
    finally:
        minidiff.set_device("cpu")
    assert got_state == ref_state, "the paths drew different numbers from the generator"
    assert_paths_agree(got, ref)
