"""Checkpoint files: exact round trip, no pickle, atomic replacement, clear errors."""
import os

import numpy as np
import pytest

from minidiff.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"a.weight": rng.standard_normal((3, 4)).astype(np.float32),
              "b": rng.standard_normal(5), "step_ints": np.arange(4, dtype=np.int64)}
    meta = {"step": 12, "rng": {"state": 2**100 + 7, "inc": 3}, "config": {"lr": 2e-4}}
    p = tmp_path / "c.npz"
    save_checkpoint(p, arrays, meta)
    got, m = load_checkpoint(p)
    assert set(got) == set(arrays)
    for k in arrays:
        assert got[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(got[k], arrays[k])
    assert m["step"] == 12 and m["rng"]["state"] == 2**100 + 7 and m["config"] == {"lr": 2e-4}


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError, match="holds Python objects"):
        save_checkpoint(tmp_path / "c.npz", {"x": np.array([{"a": 1}], dtype=object)}, {})
    assert not (tmp_path / "c.npz").exists()


def test_a_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"w": np.ones(3)}, {"step": 1})

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(p, {"w": np.zeros(3)}, {"step": 2})
    monkeypatch.undo()
    arrays, meta = load_checkpoint(p)
    assert meta["step"] == 1 and arrays["w"].tolist() == [1, 1, 1]
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")] == []


def test_truncated_or_foreign_files_give_clear_errors(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"w": np.ones(100)}, {"step": 1})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable minidiff checkpoint"):
        load_checkpoint(p)
    q = tmp_path / "plain.npz"
    np.savez(q, w=np.ones(2))
    with pytest.raises(ValueError, match="no metadata"):
        load_checkpoint(q)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.npz")
