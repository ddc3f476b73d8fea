"""``kernel="auto"``: pick the fastest variant for a (shape, dtype, threads) by a short measurement,
and remember the choice on disk.

The choice file is JSON in ``$FASTNN_TUNE_DIR``, else ``$XDG_CACHE_HOME/fastnn``, else
``~/.cache/fastnn``: ``tune.json``.  Each entry is keyed by the problem and by a fingerprint of the
machine and software (CPU, core count, fastnn/numpy/numba versions, BLAS backend), so a choice made
elsewhere or before an upgrade is never reused.  Writes are atomic (temporary file, then rename).
``fastnn tune`` measures again and overwrites.

Candidates: ``numpy`` (the careful numpy step: with it among them, ``auto`` is never slower than
numpy, to the accuracy of the measurement), ``fused-wide``, ``fused`` (each also with numpy's
OpenBLAS when MKL is the default BLAS), ``tiled`` and ``blas``.  A first call measures only the
candidates that are ready (see ``ready``), so that it costs one compile (fused-wide's), not
five; ``fastnn tune`` compiles and measures all of them, and a later first call measures again
whenever a candidate it did not measure has become ready.

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

import numba
import numpy as np

from . import kernels
from ._config import get_num_threads
from .kernels import blas
from .kernels.losses import SQUARED
from .kernels.variants import step_flops
from .params import Params

CANDIDATES = ("numpy", "fused-wide", "fused-wide-openblas", "fused", "fused-openblas", "tiled",
              "blas")
# The compiled function each candidate's step runs, for telling whether it is "ready" (compiled,
# or in Numba's on-disk cache, for the dtype); numpy compiles nothing.
_COMPILED = {"fused-wide": ("wide", "step"), "fused-wide-openblas": ("wide", "step"),
             "fused": ("fused", "step"), "fused-openblas": ("fused", "step"),
             "tiled": ("tiled", "step"), "blas": ("chunked", "step")}
# The routes a first call compiles (one compiled function: the BLAS library is a run-time
# argument) and always measures.  fused-wide, not fused: within noise of fused where the output
# layer is narrow (seed 1.15x numpy against 1.16x, mnist 1.07x against 1.07x), far ahead where it
# is wide or h is small (k=100: 1.07-1.14x against 0.60-0.75x; 4096x32x32x1: 1.43-2.10x against
# 0.99-1.00x), and cheaper to compile (1.55 s against 2.3 s cold).
PRIMARY = ("fused-wide", "fused-wide-openblas")


_lock = threading.Lock()
_memory: dict[str, str] = {}
_by_layers: dict[str, str] = {}  # the last choice per (n, h, k, dtype, threads)


def tune_dir() -> str:
    env = os.environ.get("FASTNN_TUNE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastnn")


def tune_file() -> str:
    return os.path.join(tune_dir(), "tune.json")


def _fingerprint() -> str:
    from . import __version__
    from .cli import _cpu_name

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


def ready(dtype) -> list[str]:
    """The candidates a first call measures: numpy, the ``PRIMARY`` routes (whose compile the
    first call pays anyway), and any other whose step is already compiled for ``dtype``, in this
    process or in Numba's on-disk cache.  Compiling every candidate cold costs ~15 s; ``fastnn
    tune`` does, and measures them all."""
    return [name for name in candidates()
            if name == "numpy" or name in PRIMARY or _compiled_for(_dispatcher(name), dtype)]


def _dispatcher(name):
    module, function = _COMPILED[name]
    return getattr(getattr(kernels, module), function)


def _compiled_for(dispatcher, dtype) -> bool:
    """Whether ``dispatcher`` has machine code for arrays of ``dtype``: compiled in this process,
    or in the on-disk cache (its index read without loading anything).  The index is Numba's
    internal format: if that ever changes, this answers False, which only narrows the choice."""
    want = numba.from_dtype(np.dtype(dtype))

    def for_dtype(sig):
        return any(isinstance(t, numba.types.Array) and t.dtype == want for t in sig)

    if any(for_dtype(sig) for sig in dispatcher.signatures):
        return True
    try:
        index = dispatcher._cache._cache_file._load_index()
        magic = dispatcher.targetctx.codegen().magic_tuple()
        return any(key[1] == magic and for_dtype(key[0]) for key in index)
    except Exception:
        return False


# OpenBLAS's idle workers spin for up to 2**28 cycles (~0.1 s) after a call, so the warm-up must
# outlast that before a candidate that uses another thread pool is timed.  Within one pool a short
# warm-up does (caches, branch predictors).
WARM_UP = 0.12
WARM_UP_SAME_POOL = 0.01


def _pool(name) -> str:
    """The thread pools a candidate's step keeps busy: numpy and the ``-openblas`` routes share
    numpy's OpenBLAS (fused and fused-wide too, when that is the default BLAS); tiled uses
    Numba's, blas both Numba's and a BLAS library's."""
    if name in ("fused", "fused-wide"):
        return blas.BACKEND_NAME
    return {"numpy": "numpy", "fused-openblas": "numpy", "fused-wide-openblas": "numpy"}.get(
        name, name)


