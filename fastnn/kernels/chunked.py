"""Rung 6, `chunked` (formerly `blas`): hidden units split into chunks over Numba's threads,
single-threaded BLAS inside each chunk.

`fused` lets OpenBLAS thread each gemm.  Here the threads are Numba's and every chunk of hidden
units ``[h0, h1)`` is one thread's whole job, BLAS calls included; BLAS itself is set to one thread
for the step (``variant.one_blas_thread``), so only one pool is ever awake and nothing spins against
it.  Chunk ``t`` owns columns ``h0:h1`` of ``w1``, ``b1``, ``a1``, ``dz1`` and rows ``h0:h1`` of
``w2``, so the parallel loops write disjoint memory.

One step, for each chunk in parallel unless marked serial::

    a1[:, c]  = act(x @ w1[:, c] + b1[c])           gemm, bias via beta = 1, then the activation
    zpart[t]  = a1[:, c] @ w2[c, :]                 this chunk's share of z2
    (serial)  z2 = b2 + sum_t zpart[t]; loss; dz2 = (2/m)(z2 - y); db2
    dz1[:, c] = (dz2 @ w2[c, :].T) * [a1[:, c] > 0]; db1[c]
    dw2[c, :] = a1[:, c].T @ dz2                    (update: w2[c, :] -= lr * that)
    w1[:, c] += -lr * x.T @ dz1[:, c]               gemm with alpha = -lr, beta = 1

The chunking depends only on ``h`` (``n_chunks``), never on the thread count, and the one
cross-chunk sum (``z2``) is taken in chunk order, so results are the same for any thread count.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .common.gemm import NO_TRANS, TRANS, gemm, threads
from .common.activations import RELU, activate, for_prange, times_derivative
from .common.loops import optim_loop, sgd_loop
from .common.losses import batch_scale, row_loss_grad, row_scale
from .common.rowpass import apply_small_updates, transpose
from .jit import JIT_OPTIONS, PARALLEL_OPTIONS
from .variant import compiled_variant, scratch, sizes

# Hidden units per chunk, at least.  Narrower chunks starve the gemm micro-kernel (its tile is
# 8-16 columns wide and wants several of them); at most MAX_CHUNKS chunks.
MIN_CHUNK = 32
MAX_CHUNKS = 16


def n_chunks(h: int) -> int:
    """Chunks for ``h`` hidden units: even (so two threads split them evenly), and with chunks of
    at least ``MIN_CHUNK`` units; 1 when ``h`` is too small to split."""
    c = min(MAX_CHUNKS, h // MIN_CHUNK)
    if c >= 2:
        return c - c % 2
    return 1


@njit(**JIT_OPTIONS)
def _chunk_bounds(t, n_parts, h):
    return t * h // n_parts, (t + 1) * h // n_parts


@njit(**JIT_OPTIONS)
def forward_chunk(backend, x, w1, b1, w2t, a1, zpart, h0, h1, act):
    """``a1[:, h0:h1] = act(x @ w1[:, h0:h1] + b1[h0:h1])`` and
    ``zpart = a1[:, h0:h1] @ w2[h0:h1, :]`` (with ``w2t = w2.T``).  Shapes: ``x (m, n)``,
    ``w1 (n, h)``, ``a1 (m, h)``, ``w2t (k, h)``, ``zpart (m, k)``."""
    m = x.shape[0]
    k = w2t.shape[0]
    for i in range(m):
        for j in range(h0, h1):
            a1[i, j] = b1[j]
    gemm(backend, NO_TRANS, NO_TRANS, 1.0, x, w1[:, h0:h1], 1.0, a1[:, h0:h1])
    for i in range(m):
        for j in range(h0, h1):
            a1[i, j] = activate(act, a1[i, j])
    zero = np.zeros(1, a1.dtype)[0]  # the sums run in the arrays' dtype
    for i in range(m):
        for c in range(k):
            s = zero
            for j in range(h0, h1):
                s += a1[i, j] * w2t[c, j]
            zpart[i, c] = s


@njit(**JIT_OPTIONS)
def output_loss_grad(zparts, b2, y, dz2, db2, loss_kind):
    """``z2 = b2 + sum_t zparts[t]`` (in chunk order), the loss ``L`` (``losses.py``),
    ``dz2 = dL/dz2``, ``db2 = dz2.sum(0)``; returns ``L``.  Shapes: ``zparts (T, m, k)``,
    ``y, dz2 (m, k)`` (``y (m, k + 1)``: weighted rows), ``b2, db2 (k,)``; ``zparts`` may have
    more than ``m`` rows (a partial minibatch uses the first ``m``).  Serial: ``m * k`` work."""
    n_parts = zparts.shape[0]
    m, k = dz2.shape
    inv = batch_scale(y, k)
    loss = 0.0
    for c in range(k):
        db2[c] = 0.0
    for i in range(m):
        row = dz2[i]
        for c in range(k):
            z = b2[c]
            for t in range(n_parts):
                z += zparts[t, i, c]
            row[c] = z
        loss += row_loss_grad(row, y[i], row, row_scale(y, i, k, inv), loss_kind)
        for c in range(k):
            db2[c] += row[c]
    return loss


@njit(**JIT_OPTIONS)
def backward_chunk(backend, x, dz2, w2t, a1, dz1, db1, dw2t, dw1, lr, update, h0, h1, act):
    """For hidden units ``h0:h1``: ``dz1 = (dz2 @ w2.T) * act'(a1)``, ``db1``, ``dw2t = dw2.T``
    and either ``dw1 = x.T @ dz1`` or, with ``update``, ``w1 -= lr * x.T @ dz1`` (pass ``w1`` as
    ``dw1``).  The caller applies ``dw2t`` to ``w2`` (it needs the old ``w2``, through ``w2t``,
    until every chunk has its ``dz1``).  Shapes: ``dz2 (m, k)``, ``w2t, dw2t (k, h)``,
    ``a1, dz1 (m, h)``, ``db1 (h,)``, ``dw1 (n, h)``."""
    m, k = dz2.shape
    for j in range(h0, h1):
        db1[j] = 0.0
    for c in range(k):
        for j in range(h0, h1):
            dw2t[c, j] = 0.0
    for i in range(m):
        for j in range(h0, h1):
            dz1[i, j] = 0.0
        for c in range(k):
            d = dz2[i, c]
            for j in range(h0, h1):
                dz1[i, j] += d * w2t[c, j]
                dw2t[c, j] += d * a1[i, j]
        for j in range(h0, h1):
            dz1[i, j] = times_derivative(act, a1[i, j], dz1[i, j])
            db1[j] += dz1[i, j]
    if update:
        gemm(backend, TRANS, NO_TRANS, np.float64(-lr), x, dz1[:, h0:h1], 1.0, dw1[:, h0:h1])
    else:
        gemm(backend, TRANS, NO_TRANS, 1.0, x, dz1[:, h0:h1], 0.0, dw1[:, h0:h1])


class ChunkedWork(NamedTuple):
    """The BLAS library (``gemm.BACKEND``), the number of chunks (``n_chunks(h)``) and the
    step's scratch: ``a1, dz1 (m, h)``, ``w2t, dw2t (k, h)``, ``zparts (n_parts, m, k)``,
    ``dz2 (m, k)``, at least ``m`` rows; ``act`` the hidden activation's marker."""

    backend: int
    n_parts: int
    a1: np.ndarray
    dz1: np.ndarray
    w2t: np.ndarray
    dw2t: np.ndarray
    zparts: np.ndarray
    dz2: np.ndarray
    act: object


