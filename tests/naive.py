"""Naive loop references shared by several test files: slow, short, obviously right."""
import numpy as np


def naive_conv2d(x, w, b, stride, padding):
    """One output pixel at a time: the window times the kernel, summed, plus the bias."""
    (sh, sw), (ph, pw) = stride, padding
    B, C, H, W = x.shape
    Cout, _, kh, kw = w.shape
    xpad = np.zeros((B, C, H + 2 * ph, W + 2 * pw))
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.zeros((B, Cout, Ho, Wo))
    for n in range(B):
        for o in range(Cout):
            for y in range(Ho):
                for v in range(Wo):
                    window = xpad[n, :, y * sh:y * sh + kh, v * sw:v * sw + kw]
                    out[n, o, y, v] = (window * w[o]).sum() + (0.0 if b is None else b[o])
    return out
