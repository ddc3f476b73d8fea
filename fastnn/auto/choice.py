"""Which variant ``kernel="auto"`` runs for a (shape, dtype, threads): a short measurement, made
once and remembered (``store``), and every ``kernel=`` name resolved to a variant (``resolve``).

Candidates: the variants whose ``candidate`` fact is set (``numpy``, the careful numpy step: with
it among them, ``auto`` is never slower than numpy, to the accuracy of the measurement;
``fused-wide``, ``fused`` (each also with numpy's OpenBLAS when MKL is the default BLAS), ``tiled``
and ``chunked``).  A first call measures only the candidates that are ready (see ``ready``), so
that it costs one compile (the primary route's), not five; ``fastnn tune`` compiles and measures
all of them, and a later first call measures again whenever a candidate it did not measure has
become ready.

Measuring: each candidate runs in a block of its own (a warm-up, then timed calls), and the blocks
are repeated in alternating order; the median block time decides.  Blocks rather than call-by-call
interleaving, because in training the chosen kernel runs alone: a parallel Numba kernel measured
right after a threaded BLAS call would pay for BLAS's still-spinning threads, a cost it never pays
in a training loop.  The fastest wins, except that a candidate on another thread pool than numpy's
own BLAS must win by ``policy.OTHER_POOL_MARGIN`` (``pick``): alternated with the user's own numpy
calls it costs both sides, and a smaller lead is noise.
"""
from __future__ import annotations

import threading

import numpy as np

from .. import kernels
from ..kernels import jit
from ..kernels.variant import Variant, step_flops
from ..params import Params
from ..profiling.timing import block
from ..threads import get_num_threads
from . import build, policy, store
from .policy import BOOTSTRAP, MEASURE_FLOPS

# The routes a first call compiles (one compiled function: the BLAS library is a run-time
# argument) and always measures: kernels.PRIMARY, on each BLAS library.  fused-wide, not fused:
# within noise of fused where the output layer is narrow (seed 1.15x numpy against 1.16x, mnist
# 1.07x against 1.07x), far ahead where it is wide or h is small (k=100: 1.07-1.14x against
# 0.60-0.75x; 4096x32x32x1: 1.43-2.10x against 0.99-1.00x), and cheaper to compile (1.55 s against
# 2.3 s cold).
PRIMARY_ROUTES = tuple(name for name in (kernels.PRIMARY, kernels.PRIMARY + "-openblas")
                       if name in kernels.names())
# What steps under policy.MEASURE_FLOPS run: the primary route on numpy's OpenBLAS where MKL is
# the default (its tiny gemms are cheaper to call), else the primary route.
SMALL_CHOICE = PRIMARY_ROUTES[-1]

_lock = threading.Lock()
_memory: dict[str, dict] = {}  # key -> {"kernel": choice, "us": the timings}
_by_layers: dict[str, str] = {}  # the last choice per (n, h, k, dtype, threads)


def tune_file() -> str:
    return store.tune_file()


def _key(m, n, h, k, dtype, threads) -> str:
    return f"{m}x{n}x{h}x{k}/{np.dtype(dtype).name}/t{threads}"


def _load() -> dict:
    return store.load("choices")


def candidates() -> list[str]:
    """The variants ``auto`` chooses among (their ``candidate`` fact), in ladder order."""
    return [v.name for v in kernels.variants() if v.candidate]


def ready(dtype, foreground=False) -> list[str]:
    """The candidates a first call measures: numpy, the ``PRIMARY_ROUTES`` (when their compile
    is done, or compiles run in the foreground: ``build.usable``), and any other whose
    step is already compiled for ``dtype``, in this process or in Numba's on-disk cache.
    Compiling every candidate cold costs ~15 s; ``fastnn tune`` does, and measures them all.
    ``foreground``: the primary routes count as ready (the caller compiles them now)."""
    return [name for name in candidates() if _runs_now(name, dtype, foreground)]


def _pool_of(name) -> str:
    return kernels.get(name).pool


def measure(params: Params, x, y, names=None, *, repeats=policy.MEASURE_REPEATS,
            budget=policy.MEASURE_BLOCK, spreads=None) -> dict[str, float]:
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
            block(f, policy.WARM_UP if _pool_of(name) != pool else policy.WARM_UP_SAME_POOL)
            pool = _pool_of(name)
            times[name].append(block(f, budget))
    if spreads is not None:
        spreads.update({name: float(max(t) / min(t)) for name, t in times.items()})
    return {name: float(np.median(t)) for name, t in times.items()}


