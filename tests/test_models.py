"""models/: the timestep embedding, MLPDenoiser and Ho et al.'s U-Net.

Oracles: parameter counts from the benchmark's PyTorch reference of these U-Nets and from a
closed-form per-layer count; a hand-written list of the reference's parameter shapes; the closed
form of the sinusoidal embedding; float64 central differences; and structural facts (eval-mode
outputs of one example do not depend on the others, the output depends on t).
"""
import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff import Tensor, no_grad
from minidiff.config import TrainConfig
from minidiff.models import PRESETS, MLPDenoiser, UNet, timestep_embedding, unet_from_preset
from minidiff.models.embedding import positional_encoding
from minidiff.testing import gradcheck


# ---------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def preset(name):
    """One shared, untouched model per preset (construction of cifar10 takes a while)."""
    return unet_from_preset(name).eval()


def image_batch(model, batch, seed=0):
    c = model.config
    shape = (batch, c["in_channels"], c["image_size"], c["image_size"])
    return np.random.default_rng(seed).standard_normal(shape).astype(model.dtype)


def randomise(model, seed=0, scale=0.5):
    """Re-draw every parameter: weights ~ N(0, scale²/fan_in), biases ~ N(0, 0.1²), GroupNorm
    scales ~ 1 + N(0, 0.1²). The zero-initialised output layers otherwise make the output, and
    most gradients, vanish."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            fan_in = int(np.prod(p.shape[1:]))
            p.data[...] = rng.standard_normal(p.shape) * scale / math.sqrt(fan_in)
        elif "norm" in name and name.endswith("weight"):
            p.data[...] = 1.0 + 0.1 * rng.standard_normal(p.shape)
        else:
            p.data[...] = 0.1 * rng.standard_normal(p.shape)
    return model


def forward(model, x, t):
    with no_grad():
        return model(x, np.asarray(t)).data


# ---------------------------------------------------------------------------- parameter counts
# Closed-form counts of the layers of Ho et al.'s U-Net (diffusion_tf/models/unet.py).
def n_conv(cin, cout, k):
    return cout * cin * k * k + cout                     # weight (cout, cin, k, k) + bias


def n_linear(fin, fout):
    return fout * fin + fout


def n_gn(c):
    return 2 * c                                         # γ and β


def n_res(cin, cout, tdim):
    """GN, conv3x3, Dense(temb), GN, conv3x3, and a 1x1 shortcut when cin != cout."""
    return (n_gn(cin) + n_conv(cin, cout, 3) + n_linear(tdim, cout) + n_gn(cout)
            + n_conv(cout, cout, 3) + (n_conv(cin, cout, 1) if cin != cout else 0))


def n_attn(c):
    return n_gn(c) + n_conv(c, 3 * c, 1) + n_conv(c, c, 1)     # q, k, v (fused) and proj_out


def n_unet(in_channels, image_size, base_channels, ch_mult, num_res_blocks, attn_resolutions,
           **_):
    """The count for any configuration, written from the paper's architecture description."""
    ch, tdim = base_channels, 4 * base_channels
    n = n_linear(ch, tdim) + n_linear(tdim, tdim) + n_conv(in_channels, ch, 3)
    skips, cur, res = [ch], ch, image_size
    for level, mult in enumerate(ch_mult):
        for _ in range(num_res_blocks):
            n += n_res(cur, ch * mult, tdim) + (n_attn(ch * mult) if res in attn_resolutions
                                                else 0)
            cur = ch * mult
            skips.append(cur)
        if level < len(ch_mult) - 1:
            n += n_conv(cur, cur, 3)
            skips.append(cur)
            res //= 2
    n += 2 * n_res(cur, cur, tdim) + n_attn(cur)
    for level in reversed(range(len(ch_mult))):
        for _ in range(num_res_blocks + 1):
            cout = ch * ch_mult[level]
            n += n_res(cur + skips.pop(), cout, tdim) + (n_attn(cout) if res in attn_resolutions
                                                         else 0)
            cur = cout
        if level > 0:
            n += n_conv(cur, cur, 3)
            res *= 2
    return n + n_gn(cur) + n_conv(cur, in_channels, 3)