def work(params, m, backend, full=True, act=RELU) -> ChunkedWork:
    """Scratch for a step on ``m`` rows (``full`` false: for ``predict``)."""
    _, _, h, k, dt = sizes(params, m)
    parts = n_chunks(h)
    a1 = scratch("a1", (m, h), dt)
    w2t = scratch("w2t", (k, h), dt)
    zparts = scratch("zparts", (parts, m, k), dt)
    if not full:
        none = np.empty((0, h), dt)
        return ChunkedWork(backend, parts, a1, none, w2t, none, zparts, np.empty((0, k), dt),
                           act)
    return ChunkedWork(backend, parts, a1, scratch("dz1", (m, h), dt), w2t,
                       scratch("dw2t", (k, h), dt), zparts, scratch("dz2", (m, k), dt), act)


@njit(**PARALLEL_OPTIONS)
def step(x, y, p, g, w, lr, update, loss_kind):
    """Loss, gradients and (with ``update``) the SGD step, chunked over hidden units.  Returns L.

    Arguments as ``fused.step``, with ``w`` a ``ChunkedWork``.  With ``update`` the params are
    updated in place (unless the loss is not finite) and ``g.w1`` is not used; otherwise the
    gradients go to ``g``.
    """
    m = x.shape[0]
    h = p.w1.shape[1]
    a1, dz1, dz2 = w.a1[:m], w.dz1[:m], w.dz2[:m]
    transpose(p.w2, w.w2t)
    # the prange bodies see plain values only (the activation's marker is not one: for_prange)
    kind = for_prange(w.act)
    backend, n_parts, w2t, dw2t, zparts = w.backend, w.n_parts, w.w2t, w.dw2t, w.zparts
    for t in prange(n_parts):
        h0, h1 = _chunk_bounds(t, n_parts, h)
        forward_chunk(backend, x, p.w1, p.b1, w2t, a1, zparts[t], h0, h1, kind)
    loss = output_loss_grad(zparts, p.b2, y, dz2, g.b2, loss_kind)
    if update and not np.isfinite(loss):
        return loss
    target = p.w1 if update else g.w1
    for t in prange(n_parts):
        h0, h1 = _chunk_bounds(t, n_parts, h)
        backward_chunk(backend, x, dz2, w2t, a1, dz1, g.b1, dw2t, target, lr, update, h0,
                       h1, kind)
    if update:
        apply_small_updates(p.w2, p.b1, p.b2, w.dw2t, g.b1, g.b2, lr)
    else:
        transpose(w.dw2t, g.w2)
    return loss


