"""Each kernel variant as the three operations of the step contract.

A variant is three functions over validated arrays (C-contiguous, one float dtype, ``y`` 2-D):

``predict(params, x) -> z2``, ``loss_and_grads(params, x, y) -> (L, grads)`` and
``sgd_step(params, x, y, lr) -> L`` (updates ``params`` in place).

Scratch buffers come from a per-thread cache, so a step allocates nothing at steady state (fresh
~1 MB temporaries cost page faults on every step) and calls from several Python threads never
share a buffer.  Arrays handed back to the caller (``z2``, the gradients) are always new.
"""
from __future__ import annotations

import contextlib
import threading

import numba
import numpy as np

from ..params import Params
from . import backward, blas, chunked, forward, fused, rowpass, simd, tiled, wide
from .losses import SQUARED

_local = threading.local()


def scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A reusable uninitialised buffer, private to the calling thread; one per ``name``."""
    bufs = _local.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = np.empty(shape, dtype)
        bufs[name] = buf
    return buf


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
    """Numba's threading layer; it is chosen at the first parallel launch, so run a tiny one."""
    try:
        return numba.threading_layer()
    except ValueError:
        a = np.ones((1, 1))
        forward.linear_forward(a, a, np.ones(1), np.empty((1, 1)))
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


def _serial_if_small(fn):
    """Wrap a parallel variant's entry point with ``threads_for`` and ``parallel_section``."""
    def run(params, x, *rest):
        with parallel_section(), threads_for(*_sizes(params, x)):
            return fn(params, x, *rest)

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _new_grads(params: Params) -> Params:
    return Params(*(np.empty_like(p) for p in params))


def _sizes(params: Params, x):
    n, h = params.w1.shape
    return x.shape[0], n, h, params.w2.shape[1]


# --- naive: Numba loops, no BLAS -------------------------------------------------------------------

@_serial_if_small
def naive_predict(params: Params, x):
    m, n, h, k = _sizes(params, x)
    w1, b1, w2, b2 = params
    a1 = scratch("a1", (m, h), w1.dtype)
    forward.linear_relu_forward(x, w1, b1, a1)
    z2 = np.empty((m, k), w1.dtype)
    forward.linear_forward(a1, w2, b2, z2)
    return z2


def _naive_backward(params: Params, x, y, lr, update, grads, loss_kind):
    m, n, h, k = _sizes(params, x)
    w1, b1, w2, b2 = params
    dt = w1.dtype
    a1 = scratch("a1", (m, h), dt)
    dz1 = scratch("dz1", (m, h), dt)
    dz2 = scratch("dz2", (m, k), dt)
    forward.linear_relu_forward(x, w1, b1, a1)
    loss = forward.output_loss_grad(a1, w2, b2, y, dz2, loss_kind)
    if update and not np.isfinite(loss):  # keep the params of the last finite step
        return loss
    dw1, db1, dw2, db2 = grads
    lr = dt.type(lr)
    # dz1 needs the old w2, so it comes before any update.
    backward.relu_backward(dz2, w2, a1, dz1, db1)
    backward.weight_grad(a1, dz2, dw2, db2, lr, update, True)
    backward.weight_grad(x, dz1, dw1, db1, lr, update, False)
    if update:  # db1 was computed as a gradient in relu_backward
        b1 -= lr * db1
    return loss


@_serial_if_small
def naive_loss_and_grads(params: Params, x, y, loss_kind=SQUARED, grads=None):
    grads = _new_grads(params) if grads is None else grads
    loss = _naive_backward(params, x, y, 0.0, False, grads, loss_kind)
    return loss, grads


@_serial_if_small
def naive_sgd_step(params: Params, x, y, lr, loss_kind=SQUARED):
    h = params.w1.shape[1]
    db1 = scratch("db1", (h,), params.dtype)
    # with update=True the weight/bias kernels write straight into the params
    return _naive_backward(params, x, y, lr, True, Params(params.w1, db1, params.w2, params.b2),
                           loss_kind)


# --- fused: one compiled call, BLAS for the big matmuls --------------------------------------------

def _fused_scratch(m, h, k, dt):
    return (scratch("a1", (m, h), dt), scratch("dz1", (m, h), dt), scratch("w2t", (k, h), dt),
            scratch("dw2t", (k, h), dt), scratch("d", (rowpass.ROWS, k), dt))