def n_cifar10_by_hand():
    """Ho et al.'s CIFAR-10 model, layer by layer: ch=128, temb 512, ch_mult (1, 2, 2, 2),
    2 res blocks per level, attention at 16x16. Skip stack pushed by the down path:
    128 (conv_in), 128, 128, 128 (down), 256, 256, 256 (down), 256, 256, 256 (down), 256, 256."""
    T = 512
    n = n_linear(128, T) + n_linear(T, T)                         # timestep MLP
    n += n_conv(3, 128, 3)                                        # conv_in
    n += 2 * n_res(128, 128, T) + n_conv(128, 128, 3)             # 32x32, then down
    n += n_res(128, 256, T) + n_res(256, 256, T) + 2 * n_attn(256) + n_conv(256, 256, 3)  # 16x16
    n += 2 * n_res(256, 256, T) + n_conv(256, 256, 3)             # 8x8, then down
    n += 2 * n_res(256, 256, T)                                   # 4x4
    n += 2 * n_res(256, 256, T) + n_attn(256)                     # middle
    n += 3 * n_res(512, 256, T) + n_conv(256, 256, 3)             # up 4x4, then upsample
    n += 3 * n_res(512, 256, T) + n_conv(256, 256, 3)             # up 8x8
    n += 2 * n_res(512, 256, T) + n_res(384, 256, T) + 3 * n_attn(256) + n_conv(256, 256, 3)
    n += n_res(384, 128, T) + 2 * n_res(256, 128, T)              # up 32x32
    n += n_gn(128) + n_conv(128, 3, 3)                            # norm_out, conv_out
    return n


def test_closed_form_count_reproduces_the_torch_reference_counts():
    # the formula itself is checked against the bench's numbers before it is trusted
    assert n_unet(**PRESETS["tiny"]) == 701_345
    assert n_unet(**PRESETS["small"]) == 6_472_195
    assert n_unet(**PRESETS["cifar10"]) == n_cifar10_by_hand()


@pytest.mark.parametrize("name, expected", [("tiny", 701_345), ("small", 6_472_195)])
def test_preset_parameter_count_matches_the_torch_reference(name, expected):
    assert preset(name).num_parameters() == expected


def test_cifar10_preset_is_ho_et_al_35_7M_model():
    n = preset("cifar10").num_parameters()
    assert n == n_cifar10_by_hand(), (n, n_cifar10_by_hand())
    assert round(n / 1e6, 1) == 35.7, n                           # Ho et al. 2020, Table / App. B


def test_mlp_denoiser_parameter_count():
    expected = n_linear(2 + 128, 256) + 2 * n_linear(256, 256) + n_linear(256, 2)
    assert expected == 165_634                                    # common.PARAMS["mlp2d"]
    assert MLPDenoiser(2, 128, 256, 3).num_parameters() == expected


# ---------------------------------------------------------------------------- tiny's shapes
def _res(cin, cout, tdim=128):
    """The parameters of torch_unet.ResBlock (same leaf names as minidiff's ResBlock)."""
    shapes = {"norm1.weight": (cin,), "norm1.bias": (cin,),
              "conv1.weight": (cout, cin, 3, 3), "conv1.bias": (cout,),
              "temb.weight": (cout, tdim), "temb.bias": (cout,),
              "norm2.weight": (cout,), "norm2.bias": (cout,),
              "conv2.weight": (cout, cout, 3, 3), "conv2.bias": (cout,)}
    if cin != cout:
        shapes.update({"skip.weight": (cout, cin, 1, 1), "skip.bias": (cout,)})
    return shapes


def _attn(c):
    """torch_unet.AttnBlock: GroupNorm, fused 1x1 qkv, 1x1 proj."""
    return {"norm.weight": (c,), "norm.bias": (c,), "qkv.weight": (3 * c, c, 1, 1),
            "qkv.bias": (3 * c,), "proj.weight": (c, c, 1, 1), "proj.bias": (c,)}


def _conv3(c):
    """A 3x3 conv c -> c: torch's stride-2 down conv, or the conv after nearest upsampling."""
    return {"conv.weight": (c, c, 3, 3), "conv.bias": (c,)}


