"""minidiff's networks in PyTorch, layer for layer: the U-Net of Ho et al. 2020 and the 2-D MLP.

The benchmarks time PyTorch on exactly minidiff's work, and mnist_twin.py trains the twin as an
anchor we did not write. Its modules carry minidiff's names (temb0, down.3.qkv, up.4.conv, ...),
so minidiff's weights load into it unchanged (`load_minidiff`), and check_twin.py shows that the
two compute one function. The architecture is read off a minidiff model (`twin_of`), so the twin
follows its presets. Benchmark-only: minidiff/ and tests/ never import PyTorch.

    x (B, C, H, W) -> conv_in -> down (ResBlock [+ AttnBlock] per block, Downsample per level)
    -> mid1, mid_attn, mid2 -> up (ResBlock on [h, skip] [+ AttnBlock], Upsample per level)
    -> GroupNorm, SiLU, conv_out
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from minidiff.models import MLPDenoiser, UNet as MinidiffUNet


def timestep_embedding(t, dim, dtype, flip_sin_to_cos=False, freq_shift=1):
    """(B, dim) [sin(t f_i), cos(t f_i)], f_i = 10000^(-i/(dim/2 - freq_shift)) (Ho et al. 2020,
    App. B, with freq_shift 1; cos first if flipped), in float64 as minidiff does, then cast."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    freqs = torch.exp(-math.log(10000.0) * i / (half - freq_shift))             # (half,)
    args = t.to(torch.float64)[:, None] * freqs[None, :]                        # (B, half)
    sin, cos = torch.sin(args), torch.cos(args)
    return torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=1).to(dtype)


class ResBlock(nn.Module):
    """GN, SiLU, conv 3x3, + Linear(SiLU(temb)), GN, SiLU, dropout, conv 3x3, + shortcut."""

    def __init__(self, cin, cout, tdim, groups, dropout, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None   # Ho et al.'s NIN

    def forward(self, x, temb):                           # x (B, cin, H, W), temb (B, tdim)
        h = self.conv1(F.silu(self.norm1(x)))             # (B, cout, H, W)
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.skip is None else self.skip(x)) + h


class AttnBlock(nn.Module):
    """One head of self-attention over the H*W positions, q, k, v from one 1x1 conv."""

    def __init__(self, ch, groups, eps):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x):                                 # x (B, C, H, W)
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)   # (B, C, N) each
        a = torch.softmax(torch.bmm(q.transpose(1, 2), k) / math.sqrt(C), dim=-1)  # (B, N, N)
        h = torch.bmm(v, a.transpose(1, 2))               # (B, C, N): out = v Aᵀ
        return x + self.proj(h.reshape(B, C, H, W))


