"""``kernel="auto"``: pick the fastest variant for a (shape, dtype, threads) by a short measurement,
remember the choice on disk, and resolve every ``kernel=`` name to a variant (``resolve``).

The choice file is JSON in ``$FASTNN_TUNE_DIR``, else ``$XDG_CACHE_HOME/fastnn``, else
``~/.cache/fastnn``: ``tune.json``.  Each entry is keyed by the problem and by a fingerprint of the
machine and software (``machine.fingerprint``: CPU, core count, fastnn/numpy/numba versions, BLAS
backend), so a choice made elsewhere or before an upgrade is never reused.  Writes are atomic
(temporary file, then rename).  ``fastnn tune`` measures again and overwrites.

Candidates: the variants whose ``candidate`` fact is set (``numpy``, the careful numpy step: with
it among them, ``auto`` is never slower than numpy, to the accuracy of the measurement;
``fused-wide``, ``fused`` (each also with numpy's OpenBLAS when MKL is the default BLAS), ``tiled``
and ``chunked``).  A first call measures only the candidates that are ready (see ``ready``), so
that it costs one compile (fused-wide's), not five; ``fastnn tune`` compiles and measures all of
them, and a later first call measures again whenever a candidate it did not measure has become
ready.

Measuring: each candidate runs in a block of its own (a warm-up, then timed calls), and the blocks
are repeated in alternating order; the median block time decides.  Blocks rather than call-by-call
interleaving, because in training the chosen kernel runs alone: a parallel Numba kernel measured
right after a threaded BLAS call would pay for BLAS's still-spinning threads, a cost it never pays
in a training loop.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading

import numpy as np

from . import background, kernels
from .kernels import jit
from .kernels.common.losses import SQUARED  # noqa: F401  (the loss auto measures with)
from .kernels.variant import Variant, step_flops
from .machine import fingerprint
from .params import Params
from .profiling.timing import BUSY_SPREAD, block
from .threads import get_num_threads

# The routes a first call compiles (one compiled function: the BLAS library is a run-time
# argument) and always measures.  fused-wide, not fused: within noise of fused where the output
# layer is narrow (seed 1.15x numpy against 1.16x, mnist 1.07x against 1.07x), far ahead where it
# is wide or h is small (k=100: 1.07-1.14x against 0.60-0.75x; 4096x32x32x1: 1.43-2.10x against
# 0.99-1.00x), and cheaper to compile (1.55 s against 2.3 s cold).
PRIMARY = ("fused-wide", "fused-wide-openblas")


_lock = threading.Lock()
_memory: dict[str, dict] = {}  # key -> {"kernel": choice, "us": the timings}
_by_layers: dict[str, str] = {}  # the last choice per (n, h, k, dtype, threads)


def tune_dir() -> str:
    env = os.environ.get("FASTNN_TUNE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastnn")


def tune_file() -> str:
    return os.path.join(tune_dir(), "tune.json")


def _key(m, n, h, k, dtype, threads) -> str:
    return f"{m}x{n}x{h}x{k}/{np.dtype(dtype).name}/t{threads}"


def _load() -> dict:
    try:
        with open(tune_file()) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint():
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
            json.dump({"fingerprint": fingerprint(), "choices": choices}, f, indent=1,
                      sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        pass


def candidates() -> list[str]:
    """The variants ``auto`` chooses among (their ``candidate`` fact), in ladder order."""
    return [v.name for v in kernels.variants() if v.candidate]


def ready(dtype, foreground=False) -> list[str]:
    """The candidates a first call measures: numpy, the ``PRIMARY`` routes (when their compile
    is done, or compiles run in the foreground: ``background.usable``), and any other whose
    step is already compiled for ``dtype``, in this process or in Numba's on-disk cache.
    Compiling every candidate cold costs ~15 s; ``fastnn tune`` does, and measures them all.
    ``foreground``: the PRIMARY routes count as ready (the caller compiles them now)."""
    return [name for name in candidates()
            if kernels.get(name).compiled is None
            or (_runs_now(name, dtype, foreground) if name in PRIMARY
                else jit.compiled_for(kernels.get(name).compiled, dtype))]


# OpenBLAS's idle workers spin for up to 2**28 cycles (~0.1 s) after a call, so the warm-up must
# outlast that before a candidate that uses another thread pool is timed.  Within one pool a short
# warm-up does (caches, branch predictors).
WARM_UP = 0.12
WARM_UP_SAME_POOL = 0.01


def _pool_of(name) -> str:
    return kernels.get(name).pool


def measure(params: Params, x, y, names=None, *, repeats=3, budget=0.03,
            spreads=None) -> dict[str, float]:
    """Median seconds per ``sgd_step`` of each variant on copies of ``params`` (never the caller's
    arrays).  ``x``, ``y`` are validated, kernel-ready arrays.  ``spreads``: a dict to receive
    each variant's slowest block / fastest block."""
    # candidates sharing a thread pool run next to each other: fewer long warm-ups
    names = sorted(names or candidates(), key=_pool_of)
    lr = 1e-12  # the copies barely move, so every block times the same numbers
    steps = {}
    for name in reversed(names):  # the first block's pool is then the one last used
        variant = kernels.get(name)
        p = params.copy()
        steps[name] = (lambda v=variant, p=p: v.sgd_step(p, x, y, lr))
        steps[name]()  # compile or load from cache
    times = {name: [] for name in names}
    pool = _pool_of(names[0])
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            f = steps[name]
            # a new pool: let the previous one's threads go idle first
            block(f, WARM_UP if _pool_of(name) != pool else WARM_UP_SAME_POOL)
            pool = _pool_of(name)
            times[name].append(block(f, budget))
    if spreads is not None:
        spreads.update({name: float(max(t) / min(t)) for name, t in times.items()})
    return {name: float(np.median(t)) for name, t in times.items()}