# tiny: ch 32, temb 128, ch_mult (1, 2), 1 res block, attention at 8x8, 1 input channel.
# Skip stack: 32 (conv_in), 32 (res 16x16), 32 (down), 64 (res 8x8).
# Block -> torch_unet name: temb0/temb1 = temb.0/temb.2; down.0 = down.0.0; down.1 = down.1;
# down.2, down.3 = down.2.0, down.2.1; up.0, up.1 = up.0.0, up.0.1; up.2, up.3 = up.1.0, up.1.1;
# up.4.conv = up.2.1; up.5 = up.3.0; up.6 = up.4.0.
TINY_BLOCKS = [
    ("temb0", {"weight": (128, 32), "bias": (128,)}),
    ("temb1", {"weight": (128, 128), "bias": (128,)}),
    ("conv_in", {"weight": (32, 1, 3, 3), "bias": (32,)}),
    ("down.0", _res(32, 32)),                      # 16x16
    ("down.1", _conv3(32)),                        # stride 2 -> 8x8
    ("down.2", _res(32, 64)),
    ("down.3", _attn(64)),
    ("mid1", _res(64, 64)),
    ("mid_attn", _attn(64)),
    ("mid2", _res(64, 64)),
    ("up.0", _res(64 + 64, 64)),                   # 8x8: eats the 64 skip
    ("up.1", _attn(64)),
    ("up.2", _res(64 + 32, 64)),                   # eats the down-conv skip
    ("up.3", _attn(64)),
    ("up.4", _conv3(64)),                          # nearest x2 -> 16x16
    ("up.5", _res(64 + 32, 32)),
    ("up.6", _res(32 + 32, 32)),
    ("norm_out", {"weight": (32,), "bias": (32,)}),
    ("conv_out", {"weight": (1, 32, 3, 3), "bias": (1,)}),
]


def test_tiny_parameter_names_and_shapes_match_the_torch_reference_blocks():
    expected = {f"{block}.{leaf}": shape for block, leaves in TINY_BLOCKS
                for leaf, shape in leaves.items()}
    assert sum(math.prod(s) for s in expected.values()) == 701_345   # the list is complete
    got = {name: tuple(p.shape) for name, p in preset("tiny").named_parameters()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, f"missing {missing}, unexpected {extra}"
    wrong = {n: (expected[n], got[n]) for n in expected if expected[n] != got[n]}
    assert not wrong, f"(expected, got) shapes: {wrong}"
    # the multiset of shapes, independent of naming, and the block order of the torch model
    assert sorted(got.values()) == sorted(expected.values())
    parts = [name.split(".") for name, _ in preset("tiny").named_parameters()]
    blocks = list(dict.fromkeys(".".join(p[:2]) if p[1].isdigit() else p[0] for p in parts))
    assert blocks == [b for b, _ in TINY_BLOCKS]


# ---------------------------------------------------------------------------- embedding
@given(ts=st.lists(st.integers(0, 999), min_size=1, max_size=6),
       half=st.integers(2, 64), f64=st.booleans())
def test_timestep_embedding_closed_form(ts, half, f64):
    dtype = np.float64 if f64 else np.float32
    emb = timestep_embedding(np.array(ts), 2 * half, dtype=dtype)
    assert emb.shape == (len(ts), 2 * half) and emb.dtype == dtype
    expected = np.array([[math.sin(t * 10000.0 ** (-i / (half - 1))) for i in range(half)]
                         + [math.cos(t * 10000.0 ** (-i / (half - 1))) for i in range(half)]
                         for t in ts])
    np.testing.assert_allclose(emb.data, expected, rtol=0, atol=1e-9 if f64 else 1e-6)


def test_timestep_embedding_endpoints_and_bad_dims():
    emb = timestep_embedding(np.array([0, 7]), 8, dtype=np.float64).data
    np.testing.assert_array_equal(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])    # t = 0: sin 0, cos 0
    assert emb[1, 0] == pytest.approx(math.sin(7)) and emb[1, 4] == pytest.approx(math.cos(7))
    assert emb[1, 3] == pytest.approx(math.sin(7e-4))                 # f_{half-1} = 1/10000
    for dim in (3, 7, 2):
        with pytest.raises(ValueError, match="dim"):
            timestep_embedding(np.array([1]), dim)
    with pytest.raises(ValueError, match="1-d"):
        timestep_embedding(np.array([[1, 2]]), 8)


# ---------------------------------------------------------------------------- forward
@pytest.mark.parametrize("name, batches", [("tiny", (1, 2)), ("small", (1, 2)),
                                           ("cifar10", (1,))])
