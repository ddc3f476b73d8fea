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
parameters, exactly what they define (``O(n h)`` a step, as in scikit-learn).

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


def step_flops(nnz, m, h, k) -> int:
    """Flops of one sparse SGD step: ``2 nnz h`` for ``z1``, ``2 nnz h`` for the scatter, and the
    output layer's ``6 m h k``."""
    return 4 * nnz * h + 6 * m * h * k


# --- the Python side: the step contract on SparseRows -------------------------------------------

_step, _predict = Direct(step), Direct(predict)


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
    dispatchers=(step, predict), candidate=False)

# Not in ``LADDER``'s dense list: every dense test and benchmark runs ``kernels.variants()``, and
# this rung's ``x`` is a different type.  ``kernels.get("sparse")`` and ``kernels.SPARSE`` name it.
VARIANTS = ()
SPARSE_VARIANTS = (SPARSE,)
