"""A run's whole state as a checkpoint, and back: weights, Adam's moments, the EMA, the
warm-up, the step, the RNG state and the config; everything a run needs to continue bit for
bit. Arrays go to the .npz, scalars to its JSON metadata (minidiff/checkpoint.py).

Loading trusts nothing: every field and array is checked against the state of this freshly
built run (same names, kinds, shapes, dtypes, finite values), and the counters against each
other, before anything changes.

    arrays, meta = state(trainer)
    check_data(path, meta, trainer.cfg.data_path)     # the data the run was trained on
    restore(trainer, path, arrays, meta, restore_rng=True)
"""
import numpy as np

from . import backend, data_source, distributed, memory
from .checkpoint import check_like
from .config import TrainConfig

# The version of what a checkpoint's metadata holds. 1: until 2026-12-06 (no "run_format" key);
# 2: every config field present, the data's record ("data": minidiff/data_source.py);
# 3: the config's objective too (flow matching). Older formats take the defaults of
# TrainConfig.FORMAT_1_DEFAULTS and FORMAT_2_DEFAULTS for what they lack.
RUN_FORMAT = 3


def refuse(path, field, msg):
    raise ValueError(f"checkpoint {path}: {field}: {msg}. Nothing was loaded or changed")


def _flatten(prefix, sd, arrays, meta):
    """Split a state_dict into arrays (for the npz) and JSON-able scalars (for the metadata)."""
    for k, v in sd.items():
        if isinstance(v, np.ndarray) or hasattr(v, "__cuda_array_interface__"):
            arrays[f"{prefix}{k}"] = backend.to_numpy(v)
        else:
            meta[k] = v


