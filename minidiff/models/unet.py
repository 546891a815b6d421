"""The U-Net of Ho et al. 2020 (Appendix B), as in their diffusion_tf/models/unet.py.

    x (B, C, H, W) --conv_in--> down path: per level, num_res_blocks ResBlocks (+ attention at
    attn_resolutions), then a stride-2 conv (not after the last level)
    --> middle: ResBlock, AttnBlock, ResBlock
    --> up path: per level, num_res_blocks + 1 ResBlocks, each eating one concatenated skip,
    then nearest x2 + conv (not after the first level) --> GroupNorm, SiLU, conv_out

Two details follow Ho et al.'s TensorFlow code only when asked (the `cifar10` preset does):
downsample_padding="same" pads a stride-2 conv's input by 0 before and 1 after, as TF's SAME
padding does for an even size (diffusers' downsample_padding=0); "symmetric" pads 1 on every
side, which samples the grid half a pixel further up and left. norm_eps is GroupNorm's ε
(1e-6 in Ho et al.'s `normalize`; 1e-5 is PyTorch's default).

The timestep enters every ResBlock through the embedding MLP. Output convs start at zero
(Ho et al. use init_scale=0 for them), so an untrained network predicts 0. With
learn_sigma=True conv_out gives 2C channels: the prediction, then v, which sets log σ_t²
between log β̃_t and log β_t (Nichol & Dhariwal 2021, Eq. 15); at 0, halfway between them.
"""
import numpy as np

from .. import backend
from .. import functional as F
from ..functional.attention import attention
from ..functional.conv import upsample_nearest2d
from ..nn import Conv2d, Dropout, GroupNorm, GroupNormSiLU, Linear, Module
from ..tensor import Tensor
from ..validate import check_choice, check_number
from .embedding import model_timesteps, timestep_embedding

# Presets. `tiny` and `small` are the benchmark's PyTorch reference configurations (its twin,
# benchmarks/mnist_twin.py, pads 1 and uses ε = 1e-5: the defaults); `cifar10` is Ho et al.'s
# 35.7M-parameter CIFAR-10 model (ch=128, ch_mult=(1, 2, 2, 2), 2 res blocks, attention at
# 16x16, dropout 0.1, SAME padding, ε = 1e-6): google/ddpm-cifar10-32's weights fit it.
PRESETS = {
    "tiny": dict(in_channels=1, image_size=16, base_channels=32, ch_mult=(1, 2),
                 num_res_blocks=1, attn_resolutions=(8,), groups=8, dropout=0.0),
    "small": dict(in_channels=3, image_size=32, base_channels=64, ch_mult=(1, 2, 2),
                  num_res_blocks=2, attn_resolutions=(16,), groups=8, dropout=0.0),
    "cifar10": dict(in_channels=3, image_size=32, base_channels=128, ch_mult=(1, 2, 2, 2),
                    num_res_blocks=2, attn_resolutions=(16,), groups=32, dropout=0.1,
                    downsample_padding="same", norm_eps=1e-6),
}
DOWNSAMPLE_PADDINGS = ("symmetric", "same")


class ResBlock(Module):
    """GN -> SiLU -> conv -> + Dense(SiLU(temb)) -> GN -> SiLU -> dropout -> conv, + shortcut."""

    def __init__(self, cin, cout, tdim, groups, eps, dropout, dtype):
        super().__init__()
        self.norm1 = GroupNormSiLU(groups, cin, eps=eps, dtype=dtype)
        self.conv1 = Conv2d(cin, cout, 3, padding=1, dtype=dtype)
        self.temb = Linear(tdim, cout, dtype=dtype)
        self.norm2 = GroupNormSiLU(groups, cout, eps=eps, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.conv2 = Conv2d(cout, cout, 3, padding=1, init_scale=0.0, dtype=dtype)
        # 1x1 "NIN" shortcut when the channel count changes (Ho et al.'s nin_shortcut)
        self.skip = Conv2d(cin, cout, 1, dtype=dtype) if cin != cout else None

    def forward(self, x, temb):                                 # x (B, cin, H, W), temb (B, T)
        h = self.conv1(self.norm1(x))                           # conv(SiLU(GN(x))) (B, cout, H, W)
        t = self.temb(F.silu(temb))                             # (B, cout)
        h = h + F.reshape(t, t.shape + (1, 1))                  # broadcast over H, W
        h = self.conv2(self.dropout(self.norm2(h)))             # conv(drop(SiLU(GN(h))))
        shortcut = x if self.skip is None else self.skip(x)
        return shortcut + h


class AttnBlock(Module):
    """Single-head self-attention over the H*W positions, with a residual connection. The scores
    are scaled by 1/√C (Ho et al.'s `attn_block`; diffusers' one head of dim C)."""

    def __init__(self, ch, groups, eps, dtype):
        super().__init__()
        self.norm = GroupNorm(groups, ch, eps=eps, dtype=dtype)
        # Ho et al.'s q, k and v NIN layers, fused. Each is a C -> C layer there, with variance
        # 1/fan_avg = 1/C; one C -> 3C layer would get 2/(4C), so init_scale 2 restores 1/C.
        self.qkv = Conv2d(ch, 3 * ch, 1, init_scale=2.0, dtype=dtype)
        self.proj = Conv2d(ch, ch, 1, init_scale=0.0, dtype=dtype)

    def forward(self, x):                                       # x (B, C, H, W)
        B, C, H, W = x.shape
        qkv = F.reshape(self.qkv(self.norm(x)), (B, 3, C, H * W))   # (B, 3, C, N)
        h = attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])          # (B, C, N)
        return x + self.proj(F.reshape(h, (B, C, H, W)))


