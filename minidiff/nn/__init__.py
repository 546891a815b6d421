"""Modules: Parameter, Module, the layers of Ho et al.'s networks, and rows of modules.

    module.py       Parameter, Module (naming, state_dict, load_state_dict, .to(device)),
                    the checks of loaded arrays
    layers.py       initialisation; Linear, Conv2d, GroupNorm, GroupNormSiLU, Dropout, SiLU,
                    ReLU, Identity
    containers.py   ModuleList, Sequential

A Module finds its parameters by walking its own attributes, in the order they were set:
an attribute that is a Parameter is a parameter, one that is a Module is a child, and a list
or tuple of Modules is a numbered row of children. So in

    class Block(Module):
        def __init__(self):
            super().__init__()
            self.norm = GroupNorm(8, 64)
            self.convs = [Conv2d(64, 64, 3, padding=1), Conv2d(64, 64, 3, padding=1)]

the names are "norm.weight", "norm.bias", "convs.0.weight", "convs.0.bias", "convs.1.weight",
... There is no registration step and no decorator. `self.convs = ModuleList([...])` gives the
same names; a Sequential on its own names its parameters "0.weight", "0.bias", ..., as PyTorch.

A Module's tensors live on one device. After set_device(), a model built before it is moved
with `model.to(device)`; calling it unmoved raises a one-line RuntimeError naming both devices.
"""
from .containers import ModuleList, Sequential
from .layers import (Conv2d, Dropout, GroupNorm, GroupNormSiLU, Identity, Linear, ReLU, SiLU,
                     variance_scaling_uniform, zero_init)
from .module import Module, Parameter, checked_array, checked_values
