"""Forward kernels in plain Numba loops (no BLAS): the `naive` variant's forward pass.

All arrays are C-contiguous and of one float dtype (``fastnn.validation`` guarantees it).  Work is
split over the rows of the batch: row ``i`` of every output is written by exactly one ``prange``
iteration, so the parallel loops are race-free and their results do not depend on the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import JIT_OPTIONS, PARALLEL_OPTIONS
from .losses import row_loss_grad


@njit(**PARALLEL_OPTIONS)
def linear_relu_forward(x, w1, b1, a1):
    """``a1 = relu(x @ w1 + b1)``, bias and ReLU fused into the matmul.

    Shapes: ``x (m, n)``, ``w1 (n, h)``, ``b1 (h,)``, output ``a1 (m, h)``.

    Row ``i`` of ``a1`` is the accumulator: it starts as ``b1`` (the bias add costs nothing), takes
    ``x[i, p] * w1[p, :]`` for each ``p`` (an i-k-j loop: the inner loop runs along contiguous rows of
    ``w1`` and ``a1``, so it vectorises), and the ReLU is applied while the row is still in L1.
    ``z1`` is never stored: the backward pass recovers the ReLU mask as ``a1 > 0``, which equals
    ``z1 > 0`` exactly.
    """
    m, n = x.shape
    h = w1.shape[1]
    for i in prange(m):
        acc = a1[i]
        for j in range(h):
            acc[j] = b1[j]
        for p in range(n):
            xip = x[i, p]
            for j in range(h):
                acc[j] += xip * w1[p, j]
        for j in range(h):
            if acc[j] < 0.0:  # not max(acc, 0): NaN must stay NaN, as np.maximum keeps it
                acc[j] = 0.0


@njit(**JIT_OPTIONS, inline="always")
def _linear_row(a_row, w, b, out_row):
    """``out_row = a_row @ w + b`` for one row (i-k-j order, contiguous inner loop)."""
    k = w.shape[1]
    for c in range(k):
        out_row[c] = b[c]
    for j in range(a_row.shape[0]):
        aij = a_row[j]
        for c in range(k):
            out_row[c] += aij * w[j, c]


@njit(**PARALLEL_OPTIONS)
def linear_forward(a1, w2, b2, z2):
    """``z2 = a1 @ w2 + b2``.  Shapes: ``a1 (m, h)``, ``w2 (h, k)``, ``b2 (k,)``, ``z2 (m, k)``."""
    for i in prange(a1.shape[0]):
        _linear_row(a1[i], w2, b2, z2[i])


@njit(**PARALLEL_OPTIONS)
def output_loss_grad(a1, w2, b2, y, dz2, loss_kind):
    """The output layer, the loss and its gradient in one pass over the rows; returns ``L``.

    ``z2 = a1 @ w2 + b2``, then the loss ``L`` chosen by ``loss_kind`` and ``dz2 = dL/dz2``
    (``losses.py``: squared error or softmax cross-entropy).  Shapes: ``a1 (m, h)``,
    ``w2 (h, k)``, ``b2 (k,)``, ``y (m, k)``, output ``dz2 (m, k)``.

    ``z2`` is built in ``dz2``'s row and turned into the gradient in place, so neither ``z2`` nor
    the residual is ever stored.  Each row's loss term is summed in float64 into its own slot
    and the slots are added in row order afterwards: a fixed order, whatever the thread count.
    """
    m, k = dz2.shape
    row_loss = np.empty(m, np.float64)
    for i in prange(m):
        row = dz2[i]
        _linear_row(a1[i], w2, b2, row)
        row_loss[i] = row_loss_grad(row, y[i], row, 1.0 / m, loss_kind)
    total = 0.0
    for i in range(m):
        total += row_loss[i]
    return total / m
