"""Every layer with dropout, in train mode with p > 0, against a NumPy transcription that uses
the same keep-mask.

The mask: dropout draws u ~ U[0, 1) of the activation's shape from the library's generator and
keeps u >= p, scaled by 1/(1 - p). Seeding with minidiff.manual_seed and drawing the same u
gives the transcription that mask, without reading it out of the layer.

The layers: nn.Dropout, the U-Net's ResBlock (Ho et al. 2020, Appendix B: GN -> SiLU -> conv
-> + Dense(SiLU(temb)) -> GN -> SiLU -> dropout -> conv, + shortcut, as in their
diffusion_tf/models/unet.py `resnet_block`) and the U-Net, whose every ResBlock must drop.
"""
import numpy as np
import pytest

import minidiff
from minidiff import Tensor, backend
from minidiff.models.unet import ResBlock, UNet
from minidiff.nn import Dropout
from minidiff.testing import gradcheck

P = 0.3
SEED = 1234


def keep_mask(shape, p, dtype=np.float64):
    """The next dropout mask of the library's generator: 0 or 1/(1 - p), (shape)."""
    u = backend.rng().random(shape, dtype=dtype)
    return (u >= p).astype(dtype) / (1.0 - p)


def silu(x):
    return x / (1.0 + np.exp(-x))


def group_norm(x, groups, gamma, beta, eps):
    """(B, C, H, W): normalise each (example, group of C/groups channels) (Wu & He 2018)."""
    B, C, H, W = x.shape
    g = x.reshape(B, groups, -1)
    g = (g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + eps)
    return g.reshape(B, C, H, W) * gamma[:, None, None] + beta[:, None, None]


def conv2d(x, w, b, pad):
    """Stride-1 convolution (B, Cin, H, W) * (Cout, Cin, k, k) -> (B, Cout, H, W), one
    kernel tap at a time."""
    B, _, H, W = x.shape
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((B, w.shape[0], H + 2 * pad - k + 1, W + 2 * pad - k + 1))
    for i in range(k):
        for j in range(k):
            window = xp[:, :, i:i + out.shape[2], j:j + out.shape[3]]
            out += np.einsum("oc,bchw->bohw", w[:, :, i, j], window)
    return out + b[:, None, None]


def resblock_by_hand(m, x, temb, p):
    """Ho et al.'s resnet_block with dropout p, the mask drawn where they apply it."""
    par = {name: t.data for name, t in m.named_parameters()}
    groups, eps = m.norm1.num_groups, m.norm1.eps
    h = silu(group_norm(x, groups, par["norm1.weight"], par["norm1.bias"], eps))
    h = conv2d(h, par["conv1.weight"], par["conv1.bias"], 1)
    h = h + (silu(temb) @ par["temb.weight"].T + par["temb.bias"])[:, :, None, None]
    h = silu(group_norm(h, groups, par["norm2.weight"], par["norm2.bias"], eps))
    if p > 0:
        h = h * keep_mask(h.shape, p)                                # dropout, before conv2
    h = conv2d(h, par["conv2.weight"], par["conv2.bias"], 1)
    skip = x if m.skip is None else conv2d(x, par["skip.weight"], par["skip.bias"], 0)
    return skip + h


def small_unet(seed):
    """The smallest U-Net with every kind of block, dropout P, each parameter N(0, 0.5²) (conv2
    and the output convs start at ~0, which would hide whatever comes before them)."""
    net = UNet(in_channels=1, image_size=8, base_channels=8, ch_mult=(1, 2), num_res_blocks=1,
               attn_resolutions=(4,), groups=4, dropout=P, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for p in net.parameters():
        p.data[...] = 0.5 * rng.standard_normal(p.shape)
    return net


def resblock(seed, shortcut):
    """One of small_unet's ResBlocks: with a 1x1 shortcut (cin != cout) or the identity."""
    blocks = [m for m in small_unet(seed).modules() if isinstance(m, ResBlock)]
    return next(m for m in blocks if (m.skip is not None) == (shortcut == "1x1"))


def block_inputs(block, seed, size=(5, 4)):
    """x (2, cin, *size) and temb (2, tdim) for the block."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, block.conv1.in_channels) + size),
            rng.standard_normal((2, block.temb.in_features)))


# ---------------------------------------------------------------------------- nn.Dropout
def test_dropout_layer_in_train_mode_is_x_times_the_seeded_mask():
    x = np.random.default_rng(0).standard_normal((4, 5, 3))
    layer = Dropout(P)
    minidiff.manual_seed(SEED)
    y = layer(Tensor(x)).numpy()
    minidiff.manual_seed(SEED)
    np.testing.assert_array_equal(y, x * keep_mask(x.shape, P))
    assert 0 < (y == 0).sum() < y.size                          # the mask is not all one kind
    np.testing.assert_array_equal(layer.eval()(Tensor(x)).numpy(), x)


# ---------------------------------------------------------------------------- ResBlock
@pytest.mark.parametrize("shortcut", ["1x1", "identity"])
def test_resblock_in_train_mode_is_ho_et_als_block_with_the_same_mask(shortcut):
    block = resblock(1, shortcut)
    x, temb = block_inputs(block, 2)
    minidiff.manual_seed(SEED)
    got = block(Tensor(x), Tensor(temb)).numpy()
    minidiff.manual_seed(SEED)
    np.testing.assert_allclose(got, resblock_by_hand(block, x, temb, P), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(block.eval()(Tensor(x), Tensor(temb)).numpy(),
                               resblock_by_hand(block, x, temb, 0.0), rtol=1e-10, atol=1e-12)


def test_resblock_backward_in_train_mode_reuses_the_forward_mask():
    """Backward through dropout applies the forward's mask: central differences of the seeded
    forward (one mask for every evaluation) agree with it."""
    block = resblock(3, "1x1")

    def seeded(x, temb):
        minidiff.manual_seed(SEED)
        return block(x, temb)
    gradcheck(seeded, *block_inputs(block, 4, size=(3, 3)))


# ---------------------------------------------------------------------------- the U-Net
def test_unet_in_train_mode_drops_in_every_resblock():
    """The U-Net's output with each ResBlock replaced by the transcription (dropout P, masks
    drawn in the same order) equals its own: p reaches every block, and train() does too."""
    net = small_unet(5)
    rng = np.random.default_rng(6)
    x, t = rng.standard_normal((2, 1, 8, 8)), np.array([3, 17])
    minidiff.manual_seed(SEED)
    got = net(Tensor(x), t).numpy()
    blocks = [m for m in net.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 8                     # 2 down, 2 middle, 2 x 2 up
    for m in blocks:
        m.forward = (lambda x, temb, m=m: Tensor(resblock_by_hand(m, x.data, temb.data, P)))
    minidiff.manual_seed(SEED)
    np.testing.assert_allclose(net(Tensor(x), t).numpy(), got, rtol=1e-10, atol=1e-12)
    minidiff.manual_seed(SEED + 1)                              # another mask, another output
    assert np.abs(net(Tensor(x), t).numpy() - got).max() > 1e-3
