"""``kernel="auto"``: pick the fastest variant for a (shape, dtype, threads) by a short measurement,
and remember the choice on disk.

The choice file is JSON in ``$FASTNN_TUNE_DIR``, else ``$XDG_CACHE_HOME/fastnn``, else
``~/.cache/fastnn``: ``tune.json``.  Each entry is keyed by the problem and by a fingerprint of the
machine and software (CPU, core count, fastnn/numpy/numba versions, BLAS backend), so a choice made
elsewhere or before an upgrade is never reused.  Writes are atomic (temporary file, then rename).
``fastnn tune`` measures again and overwrites.

Measuring: each candidate runs in a block of its own (a warm-up, then timed calls), and the blocks
are repeated in alternating order; the median block time decides.  Blocks rather than call-by-call
interleaving, because in training the chosen kernel runs alone: a parallel Numba kernel measured
right after a threaded BLAS call would pay for BLAS's still-spinning threads, a cost it never pays
in a training loop.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time

import numpy as np

from . import kernels
from ._config import get_num_threads
from .kernels.losses import SQUARED
from .params import Params

CANDIDATES = ("fused", "tiled", "blas")
_lock = threading.Lock()
_memory: dict[str, str] = {}


def tune_dir() -> str:
    env = os.environ.get("FASTNN_TUNE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastnn")


def tune_file() -> str:
    return os.path.join(tune_dir(), "tune.json")


def _fingerprint() -> str:
    import numba

    from . import __version__
    from .cli import _cpu_name
    from .kernels import blas

    return "|".join([_cpu_name(), str(os.cpu_count()), platform.machine(), __version__,
                     np.__version__, numba.__version__, blas.BACKEND_NAME])


def _key(m, n, h, k, dtype, threads) -> str:
    return f"{m}x{n}x{h}x{k}/{np.dtype(dtype).name}/t{threads}"


def _load() -> dict:
    try:
        with open(tune_file()) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("fingerprint") != _fingerprint():
        return {}
    choices = data.get("choices", {})
    return choices if isinstance(choices, dict) else {}


def _save(choices: dict) -> None:
    """Write atomically; a failure to write (read-only home, full disk) only costs a re-measure."""
    path = tune_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tune-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"fingerprint": _fingerprint(), "choices": choices}, f, indent=1,
                      sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        pass


def candidates() -> list[str]:
    return [name for name in CANDIDATES if name in kernels.available()]


# OpenBLAS's idle workers spin for up to 2**28 cycles (~0.1 s) after a call, so the warm-up must
# outlast that before a parallel Numba kernel is timed.
WARM_UP = 0.12


def measure(params: Params, x, y, names=None, *, repeats=2, block=0.03) -> dict[str, float]:
    """Median seconds per ``sgd_step`` of each variant on copies of ``params`` (never the caller's
    arrays).  ``x``, ``y`` are validated, kernel-ready arrays."""
    names = list(names or candidates())
    lr = 1e-12  # the copies barely move, so every block times the same numbers
    steps = {}
    for name in names:
        variant = kernels.get(name)
        p = params.copy()
        steps[name] = (lambda v=variant, p=p: v.sgd_step(p, x, y, lr))
        steps[name]()  # compile or load from cache
    times = {name: [] for name in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            f = steps[name]
            _block(f, WARM_UP)  # lets the other variant's thread pool go idle
            times[name].append(_block(f, block))
    return {name: float(np.median(t)) for name, t in times.items()}


def _block(f, budget):
    reps, total = 0, 0.0
    t0 = time.perf_counter()
    while True:
        f()
        reps += 1
        total = time.perf_counter() - t0
        if total >= budget:
            return total / reps


def choose(params: Params, x, y, *, retune=False) -> str:
    """The variant ``auto`` runs for this problem: remembered, or measured now and remembered."""
    m = x.shape[0]
    n, h = params.w1.shape
    k = params.w2.shape[1]
    key = _key(m, n, h, k, params.dtype, get_num_threads())
    with _lock:
        if not retune:
            if key in _memory:
                return _memory[key]
            choice = _load().get(key)
            if isinstance(choice, dict) and choice.get("kernel") in kernels.available():
                _memory[key] = choice["kernel"]
                return choice["kernel"]
        return _measure_and_remember(params, x, y, key)["kernel"]


def _measure_and_remember(params: Params, x, y, key: str) -> dict:
    """Measure the candidates, remember the winner (memory and disk); returns the entry
    ``{"kernel": name, "us": {name: microseconds per step}}``.  Call with ``_lock`` held."""
    timings = measure(params, x, y)
    entry = {"kernel": min(timings, key=timings.get),
             "us": {name: t * 1e6 for name, t in timings.items()}}
    _memory[key] = entry["kernel"]
    stored = _load()  # read again: another process may have written while we measured
    stored[key] = entry
    _save(stored)
    return entry


def tune(shape, dtype, *, seed=0) -> dict:
    """Measure the candidates on random data of ``shape`` (m, n, h, k) and remember the winner.
    Returns ``{"kernel": name, "us": {name: microseconds per step}}``."""
    from .bench import problem

    x, y, params = problem(shape, dtype, seed=seed)
    m, n, h, k = shape
    with _lock:
        return _measure_and_remember(params, x, y, _key(m, n, h, k, dtype, get_num_threads()))


def forget() -> None:
    """Drop every remembered choice, in memory and on disk."""
    with _lock:
        _memory.clear()
        try:
            os.remove(tune_file())
        except OSError:
            pass


# --- the `auto` variant: choose, then delegate ------------------------------------------------------

def auto_predict(params: Params, x):
    y = np.zeros((x.shape[0], params.w2.shape[1]), params.dtype)
    return kernels.get(choose(params, x, y)).predict(params, x)


def auto_loss_and_grads(params: Params, x, y, loss_kind=SQUARED, grads=None):
    return kernels.get(choose(params, x, y)).loss_and_grads(params, x, y, loss_kind, grads)


def auto_sgd_step(params: Params, x, y, lr, loss_kind=SQUARED):
    return kernels.get(choose(params, x, y)).sgd_step(params, x, y, lr, loss_kind)


def auto_train_loop(params: Params, x, y, lr, losses, loss_kind=SQUARED, batch=None, start=0,
                    order=None):
    rows = x.shape[0] if batch is None else min(batch, x.shape[0])
    variant = kernels.get(choose(params, x[:rows], y[:rows]))
    if variant.train_loop is not None:
        return variant.train_loop(params, x, y, lr, losses, loss_kind, batch, start, order)
    return kernels.step_loop(variant, params, x, y, lr, losses, loss_kind, batch, start, order)


def auto_train_loop_optim(params: Params, x, y, optimizer, grads, losses, loss_kind=SQUARED,
                          batch=None, start=0, order=None):
    rows = x.shape[0] if batch is None else min(batch, x.shape[0])
    variant = kernels.get(choose(params, x[:rows], y[:rows]))
    if variant.train_loop_optim is not None:
        return variant.train_loop_optim(params, x, y, optimizer, grads, losses, loss_kind, batch,
                                        start, order)
    return kernels.optim_step_loop(variant, params, x, y, optimizer, grads, losses, loss_kind,
                                   batch, start, order)
