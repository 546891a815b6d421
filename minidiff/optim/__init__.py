"""Optimizers (SGD, Adam, AdamW), global-norm gradient clipping, EMA of weights, LR schedules.

Ho et al. 2020 (Appendix B) train with Adam, learning rate 2e-4 warmed up linearly over the first
5000 steps, gradients clipped to global norm 1, and sample with an exponential moving average
of the weights (decay 0.9999).

The names and habits are PyTorch's: `opt.param_groups` (read at every step), parameters with
requires_grad=False kept and skipped, `zero_grad(set_to_none=True)`, `clip_grad_norm_`, and
`minidiff.optim.lr_scheduler` (LinearLR, CosineAnnealingLR, LambdaLR).

Each optimizer's arithmetic is one small function on arrays (`sgd_update`, `adam_update`,
`adamw_update`, and `ema_update` for the EMA). They update in place and never touch a Tensor,
so a fused CUDA kernel takes the place of Adam's, AdamW's and the EMA's on the GPU
(kernels/adam.cu, through minidiff.cuda): one pass over each array instead of a dozen.

Checkpoints: every `state_dict()` here is a flat dict of NumPy arrays and JSON-able scalars
(str, int, float, lists of them); nothing needs pickle.

    optimizer.py     Optimizer: param groups, step, zero_grad, state_dict
    sgd.py, adam.py  SGD; Adam, AdamW (amsgrad)
    clip.py          clip_grad_norm_ (and its older name clip_grad_norm)
    ema.py           EMA
    lr_scheduler.py  LinearLR, CosineAnnealingLR, LambdaLR; LinearWarmup (Ho et al.'s)
"""
from . import lr_scheduler
from .adam import Adam, AdamW, adam_update, adamw_update
from .clip import clip_grad_norm, clip_grad_norm_
from .ema import EMA, ema_update
from .lr_scheduler import LinearWarmup
from .optimizer import Optimizer
from .sgd import SGD, sgd_update

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "EMA", "LinearWarmup", "clip_grad_norm_",
           "clip_grad_norm", "lr_scheduler", "sgd_update", "adam_update", "adamw_update",
           "ema_update"]