def fused_predict(params: Params, x, *, backend=blas.BACKEND):
    m, n, h, k = _sizes(params, x)
    z2 = np.empty((m, k), params.dtype)
    fused.predict(backend, x, *params, scratch("a1", (m, h), params.dtype),
                  scratch("w2t", (k, h), params.dtype), z2)
    return z2


def fused_loss_and_grads(params: Params, x, y, loss_kind=SQUARED, grads=None, *,
                         backend=blas.BACKEND):
    m, n, h, k = _sizes(params, x)
    dt = params.dtype
    grads = _new_grads(params) if grads is None else grads
    loss = fused.step(backend, x, y, *params, dt.type(0.0), False, loss_kind, *grads,
                      *_fused_scratch(m, h, k, dt))
    return loss, grads


def _update_scratch(params: Params):
    """Scratch for the gradients a step applies at once (``dw1`` is never stored)."""
    h, k = params.w2.shape
    dt = params.dtype
    return scratch("db1", (h,), dt), scratch("dw2", (h, k), dt), scratch("db2", (k,), dt)


def fused_sgd_step(params: Params, x, y, lr, loss_kind=SQUARED, *, backend=blas.BACKEND):
    m, n, h, k = _sizes(params, x)
    dt = params.dtype
    return fused.step(backend, x, y, *params, dt.type(lr), True, loss_kind, params.w1,
                      *_update_scratch(params), *_fused_scratch(m, h, k, dt))


def _batches(params: Params, x, batch, order):
    """``(batch, (order, xb, yb))``: the batch size and the compiled loops' row-gathering
    arguments (an empty ``order`` means the rows in place, no gathering)."""
    m, n, h, k = _sizes(params, x)
    batch = m if batch is None else min(batch, m)
    if order is None:
        return batch, (np.empty(0, np.int64), scratch("xb", (1, n), params.dtype),
                       scratch("yb", (1, k), params.dtype))
    return batch, (order, scratch("xb", (batch, n), params.dtype),
                   scratch("yb", (batch, k), params.dtype))


def fused_train_loop(params: Params, x, y, lr, losses, loss_kind=SQUARED, batch=None, start=0,
                     order=None, *, backend=blas.BACKEND):
    m, n, h, k = _sizes(params, x)
    batch, rows = _batches(params, x, batch, order)
    dt = params.dtype
    return fused.train_loop(backend, x, y, *params, dt.type(lr), loss_kind, batch, start,
                            losses, *_update_scratch(params), *_fused_scratch(batch, h, k, dt),
                            *rows)


def _count_updates(optimizer, losses, done):
    """Advance ``optimizer.t`` by the updates a compiled loop made: ``done`` steps, less the
    last if its loss was not finite (that step made none).  Returns ``done``."""
    optimizer.t += done - (0 if np.isfinite(losses[done - 1]) else 1)
    return done


def fused_train_loop_optim(params: Params, x, y, optimizer, grads, losses, loss_kind=SQUARED,
                           batch=None, start=0, order=None, *, backend=blas.BACKEND):
    """``train_loop`` with any ``fastnn.optim.Optimizer`` (its state and step count advance)."""
    m, n, h, k = _sizes(params, x)
    batch, rows = _batches(params, x, batch, order)
    kind, s1, s2, hyper = optimizer.kernel_arguments(params)
    done = fused.train_loop_optim(backend, x, y, *params, loss_kind, batch, start, losses,
                                  *grads, *_fused_scratch(batch, h, k, params.dtype), kind, s1,
                                  s2, hyper, optimizer.nesterov, optimizer.t, *rows)
    return _count_updates(optimizer, losses, done)


# --- fused-wide: all five matmuls through BLAS ------------------------------------------------------

def fused_wide_predict(params: Params, x, *, backend=blas.BACKEND):
    m, n, h, k = _sizes(params, x)
    z2 = np.empty((m, k), params.dtype)
    wide.predict(backend, x, *params, scratch("a1", (m, h), params.dtype), z2)
    return z2


def _wide_scratch(m, h, k, dt):
    return scratch("a1", (m, h), dt), scratch("dz1", (m, h), dt), scratch("z2", (m, k), dt)


def fused_wide_loss_and_grads(params: Params, x, y, loss_kind=SQUARED, grads=None, *,
                              backend=blas.BACKEND):
    m, n, h, k = _sizes(params, x)
    dt = params.dtype
    grads = _new_grads(params) if grads is None else grads
    loss = wide.step(backend, x, y, *params, dt.type(0.0), False, loss_kind, *grads,
                     *_wide_scratch(m, h, k, dt))
    return loss, grads