def pick(timings: dict) -> str:
    """The variant to run from ``{name: seconds per step}``: the fastest, unless it runs on
    another thread pool than numpy's own BLAS and does not beat the fastest on numpy's pool by
    ``policy.OTHER_POOL_MARGIN``; then that one."""
    fastest = min(timings, key=timings.get)
    own = {n: t for n, t in timings.items() if _pool_of(n) == "numpy"}
    if not own or fastest in own:
        return fastest
    best_own = min(own, key=own.get)
    return fastest if timings[fastest] * policy.OTHER_POOL_MARGIN < own[best_own] else best_own


def choose(params: Params, x, y, *, retune=False, measure_now=True, whole_loop=False) -> str:
    """The variant ``auto`` runs for this problem: remembered, or measured now and remembered.

    A remembered choice stands unless a candidate it did not measure has become ready since
    (compiled by ``fastnn tune``, or by a run with ``kernel=NAME``): then the ready ones are
    measured again, once per process.  With ``measure_now=False`` (predict, loss_and_grads:
    often called on a whole data set or validation split, a shape training never steps on) it
    does not measure: the remembered choice for this shape, else the last choice made in this
    process for the same layer sizes (the training batch's), else ``SMALL_CHOICE``.

    ``whole_loop``: only variants with compiled training loops qualify (``train(whole_loop=True)``
    never runs a Python loop in their place): ``pick``'s of them in the remembered timings,
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
    ``foreground``: the caller may compile (``whole_loop=True``: never a Python loop instead).
    A primary route once the build has made all of it (``build.usable``, which starts the
    build); any other candidate once its step is compiled, in this process or the disk cache:
    the test by which ``ready`` offered it for measuring.  (Asking all of its functions here,
    its training loops included, made a choice measured on ``sgd_step`` calls never stand: every
    next call measured again, 1.3 s a call at 128x784x512x10, found by ``fastnn bench``.)"""
    variant = kernels.get(name)
    if foreground or variant.compiled is None:
        return True
    if name in PRIMARY_ROUTES:
        return build.usable(name, dtype)
    return jit.compiled_for(variant.compiled, dtype)


def _any(name) -> bool:
    return True


def _with_loops(name) -> bool:
    return kernels.get(name).whole_loop


def _pick(entry: dict, qualifies) -> str | None:
    """The choice of a remembered ``entry`` (``{"kernel": name, "us": {name: us}}``) if it
    qualifies, else ``pick``'s of the qualifying variants in its timings (old names read as
    today's)."""
    name = kernels.ALIASES.get(entry.get("kernel"), entry.get("kernel"))
    if name in candidates() + kernels.names() and qualifies(name):
        return name
    timings = {kernels.ALIASES.get(n, n): t for n, t in entry.get("us", {}).items()}
    timings = {n: t for n, t in timings.items() if n in candidates() and qualifies(n)}
    return pick(timings) if timings else None


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
    entry = {"kernel": pick(timings),
             "us": {name: t * 1e6 for name, t in timings.items()},
             "spread": {name: round(v, 3) for name, v in spreads.items()},
             "busy": max(spreads.values(), default=1.0) > policy.BUSY_SPREAD}
    _memory[key] = entry
    store.put("choices", key, entry)  # a busy entry is stored to be seen (tune --show), never reused
    return entry


def note_run(params: Params, m: int, name: str, threads: int, seconds_per_step: float) -> None:
    """After a training run chosen by ``auto``: when its steps ran ``policy.DRIFT`` times slower
    or faster than the remembered timing of the variant, that timing was not this machine's
    usual (a busy moment, one way or the other): forget the choice, so the next run measures
    again."""
    n, h = params.w1.shape
    key = _key(m, n, h, params.w2.shape[1], params.dtype, threads)
    with _lock:
        entry = _memory.get(key) or _load().get(key)
        if not isinstance(entry, dict) or not entry.get("us", {}).get(name):
            return
        ratio = seconds_per_step * 1e6 / entry["us"][name]
        if 1 / policy.DRIFT < ratio < policy.DRIFT:
            return
        _memory.pop(key, None)
        store.put("choices", key, None)