@njit(**PARALLEL_OPTIONS)
def predict(x, p, w, z2):
    """``z2 = act(x @ w1 + b1) @ w2 + b2``, chunked like ``step``."""
    h = p.w1.shape[1]
    m, k = z2.shape
    a1 = w.a1[:m]
    transpose(p.w2, w.w2t)
    kind = for_prange(w.act)
    backend, n_parts, w2t, zparts = w.backend, w.n_parts, w.w2t, w.zparts
    for t in prange(n_parts):
        h0, h1 = _chunk_bounds(t, n_parts, h)
        forward_chunk(backend, x, p.w1, p.b1, w2t, a1, zparts[t], h0, h1, kind)
    for i in range(m):
        for c in range(k):
            z = p.b2[c]
            for t in range(n_parts):
                z += zparts[t, i, c]
            z2[i, c] = z


@njit(**JIT_OPTIONS)
def train_loop(x, y, p, g, w, lr, loss_kind, b, losses):
    """Up to ``len(losses)`` SGD steps in one compiled call (``common/loops.py``)."""
    return sgd_loop(step, x, y, p, g, w, lr, loss_kind, b, losses)


@njit(**JIT_OPTIONS)
def train_loop_optim(x, y, p, g, w, o, loss_kind, b, losses):
    """Up to ``len(losses)`` steps of the optimiser ``o`` in one compiled call."""
    return optim_loop(step, x, y, p, g, w, o, loss_kind, b, losses)


SPEC = dict(
    name="chunked", step=step, predict=predict, work=work, train_loop=train_loop,
    train_loop_optim=train_loop_optim, pool="numba+blas", blas_update=("w1",), candidate=True,
    description="hidden units in chunks over Numba's threads, single-threaded BLAS gemm inside "
                "each chunk (bias via beta=1, update via alpha=-lr), activation/loss/derivative fused "
                "in loops")
# Only where the BLAS library's thread count can be set (variant.one_blas_thread): otherwise its
# own threads would run inside each of Numba's.
VARIANTS = [compiled_variant(**SPEC)] if threads.available else []