def fused_wide_sgd_step(params: Params, x, y, lr, loss_kind=SQUARED, *, backend=blas.BACKEND):
    m, n, h, k = _sizes(params, x)
    dt = params.dtype
    return wide.step(backend, x, y, *params, dt.type(lr), True, loss_kind, params.w1,
                     *_update_scratch(params), *_wide_scratch(m, h, k, dt))


def fused_wide_train_loop(params: Params, x, y, lr, losses, loss_kind=SQUARED, batch=None,
                          start=0, order=None, *, backend=blas.BACKEND):
    m, n, h, k = _sizes(params, x)
    batch, rows = _batches(params, x, batch, order)
    dt = params.dtype
    db1, _, db2 = _update_scratch(params)
    return wide.train_loop(backend, x, y, *params, dt.type(lr), loss_kind, batch, start, losses,
                           db1, db2, *_wide_scratch(batch, h, k, dt), *rows)


def fused_wide_train_loop_optim(params: Params, x, y, optimizer, grads, losses, loss_kind=SQUARED,
                                batch=None, start=0, order=None, *, backend=blas.BACKEND):
    m, n, h, k = _sizes(params, x)
    batch, rows = _batches(params, x, batch, order)
    kind, s1, s2, hyper = optimizer.kernel_arguments(params)
    done = wide.train_loop_optim(backend, x, y, *params, loss_kind, batch, start, losses, *grads,
                                 *_wide_scratch(batch, h, k, params.dtype), kind, s1, s2, hyper,
                                 optimizer.nesterov, optimizer.t, *rows)
    return _count_updates(optimizer, losses, done)


# --- blas: chunks of hidden units over Numba's threads, one BLAS thread each ------------------------

_one_thread_lock = threading.Lock()
_one_thread_users = 0
_one_thread_saved = 1


def _with_one_blas_thread(kernel, *args):
    """Run ``kernel`` with BLAS set to one thread, then restore BLAS's thread count.

    Parallelism comes from Numba's threads, each running whole chunks with BLAS inside; a threaded
    BLAS there would oversubscribe the cores.  The setting is process-wide (OpenBLAS has no
    per-thread count in a pthreads build), so another thread's numpy calls run single-threaded
    during the step: slower, never wrong.  Steps running at once in several Python threads share
    the setting: the first to enter saves the count, the last to leave restores it.
    """
    global _one_thread_users, _one_thread_saved
    ctl = blas.threads
    with _one_thread_lock:
        if _one_thread_users == 0:
            _one_thread_saved = ctl.get()
            if _one_thread_saved != 1:
                ctl.set(1)
        _one_thread_users += 1
    try:
        return kernel(*args)
    finally:
        with _one_thread_lock:
            _one_thread_users -= 1
            if _one_thread_users == 0 and _one_thread_saved != 1:
                ctl.set(_one_thread_saved)


def _chunked_scratch(m, h, k, parts, dt):
    return (scratch("a1", (m, h), dt), scratch("dz1", (m, h), dt), scratch("w2t", (k, h), dt),
            scratch("dw2t", (k, h), dt), scratch("zparts", (parts, m, k), dt),
            scratch("dz2", (m, k), dt))


@_serial_if_small
def blas_predict(params: Params, x):
    m, n, h, k = _sizes(params, x)
    dt = params.dtype
    parts = chunked.n_chunks(h)
    z2 = np.empty((m, k), dt)
    _with_one_blas_thread(chunked.predict, blas.BACKEND, parts, x, *params,
                          scratch("a1", (m, h), dt), scratch("w2t", (k, h), dt),
                          scratch("zparts", (parts, m, k), dt), z2)
    return z2


@_serial_if_small
def blas_loss_and_grads(params: Params, x, y, loss_kind=SQUARED, grads=None):
    m, n, h, k = _sizes(params, x)
    dt = params.dtype
    parts = chunked.n_chunks(h)
    grads = _new_grads(params) if grads is None else grads
    loss = _with_one_blas_thread(chunked.step, blas.BACKEND, parts, x, y, *params, dt.type(0.0),
                                 False, loss_kind, *grads, *_chunked_scratch(m, h, k, parts, dt))
    return loss, grads