# Below this many flops per step, ``auto`` runs ``SMALL_CHOICE`` without measuring: a step is
# then tens of microseconds, where numpy's ~20 calls of per-call overhead lose to one compiled
# call, and a measurement would cost ~0.5 s, thousands of such steps.  Measured
# (docs/optimisation.md, 8 shapes from 1x1x1x1 to 16x64x64x64 and 32x32x32x100, both dtypes):
# fused-wide-openblas 1.45-2.3x the careful numpy step, fused-wide 1.34-2.35x (its tiny gemms are
# cheaper to call in OpenBLAS than in MKL).
MEASURE_FLOPS = 1_000_000
# A measurement whose blocks of one candidate spread more than timing.BUSY_SPREAD was made on
# a busy machine: kept in this process, shown by ``fastnn tune --show``, not reused by later
# processes.  A training run whose steps took DRIFT times more (or less) than the remembered
# timing drops it (``note_run``): the next run measures again.
DRIFT = 3.0

# What ``auto`` runs while the compiled kernels are being built (``fastnn/background.py``).
BOOTSTRAP = "numpy"
SMALL_CHOICE = ("fused-wide-openblas" if "fused-wide-openblas" in kernels.available()
                else "fused-wide")


def choose(params: Params, x, y, *, retune=False, measure_now=True, whole_loop=False) -> str:
    """The variant ``auto`` runs for this problem: remembered, or measured now and remembered.

    A remembered choice stands unless a candidate it did not measure has become ready since
    (compiled by ``fastnn tune``, or by a run with ``kernel=NAME``): then the ready ones are
    measured again, once per process.  With ``measure_now=False`` (predict, loss_and_grads:
    often called on a whole data set or validation split, a shape training never steps on) it
    does not measure: the remembered choice for this shape, else the last choice made in this
    process for the same layer sizes (the training batch's), else ``SMALL_CHOICE``.

    ``whole_loop``: only variants with compiled training loops qualify (``train(whole_loop=True)``
    never runs a Python loop in their place): the fastest of them in the remembered timings,
    else measured among them."""
    m = x.shape[0]
    n, h = params.w1.shape
    k = params.w2.shape[1]
    if not retune and step_flops(m, n, h, k) < MEASURE_FLOPS:
        return SMALL_CHOICE if _runs_now(SMALL_CHOICE, params.dtype, whole_loop) else BOOTSTRAP
    threads = get_num_threads()
    key = _key(m, n, h, k, params.dtype, threads)
    layers = key.split("x", 1)[1]  # "n x h x k / dtype / threads"
    qualifies = _with_loops if whole_loop else _any
    with _lock:
        if not retune:
            choice = _remembered(key, params.dtype, measure_now, qualifies)
            if choice is not None and _runs_now(choice, params.dtype, whole_loop):
                _by_layers[layers] = choice
                return choice
            if not measure_now:
                fallback = _by_layers.get(layers, SMALL_CHOICE)
                fallback = fallback if qualifies(fallback) else SMALL_CHOICE
                return fallback if _runs_now(fallback, params.dtype, whole_loop) else BOOTSTRAP
        names = [name for name in ready(params.dtype, whole_loop or retune) if qualifies(name)]
        if not any(kernels.get(n).compiled is not None for n in names):
            return BOOTSTRAP  # nothing compiled yet (it is being built): nothing to measure
        chosen = _measure_and_remember(params, x, y, key, names)["kernel"]
        _by_layers[layers] = chosen
        return chosen


