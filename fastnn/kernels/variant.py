"""What a kernel variant is: the step contract, the facts every test and benchmark reads, and the
Python side that every compiled variant shares.

Each variant module (``naive``, ``tiled``, ``fused``, ...) declares its ``Variant`` here-shaped:
four functions over validated arrays (C-contiguous, one float dtype, ``y`` 2-D; ``loss_kind`` is
``losses.SQUARED`` or ``losses.SOFTMAX``)::

    predict(params, x, act=RELU) -> z2
    loss_and_grads(params, x, y, loss_kind=SQUARED, grads=None, act=RELU) -> (L, grads)
    sgd_step(params, x, y, lr, loss_kind=SQUARED, act=RELU) -> L      (params updated in place)
    train_loop(params, x, y, lr, losses, loss_kind=SQUARED, batch=None, start=0, order=None,
               act=RELU) -> steps taken
    train_loop_optim(params, x, y, optimizer, grads, losses, loss_kind=SQUARED, batch=None,
                     start=0, order=None, act=RELU) -> steps taken

``act`` is the hidden activation's marker (``common/activations.py``: ``RELU``, ``TANH``,
``LOGISTIC``, ``IDENTITY``); ``y`` may carry one more column than the output layer, the rows'
weights (``common/losses.py``).

``grads``: ``Params`` of arrays to write the gradients into (new ones when None).  The two loops,
where a variant has them, run up to ``len(losses)`` steps in one compiled call (the whole-loop
mode of ``train``): plain SGD, or any ``fastnn.optim.Optimizer`` (gradients into ``grads``, then
the optimiser's fused update; its state and step count advance).  Steps run over minibatch
blocks of ``batch`` rows from block ``start`` (``common/minibatch.py``; ``order``: a shuffled
epoch's rows).  A step whose loss is not finite makes no update and ends the loop.
``step_loop`` and ``optim_step_loop`` below are the same loops from Python, for the variants
without compiled ones and as the definition the compiled ones are tested against.

A compiled variant needs only its compiled pieces (``compiled_variants``): ``step(x, y, p, g, w,
lr, update, loss_kind)``, ``predict(x, p, w, z2)``, the two loops (``common/loops.py``) and
``work(params, m, backend, full, act)``, which hands out its work arrays (the activation rides in
them); the adapters here are the same for all of them.

Scratch buffers come from a per-thread cache, so a step allocates nothing at steady state (fresh
~1 MB temporaries cost page faults on every step) and calls from several Python threads never
share a buffer.  Arrays handed back to the caller (``z2``, the gradients) are always new.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import numba
import numpy as np

from ..params import Params
from .common import gemm
from .common.activations import RELU
from .common.losses import SQUARED, batch_weight
from .common.minibatch import Batches, batch_rows, blocks


@dataclass(frozen=True)
class Variant:
    """One kernel variant: the step contract (module docstring) and its facts.

    Facts, declared once beside the variant's code and read by the tests, the benchmarks and
    ``auto``:

    ``bitwise``      the same bits for the same inputs whatever the thread count and the arrays'
                     alignment (fixed partitions, fixed summation order, no BLAS).  The others
                     agree to rounding: BLAS may order its sums by threads and alignment.
    ``blas_update``  the weights whose update BLAS carries (``gemm`` with ``alpha = -lr``,
                     ``beta = 1``): ``("w1",)`` or ``("w1", "w2")``.  BLAS may scale a packed
                     operand by ``alpha`` before multiplying, which loses bits when ``lr * x``
                     is subnormal (a finding of the property test, which knows it from here).
    ``pool``         the thread pools a step keeps busy: a BLAS library (``"mkl"``, ``"numpy"``
                     for numpy's OpenBLAS, ``"scipy"``), ``"numba"``, or both (``"numba+mkl"``).
    ``compiled``     the compiled step (a Numba dispatcher; None for numpy code).
    ``dispatchers``  every compiled function the variant calls into (step, predict, the two
                     loops): ``kernels.ready`` asks them whether machine code for a dtype is
                     ready, in this process or in Numba's disk cache.
    ``candidate``    ``auto`` may choose it.

    Every variant runs every optimiser; ``train_loop`` / ``train_loop_optim`` are present when
    plain SGD / any optimiser can run in one compiled call (``whole_loop``).
    """

    name: str
    description: str
    predict: Callable
    loss_and_grads: Callable
    sgd_step: Callable
    train_loop: Optional[Callable] = None
    train_loop_optim: Optional[Callable] = None
    bitwise: bool = False
    blas_update: tuple = ()
    pool: str = "numpy"
    compiled: Any = None
    dispatchers: tuple = ()
    candidate: bool = False

    @property
    def whole_loop(self) -> bool:
        """Whether every optimiser can run inside one compiled call."""
        return self.train_loop is not None and self.train_loop_optim is not None


@dataclass(frozen=True)
class TrainingForm:
    """A rung that is a form of a whole training run rather than a step (rung 7, ``dual``):
    ``train`` runs it where it applies (the trainer's plan says where; ``kernel=NAME`` insists),
    and the calls that see one batch and no training set (``predict``, ``loss_and_grads``) run
    ``step_variant`` for it.  Its facts, read by the registry, the build and the tests:

    ``dispatchers``   its compiled functions (``kernels.ready`` asks them, as for a variant)
    ``bitwise``       False: its sums are BLAS's
    ``candidate``     ``auto`` may choose it (by its flop count, not by a measurement)
    ``distributed``   False: its Gram matrix spans every training row of one process
    """

    name: str
    description: str
    step_variant: str
    dispatchers: tuple = ()
    bitwise: bool = False
    candidate: bool = True
    distributed: bool = False


# --- scratch ------------------------------------------------------------------------------------

_local = threading.local()


def scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A reusable uninitialised buffer, private to the calling thread; one per ``name``."""
    try:
        bufs = _local.bufs
    except AttributeError:
        bufs = _local.bufs = {}
    buf = bufs.get(name)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = np.empty(shape, dtype)
        bufs[name] = buf
    return buf


def sizes(params: Params, m: int):
    """``(m, n, h, k, dtype)`` of a step on ``m`` rows."""
    n, h = params.w1.shape
    return m, n, h, params.w2.shape[1], params.w1.dtype


def new_grads(params: Params) -> Params:
    return Params(*(np.empty_like(p) for p in params))


def applied_grads(params: Params) -> Params:
    """The ``g`` of a step that updates: scratch for the gradients it applies at once.  Its
    ``w1`` slot is ``params.w1`` itself (never written: ``dw1`` is never stored)."""
    h, k = params.w2.shape
    dt = params.dtype
    return Params(params.w1, scratch("db1", (h,), dt), scratch("dw2", (h, k), dt),
                  scratch("db2", (k,), dt))


def batches(params: Params, x, y, batch, start, order) -> Batches:
    """The minibatch arguments of a compiled loop (an empty ``order``: the rows in place, no
    gathering).  ``xb`` takes ``x``'s own row width and dtype: the params' for dense rows, the
    uint32 words of the bfloat16 rung's rows (``kernels/bf16.py``)."""
    m = x.shape[0] if order is None else order.shape[0]
    k = y.shape[1]  # the output layer's width, one more with weighted rows
    batch, _ = blocks(m, batch)
    rows = 1 if order is None else batch
    xb = scratch("xb", (rows, x.shape[1]), x.dtype)
    yb = scratch("yb", (rows, k), params.dtype)
    return Batches(np.empty(0, np.int64) if order is None else order, xb, yb, batch, start)


# --- threads ------------------------------------------------------------------------------------

# Below this many flops per step, the parallel variants run on one thread: a parallel launch costs
# ~10-20 us here (TBB or OpenMP layer), more than the work (measured: tiled at 16x64x32x4 took
# 54 us on 1 thread and 73 us on 2; at 64x256x64x10, 4.4 MFLOP, both took ~150 us).
SERIAL_FLOPS = 2_000_000


def step_flops(m, n, h, k) -> int:
    """Flops of one SGD step: the two big matmuls (x @ w1, x.T @ dz1) and the three small ones
    (a1 @ w2, dz2 @ w2.T, a1.T @ dz2); the elementwise work is not counted."""
    return 4 * m * n * h + 6 * m * h * k


@contextlib.contextmanager
def threads_for(m, n, h, k):
    """Numba threads for a problem of this size: 1 when it is too small to pay for a launch."""
    if step_flops(m, n, h, k) >= SERIAL_FLOPS or numba.get_num_threads() == 1:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


_layer_lock = threading.Lock()
_parallel_lock = threading.Lock()
_concurrent_ok = None


def threading_layer() -> str:
    """Numba's threading layer (chosen when its thread pool starts, which asking for the thread
    count does)."""
    numba.get_num_threads()
    return numba.threading_layer()


def concurrent_calls_allowed() -> bool:
    """Whether parallel kernels may run from several Python threads at once.  Numba's
    ``workqueue`` layer is not thread-safe (two concurrent launches abort the process), ``tbb``
    and ``omp`` are; under ``workqueue`` fastnn serialises its parallel kernels."""
    global _concurrent_ok
    if _concurrent_ok is None:
        with _layer_lock:
            _concurrent_ok = threading_layer() != "workqueue"
    return _concurrent_ok


@contextlib.contextmanager
def parallel_section():
    """Around every launch of a parallel kernel: a lock under the ``workqueue`` layer, nothing
    otherwise (see ``concurrent_calls_allowed``)."""
    if concurrent_calls_allowed():
        yield
        return
    with _parallel_lock:
        yield


_one_thread_lock = threading.Lock()
_one_thread_users = 0
_one_thread_saved = 1


@contextlib.contextmanager
def one_blas_thread():
    """BLAS set to one thread for the duration, then its thread count restored.

    For variants whose parallelism is Numba's threads with BLAS called inside each (``chunked``):
    a threaded BLAS there would oversubscribe the cores.  The setting is process-wide (OpenBLAS
    has no per-thread count in a pthreads build), so another thread's numpy calls run
    single-threaded meanwhile: slower, never wrong.  Steps running at once in several Python
    threads share the setting: the first to enter saves the count, the last to leave restores it.
    """
    global _one_thread_users, _one_thread_saved
    ctl = gemm.threads
    with _one_thread_lock:
        if _one_thread_users == 0:
            _one_thread_saved = ctl.get()
            if _one_thread_saved != 1:
                ctl.set(1)
        _one_thread_users += 1
    try:
        yield
    finally:
        with _one_thread_lock:
            _one_thread_users -= 1
            if _one_thread_users == 0 and _one_thread_saved != 1:
                ctl.set(_one_thread_saved)


@contextlib.contextmanager
def parallel_guard(params: Params, m: int, blas_inside: bool = False):
    """Around a parallel variant's call on ``m`` rows: ``parallel_section``, ``threads_for`` and,
    with ``blas_inside``, ``one_blas_thread``."""
    n, h = params.w1.shape
    with parallel_section(), threads_for(m, n, h, params.w2.shape[1]):
        if blas_inside:
            with one_blas_thread():
                yield
        else:
            yield


def _no_guard(params, m):
    return contextlib.nullcontext()


# --- the adapters of a compiled variant ---------------------------------------------------------

BLAS_POOLS = {gemm.MKL_CBLAS: "mkl", gemm.NUMPY_CBLAS: "numpy", gemm.SCIPY_F77: "scipy"}


class Direct:
    """A compiled kernel, called straight into its machine code once its types are known.

    Numba's dispatcher works out the type of every argument on every call: about 1 us for each
    NamedTuple here, 3-5 us a step, a quarter of a 1x1x1x1 step.  Within the adapters below the
    types follow from the data's dtype and layout alone (the step contract: C-contiguous,
    aligned, writeable arrays of one float dtype; the kernels' own NamedTuples of those), so the
    first call for a ``key`` (the dtype and the layouts of ``x``, ``y``) goes through the
    dispatcher and later calls go to the compiled function it chose."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.entries = {}

    def __call__(self, key, *args):
        entry = self.entries.get(key)
        if entry is not None:
            return entry(*args)
        result = self.dispatcher(*args)
        types = tuple(self.dispatcher.typeof_pyval(a) for a in args)
        compiled = self.dispatcher.overloads.get(types)
        if compiled is not None:  # else (never seen so far) the dispatcher serves every call
            self.entries[key] = compiled.entry_point
        return result


def layout_key(params: Params, x, y=None, act=RELU):
    """What decides the argument types of a kernel call: the dtype, the activation, and whether
    ``x`` and ``y`` are C-contiguous (the contract says they are; a caller that broke it gets the
    dispatcher's own typing, never machine code compiled for another layout)."""
    return (params.w1.dtype, type(act), x.flags.c_contiguous and x.flags.writeable,
            y is None or (y.flags.c_contiguous and y.flags.writeable))


def count_updates(optimizer, losses, done) -> int:
    """Advance ``optimizer.t`` by the updates a compiled loop made: ``done`` steps, less the
    last if its loss was not finite (that step made none).  Returns ``done``."""
    optimizer.t += done - (0 if np.isfinite(losses[done - 1]) else 1)
    return done


def compiled_variant(name: str, description: str, *, step, predict, work, train_loop,
                     train_loop_optim, backend: int = gemm.BACKEND, pool: str,
                     **facts) -> Variant:
    """The ``Variant`` of a compiled step (see the module docstring).  ``pool``: ``"blas"`` (the
    library ``backend`` names), ``"numba"`` (a parallel kernel: run under ``parallel_guard``) or
    ``"numba+blas"`` (both, BLAS set to one thread during the call)."""
    guard = _no_guard
    if pool.startswith("numba"):
        def guard(params, m):
            return parallel_guard(params, m, blas_inside="+" in pool)
    pool = pool.replace("blas", BLAS_POOLS[backend])
    step_, predict_ = Direct(step), Direct(predict)
    sgd_loop_, optim_loop_ = Direct(train_loop), Direct(train_loop_optim)
    last = threading.local()

    def step_work(params, m, act):
        """``work(params, m, backend, True, act)``: the same tuple again while the shapes and
        the activation stay (building it costs ~2 us, a tenth of a 1x1x1x1 step).  Per thread,
        like the scratch it holds."""
        key = (m, params.w2.shape, params.w1.shape[0], params.dtype, type(act))
        memo = getattr(last, "memo", None)
        if memo is None or memo[0] != key:
            memo = last.memo = (key, work(params, m, backend, True, act))
        return memo[1]

    def _predict(params, x, act=RELU):
        m, n, h, k, dt = sizes(params, x.shape[0])
        z2 = np.empty((m, k), dt)
        with guard(params, m):
            predict_(layout_key(params, x, act=act), x, params,
                     work(params, m, backend, False, act), z2)
        return z2

    def _loss_and_grads(params, x, y, loss_kind=SQUARED, grads=None, act=RELU):
        m = x.shape[0]
        grads = new_grads(params) if grads is None else grads
        with guard(params, m):
            loss = step_(layout_key(params, x, y, act), x, y, params, grads,
                         step_work(params, m, act), params.dtype.type(0.0), False,
                         loss_kind)
        return loss, grads

    def _sgd_step(params, x, y, lr, loss_kind=SQUARED, act=RELU):
        m = x.shape[0]
        with guard(params, m):
            return step_(layout_key(params, x, y, act), x, y, params, applied_grads(params),
                         step_work(params, m, act), params.dtype.type(lr), True, loss_kind)

    def _train_loop(params, x, y, lr, losses, loss_kind=SQUARED, batch=None, start=0,
                    order=None, act=RELU):
        b = batches(params, x, y, batch, start, order)
        with guard(params, b.size):
            return sgd_loop_(layout_key(params, x, y, act), x, y, params, applied_grads(params),
                             step_work(params, b.size, act), params.dtype.type(lr),
                             loss_kind, b, losses)

    def _train_loop_optim(params, x, y, optimizer, grads, losses, loss_kind=SQUARED, batch=None,
                          start=0, order=None, act=RELU):
        b = batches(params, x, y, batch, start, order)
        state = optimizer.kernel_state(params)
        with guard(params, b.size):
            done = optim_loop_(layout_key(params, x, y, act), x, y, params, grads,
                               step_work(params, b.size, act), state, loss_kind, b, losses)
        return count_updates(optimizer, losses, done)

    return Variant(name, description, _predict, _loss_and_grads, _sgd_step, _train_loop,
                   _train_loop_optim, pool=pool, compiled=step,
                   dispatchers=(step, predict, train_loop, train_loop_optim), **facts)


def with_openblas_twin(variant_args: dict) -> list[Variant]:
    """``[variant]``, plus ``NAME-openblas`` when MKL is the default BLAS and numpy's CBLAS can be
    called: the same compiled code with numpy's OpenBLAS as its run-time ``backend``.  Which
    library is faster depends on the shape (MKL at the seed's, numpy's OpenBLAS at 1024x4096x64:
    11.7 vs 16.1 ms a step), so both are routes for ``auto``."""
    main = compiled_variant(**variant_args)
    if gemm.BACKEND != gemm.MKL_CBLAS or gemm.NUMPY_CBLAS not in gemm.AVAILABLE_BACKENDS:
        return [main]
    twin = compiled_variant(**dict(variant_args, name=main.name + "-openblas",
                                   backend=gemm.NUMPY_CBLAS))
    return [main, replace(twin, description=f"{main.name}, with numpy's own OpenBLAS instead "
                                            f"of MKL")]


# --- the loops from Python ----------------------------------------------------------------------

def step_loop(variant: Variant, params, x, y, lr, losses_out, loss_kind=SQUARED, batch=None,
              start=0, order=None, act=RELU) -> int:
    """``train_loop``'s contract, one ``sgd_step`` call per step from Python."""
    for t in range(losses_out.shape[0]):
        xb, yb = batch_rows(x, y, order, start + t, batch)
        losses_out[t] = variant.sgd_step(params, xb, yb, lr, loss_kind, act)
        if not np.isfinite(losses_out[t]):
            return t + 1
    return losses_out.shape[0]


def optim_step_loop(variant: Variant, params, x, y, optimizer, grads, losses_out,
                    loss_kind=SQUARED, batch=None, start=0, order=None, act=RELU) -> int:
    """``train_loop_optim``'s contract from Python: per step ``loss_and_grads`` into ``grads``,
    then ``optimizer.step``."""
    for t in range(losses_out.shape[0]):
        xb, yb = batch_rows(x, y, order, start + t, batch)
        value, _ = variant.loss_and_grads(params, xb, yb, loss_kind, grads, act)
        if not np.isfinite(value):
            losses_out[t] = value
            return t + 1
        weight = batch_weight(yb, params.w2.shape[1])
        losses_out[t] = value + optimizer.step(params, grads, weight)
    return losses_out.shape[0]