def tune(shape, dtype, *, seed=0) -> dict:
    """Measure the candidates on random data of ``shape`` (m, n, h, k) and remember the winner.
    Returns ``{"kernel": name, "us": {name: microseconds per step}}``."""
    from ..profiling.problems import problem

    x, y, params = problem(shape, dtype, seed=seed)
    m, n, h, k = shape
    with _lock:
        return _measure_and_remember(params, x, y, _key(m, n, h, k, dtype, get_num_threads()),
                                     candidates())


def forget() -> None:
    """Drop every remembered choice and thread decision, in memory and on disk."""
    from . import thread_watch

    with _lock:
        _memory.clear()
        _by_layers.clear()
        thread_watch.forget()
        store.clear()


def remembered() -> dict:
    """The stored choices: ``{key: {"kernel": name, "us": {name: microseconds}}}``."""
    return _load()


# --- every kernel= name to a variant --------------------------------------------------------------

def sparse_variant(name) -> Variant:
    """The variant for sparse input (a ``SparseRows``): the sparse rung for ``auto`` (the only
    one that takes it; nothing to measure), an error for a dense variant's name."""
    if name == kernels.AUTO or name in kernels.SPARSE:
        return kernels.SPARSE["sparse" if name == kernels.AUTO else name]
    raise ValueError(f"kernel: {name!r} takes dense x; sparse x runs on "
                     f"{', '.join(repr(s) for s in kernels.SPARSE)} (or 'auto'), or pass "
                     f"x.toarray() to run {name!r}")


_warned_emulation = False


def bf16_variant(name, params: Params) -> Variant:
    """The variant for bfloat16 data (``kernels.bf16``): ``"bf16"`` where the CPU has
    AVX512_BF16, else its emulation (``auto`` says once that it is slower; naming ``"bf16"``
    there is an error); float32 params (the master weights) only."""
    global _warned_emulation
    from ..kernels import bf16

    if params.dtype != np.float32:
        raise TypeError(f"kernel {name!r}: bfloat16 steps keep float32 master weights; got "
                        f"params of dtype {params.dtype} (init_params(..., dtype='float32'))")
    native = bf16.bf.NATIVE
    if name == kernels.AUTO:
        if not native and not _warned_emulation:
            _warned_emulation = True
            import warnings

            warnings.warn("bfloat16: this CPU (or NUMBA_CPU_NAME) has no AVX512_BF16, so "
                          "fastnn runs vdpbf16ps's exact emulation ('bf16-emulated'): the "
                          "same numbers, several times slower than float32", RuntimeWarning,
                          stacklevel=4)
        return bf16.this_cpus()
    if name in kernels.BF16:
        if name == bf16.BF16.name and not native:
            raise ValueError(f"kernel 'bf16': this CPU has no AVX512_BF16 (vdpbf16ps), or "
                             f"Numba compiles for one without it; 'bf16-emulated' computes "
                             f"the same numbers on any CPU")
        return kernels.BF16[name]
    raise ValueError(f"kernel {name!r}: bfloat16 data (dtype='bfloat16') runs on "
                     f"{', '.join(repr(s) for s in kernels.BF16)} or 'auto'")


def resolve(name, params: Params, x, y=None, *, measure=True, whole_loop=False) -> Variant:
    """The variant that runs for ``kernel=name`` on this problem.  A variant's name (or alias)
    is that variant; ``"auto"`` is ``choose``'s pick for the shape of ``x`` (``measure``: it may
    measure now, as a training step does; ``whole_loop``: only variants with compiled training
    loops).  ``x``, ``y``: validated, kernel-ready arrays (``y`` may be None when not measuring).
    """
    if getattr(x, "format", None) == "fastnn-csr-rows":
        return sparse_variant(name)
    if name in kernels.SPARSE:
        raise ValueError(f"kernel: {name!r} takes sparse x (a scipy.sparse matrix or array), got "
                         f"a dense array; pass kernel='auto' or a dense variant")
    if getattr(x, "format", None) == "fastnn-bf16-rows" or name in kernels.BF16:
        return bf16_variant(name, params)  # (float x: rounded to bfloat16 by each call)
    if name != kernels.AUTO:
        return kernels.get(name)
    if y is None:
        y = np.empty((x.shape[0], params.w2.shape[1]), params.dtype)
    return kernels.get(choose(params, x, y, measure_now=measure, whole_loop=whole_loop))