def test_preset_output_shape_and_dtype(name, batches):
    m = preset(name)
    for b in batches:
        x = image_batch(m, b)
        y = forward(m, x, np.arange(b) * 300)
        assert y.shape == x.shape and y.dtype == np.float32
        assert np.isfinite(y).all()


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_untrained_unet_output_is_almost_zero(name):
    """conv_out has init_scale 0, i.e. Ho et al.'s variance scale 1e-10 (nn.py): its weights
    lie in ±L, L = √(3e-10 / fan_avg), its bias is 0, so |y| <= L · Σ|h| over the 3x3 window
    of its input h. (L ≈ 1.4e-6 for tiny, 1e-6 for small, so |y| reaches ~3e-5, not 1e-6.)"""
    m = unet_from_preset(name).eval()
    conv = m.conv_out
    cin, cout = conv.in_channels, conv.out_channels
    L = math.sqrt(3e-10 / ((cin * 9 + cout * 9) / 2))
    w = conv.weight.data
    assert np.abs(w).max() <= L and np.abs(w).max() > L / 10       # 1e-10, not exactly 0
    assert not conv.bias.data.any()

    seen = []
    original = conv.forward

    def capture(h):                                   # record conv_out's input h
        seen.append(np.asarray(h.data))
        return original(h)
    conv.forward = capture                            # an instance attribute, not a Parameter
    y = forward(m, image_batch(m, 2), [5, 900])
    h = np.pad(np.abs(seen[0]).astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    window_l1 = np.lib.stride_tricks.sliding_window_view(h, (3, 3), axis=(2, 3)).sum(
        axis=(1, 4, 5))                                             # (B, H, W)
    bound = L * window_l1[:, None] * (1 + 1e-5)
    assert (np.abs(y) <= bound).all(), np.max(np.abs(y) - bound)
    assert np.abs(y).max() < 1e-4
    # and exactly zero once conv_out is exactly zero
    conv.weight.data[...] = 0
    assert not forward(m, image_batch(m, 1), [3]).any()


def test_only_the_output_layer_of_each_residual_branch_starts_near_zero():
    """Ho et al.'s unet.py gives init_scale=0 (variance 1e-10) to exactly three kinds of layer:
    each ResBlock's conv2, each attention block's proj_out, and the final conv_out."""
    m = unet_from_preset("tiny")
    tiny = {name for name, p in m.named_parameters()
            if name.endswith("weight") and p.ndim > 1 and np.abs(p.data).max() < 1e-4}
    expected = {n for n, _ in m.named_parameters()
                if n.endswith(("conv2.weight", "proj.weight")) or n == "conv_out.weight"}
    assert len(expected) == 9 + 3 + 1                  # 9 ResBlocks, 3 AttnBlocks, conv_out
    assert tiny == expected, (sorted(tiny - expected), sorted(expected - tiny))


def test_every_other_weight_has_ho_et_al_variance_scaling_limits():
    """Ho et al.'s default_init is U(-L, L), L = √(3 / fan_avg), per layer as their unet.py
    builds it. Their attention has three C -> C NIN layers q, k, v (fan_avg C), which this
    U-Net fuses into one C -> 3C conv: its limit must still be √(3 / C), not √(3 / 2C). The
    largest of n draws of |w| misses the top fraction f of [0, L] with chance (1 - f)^n; with
    f = 1 - 1e-6^(1/n) that is one in a million (f is 4.7% for conv_in's 288 weights)."""
    m = unet_from_preset("tiny")
    checked = 0
    for name, p in m.named_parameters():
        w = p.data
        if not name.endswith("weight") or w.ndim < 2 or np.abs(w).max() < 1e-4:
            continue                                      # biases, norms, zero-init layers
        area = w[0, 0].size if w.ndim == 4 else 1           # kernel area
        fan_in, fan_out = w.shape[1] * area, w.shape[0] * area
        if name.endswith("qkv.weight"):
            fan_out = fan_in                                # q, k and v: C -> C each
        limit = np.sqrt(3.0 / ((fan_in + fan_out) / 2))
        f = 1 - 1e-6 ** (1 / w.size)
        top = float(np.abs(w).max())
        assert (1 - f) * limit <= top <= limit, f"{name}: max |w| {top:.4f}, limit {limit:.4f}"
        checked += 1
    assert checked > 20

@functools.lru_cache(maxsize=None)
def random_tiny(dropout=0.0):
    return randomise(unet_from_preset("tiny", dropout=dropout), seed=1).eval()


@functools.lru_cache(maxsize=None)
def random_small64():
    return randomise(UNet(**SMALL64), seed=8).eval()


@settings(max_examples=15)
@given(t1=st.integers(0, 999), t2=st.integers(0, 999))
def test_output_depends_on_timestep(t1, t2):
    m = random_small64()                              # the cheapest U-Net with every block kind
    x = image_batch(m, 1)
    y1, y2 = forward(m, x, [t1]), forward(m, x, [t2])
    diff = np.abs(y1 - y2).max()
    if t1 == t2:
        assert diff == 0
    else:
        assert diff > 1e-4 * np.abs(y1).max(), (t1, t2, diff)


def test_batch_independence_in_eval_mode():
    m = random_tiny(dropout=0.3)                      # eval(): dropout is the identity
    x = image_batch(m, 3, seed=2)
    t = np.array([10, 500, 999])
    y = forward(m, x, t)
    scale = np.abs(y).max()
    assert scale > 1e-2                               # a non-trivial output
    for i in range(3):
        alone = forward(m, x[i:i + 1], t[i:i + 1])
        np.testing.assert_allclose(alone[0], y[i], rtol=1e-4, atol=1e-5 * scale)
    x2 = x.copy()
    x2[[0, 2]] = np.random.default_rng(9).standard_normal(x2[[0, 2]].shape)
    y2 = forward(m, x2, np.array([3, 500, 4]))         # change the other examples only
    np.testing.assert_allclose(y2[1], y[1], rtol=1e-4, atol=1e-5 * scale)
    # in training mode dropout is on, so the same call gives another answer
    m.train()
    try:
        assert not np.allclose(forward(m, x, t), forward(m, x, t))
    finally:
        m.eval()


def test_mlp_denoiser_shape_and_batch_independence():
    m = randomise(MLPDenoiser(2, 16, 32, 2), seed=3)
    x = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    t = np.array([0, 1, 2, 500, 999])
    y = forward(m, x, t)
    assert y.shape == (5, 2)
    np.testing.assert_allclose(forward(m, x[3:4], t[3:4])[0], y[3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(forward(m, x[:1], [0]), forward(m, x[:1], [999]))


# ---------------------------------------------------------------------------- NumPy reference
# A U-Net small enough for float64 finite differences and a plain NumPy forward.
SMALL64 = dict(in_channels=1, image_size=8, base_channels=8, ch_mult=(1, 2),
               num_res_blocks=1, attn_resolutions=(4,), groups=4, dropout=0.0)


def _np_conv(x, w, b, stride=1):
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    win = win[:, :, ::stride, ::stride]                            # (B, C, Ho, Wo, k, k)
    return np.einsum("bchwij,ocij->bohw", win, w) + b[None, :, None, None]


def _np_gn(x, g, b, groups, eps=1e-5):
    B, C = x.shape[:2]
    xg = x.reshape(B, groups, -1)
    xn = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + eps)
    return xn.reshape(x.shape) * g[None, :, None, None] + b[None, :, None, None]


def _np_silu(x):
    return x / (1 + np.exp(-x))


def numpy_unet_small64(P, x, t):
    """torch_unet.UNet.forward for SMALL64, written out block by block in NumPy (float64)."""
    G = SMALL64["groups"]

    def res(n, h, temb):
        z = _np_conv(_np_silu(_np_gn(h, P[n + ".norm1.weight"], P[n + ".norm1.bias"], G)),
                     P[n + ".conv1.weight"], P[n + ".conv1.bias"])
        z = z + (_np_silu(temb) @ P[n + ".temb.weight"].T + P[n + ".temb.bias"])[:, :, None, None]
        z = _np_conv(_np_silu(_np_gn(z, P[n + ".norm2.weight"], P[n + ".norm2.bias"], G)),
                     P[n + ".conv2.weight"], P[n + ".conv2.bias"])
        skip = h if n + ".skip.weight" not in P else _np_conv(h, P[n + ".skip.weight"],
                                                                P[n + ".skip.bias"])
        return skip + z

    def attn(n, h):
        B, C, H, W = h.shape
        qkv = _np_conv(_np_gn(h, P[n + ".norm.weight"], P[n + ".norm.bias"], G),
                       P[n + ".qkv.weight"], P[n + ".qkv.bias"]).reshape(B, 3, C, H * W)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        s = np.einsum("bci,bcj->bij", q, k) * C ** -0.5
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        out = np.einsum("bcj,bij->bci", v, a).reshape(B, C, H, W)
        return h + _np_conv(out, P[n + ".proj.weight"], P[n + ".proj.bias"])

    half = SMALL64["base_channels"] // 2
    f = np.array([10000.0 ** (-i / (half - 1)) for i in range(half)])
    emb = np.concatenate([np.sin(t[:, None] * f), np.cos(t[:, None] * f)], axis=1)
    temb = _np_silu(emb @ P["temb0.weight"].T + P["temb0.bias"])
    temb = temb @ P["temb1.weight"].T + P["temb1.bias"]

    hs = [_np_conv(x, P["conv_in.weight"], P["conv_in.bias"])]          # 8x8, 8 ch
    hs.append(res("down.0", hs[-1], temb))
    hs.append(_np_conv(hs[-1], P["down.1.conv.weight"], P["down.1.conv.bias"], stride=2))
    hs.append(attn("down.3", res("down.2", hs[-1], temb)))              # 4x4, 16 ch
    h = res("mid2", attn("mid_attn", res("mid1", hs[-1], temb)), temb)
    h = attn("up.1", res("up.0", np.concatenate([h, hs.pop()], 1), temb))
    h = attn("up.3", res("up.2", np.concatenate([h, hs.pop()], 1), temb))
    h = h.repeat(2, axis=2).repeat(2, axis=3)                           # nearest x2 -> 8x8
    h = _np_conv(h, P["up.4.conv.weight"], P["up.4.conv.bias"])
    h = res("up.5", np.concatenate([h, hs.pop()], 1), temb)
    h = res("up.6", np.concatenate([h, hs.pop()], 1), temb)
    assert not hs
    h = _np_silu(_np_gn(h, P["norm_out.weight"], P["norm_out.bias"], G))
    return _np_conv(h, P["conv_out.weight"], P["conv_out.bias"])


def test_unet_forward_matches_a_numpy_transcription_of_the_torch_reference():
    m = randomise(UNet(**SMALL64, dtype=np.float64), seed=6)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 1, 8, 8))
    t = np.array([0, 613])
    expected = numpy_unet_small64(m.state_dict(), x, t.astype(np.float64))
    got = forward(m, x, t)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------- gradients
