"""Checkpoint files: round trip, atomic writes, and refusal of anything that is not one."""
import pickle

import numpy as np
import pytest

import fastnn
from fastnn.checkpoint import Checkpoint, CheckpointError, load, save


def _ck(dtype=np.float64):
    params = fastnn.init_params(5, 4, 3, dtype=dtype, seed=0)
    state = {"m": fastnn.Params(*(np.full_like(p, 0.5) for p in params))}
    return Checkpoint(params, 2, np.array([1.0, 0.5]), {"name": "adam", "t": 2}, state,
                      {"seed": 1, "batch": 8}, {})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip(tmp_path, dtype):
    path = tmp_path / "a.npz"
    ck = _ck(dtype)
    save(path, ck)
    back = load(path)
    assert back.step == 2 and back.meta == ck.meta and back.optimizer == ck.optimizer
    for a, b in zip(back.params, ck.params):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.optimizer_state["m"].w1, 0.5)
    assert [f.name for f in tmp_path.iterdir()] == ["a.npz"]  # no temporary file left behind


def test_overwrite_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "a.npz"
    save(path, _ck())
    good = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save(path, _ck())
    assert path.read_bytes() == good
    assert [f.name for f in tmp_path.iterdir()] == ["a.npz"]


def _corrupt(tmp_path, how):
    path = tmp_path / "bad.npz"
    save(path, _ck())
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        b = bytearray(data)
        for i in range(200, len(b), 97):
            b[i] ^= 0xFF
        path.write_bytes(bytes(b))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not-zip":
        path.write_bytes(b"hello world" * 100)
    elif how in ("pickle", "wrong-shape", "wrong-dtype", "no-meta", "bad-step"):
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        if how == "pickle":
            arrays["params/w1"] = np.array([object()], dtype=object)
        elif how == "wrong-shape":
            arrays["params/b1"] = np.zeros(7)
        elif how == "wrong-dtype":
            arrays["params/b2"] = arrays["params/b2"].astype(np.float32)
        elif how == "no-meta":
            del arrays["meta"]
        elif how == "bad-step":
            arrays["losses"] = np.zeros(5)
        np.savez(path, **arrays)
    elif how == "raw-pickle":
        path.write_bytes(pickle.dumps({"params": 1}))
    return path


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "not-zip", "pickle",
                                 "wrong-shape", "wrong-dtype", "no-meta", "bad-step",
                                 "raw-pickle"])
def test_damaged_files_are_refused(tmp_path, how):
    path = _corrupt(tmp_path, how)
    with pytest.raises(CheckpointError, match="checkpoint"):
        load(path)


def test_missing_file():
    with pytest.raises(CheckpointError, match="no such file"):
        load("/nonexistent/ck.npz")


def test_pickled_payload_never_runs(tmp_path):
    """An object array whose unpickling would run code: refused, and the code does not run."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    save(path, _ck())
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["params/w1"] = np.array([Evil()], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError):
        load(path)
    assert not marker.exists()