def _unflatten(prefix, arrays, meta):
    sd = dict(meta)
    sd.update({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
    return sd


def state(t, streams=None):
    """(arrays, meta) of the trainer t; with N ranks, also N and every rank's own stream
    (`streams`, gathered by rank 0: minidiff/distributed)."""
    arrays, meta = {}, {"run_format": RUN_FORMAT, "step": t.step, "config": t.cfg.to_json(),
                        "data": t.data_record, "device": backend.get_device(),
                        "rng": backend.get_rng_state()}
    meta.update(distributed.world().checkpoint_meta(streams))          # one process: nothing
    for name, value in t.model.state_dict().items():
        arrays["model." + name] = value
    opt_meta, ema_meta = {}, {}
    _flatten("opt.", t.opt.state_dict(), arrays, opt_meta)
    _flatten("ema.", t.ema.state_dict(), arrays, ema_meta)
    meta.update(opt=opt_meta, ema=ema_meta, warmup=t.warmup.state_dict())
    return arrays, meta


def run_format(path, meta):
    """The checkpoint's run-state format: 1 (before the key existed) to RUN_FORMAT."""
    version = meta.get("run_format", 1)
    if isinstance(version, bool) or version not in range(1, RUN_FORMAT + 1):
        refuse(path, "meta.run_format", f"got {version!r:.40}; this minidiff reads 1 to "
               f"{RUN_FORMAT} (a checkpoint from a newer minidiff?)")
    return version


def saved_config(path, meta):
    """The TrainConfig inside a checkpoint's metadata, checked field by field."""
    saved = meta.get("config")
    if not isinstance(saved, dict):
        refuse(path, "meta.config", "missing or not a JSON object")
    if run_format(path, meta) < 3 and saved.get("model") == "cifar10":
        refuse(path, "meta.config.model", "a 'cifar10' run from before 2026-12-06, when the "
               "preset took Ho et al.'s stride-2 padding and GroupNorm ε: its weights belong "
               "to another network than this minidiff builds")
    try:
        return TrainConfig.from_json(saved, run_format(path, meta)).validate()
    except (ValueError, TypeError) as e:
        refuse(path, "meta.config", str(e))


def checkpoint_limit(path, meta):
    """load_checkpoint's limit for a run: the most bytes of arrays a checkpoint of the model
    its config describes holds. Each parameter (counted, not built: memory.py) 4 times, the
    weights, the EMA's, Adam's m and v (state() above), in float64 at most; 1 MiB to spare."""
    return 4 * 8 * memory.footprint(saved_config(path, meta)).params + 2**20


def saved_data(path, meta):
    """The record of the data the run was trained on (None: minidiff's own data, or a format-1
    checkpoint, which kept no record), checked for form."""
    if run_format(path, meta) == 1:
        return None
    if "data" not in meta:
        refuse(path, "meta.data", "missing")
    rec = meta["data"]
    if rec is None:
        return None
    fields = {"path": str, "kind": str, "bytes": int, "sha256": str}
    if isinstance(rec, dict) and rec.get("kind") == "folder":
        fields.update(files=int, mtimes_sha256=str)
    if not isinstance(rec, dict) or rec.get("kind") not in ("file", "folder") or \
            any(not isinstance(rec.get(k), kind) for k, kind in fields.items()):
        refuse(path, "meta.data", f"not the record of a file or folder: {rec!r:.80}")
    return rec


def check_data(path, meta, data_path):
    """The data at data_path is the data the checkpoint's run was trained on; returns a note
    for the user or None. Format-1 checkpoints kept no record and pass unchecked."""
    saved = saved_data(path, meta)
    if run_format(path, meta) == 1:
        return None
    try:
        return data_source.check(saved, data_path)
    except ValueError as e:
        raise ValueError(f"{e} (checkpoint {path})") from None


def restore(t, path, arrays, meta, restore_rng):
    """Check every field and array of the checkpoint against the trainer t, then load it all
    into t. A checkpoint that fails any check changes nothing. (The data: check_data.)"""
    saved = saved_config(path, meta)
    diffs = [f"{k}: checkpoint {getattr(saved, k)!r}, now {getattr(t.cfg, k)!r}"
             for k in saved.to_json() if k not in TrainConfig.RESUMABLE
             and getattr(saved, k) != getattr(t.cfg, k)]
    if diffs:
        raise ValueError(f"resume: the config differs from the checkpoint's ({path}): "
                         + "; ".join(diffs) + ". Use the checkpoint's values, or another "
                         "--out-dir for a new run")
    distributed.world().check_checkpoint(path, meta, restore_rng)      # ranks, their streams
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        refuse(path, "meta.step", f"must be an int >= 0, got {step!r:.40}")
    template_arrays, template_meta = state(t)
    if step > 0:                                                  # Adam's m and v exist
        template_arrays.update({f"opt.{name}.{i}": backend.to_numpy(p.data)
                                for name in t.opt.buffers_in_use()
                                for i, p in enumerate(t.params)})
    check_like(path, arrays, meta, template_arrays, template_meta,
               skip=("format", "run_format", "config", "data", "device") + distributed.META_KEYS)
    _check_counts(t, path, meta, step, template_meta)
    if step > t.cfg.steps:
        raise ValueError(f"steps: the checkpoint {path} is at step {step}, past "
                         f"steps={t.cfg.steps}; allowed: steps >= {step}")
    device = meta.get("device", "cpu" if run_format(path, meta) == 1 else None)
    if device not in ("cpu", "cuda"):
        refuse(path, "meta.device", f"got {device!r:.40}, allowed: cpu, cuda")
    if restore_rng and device != backend.get_device():
        raise ValueError(f"device: the checkpoint {path} was written on {device!r}, this "
                         f"run is on {backend.get_device()!r}; resume on {device!r} (its "
                         "random generator cannot move between devices)")
    t.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
    t.opt.load_state_dict(_unflatten("opt.", arrays, meta["opt"]))
    t.ema.load_state_dict(_unflatten("ema.", arrays, meta["ema"]))
    t.warmup.load_state_dict(meta["warmup"])
    if restore_rng:
        backend.set_rng_state(meta["rng"])
        distributed.world().set_stream(meta)
    t.step = step


def _check_counts(t, path, meta, step, fresh):
    """The step, the optimiser's and the EMA's update counts and the warm-up agree, and the
    RNG state is one NumPy takes as it is. (check_like has already checked the kinds.)"""
    if any(k != step for k in meta["opt"]["steps"]):
        refuse(path, "meta.opt.steps", f"every parameter's update count must equal the step "
               f"{step}, got {sorted(set(meta['opt']['steps']))}")
    if meta["ema"]["num_updates"] != step:
        refuse(path, "meta.ema.num_updates", f"must equal the step {step}, got "
               f"{meta['ema']['num_updates']}")
    if not 0 <= meta["ema"]["decay"] <= 1:
        refuse(path, "meta.ema.decay", f"must be in [0, 1], got {meta['ema']['decay']}")
    want = {"warmup_steps": t.cfg.warmup, "base_lr": t.cfg.lr, "last_step": step}
    if meta["warmup"] != want:
        refuse(path, "meta.warmup", f"expected {want} (the config's warm-up at step {step}), "
               f"got {meta['warmup']}")
    lr = t.warmup.lr_at(step)
    for k, v in fresh["opt"].items():
        got = meta["opt"][k]
        if k != "steps" and got != (lr if k == "lr" else v):
            refuse(path, f"meta.opt.{k}", f"expected {lr if k == 'lr' else v!r}, got {got!r}")
    rng, kind = meta["rng"], fresh["rng"]["bit_generator"]        # PCG64, NumPy's default
    if rng["bit_generator"] != kind:
        refuse(path, "meta.rng.bit_generator", f"expected {kind!r}, got "
               f"{rng['bit_generator']!r:.40}")
    if rng["has_uint32"] not in (0, 1) or not 0 <= rng["uinteger"] < 2**32:
        refuse(path, "meta.rng", "has_uint32 must be 0 or 1 and uinteger a 32-bit number")
    try:                                        # NumPy must take the state and give it back
        scratch = getattr(np.random, kind)()
        scratch.state = rng
        taken = scratch.state == rng
    except (TypeError, ValueError, OverflowError, KeyError):
        taken = False
    if not taken:
        refuse(path, "meta.rng", "not a state NumPy's generator accepts as it is")