def test_unet_float64_gradients_match_central_differences():
    m = randomise(UNet(**SMALL64, dtype=np.float64), seed=4)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 1, 8, 8))
    t = np.array([3, 700])
    w = rng.standard_normal((2, 1, 8, 8))              # loss = Σ y · w

    def loss(x_arr):
        with no_grad():
            return float((m(x_arr, t).data * w).sum())

    xt = Tensor(x.copy(), requires_grad=True)
    m(xt, t).backward(w)
    # 20 parameter tensors spread over every kind of layer, one entry of each, plus 5 entries
    # of the input
    names = ["temb0.weight", "temb1.bias", "conv_in.weight", "down.0.norm1.weight",
             "down.0.conv1.weight", "down.0.temb.weight", "down.0.conv2.weight",
             "down.1.conv.weight", "down.2.skip.weight", "down.3.qkv.weight",
             "down.3.proj.bias", "mid1.norm2.bias", "mid_attn.qkv.bias", "mid_attn.proj.weight",
             "mid2.conv1.bias", "up.0.skip.bias", "up.3.norm.weight", "up.4.conv.weight",
             "up.6.conv2.weight", "conv_out.weight"]
    params = dict(m.named_parameters())
    picks = [(name, params[name]) for name in names]
    checks = [(name, p.data, p.grad, tuple(rng.integers(0, s) for s in p.shape))
              for name, p in picks]
    checks += [("x", x, xt.grad, tuple(rng.integers(0, s) for s in x.shape)) for _ in range(5)]
    eps = 1e-6
    for name, arr, grad, j in checks:
        assert grad is not None, f"{name}: no gradient"
        old = arr[j]
        arr[j] = old + eps
        hi = loss(x)
        arr[j] = old - eps
        lo = loss(x)
        arr[j] = old
        expected = (hi - lo) / (2 * eps)
        assert abs(grad[j] - expected) <= 1e-7 + 1e-5 * abs(expected), (
            f"{name}{list(j)}: expected {expected!r} (finite differences), got {grad[j]!r}")
    assert any(abs(g[j]) > 1e-3 for _, _, g, j in checks)   # the check is not all zeros


