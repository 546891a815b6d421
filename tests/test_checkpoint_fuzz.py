"""A checkpoint's contents are trusted only after every field and array is checked.

The fuzz: mutate one thing in a real checkpoint (a metadata field, the RNG state, an array's
presence, shape, dtype or values) and resume from it. Either the resume is refused with a
ValueError that names what was mutated, and nothing on disk changed; or it loads to exactly the
state that the unmutated checkpoint loads to (the oracle: a resume from the original).
"""
import copy
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.train import Trainer

from test_train import tiny

pytestmark = pytest.mark.usefixtures("one_blas_thread")

STEP = 6


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A real checkpoint at step 6, and the state a resume from it gives."""
    root = tmp_path_factory.mktemp("base")
    t = Trainer(tiny(root, steps=STEP, ckpt_every=3), quiet=True).run(final_samples=False)
    arrays, meta = load_checkpoint(t.ckpt_path)
    ref = Trainer(tiny(root, steps=20), resume=True, quiet=True)
    ref.close()
    return Base(arrays, meta, state_of(ref))


class Base(tuple):
    """(arrays, meta, state): printed short in hypothesis's reports."""
    def __new__(cls, *parts):
        return super().__new__(cls, parts)

    def __repr__(self):
        return "<the base checkpoint>"


def state_of(trainer):
    arrays, meta = trainer.state()
    meta = json.loads(json.dumps(meta))                 # as it would be written
    meta["config"].pop("out_dir")
    return {k: (v.dtype, v.tobytes()) for k, v in arrays.items()}, meta, trainer.step


def mutations(arrays, meta):
    """Strategies of (description, tokens, mutate), mutate(arrays, meta) in place; a refusal
    must name one of the tokens."""
    names = sorted(arrays)
    meta_values = [-5, 100.5, True, "7", None, 10**30, STEP + 1, STEP - 1, [], {}, float("nan")]
    # Any int below 2^128 is a valid generator state: a different run, not a corrupt one. So
    # the generator's fields only get values that no PCG64 state can hold.
    rng_values = [-5, 100.5, True, "7", None, 2**200, [], {}, float("nan")]

    def set_meta(path, value):
        def m(a, d):
            for key in path[:-1]:
                d = d[key]
            d[path[-1]] = value
        return m

    def del_meta(path):
        def m(a, d):
            for key in path[:-1]:
                d = d[key]
            del d[path[-1]]
        return m

    leaves = [("step",), ("device",), ("rng", "bit_generator"), ("rng", "state", "state"),
              ("rng", "state", "inc"), ("rng", "has_uint32"), ("opt", "lr"), ("opt", "eps"),
              ("opt", "betas"), ("opt", "steps"), ("opt", "kind"), ("ema", "decay"),
              ("ema", "num_updates"), ("warmup", "last_step"), ("warmup", "base_lr"),
              ("config", "hidden"), ("config", "lr"), ("config", "data"), ("config", "steps")]
    removable = leaves + [("config",), ("rng",), ("opt",), ("ema",), ("warmup",),
                          ("rng", "state")]

    def tokens(path):
        if path[0] == "config":
            return ("meta.config", path[-1], "steps: the checkpoint")
        if path[0] == "step":
            return ("meta.step", "meta.opt.steps", "steps: the checkpoint")
        return (f"meta.{path[0]}", "meta.rng")

    def array_change(name, how):
        def m(a, d):
            x = a[name]
            if how == "delete":
                del a[name]
            elif how == "reshape":
                a[name] = x.reshape(-1)[:-1] if x.size > 1 else x.reshape(1, 1)
            elif how in ("float16", "int32", "complex64", "float64"):
                a[name] = x.astype(how)
            else:
                y = x.copy()
                y.reshape(-1)[y.size // 2] = {"nan": np.nan, "inf": np.inf}[how]
                a[name] = y
        return m

    def extra(a, d):
        a["model.extra"] = np.zeros(3, np.float32)

    return st.one_of(
        st.sampled_from(leaves).flatmap(lambda p: st.tuples(
            st.just(p), st.sampled_from(rng_values if p[0] == "rng" else meta_values))).map(
            lambda pv: (f"meta {pv[0]} = {pv[1]!r}", tokens(pv[0]), set_meta(*pv))),
        st.sampled_from(removable).map(
            lambda p: (f"del meta {p}", tokens(p) + (f"meta.{'.'.join(p)}",), del_meta(p))),
        st.tuples(st.sampled_from(names),
                  st.sampled_from(["delete", "reshape", "float16", "int32", "complex64",
                                   "float64", "nan", "inf"])).map(
            lambda nh: (f"array {nh[0]} {nh[1]}", (f"array {nh[0]}",), array_change(*nh))),
        st.just(("extra array", ("array model.extra",), extra)),
    )


@given(data=st.data())
def test_every_mutation_is_refused_by_name_or_loads_the_same_state(base, data):
    arrays0, meta0, expected = base
    what, tokens, mutate = data.draw(mutations(arrays0, meta0))
    arrays, meta = dict(arrays0), copy.deepcopy(meta0)
    mutate(arrays, meta)
    folder = Path(tempfile.mkdtemp())
    path = folder / "run" / "checkpoint.npz"
    meta.pop("format", None)
    save_checkpoint(path, arrays, meta)
    before = path.read_bytes()
    try:
        t = Trainer(tiny(folder, steps=20), resume=True, quiet=True)
    except ValueError as e:
        assert any(tok in str(e) for tok in tokens), (what, str(e))
        assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) \
            == [".lock", "checkpoint.npz"], what
        return
    t.close()
    assert state_of(t) == expected, what


# ------------------------------------------------------------------------------ whole files
def write_npz(path, meta_bytes, **arrays):
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(meta_bytes, np.uint8), **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("meta_bytes, message", [
    (b"[1, 2]", "its metadata is a JSON list, not an object"),
    (b"\xff\xfe", "its metadata is not JSON"),
    (b"{not json", "its metadata is not JSON"),
    (b'{"format": "someone-else-v3"}', "has format 'someone-else-v3'"),
    (b'{"format": "minidiff-checkpoint-v1"}', "meta.config: missing or not a JSON object"),
])
def test_metadata_that_is_not_ours_is_refused_in_one_line(tmp_path, meta_bytes, message):
    path = tmp_path / "run" / "checkpoint.npz"
    write_npz(path, meta_bytes, w=np.ones(2, np.float32))
    with pytest.raises(ValueError, match=message):
        Trainer(tiny(tmp_path, steps=20), resume=True, quiet=True)
    with pytest.raises(ValueError, match=message):
        Trainer.from_checkpoint(path)