def _runs_now(name, dtype, foreground=False) -> bool:
    """Whether ``name`` runs without a compile now (a remembered choice whose machine code is in
    no cache any more -- a new fastnn, an emptied cache -- would compile in the foreground), or
    ``foreground``: the caller may compile (``whole_loop=True``: never a Python loop instead)."""
    return (foreground or kernels.get(name).compiled is None
            or background.usable(name, dtype))


def _any(name) -> bool:
    return True


def _with_loops(name) -> bool:
    return kernels.get(name).whole_loop


def _pick(entry: dict, qualifies) -> str | None:
    """The choice of a remembered ``entry`` (``{"kernel": name, "us": {name: us}}``) if it
    qualifies, else the fastest qualifying variant in its timings (old names read as today's)."""
    name = kernels.ALIASES.get(entry.get("kernel"), entry.get("kernel"))
    if name in candidates() + kernels.names() and qualifies(name):
        return name
    timings = {kernels.ALIASES.get(n, n): t for n, t in entry.get("us", {}).items()}
    timings = {n: t for n, t in timings.items() if n in candidates() and qualifies(n)}
    return min(timings, key=timings.get) if timings else None


def _remembered(key, dtype, measure_now, qualifies) -> str | None:
    """The remembered choice for ``key`` (memory, then disk), if it still stands: measured with
    every candidate ready now (unless ``measure_now`` is false, when any will do), and on disk
    not measured on a busy machine (this process's own busy measurement stands: measuring again
    at once would meet the same load)."""
    entry = _memory.get(key)
    if entry is None:
        entry = _load().get(key)
        if (not isinstance(entry, dict) or not isinstance(entry.get("us"), dict)
                or (measure_now and (entry.get("busy")
                                     or not set(ready(dtype)) <= set(entry["us"])))):
            return None
        _memory[key] = entry
    return _pick(entry, qualifies)


def _measure_and_remember(params: Params, x, y, key: str, names) -> dict:
    """Measure ``names``, remember the timings (memory and disk); returns the entry
    ``{"kernel": the fastest, "us": {name: microseconds per step}}``.  Call with ``_lock``
    held."""
    spreads = {}
    timings = measure(params, x, y, names, spreads=spreads)
    entry = {"kernel": min(timings, key=timings.get),
             "us": {name: t * 1e6 for name, t in timings.items()},
             "spread": {name: round(v, 3) for name, v in spreads.items()},
             "busy": max(spreads.values(), default=1.0) > BUSY_SPREAD}
    _memory[key] = entry
    stored = _load()  # read again: another process may have written while we measured
    stored[key] = entry  # a busy entry is stored to be seen (tune --show), never reused
    _save(stored)
    return entry


def note_run(params: Params, m: int, name: str, threads: int, seconds_per_step: float) -> None:
    """After a training run chosen by ``auto``: when its steps ran ``DRIFT`` times slower or
    faster than the remembered timing of the variant, that timing was not this machine's usual
    (a busy moment, one way or the other): forget the choice, so the next run measures again.
    """
    n, h = params.w1.shape
    key = _key(m, n, h, params.w2.shape[1], params.dtype, threads)
    with _lock:
        entry = _memory.get(key) or _load().get(key)
        if not isinstance(entry, dict) or not entry.get("us", {}).get(name):
            return
        ratio = seconds_per_step * 1e6 / entry["us"][name]
        if 1 / DRIFT < ratio < DRIFT:
            return
        _memory.pop(key, None)
        stored = _load()
        if stored.pop(key, None) is not None:
            _save(stored)


def tune(shape, dtype, *, seed=0) -> dict:
    """Measure the candidates on random data of ``shape`` (m, n, h, k) and remember the winner.
    Returns ``{"kernel": name, "us": {name: microseconds per step}}``."""
    from .profiling.problems import problem

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


def remembered() -> dict:
    """The stored choices: ``{key: {"kernel": name, "us": {name: microseconds}}}``."""
    return _load()


# --- every kernel= name to a variant --------------------------------------------------------------

def resolve(name, params: Params, x, y=None, *, measure=True, whole_loop=False) -> Variant:
    """The variant that runs for ``kernel=name`` on this problem.  A variant's name (or alias)
    is that variant; ``"auto"`` is ``choose``'s pick for the shape of ``x`` (``measure``: it may
    measure now, as a training step does; ``whole_loop``: only variants with compiled training
    loops).  ``x``, ``y``: validated, kernel-ready arrays (``y`` may be None when not measuring).
    """
    if name != kernels.AUTO:
        return kernels.get(name)
    if y is None:
        y = np.empty((x.shape[0], params.w2.shape[1]), params.dtype)
    return kernels.get(choose(params, x, y, measure_now=measure, whole_loop=whole_loop))