def pad_after(x):
    """One row and one column of zeros after the last: TF's SAME padding of a 3x3, stride-2
    conv on an even size (0 before, 1 after). (B, C, H, W) -> (B, C, H+1, W+1)."""
    B, C, H, W = x.shape
    xp = backend.xp()
    x = F.concat([x, Tensor(xp.zeros((B, C, 1, W), dtype=x.dtype))], axis=2)  # (B, C, H+1, W)
    return F.concat([x, Tensor(xp.zeros((B, C, H + 1, 1), dtype=x.dtype))], axis=3)


class Downsample(Module):
    def __init__(self, ch, padding, dtype):
        super().__init__()
        self.same = padding == "same"
        self.conv = Conv2d(ch, ch, 3, stride=2, padding=0 if self.same else 1, dtype=dtype)

    def forward(self, x):                                       # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(pad_after(x) if self.same else x)


class Upsample(Module):
    def __init__(self, ch, dtype):
        super().__init__()
        self.conv = Conv2d(ch, ch, 3, padding=1, dtype=dtype)

    def forward(self, x):                                       # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(upsample_nearest2d(x, 2))


class UNet(Module):
    """Ho et al.'s U-Net ε_θ(x_t, t) (Appendix B); the layout is in the module doc.
    in_channels, image_size: the images' C and H = W; base_channels ch and ch_mult: level k has
    ch * ch_mult[k] channels; num_res_blocks per level; attn_resolutions: the H (16 in Ho et al.)
    where self-attention follows each ResBlock; groups: GroupNorm's G; dropout: in every
    ResBlock; learn_sigma: 2C output channels (ε, then v). unet_from_preset gives the presets."""
    def __init__(self, in_channels=3, image_size=32, base_channels=64, ch_mult=(1, 2, 2),
                 num_res_blocks=2, attn_resolutions=(16,), groups=8, dropout=0.0,
                 learn_sigma=False, downsample_padding="symmetric", norm_eps=1e-5,
                 flip_sin_to_cos=False, freq_shift=1, dtype=np.float32):
        super().__init__()
        ch, tdim = base_channels, 4 * base_channels
        check_choice("UNet: downsample_padding", downsample_padding, DOWNSAMPLE_PADDINGS)
        eps = check_number("UNet: norm_eps", norm_eps, 0, 1, lo_open=True)
        check_choice("UNet: freq_shift", freq_shift, (0, 1))
        if ch % groups or any((ch * m) % groups for m in ch_mult):
            raise ValueError(f"UNet: every channel count ({ch} x {tuple(ch_mult)}) must be "
                             f"divisible by groups={groups}")
        if image_size % (2 ** (len(ch_mult) - 1)):
            raise ValueError(f"UNet: image_size {image_size} must be divisible by "
                             f"2^(levels-1) = {2 ** (len(ch_mult) - 1)}")
        self.config = dict(in_channels=in_channels, image_size=image_size,
                           base_channels=base_channels, ch_mult=tuple(ch_mult),
                           num_res_blocks=num_res_blocks, attn_resolutions=tuple(attn_resolutions),
                           groups=groups, dropout=dropout, learn_sigma=bool(learn_sigma),
                           downsample_padding=downsample_padding, norm_eps=eps,
                           flip_sin_to_cos=bool(flip_sin_to_cos), freq_shift=freq_shift)
        self.in_channels, self.image_size, self.base, self.dtype = (in_channels, image_size, ch,
                                                                    dtype)
        # timestep embedding MLP: sinusoid(ch) -> Dense(4ch) -> SiLU -> Dense(4ch)
        self.temb0 = Linear(ch, tdim, dtype=dtype)
        self.temb1 = Linear(tdim, tdim, dtype=dtype)
        self.conv_in = Conv2d(in_channels, ch, 3, padding=1, dtype=dtype)

        # Down path. `skips` remembers the channel count of every activation pushed for the up
        # path, in push order.
        self.down, skips, cur, res = [], [ch], ch, image_size
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(cur, ch * mult, tdim, groups, eps, dropout, dtype))
                cur = ch * mult
                if res in attn_resolutions:
                    self.down.append(AttnBlock(cur, groups, eps, dtype))
                skips.append(cur)
            if level != len(ch_mult) - 1:
                self.down.append(Downsample(cur, downsample_padding, dtype))
                skips.append(cur)
                res //= 2

        self.mid1 = ResBlock(cur, cur, tdim, groups, eps, dropout, dtype)
        self.mid_attn = AttnBlock(cur, groups, eps, dtype)
        self.mid2 = ResBlock(cur, cur, tdim, groups, eps, dropout, dtype)

        # Up path: num_res_blocks + 1 ResBlocks per level, each on [h, skip] concatenated.
        self.up = []
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(cur + skips.pop(), ch * mult, tdim, groups, eps, dropout,
                                        dtype))
                cur = ch * mult
                if res in attn_resolutions:
                    self.up.append(AttnBlock(cur, groups, eps, dtype))
            if level != 0:
                self.up.append(Upsample(cur, dtype))
                res *= 2
        assert not skips, "every skip connection is consumed"

        self.norm_out = GroupNormSiLU(groups, cur, eps=eps, dtype=dtype)
        out_channels = in_channels * (2 if learn_sigma else 1)     # 2C: + v of the variance
        self.conv_out = Conv2d(cur, out_channels, 3, padding=1, init_scale=0.0, dtype=dtype)

    def forward(self, x, t):                                    # x (B, C, H, W), t (B,)
        """x_t (B, C, H, W) and t (an int, or B timesteps: a list, an array or a Tensor, numbers
        >= 0) -> ε_θ(x_t, t) of x's shape, or (B, 2C, H, W) with learn_sigma."""
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(f"UNet: x must be (B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}), got {x.shape}")
        t = model_timesteps("UNet: t", t, x.shape[0])             # (B,)
        temb = timestep_embedding(t, self.base, self.dtype, self.config["flip_sin_to_cos"],
                                  self.config["freq_shift"])    # (B, ch)
        temb = self.temb1(F.silu(self.temb0(temb)))             # (B, 4ch)

        hs = [self.conv_in(x)]                                  # (B, ch, H, W)
        for m in self.down:
            if isinstance(m, ResBlock):
                hs.append(m(hs[-1], temb))
            elif isinstance(m, AttnBlock):
                hs[-1] = m(hs[-1])                              # attention refines the last push
            else:
                hs.append(m(hs[-1]))                            # Downsample

        h = self.mid2(self.mid_attn(self.mid1(hs[-1], temb)), temb)

        for m in self.up:
            if isinstance(m, ResBlock):
                h = m(F.concat([h, hs.pop()], axis=1), temb)    # (B, C + C_skip, H, W) -> ...
            else:
                h = m(h)                                        # AttnBlock or Upsample
        assert not hs
        return self.conv_out(self.norm_out(h))                  # conv(SiLU(GN(h))): (B, C|2C, H, W)


def unet_from_preset(name, **overrides):
    """A UNet of a named size, with `overrides` for any of UNet's arguments:

        tiny     1x16x16 (MNIST-like at 16 px), ch 32, ch_mult (1, 2), 1 ResBlock a level
        small    3x32x32, ch 64, ch_mult (1, 2, 2), 2 ResBlocks a level
        cifar10  Ho et al.'s CIFAR-10 model: 3x32x32, ch 128, ch_mult (1, 2, 2, 2), dropout 0.1,
                 TF's "same" downsample padding and GroupNorm eps 1e-6 (35.7M parameters)

    e.g. unet_from_preset("tiny", dropout=0.1). PRESETS holds the arguments."""
    if name not in PRESETS:
        raise ValueError(f"unet_from_preset: unknown preset {name!r}; choose from "
                         f"{sorted(PRESETS)}")
    return UNet(**{**PRESETS[name], **overrides})
