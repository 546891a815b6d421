"""minidiff.save and minidiff.load: a state_dict to a .safetensors file and back, never pickle.

    minidiff.save(model.state_dict(), "model.safetensors")
    model.load_state_dict(minidiff.load("model.safetensors"))

A state_dict here is a flat dict of name -> array (Module.state_dict(), EMA's shadow weights).
safetensors (Hugging Face's format, read through its NumPy API) stores only arrays, names and
shapes, so loading a file cannot run code as torch.load's pickles can.
"""
import os
from collections.abc import Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from . import backend
from .tensor import Tensor

SUFFIX = ".safetensors"


def _checked_path(op, path):
    path = os.fspath(path)
    if not path.endswith(SUFFIX):
        raise ValueError(f"{op}: {path!r}: minidiff saves state dicts as safetensors; name the "
                         f"file *{SUFFIX} (pickle files such as .pt or .pth are not used)")
    return path


def _array(name, value):
    """An entry as a contiguous host array, or a one-line refusal naming it."""
    if isinstance(value, Tensor):
        value = value.data
    if not hasattr(value, "dtype") or not hasattr(value, "shape"):
        raise TypeError(f"save: entry {name!r} is a {type(value).__name__}, not an array; save "
                        f"writes a dict of name -> array such as model.state_dict()")
    return np.ascontiguousarray(backend.to_numpy(value))


def save(state_dict, path):
    """Write a dict of name -> array (or Tensor) to `path`, a .safetensors file."""
    path = _checked_path("save", path)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"save: expected a dict of name -> array (model.state_dict()), got "
                        f"{type(state_dict).__name__}")
    for name in state_dict:
        if not isinstance(name, str):
            raise TypeError(f"save: names must be strings, got {name!r:.60}")
    save_file({name: _array(name, v) for name, v in state_dict.items()}, path)


def load(path):
    """The dict of name -> NumPy array that `save` wrote to `path` (a .safetensors file)."""
    path = _checked_path("load", path)
    try:
        return load_file(path)
    except SafetensorError as e:
        raise ValueError(f"load: {path}: not a readable safetensors file ({e})") from None