# ---------------------------------------------------------------------------- bad input
def test_unet_rejects_bad_inputs():
    m = preset("tiny")
    good = image_batch(m, 2)
    for bad in (good[0], good[:, :, :8], np.zeros((2, 3, 16, 16), np.float32),
                np.zeros((2, 1, 16, 15), np.float32)):
        with pytest.raises(ValueError, match=r"UNet: x must be \(B, 1, 16, 16\)"):
            m(bad, np.arange(len(bad)))
    with pytest.raises(ValueError, match="t has 3 entries for a batch of 2"):
        m(good, np.array([1, 2, 3]))


@pytest.mark.parametrize("overrides", [dict(base_channels=12), dict(groups=3),
                                       dict(groups=64)])
def test_unet_rejects_channels_not_divisible_by_groups(overrides):
    cfg = {**PRESETS["tiny"], **overrides}
    with pytest.raises(ValueError, match=f"divisible by groups={cfg['groups']}"):
        UNet(**cfg)


def test_unet_rejects_image_size_not_divisible_by_the_downsampling():
    with pytest.raises(ValueError, match="image_size 18"):
        UNet(**{**PRESETS["small"], "image_size": 18})


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'imagenet'"):
        unet_from_preset("imagenet")


def test_mlp_denoiser_rejects_bad_inputs():
    m = MLPDenoiser(2, 16, 32, 2)
    with pytest.raises(ValueError, match=r"x must be \(B, 2\)"):
        m(np.zeros((4, 3), np.float32), np.arange(4))
    with pytest.raises(ValueError, match="t has 2 entries for a batch of 4"):
        m(np.zeros((4, 2), np.float32), np.arange(2))
    with pytest.raises(ValueError, match="depth"):
        MLPDenoiser(2, 16, 32, 0)
    with pytest.raises(ValueError, match="fourier_levels must be >= 0, got -1"):
        MLPDenoiser(2, 16, 32, 2, fourier_levels=-1)