def measure(params: Params, x, y, names=None, *, repeats=2, block=0.03) -> dict[str, float]:
    """Median seconds per ``sgd_step`` of each variant on copies of ``params`` (never the caller's
    arrays).  ``x``, ``y`` are validated, kernel-ready arrays."""
    # candidates sharing a pool run next to each other: fewer long warm-ups
    names = sorted(names or candidates(), key=_pool)
    lr = 1e-12  # the copies barely move, so every block times the same numbers
    steps = {}
    for name in reversed(names):  # the first block's pool is then the one last used
        variant = kernels.get(name)
        p = params.copy()
        steps[name] = (lambda v=variant, p=p: v.sgd_step(p, x, y, lr))
        steps[name]()  # compile or load from cache
    times = {name: [] for name in names}
    pool = _pool(names[0])
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            f = steps[name]
            # a new pool: let the previous one's threads go idle first
            _block(f, WARM_UP if _pool(name) != pool else WARM_UP_SAME_POOL)
            pool = _pool(name)
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


# Below this many flops per step, ``auto`` runs ``SMALL_CHOICE`` without measuring: a step is
# then tens of microseconds, where numpy's ~20 calls of per-call overhead lose to one compiled
# call, and a measurement would cost ~0.5 s, thousands of such steps.  Measured
# (docs/optimisation.md, 8 shapes from 1x1x1x1 to 16x64x64x64 and 32x32x32x100, both dtypes):
# fused-wide-openblas 1.45-2.3x the careful numpy step, fused-wide 1.34-2.35x (its tiny gemms are
# cheaper to call in OpenBLAS than in MKL).
MEASURE_FLOPS = 1_000_000
SMALL_CHOICE = ("fused-wide-openblas" if "fused-wide-openblas" in kernels.available()
                else "fused-wide")


def choose(params: Params, x, y, *, retune=False, measure_now=True) -> str:
    """The variant ``auto`` runs for this problem: remembered, or measured now and remembered.

    A remembered choice stands unless a candidate it did not measure has become ready since
    (compiled by ``fastnn tune``, or by a run with ``kernel=NAME``): then the ready ones are
    measured again, once per process.  With ``measure_now=False`` (predict, loss_and_grads:
    often called on a whole data set or validation split, a shape training never steps on) it
    does not measure: the remembered choice for this shape, else the last choice made in this
    process for the same layer sizes (the training batch's), else ``SMALL_CHOICE``."""
    m = x.shape[0]
    n, h = params.w1.shape
    k = params.w2.shape[1]
    if not retune and step_flops(m, n, h, k) < MEASURE_FLOPS:
        return SMALL_CHOICE
    threads = get_num_threads()
    key = _key(m, n, h, k, params.dtype, threads)
    layers = key.split("x", 1)[1]  # "n x h x k / dtype / threads"
    with _lock:
        if not retune:
            if key in _memory:
                return _memory[key]
            choice = _load().get(key)
            if (isinstance(choice, dict) and choice.get("kernel") in kernels.available()
                    and (not measure_now
                         or set(ready(params.dtype)) <= set(choice.get("us", {})))):
                _memory[key] = _by_layers[layers] = choice["kernel"]
                return choice["kernel"]
            if not measure_now:
                return _by_layers.get(layers, SMALL_CHOICE)
        chosen = _measure_and_remember(params, x, y, key, ready(params.dtype))["kernel"]
        _by_layers[layers] = chosen
        return chosen


def _measure_and_remember(params: Params, x, y, key: str, names) -> dict:
    """Measure ``names``, remember the winner (memory and disk); returns the entry
    ``{"kernel": name, "us": {name: microseconds per step}}``.  Call with ``_lock`` held."""
    timings = measure(params, x, y, names)
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
        return _measure_and_remember(params, x, y, _key(m, n, h, k, dtype, get_num_threads()),
                                     candidates())


def forget() -> None:
    """Drop every remembered choice, in memory and on disk."""
    with _lock:
        _memory.clear()
        _by_layers.clear()
        try:
            os.remove(tune_file())
        except OSError:
            pass


# --- the `auto` variant: choose, then delegate ------------------------------------------------------

def auto_predict(params: Params, x):
    return kernels.get(choose(params, x, x[:, :0], measure_now=False)).predict(params, x)


def auto_loss_and_grads(params: Params, x, y, loss_kind=SQUARED, grads=None):
    variant = kernels.get(choose(params, x, y, measure_now=False))
    return variant.loss_and_grads(params, x, y, loss_kind, grads)


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
