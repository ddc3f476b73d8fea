"""Rung 8, `sparse`: the first layer over CSR rows, at a cost that grows with the stored entries.

Text (TF-IDF, bags of words, hashed features), recommender and genomics data have tens or
hundreds of thousands of columns with under 1% of the entries stored.  A dense step costs
``4 m n h`` flops whatever is stored; here the two ``n``-sized matmuls touch only what is:

1. ``z1[i] = b1 + sum_p data[p] * w1[indices[p]]`` over the stored entries ``p`` of the batch's
   row ``i``: ``nnz(batch) * h`` multiply-adds, each a contiguous row of ``w1`` (``hidden``,
   parallel over the batch's rows, the bias as the sum's start).
2. The row pass of the dense rungs (``common/rowpass.py``, serial: it is ``O(m h k)``): the
   activation, the output layer, the loss, ``dz2``, ``dz1`` and the small gradients.
3. ``dw1 = x.T @ dz1`` is non-zero only on the rows of ``w1`` the batch names, and with plain SGD
   it is never stored: each stored entry ``(i, c, v)`` does ``w1[c] -= lr * v * dz1[i]``
   (``scatter``).  Threads own the rows of ``w1`` with ``c % threads == t`` and each scans the
   batch's entries in order, so no two threads write one row (no races, no atomics), the entries
   of a row of ``w1`` are summed in the batch's order whatever the thread count (the same bits on
   1 or 2 threads), and the load stays balanced for any order of the columns.

A step costs about ``4 nnz(batch) h`` flops plus the output layer, whatever ``n`` is.  The other
optimisers (momentum, Nesterov, Adam) and L2 touch every row of ``w1`` by their definitions: their
steps take the dense ``dw1`` (zeroed, then scattered into) and the fused update pass over all
parameters, exactly what they define (``O(n h)`` a step, as in scikit-learn).  Opt-in, with
another meaning (``Optimizer(lazy=True)``): ``lazy_step`` updates only the batch's rows of
``w1`` and their state, each row's gradient summed and applied at once (``by_column``,
``lazy_update_w1``), ``O(nnz(batch) h)`` a step.

Any CSR matrix with sorted or unsorted column indices and duplicate entries is used as it is
(scipy sums duplicates: so do both sums here); ``SparseRows`` holds it with its rows, so a batch
of a shuffled epoch is the matrix and an index array, and no row is ever copied.  The dense
rungs' contract (C-contiguous ``x``) does not apply: this rung's ``x`` is a ``SparseRows``
(``fastnn.validation.check_sparse_x`` makes one from any scipy.sparse matrix or array).
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from .common.activations import RELU
from .common.losses import SQUARED
from .common.rowpass import apply_small_updates, output_layer, row_pass, transpose
from .common.simd import prefetch2
from .fused import work
from .common import updates
from .common.minibatch import batch_rows
from .jit import JIT_OPTIONS, PARALLEL_OPTIONS
from .variant import (Direct, Variant, applied_grads, new_grads, parallel_section, sizes)


class SparseRows:
    """Rows of a CSR matrix: ``indptr (N+1,)``, ``indices (nnz,)`` (int64), ``data (nnz,)`` (the
    compute dtype), ``n`` columns, and ``rows``: the rows in use, in order (int64; all ``N`` of
    them in place by default).  Indexing with a slice or an integer array selects rows of rows,
    as ``x[rows]`` would, without copying any entry.  Made only by
    ``fastnn.validation.check_sparse_x``, which checks every index first: the kernels trust it."""

    __slots__ = ("indptr", "indices", "data", "n", "rows")
    format = "fastnn-csr-rows"

    def __init__(self, indptr, indices, data, n, rows=None):
        self.indptr, self.indices, self.data, self.n = indptr, indices, data, int(n)
        self.rows = np.arange(indptr.shape[0] - 1, dtype=np.int64) if rows is None else rows

    @property
    def shape(self):
        return (self.rows.shape[0], self.n)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return 2

    def __len__(self):
        return self.rows.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            return SparseRows(self.indptr, self.indices, self.data, self.n, self.rows[key])
        key = np.asarray(key)
        if key.dtype.kind not in "iu" or key.ndim != 1:
            raise TypeError(f"SparseRows: rows are selected by a slice or a 1-d integer array, "
                            f"got {key.dtype} with {key.ndim} dimensions")
        return SparseRows(self.indptr, self.indices, self.data, self.n,
                          np.ascontiguousarray(self.rows[key], dtype=np.int64))

    def stored(self) -> int:
        """The entries stored in these rows (duplicates counted)."""
        return int((self.indptr[self.rows + 1] - self.indptr[self.rows]).sum())

    def toarray(self) -> np.ndarray:
        """The dense rows (for tests and small data only: this is what the rung avoids)."""
        out = np.zeros(self.shape, self.dtype)
        for i, r in enumerate(self.rows):
            s, e = self.indptr[r], self.indptr[r + 1]
            np.add.at(out[i], self.indices[s:e], self.data[s:e])
        return out


# Entries ahead whose row of w1 is prefetched: the rows come in the data's order, which no
# hardware prefetcher can guess, and each is a DRAM miss once w1 outgrows the caches.
AHEAD = 8
LINE = 64  # bytes


@njit(**JIT_OPTIONS, inline="always")
def _prefetch_row(w, c, h):
    """Prefetch row ``c`` of ``w (n, h)``, every cache line of it."""
    step = LINE // w.itemsize
    for j in range(0, h, step):
        prefetch2(w, c, j)


@njit(**PARALLEL_OPTIONS)
def hidden(indptr, indices, data, rows, w1, b1, z1):
    """``z1 = x[rows] @ w1 + b1`` for CSR ``x``: ``z1 (B, h)``, ``rows (B,)``, ``w1 (n, h)``.
    Parallel over the rows; each stored entry adds a scaled row of ``w1`` (contiguous: the
    inner loop vectorises), in the order the entries are stored."""
    B, h = z1.shape
    for i in prange(B):
        zi = z1[i]
        for j in range(h):
            zi[j] = b1[j]
        r = rows[i]
        s, e = indptr[r], indptr[r + 1]
        for p in range(s, e):
            if p + AHEAD < e:
                _prefetch_row(w1, indices[p + AHEAD], h)
            v = data[p]
            wc = w1[indices[p]]
            for j in range(h):
                zi[j] += v * wc[j]


@njit(**PARALLEL_OPTIONS)
def scatter(indptr, indices, data, rows, dz1, alpha, out, parts):
    """``out += alpha * x[rows].T @ dz1`` for CSR ``x``, on the rows of ``out (n, h)`` the batch
    names only.  Part ``t`` of ``parts`` (one a thread) owns the rows ``c`` of ``out`` with
    ``c % parts == t`` and visits the batch's entries in order: no two threads write a row, and
    each row's sum runs in the batch's order for any ``parts`` (bitwise the same on 1 or 2
    threads).  (``parts`` comes from Python: ``numba.get_num_threads`` in compiled code is a
    dynamic global, which would keep the kernel out of the disk cache.)"""
    B, h = dz1.shape
    T = parts
    # owner(c) = c % T; a mask when T is a power of two (a 64-bit division per entry and
    # thread cost ~1 ms of a 4 ms step)
    mask = T - 1 if T & (T - 1) == 0 else -1
    for t in prange(T):
        for i in range(B):
            r = rows[i]
            di = dz1[i]
            s, e = indptr[r], indptr[r + 1]
            for p in range(s, e):
                c = indices[p]
                if p + AHEAD < e:
                    ahead = indices[p + AHEAD]
                    if (ahead & mask if mask >= 0 else ahead % T) == t:
                        _prefetch_row(out, ahead, h)
                if (c & mask if mask >= 0 else c % T) == t:
                    v = data[p]
                    oc = out[c]
                    for j in range(h):
                        oc[j] += alpha * (v * di[j])


@njit(**PARALLEL_OPTIONS)
def zero(a):
    """``a[...] = 0`` for ``a (n, h)``, over the threads (``dw1`` of the dense-update steps)."""
    for i in prange(a.shape[0]):
        row = a[i]
        for j in range(a.shape[1]):
            row[j] = 0.0


@njit(**JIT_OPTIONS)
def step(indptr, indices, data, rows, y, p, g, w, lr, update, loss_kind, parts):
    """Loss, gradients and (with ``update``) the SGD step on the CSR rows ``rows``.  Returns
    ``L``.  The contract of ``fused.step`` (same ``FusedWork``, same ``g``), with ``x`` given as
    its CSR arrays and rows (``parts``: ``scatter``'s): ``update`` false writes every gradient to ``g`` (``g.w1`` dense:
    zeroed, then the batch's rows scattered in); ``update`` true updates ``p`` in place, ``w1``
    on the batch's rows only.  A loss that is not finite updates nothing."""
    B = rows.shape[0]
    a1, dz1 = w.a1[:B], w.dz1[:B]
    hidden(indptr, indices, data, rows, p.w1, p.b1, a1)
    transpose(p.w2, w.w2t)
    loss = row_pass(y, p.b2, a1, dz1, w.w2t, w.dw2t, g.b1, g.b2, w.d, loss_kind, w.act)
    if not update:
        zero(g.w1)
        # (alpha in the params' dtype, as -lr below: one compiled scatter, not two)
        scatter(indptr, indices, data, rows, dz1, p.w1.dtype.type(1.0), g.w1, parts)
        transpose(w.dw2t, g.w2)
    elif np.isfinite(loss):
        scatter(indptr, indices, data, rows, dz1, -lr, p.w1, parts)
        apply_small_updates(p.w2, p.b1, p.b2, w.dw2t, g.b1, g.b2, lr)
    return loss


@njit(**JIT_OPTIONS)
def predict(indptr, indices, data, rows, p, w, z2):
    """``z2 = act(x[rows] @ w1 + b1) @ w2 + b2`` for CSR ``x``."""
    a1 = w.a1[:rows.shape[0]]
    hidden(indptr, indices, data, rows, p.w1, p.b1, a1)
    transpose(p.w2, w.w2t)
    output_layer(a1, w.w2t, p.b2, z2, w.act)


# --- lazy updates: only the rows the batch names (``Optimizer(lazy=True)``, opt-in) ---------------

@njit(**JIT_OPTIONS)
def by_column(indptr, indices, data, rows, pos, cols, start, entry_row, entry_value):
    """The stored entries of ``rows`` grouped by column (a stable counting sort: each column's
    entries in the batch's order, as ``scatter`` sums them); returns ``k``, the distinct
    columns, in ``cols[:k]`` in order of first appearance.  Column ``cols[q]``'s entries are
    ``start[q] .. start[q+1]-1``: their row in the batch (``entry_row``) and value
    (``entry_value``).  ``pos (n,)`` (int32) is -1 everywhere on entry and again on return:
    the cost is ``O(nnz(batch))``, whatever ``n`` is."""
    k = 0
    for i in range(rows.shape[0]):  # the columns, and how many entries each
        r = rows[i]
        for p in range(indptr[r], indptr[r + 1]):
            c = indices[p]
            if pos[c] < 0:
                pos[c] = k
                cols[k] = c
                start[k + 1] = 0
                k += 1
            start[pos[c] + 1] += 1
    start[0] = 0
    for q in range(k):
        start[q + 1] += start[q]
    for i in range(rows.shape[0]):  # the entries into their columns' places, in order
        r = rows[i]
        for p in range(indptr[r], indptr[r + 1]):
            q = pos[indices[p]]
            e = start[q]
            entry_row[e] = i
            entry_value[e] = data[p]
            start[q] = e + 1
    for q in range(k - 1, 0, -1):  # (each start moved to its column's end: back one column)
        start[q] = start[q - 1]
    start[0] = 0
    for q in range(k):
        pos[cols[q]] = -1
    return k


@njit(**PARALLEL_OPTIONS)
def lazy_update_w1(w1, dz1, cols, start, entry_row, entry_value, sqs, grad, kind, form, s1, s2,
                   lr, decay, mu, nesterov, beta1, beta2, eps, t):
    """For each row ``c = cols[q]`` of ``w1``: its gradient ``dw1[c] = sum v * dz1[i]`` over
    the batch's entries ``(i, c, v)`` (``by_column``'s, in the batch's order), then at once the
    optimiser's update of that row and of its state (``updates.update``'s element formula and
    arguments; ``s1``, ``s2`` flat, ``w1``'s entries first).  ``dw1`` is never stored: each
    part of ``cols`` (one a thread, ``grad (parts, h)`` its row of scratch) sums a row's
    gradient into its scratch and updates the row from it, so the step reads and writes each
    named row of ``w1`` and its state once (the scatter into a stored ``dw1``, then the
    update, took 1.6x as long at 200,000 x 256).  ``sqs[q]``: row ``cols[q]``'s
    ``sum(w1**2)`` before the update (summed by the caller in a fixed order).  A row's sums
    and update do not depend on the parts: the same bits on any thread count.  The rows come
    in the data's order: the next rows' first lines are prefetched.  (Scalars, not the
    ``OptimState``: a NamedTuple does not go into a ``prange`` body.)"""
    n, h = w1.shape
    k = cols.shape[0]
    parts = grad.shape[0]
    used1, used2 = s1.shape[0] > 0, s2.shape[0] > 0
    m1 = s1[:n * h].reshape((n, h)) if used1 else w1
    m2 = s2[:n * h].reshape((n, h)) if used2 else w1
    step, scale = updates.adam_factors(form, lr, beta1, beta2, t)  # (once, not per row)
    for part in prange(parts):
        g = grad[part]
        lo, hi = part * k // parts, (part + 1) * k // parts
        for q in range(lo, hi):
            if q + LAZY_AHEAD < hi:
                ahead = cols[q + LAZY_AHEAD]
                prefetch2(w1, ahead, 0)
                if used1:
                    prefetch2(m1, ahead, 0)
                if used2:
                    prefetch2(m2, ahead, 0)
            for j in range(h):
                g[j] = 0.0
            for e in range(start[q], start[q + 1]):
                v = entry_value[e]
                di = dz1[entry_row[e]]
                for j in range(h):
                    g[j] += v * di[j]
            c = cols[q]
            sqs[q] = updates.update_with(kind, form, w1[c], g, m1[c] if used1 else s1,
                                         m2[c] if used2 else s2, lr, decay, mu, nesterov,
                                         beta1, beta2, eps, step, scale)


# Rows ahead whose first cache line ``lazy_update_w1`` prefetches (each row's own lines then
# stream): all of every row, as ``hidden`` does, overfilled the line buffers here (slower).
LAZY_AHEAD = 4


@njit(**JIT_OPTIONS)
def lazy_step(indptr, indices, data, rows, y, p, g, w, o, t, loss_kind, lz):
    """One lazy optimiser step (step number ``t``): the loss and the small gradients (``step``'s
    forward pass and row pass), then the batch's rows of ``w1`` updated from their gradients
    (``lazy_update_w1``: ``dw1`` is never stored, ``g.w1`` is not used), ``b1``, ``w2``, ``b2``
    in full.  ``lz``: ``LazyWork``.  Returns the loss plus the L2 term over ``w2`` and the rows
    updated (the loss alone, and no update, when it is not finite)."""
    B = rows.shape[0]
    a1, dz1 = w.a1[:B], w.dz1[:B]
    hidden(indptr, indices, data, rows, p.w1, p.b1, a1)
    transpose(p.w2, w.w2t)
    loss = row_pass(y, p.b2, a1, dz1, w.w2t, w.dw2t, g.b1, g.b2, w.d, loss_kind, w.act)
    if not np.isfinite(loss):
        return loss
    transpose(w.dw2t, g.w2)
    k = by_column(indptr, indices, data, rows, lz.pos, lz.cols, lz.start, lz.entry_row,
                  lz.entry_value)
    decay = updates.batch_decay(o, y, p.w2.shape[1])
    hp = o.hyper
    lazy_update_w1(p.w1, dz1, lz.cols[:k], lz.start, lz.entry_row, lz.entry_value, lz.sqs[:k],
                   lz.grad, o.kind, o.form, o.s1, o.s2, hp.lr, decay, hp.momentum, o.nesterov,
                   hp.beta1, hp.beta2, hp.eps, t)
    sq = 0.0
    for q in range(k):
        sq += lz.sqs[q]
    sq += updates.update_after_w1(p, g, o, t, decay)
    return loss + updates.l2_term(o, decay, sq)


class LazyWork(NamedTuple):
    """Scratch of ``lazy_step`` for batches of up to ``stored`` entries: ``pos (n,)`` (-1
    between steps), ``cols``, ``start``, ``entry_row``, ``entry_value``, ``sqs``, and ``grad
    (parts, h)``."""

    pos: np.ndarray
    cols: np.ndarray
    start: np.ndarray
    entry_row: np.ndarray
    entry_value: np.ndarray
    sqs: np.ndarray
    grad: np.ndarray

    @classmethod
    def new(cls, n, h, stored, dtype, parts):
        return cls(np.full(n, -1, np.int32), np.empty(stored, np.int64),
                   np.zeros(stored + 1, np.int64), np.empty(stored, np.int64),
                   np.empty(stored, dtype), np.empty(stored, np.float64),
                   np.empty((parts, h), dtype))


def lazy_step_loop(params, x, y, optimizer, grads, losses_out, loss_kind=SQUARED, batch=None,
                   start=0, order=None, act=RELU) -> int:
    """``optim_step_loop``'s contract (``kernels.variant``) for a ``lazy`` optimiser on sparse
    rows: per step ``lazy_step``, then ``optimizer.t`` counts it."""
    (n, h), dt = params.w1.shape, params.dtype
    lz = None
    for t in range(losses_out.shape[0]):
        xb, yb = batch_rows(x, y, order, start + t, batch)
        stored = max(xb.stored(), 1)
        if lz is None or lz.cols.shape[0] < stored:
            lz = LazyWork.new(n, h, stored, dt, numba.get_num_threads())
        with _guard():
            losses_out[t] = _lazy_step(
                _key(params, act), x.indptr, x.indices, x.data, xb.rows, yb, params, grads,
                work(params, xb.shape[0], 0, True, act), optimizer.kernel_state(params),
                optimizer.t + 1, loss_kind, lz)
        if not np.isfinite(losses_out[t]):
            return t + 1
        optimizer.t += 1
    return losses_out.shape[0]


def step_flops(nnz, m, h, k) -> int:
    """Flops of one sparse SGD step: ``2 nnz h`` for ``z1``, ``2 nnz h`` for the scatter, and the
    output layer's ``6 m h k``."""
    return 4 * nnz * h + 6 * m * h * k


# --- the Python side: the step contract on SparseRows -------------------------------------------

_step, _predict, _lazy_step = Direct(step), Direct(predict), Direct(lazy_step)


def _key(params, act):
    return (params.dtype, type(act))


def _guard():
    return parallel_section()


def _predict_rows(params, x: SparseRows, act=RELU):
    m, _, _, k, dt = sizes(params, x.shape[0])
    z2 = np.empty((m, k), dt)
    with _guard():
        _predict(_key(params, act), x.indptr, x.indices, x.data, x.rows, params,
                 work(params, m, 0, False, act), z2)
    return z2


def _loss_and_grads(params, x: SparseRows, y, loss_kind=SQUARED, grads=None, act=RELU):
    grads = new_grads(params) if grads is None else grads
    with _guard():
        loss = _step(_key(params, act), x.indptr, x.indices, x.data, x.rows, y, params, grads,
                     work(params, x.shape[0], 0, True, act), params.dtype.type(0.0), False,
                     loss_kind, numba.get_num_threads())
    return loss, grads


def _sgd_step(params, x: SparseRows, y, lr, loss_kind=SQUARED, act=RELU):
    with _guard():
        return _step(_key(params, act), x.indptr, x.indices, x.data, x.rows, y, params,
                     applied_grads(params), work(params, x.shape[0], 0, True, act),
                     params.dtype.type(lr), True, loss_kind, numba.get_num_threads())


SPARSE = Variant(
    "sparse",
    "CSR rows: z1 from the stored entries (parallel over rows, bias as the sum's start), the "
    "dense row pass, dw1 scattered into the touched rows of w1 with the SGD update (threads own "
    "rows of w1: no races); cost grows with the stored entries, not the features",
    _predict_rows, _loss_and_grads, _sgd_step, bitwise=True, pool="numba", compiled=step,
    dispatchers=(step, predict, lazy_step), candidate=False)

# Not in ``LADDER``'s dense list: every dense test and benchmark runs ``kernels.variants()``, and
# this rung's ``x`` is a different type.  ``kernels.get("sparse")`` and ``kernels.SPARSE`` name it.
VARIANTS = ()
SPARSE_VARIANTS = (SPARSE,)
