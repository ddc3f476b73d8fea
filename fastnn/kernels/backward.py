"""Backward kernels in plain Numba loops (no BLAS): the `naive` variant's backward pass and update.

Every ``prange`` loop gives each iteration its own slice of the output (a column of ``dz1``, a block
of rows of ``dw``), so there is no shared ``+=`` and every sum is taken in one fixed order: results
are bitwise the same for any thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import PARALLEL_OPTIONS

# Rows of dw handled by one prange iteration; each block allocates its accumulator row once.
WEIGHT_GRAD_BLOCK = 16


@njit(**PARALLEL_OPTIONS)
def relu_backward(dz2, w2, a1, dz1, db1):
    """``dz1 = (dz2 @ w2.T) * [a1 > 0]`` and ``db1 = dz1.sum(axis=0)`` in one kernel.

    Shapes: ``dz2 (m, k)``, ``w2 (h, k)``, ``a1 (m, h)``; outputs ``dz1 (m, h)``, ``db1 (h,)``.

    Split over hidden units: iteration ``j`` owns column ``j`` of ``dz1`` and ``db1[j]``, so the bias
    gradient is summed in the same loop that makes ``dz1`` with no race.  ``[a1 > 0]`` equals
    ``[z1 > 0]`` because ``a1 = relu(z1)``.  Entries with the mask off are set to 0 without computing
    their dot product (``da1`` is never stored).
    """
    m, k = dz2.shape
    h = w2.shape[0]
    zero = np.zeros(1, dz2.dtype)[0]  # sums run in the arrays' dtype, like the reference
    for j in prange(h):
        s_col = zero
        for i in range(m):
            g = zero
            if a1[i, j] > 0:
                for c in range(k):
                    g += dz2[i, c] * w2[j, c]
            dz1[i, j] = g
            s_col += dz1[i, j]
        db1[j] = s_col


@njit(**PARALLEL_OPTIONS)
def weight_grad(a, dz, out_w, out_b, lr, update, with_bias):
    """``dw = a.T @ dz`` and, with ``with_bias``, ``db = dz.sum(axis=0)``; stored in ``out_w`` /
    ``out_b``, or with ``update`` applied as the SGD step ``out -= lr * grad``.

    Shapes: ``a (m, n)``, ``dz (m, h)``, ``out_w (n, h)``, ``out_b (h,)``.  Used for
    ``dw1 = x.T @ dz1`` (``out_w`` is ``w1`` when updating; ``db1`` comes from ``relu_backward``)
    and for ``dw2 = a1.T @ dz2`` with ``db2``.

    The bias gradient is the weight gradient of an input that is always 1, so it is computed as
    one more row, ``p == n``, of the same loop.  Split over blocks of rows of ``out``; row ``p``
    is built in a private accumulator (``sum_i a[i, p] * dz[i, :]``, contiguous inner loop) and
    then either stored or applied to the weights, so a step never stores ``dw``.  The gradient is
    complete before it touches ``w``: adding ``-lr * a[i, p] * dz[i, :]`` to ``w`` term by term
    would round ``w`` (much larger than the update) ``m`` times instead of once.
    """
    m, n = a.shape
    h = dz.shape[1]
    rows = n + 1 if with_bias else n
    n_blocks = (rows + WEIGHT_GRAD_BLOCK - 1) // WEIGHT_GRAD_BLOCK
    for blk in prange(n_blocks):
        acc = np.empty(h, dz.dtype)
        for p in range(blk * WEIGHT_GRAD_BLOCK, min(rows, (blk + 1) * WEIGHT_GRAD_BLOCK)):
            for j in range(h):
                acc[j] = 0.0
            if p < n:
                for i in range(m):
                    aip = a[i, p]
                    for j in range(h):
                        acc[j] += aip * dz[i, j]
                out = out_w[p]
            else:
                for i in range(m):
                    for j in range(h):
                        acc[j] += dz[i, j]
                out = out_b
            if update:
                for j in range(h):
                    out[j] -= lr * acc[j]
            else:
                for j in range(h):
                    out[j] = acc[j]