class Downsample(nn.Module):
    """A stride-2 3x3 conv. padding "symmetric": 1 on every side; "same": TensorFlow's SAME for
    an even size, 0 before and 1 after (F.pad's (left, right, top, bottom) = (0, 1, 0, 1))."""

    def __init__(self, ch, padding):
        super().__init__()
        self.same = padding == "same"
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0 if self.same else 1)

    def forward(self, x):                                 # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(F.pad(x, (0, 1, 0, 1)) if self.same else x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):                                 # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    def __init__(self, in_channels, image_size, base_channels, ch_mult, num_res_blocks,
                 attn_resolutions, groups, dropout, learn_sigma=False,
                 downsample_padding="symmetric", norm_eps=1e-5, flip_sin_to_cos=False,
                 freq_shift=1):
        super().__init__()
        ch, tdim, eps = base_channels, 4 * base_channels, norm_eps
        self.base, self.embedding = ch, dict(flip_sin_to_cos=flip_sin_to_cos,
                                             freq_shift=freq_shift)
        self.temb0, self.temb1 = nn.Linear(ch, tdim), nn.Linear(tdim, tdim)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down, skips, cur, res = nn.ModuleList(), [ch], ch, image_size
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(cur, ch * mult, tdim, groups, dropout, eps))
                cur = ch * mult
                if res in attn_resolutions:
                    self.down.append(AttnBlock(cur, groups, eps))
                skips.append(cur)
            if level != len(ch_mult) - 1:
                self.down.append(Downsample(cur, downsample_padding))
                skips.append(cur)
                res //= 2
        self.mid1 = ResBlock(cur, cur, tdim, groups, dropout, eps)
        self.mid_attn = AttnBlock(cur, groups, eps)
        self.mid2 = ResBlock(cur, cur, tdim, groups, dropout, eps)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(cur + skips.pop(), ch * mult, tdim, groups, dropout, eps))
                cur = ch * mult
                if res in attn_resolutions:
                    self.up.append(AttnBlock(cur, groups, eps))
            if level != 0:
                self.up.append(Upsample(cur))
                res *= 2
        self.norm_out = nn.GroupNorm(groups, cur, eps)
        self.conv_out = nn.Conv2d(cur, in_channels * (2 if learn_sigma else 1), 3, padding=1)

    def forward(self, x, t):                              # x (B, C, H, W), t (B,)
        temb = timestep_embedding(t, self.base, x.dtype, **self.embedding)
        temb = self.temb1(F.silu(self.temb0(temb)))       # (B, 4 ch)
        hs = [self.conv_in(x)]
        for m in self.down:
            if isinstance(m, ResBlock):
                hs.append(m(hs[-1], temb))
            elif isinstance(m, AttnBlock):
                hs[-1] = m(hs[-1])                        # attention refines the last push
            else:
                hs.append(m(hs[-1]))                      # Downsample
        h = self.mid2(self.mid_attn(self.mid1(hs[-1], temb)), temb)
        for m in self.up:
            h = m(torch.cat([h, hs.pop()], dim=1), temb) if isinstance(m, ResBlock) else m(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class MLP(nn.Module):
    """[x_t, sinusoid(t)] -> depth x (Linear(hidden), SiLU) -> Linear(data_dim)."""

    def __init__(self, data_dim, time_dim, hidden, depth, learn_sigma=False):
        super().__init__()
        self.time_dim = time_dim
        widths = [data_dim + time_dim] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(hidden, data_dim * (2 if learn_sigma else 1))

    def forward(self, x, t):                              # x (B, data_dim), t (B,)
        h = torch.cat([x, timestep_embedding(t, self.time_dim, x.dtype)], dim=1)
        for layer in self.layers:
            h = F.silu(layer(h))                          # (B, hidden)
        return self.out(h)


# ---------------------------------------------------------------------------- from minidiff
def twin_of(model):
    """The PyTorch network of minidiff's `model` (a UNet or an MLPDenoiser), freshly initialised
    (PyTorch's default) in minidiff's dtype; load_minidiff copies the weights over. A U-Net's
    arguments are the model's own config, so the twin follows every option of the presets."""
    dtype = torch.float64 if np.dtype(model.dtype) == np.float64 else torch.float32
    if isinstance(model, MinidiffUNet):
        return UNet(**model.config).to(dtype)
    if isinstance(model, MLPDenoiser) and not model.fourier_levels:
        hidden, depth = model.layers[0].out_features, len(model.layers)
        return MLP(model.data_dim, model.time_dim, hidden, depth, model.learn_sigma).to(dtype)
    raise ValueError(f"twin_of: no PyTorch twin of {type(model).__name__} with these options")


def load_minidiff(twin, model):
    """Copy every parameter of minidiff's `model` into `twin` (the same names); returns twin."""
    ours = {name: p.numpy() for name, p in model.named_parameters()}
    theirs = twin.state_dict()
    if set(ours) != set(theirs):
        raise ValueError(f"load_minidiff: names differ: only in minidiff "
                         f"{sorted(set(ours) - set(theirs))}, only in the twin "
                         f"{sorted(set(theirs) - set(ours))}")
    twin.load_state_dict({name: torch.tensor(ours[name]) for name in theirs})
    return twin


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- Ho et al.'s init
def variance_scaling_(w, fan_in, fan_out):
    """U(-L, L), L = √(3 / fan_avg): variance 1 / fan_avg (Ho et al.'s `default_init`)."""
    limit = math.sqrt(3.0 / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        w.uniform_(-limit, limit)


def ho_init_(model):
    """Every conv and linear layer of a twin U-Net as Ho et al. initialise theirs: biases 0; the
    convs that end a ResBlock or an attention block, and conv_out, at 0 (the network starts at
    ε̂ = 0); q, k and v each as its own C -> C layer. Returns the model."""
    zero = {model.conv_out} | {m.conv2 for m in model.modules() if isinstance(m, ResBlock)}
    zero |= {m.proj for m in model.modules() if isinstance(m, AttnBlock)}
    qkv = {m.qkv for m in model.modules() if isinstance(m, AttnBlock)}
    for m in model.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        nn.init.zeros_(m.bias)
        area = m.weight[0, 0].numel()                     # kernel area, 1 for a Linear
        cout, cin = m.weight.shape[:2]
        if m in zero:
            nn.init.zeros_(m.weight)
        elif m in qkv:
            for part in m.weight.chunk(3, dim=0):         # three C -> C layers in one
                variance_scaling_(part, cin * area, cin * area)
        else:
            variance_scaling_(m.weight, cin * area, cout * area)
    return model