@settings(max_examples=20)
@given(levels=st.integers(0, 4), dim=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_positional_encoding_closed_form(levels, dim, seed):
    """Mildenhall et al. 2020, Eq. 4, column by column against math.sin / math.cos: x, then
    the sines of every frequency, then the cosines, each block D columns wide."""
    x = np.random.default_rng(seed).uniform(-2, 2, (3, dim))
    got = positional_encoding(Tensor(x), levels).data
    assert got.shape == (3, dim * (1 + 2 * levels))
    for b in range(3):
        for i in range(dim):
            angles = [2 ** k * math.pi * x[b, i] for k in range(levels)]
            want = [x[b, i]] + [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
            assert np.allclose(got[b, i::dim], want, rtol=0, atol=1e-12), (b, i)


def test_mlp_denoiser_with_fourier_levels_counts_and_gradients():
    """The first layer reads 2 (1 + 2L) + time_dim numbers; gradients reach x_t through the
    encoding (central differences in float64)."""
    expected = n_linear(2 * (1 + 2 * 6) + 128, 256) + 2 * n_linear(256, 256) + n_linear(256, 2)
    assert MLPDenoiser(2, 128, 256, 3, fourier_levels=6).num_parameters() == expected
    m = randomise(MLPDenoiser(2, 8, 16, 2, fourier_levels=3, dtype=np.float64), seed=5)
    t = np.array([0, 7, 900])
    gradcheck(lambda x: m(x, t), np.random.default_rng(2).uniform(-1, 1, (3, 2)))


def test_fourier_levels_belong_to_the_mlp():
    with pytest.raises(ValueError, match="fourier_levels: the positional encoding is the MLP's"):
        TrainConfig(data="digits", model="tiny", fourier_levels=2).validate()
