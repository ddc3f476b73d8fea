"""Checkpoints: parameters, optimiser state and training position in one ``.npz`` file.

Loading never runs code: files are read with ``allow_pickle=False`` and the metadata is JSON in a
plain string array.  Writes are atomic: the file is written under a temporary name in the same
folder, flushed to disk (``fsync``), then renamed over the target, and the folder is synced, so
a crash at any moment leaves either the old checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .params import SUPPORTED_DTYPES, Params

FORMAT = "fastnn-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, truncated, corrupted or inconsistent."""


@dataclass
class Checkpoint:
    """What a checkpoint holds.

    ``params``; ``optimizer``: hyperparameters, ``t`` and ``state`` (name -> ``Params``);
    ``step``: steps taken so far; ``losses``: their losses; ``meta``: the rest of the training
    position and configuration (JSON-able: seed, batch size, loss, epoch curves, early-stopping
    counters); ``extra``: further named ``Params`` (the best params under early stopping);
    ``arrays``: named arrays of any shape (the dual form's state), float only.
    """

    params: Params
    step: int = 0
    losses: np.ndarray = field(default_factory=lambda: np.empty(0))
    optimizer: dict = field(default_factory=dict)
    optimizer_state: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)


def save(path, ckpt: Checkpoint, *, checked=False) -> None:
    """Write ``ckpt`` to ``path`` atomically (see the module docstring).  Unless the caller has
    already (``checked``), ``check_target`` first: only a checkpoint is ever replaced."""
    path = os.fspath(path)
    if not checked:
        check_target(path)
    arrays = {}
    for name, a in zip(Params._fields, ckpt.params):
        arrays[f"params/{name}"] = a
    for key, ps in ckpt.optimizer_state.items():
        for name, a in zip(Params._fields, ps):
            arrays[f"state/{key}/{name}"] = a
    for key, ps in ckpt.extra.items():
        for name, a in zip(Params._fields, ps):
            arrays[f"extra/{key}/{name}"] = a
    for name, a in ckpt.arrays.items():
        arrays[f"arrays/{name}"] = np.asarray(a)
    arrays["losses"] = np.asarray(ckpt.losses, np.float64)
    meta = dict(format=FORMAT, version=VERSION, step=int(ckpt.step), optimizer=ckpt.optimizer,
                meta=ckpt.meta)
    arrays["meta"] = np.array(json.dumps(meta))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def is_checkpoint(path) -> bool:
    """Whether ``path`` is a file holding a fastnn checkpoint (its metadata is read, nothing
    else)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f.files:
                return False
            meta = json.loads(str(f["meta"]))
        return isinstance(meta, dict) and meta.get("format") == FORMAT
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return False


def check_target(path, what="checkpoint") -> str:
    """``path`` as a place ``save`` may write: its folder exists and is writable, and whatever is
    there now is a fastnn checkpoint (a file of the user's, their data above all, is never
    replaced by one).  CheckpointError naming the problem otherwise.  Returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CheckpointError(f"{what} {path!r}: is a folder; give a file name such as "
                              f"{os.path.join(path, 'run.npz')!r}")
    if not os.path.isdir(folder):
        raise CheckpointError(f"{what} {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise CheckpointError(f"{what} {path!r}: the folder {folder!r} is not writable")
    if os.path.exists(path) and not is_checkpoint(path):
        raise CheckpointError(f"{what} {path!r}: a file that is not a fastnn checkpoint is "
                              f"there already; refusing to replace it (choose another name)")
    return path


def load(path) -> Checkpoint:
    """Read a checkpoint written by ``save``; ``CheckpointError`` naming the problem if the file
    is not one (missing, truncated, corrupted, pickled objects, inconsistent shapes or dtypes)."""
    path = os.fspath(path)
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path!r}: not a fastnn checkpoint (not an .npz "
                              f"archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r}: no such file") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        # allow_pickle=False makes numpy refuse object arrays with a ValueError: nothing runs
        raise CheckpointError(f"checkpoint {path!r}: not a readable fastnn checkpoint "
                              f"({type(exc).__name__}: {exc})") from None
    if "meta" not in data or data["meta"].dtype.kind != "U" or data["meta"].ndim != 0:
        raise CheckpointError(f"checkpoint {path!r}: no metadata; not a fastnn checkpoint")
    try:
        meta = json.loads(str(data["meta"]))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path!r}: metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path!r}: not a fastnn checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path!r}: format version {meta.get('version')!r}, "
                              f"this fastnn reads version {VERSION}")

    def group(prefix):
        names = [f"{prefix}/{n}" for n in Params._fields]
        missing = [n for n in names if n not in data]
        if missing:
            raise CheckpointError(f"checkpoint {path!r}: missing arrays {', '.join(missing)}")
        return _checked_params(Params(*(data[n] for n in names)), path, prefix)

    params = group("params")
    state, extra = {}, {}
    for key in sorted({k.split("/")[1] for k in data if k.startswith("state/")}):
        state[key] = group(f"state/{key}")
    for key in sorted({k.split("/")[1] for k in data if k.startswith("extra/")}):
        extra[key] = group(f"extra/{key}")
    for key, ps in {**state, **extra}.items():
        if ps.shape != params.shape or ps.dtype != params.dtype:
            raise CheckpointError(f"checkpoint {path!r}: {key} arrays do not match the params' "
                                  f"shapes/dtype")
    losses = data.get("losses")
    step = meta.get("step")
    if (losses is None or losses.ndim != 1 or losses.dtype != np.float64
            or not isinstance(step, int) or step < 0 or losses.shape[0] != step):
        raise CheckpointError(f"checkpoint {path!r}: inconsistent training position "
                              f"(step {step!r}, {None if losses is None else losses.shape} losses)")
    named = {k[len("arrays/"):]: data[k] for k in data if k.startswith("arrays/")}
    for name, a in named.items():
        if a.dtype.kind != "f":
            raise CheckpointError(f"checkpoint {path!r}: array {name} is not floating point")
    return Checkpoint(params, step, losses, meta.get("optimizer") or {}, state,
                      meta.get("meta") or {}, extra, named)


def _checked_params(ps: Params, path, what) -> Params:
    w1, b1, w2, b2 = ps
    if any(p.dtype not in SUPPORTED_DTYPES or p.dtype != w1.dtype for p in ps):
        raise CheckpointError(f"checkpoint {path!r}: {what} arrays must share one float32/float64 "
                              f"dtype, got {[str(p.dtype) for p in ps]}")
    if (w1.ndim != 2 or 0 in w1.shape or b1.shape != (w1.shape[1],) or w2.ndim != 2
            or w2.shape[0] != w1.shape[1] or w2.shape[1] < 1 or b2.shape != (w2.shape[1],)):
        raise CheckpointError(f"checkpoint {path!r}: {what} arrays have inconsistent shapes "
                              f"{[p.shape for p in ps]}")
    return Params(*(np.ascontiguousarray(p) for p in ps))
