"""conv2d's reused temporaries, and the batch slices that keep them small.

A temporary of tens of MB costs the OS more to hand out than to fill: the allocator gives
big freed blocks back, and every new page then faults and is zeroed (measured: 2.7 ms of
a 3.4 ms 1x1 conv). So each kind of temporary has one buffer, grown when needed and
reused by every call. The slots below are never alive twice at once: a conv2d call is
over, or its backward has finished with a slot, before the slot is filled again.
  "padded"  the padded channels-first input X (or dY, or the dX accumulator of col2im)
  "cols"    im2col's matrix, shift-add's products Z, col2im's dcols, or a 1x1 dW per image
  "output"  the GEMM result Y before it goes back to NCHW
  "grad"    G, the output gradient laid out like Y
  "grad_grid"  the output gradient on the grid of X (see conv_fast._conv_weight_grad)

im2col multiplies an activation's size by kh*kw: for a 3x3 conv of 192 channels on 64 images
of 32x32, `cols` alone would take 470 MB. conv_fast therefore runs a big batch as slices of
images (batch_slices), so that no buffer outgrows WORKSPACE_BYTES. The GEMMs stay long
(thousands of columns each), and a slice's buffers are reused by the next slice.
"""
import math

from .. import backend

WORKSPACE_BYTES = 16 << 20          # at most this much per buffer, unless one image needs more

_workspace = {}


def scratch(slot, shape, dtype):
    """An uninitialised array of `shape` in the workspace buffer `slot`."""
    xp = backend.xp()
    key = (slot, xp.__name__, xp.dtype(dtype).str)
    n = math.prod(shape)
    buf = _workspace.get(key)
    if buf is None or buf.size < n:
        buf = _workspace[key] = xp.empty(n, dtype=dtype)
    return buf[:n].reshape(shape)


def free_workspace():
    """Release conv2d's reused buffers (they are rebuilt on the next call)."""
    _workspace.clear()


def batch_slices(batch, bytes_per_image):
    """[(b0, b1), ...] covering range(batch) in order, as few slices as keep each slice's
    buffers within WORKSPACE_BYTES (one image per slice at least)."""
    per_slice = max(1, WORKSPACE_BYTES // max(1, bytes_per_image))
    return [(b0, min(b0 + per_slice, batch)) for b0 in range(0, batch, per_slice)]