@_serial_if_small
def blas_sgd_step(params: Params, x, y, lr, loss_kind=SQUARED):
    m, n, h, k = _sizes(params, x)
    dt = params.dtype
    parts = chunked.n_chunks(h)
    return _with_one_blas_thread(chunked.step, blas.BACKEND, parts, x, y, *params, dt.type(lr),
                                 True, loss_kind, params.w1, *_update_scratch(params),
                                 *_chunked_scratch(m, h, k, parts, dt))


def blas_train_loop(params: Params, x, y, lr, losses, loss_kind=SQUARED, batch=None, start=0,
                    order=None):
    m, n, h, k = _sizes(params, x)
    batch, rows = _batches(params, x, batch, order)
    dt = params.dtype
    parts = chunked.n_chunks(h)
    with parallel_section(), threads_for(batch, n, h, k):
        return _with_one_blas_thread(chunked.train_loop, blas.BACKEND, parts, x, y, *params,
                                     dt.type(lr), loss_kind, batch, start, losses,
                                     *_update_scratch(params),
                                     *_chunked_scratch(batch, h, k, parts, dt), *rows)


# --- tiled: Numba-native register-blocked matmuls, no BLAS ------------------------------------------

def _packs(m, n, h, dt):
    """The packing buffers of ``tiled.matmul``, large enough for both matmuls of a step
    (``x @ w1``: M=m, K=n; ``x.T @ dz1``: M=n, K=m; N=h for both)."""
    fwd = tiled.packed_sizes(m, n, h, dt.itemsize)
    upd = tiled.packed_sizes(n, m, h, dt.itemsize)
    return (scratch("apack", (max(fwd[0], upd[0]), tiled.MR), dt),
            scratch("bpack", (max(fwd[1], upd[1]), 2 * simd.lanes(dt)), dt))


@_serial_if_small
def tiled_predict(params: Params, x):
    m, n, h, k = _sizes(params, x)
    dt = params.dtype
    z2 = np.empty((m, k), dt)
    tiled.predict(x, *params, scratch("a1", (m, h), dt), scratch("w2t", (k, h), dt), z2,
                  *_packs(m, n, h, dt))
    return z2


@_serial_if_small
def tiled_loss_and_grads(params: Params, x, y, loss_kind=SQUARED, grads=None):
    m, n, h, k = _sizes(params, x)
    dt = params.dtype
    grads = _new_grads(params) if grads is None else grads
    loss = tiled.step(x, y, *params, dt.type(0.0), False, loss_kind, *grads,
                      *_fused_scratch(m, h, k, dt), *_packs(m, n, h, dt))
    return loss, grads


@_serial_if_small
def tiled_sgd_step(params: Params, x, y, lr, loss_kind=SQUARED):
    m, n, h, k = _sizes(params, x)
    dt = params.dtype
    return tiled.step(x, y, *params, dt.type(lr), True, loss_kind, params.w1,
                      *_update_scratch(params), *_fused_scratch(m, h, k, dt), *_packs(m, n, h, dt))


def tiled_train_loop(params: Params, x, y, lr, losses, loss_kind=SQUARED, batch=None, start=0,
                     order=None):
    m, n, h, k = _sizes(params, x)
    batch, rows = _batches(params, x, batch, order)
    dt = params.dtype
    with parallel_section(), threads_for(batch, n, h, k):
        return tiled.train_loop(x, y, *params, dt.type(lr), loss_kind, batch, start, losses,
                                *_update_scratch(params), *_fused_scratch(batch, h, k, dt),
                                *_packs(batch, n, h, dt), *rows)


def tiled_train_loop_optim(params: Params, x, y, optimizer, grads, losses, loss_kind=SQUARED,
                           batch=None, start=0, order=None):
    """``fused_train_loop_optim`` with the tiled matmuls."""
    m, n, h, k = _sizes(params, x)
    batch, rows = _batches(params, x, batch, order)
    kind, s1, s2, hyper = optimizer.kernel_arguments(params)
    dt = params.dtype
    with parallel_section(), threads_for(batch, n, h, k):
        done = tiled.train_loop_optim(x, y, *params, loss_kind, batch, start, losses, *grads,
                                      *_fused_scratch(batch, h, k, dt), *_packs(batch, n, h, dt),
                                      kind, s1, s2, hyper, optimizer.nesterov, optimizer.t, *rows)
    return _count_updates(optimizer, losses, done)
