"""The small work between the two big matmuls, in one serial pass over the rows of the batch.

Shared by the `fused` (BLAS matmuls) and `tiled` (Numba SIMD matmuls) variants.  After the first
matmul, ``a1`` holds ``z1 = x @ w1 + b1``; everything else a step needs before the second matmul
is ``O(m*h*k)`` work, small next to the matmuls' ``O(m*n*h)``, but as numpy calls it is a dozen
passes over memory.  Here it is one pass: with row ``i`` of ``a1`` hot in L1, the ReLU, ``z2``, the
loss (squared or softmax, ``losses.py``), ``dz2``, ``dz1 = (dz2 @ w2.T) * [a1 > 0]`` and the sums for ``db1``,
``dw2 = a1.T @ dz2`` and ``db2``.  None of ``z1``, ``z2``, ``da1`` or the mask is stored.

Serial on purpose: at these sizes a parallel launch and its barrier cost about what the pass
does (measured: replacing three small ``prange`` kernels by this pass made the `tiled` step 8-27%
faster), and serial code never wakes a thread pool next to BLAS's.

``w2`` is used transposed (``w2t``) and ``dw2`` is accumulated transposed (``dw2t``), so every
inner loop runs along a contiguous row of length ``h`` (vectorised) rather than along ``k``, which
is often 1 to 10.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS
from .losses import row_loss_grad


@njit(**JIT_OPTIONS)
def transpose(w2, w2t):
    """``w2t = w2.T`` (``w2 (h, k)``, ``w2t (k, h)``)."""
    h, k = w2.shape
    for j in range(h):
        for c in range(k):
            w2t[c, j] = w2[j, c]


@njit(**JIT_OPTIONS)
def row_pass(y, b2, a1, dz1, w2t, dw2t, db1, db2, d, loss_kind):
    """Everything between the two matmuls, one row at a time (see the module docstring).

    In: ``a1`` holding ``z1`` (before the ReLU), ``w2t = w2.T``, ``loss_kind`` (``losses.SQUARED``
    or ``losses.SOFTMAX``).  Out: ``a1 = relu(z1)``, ``dz1``, ``dw2t = dw2.T``, ``db1``, ``db2``;
    returns ``m * L`` (float64).  ``d (k,)`` is scratch for one row of ``z2``, then of ``dz2``.
    """
    m, h = a1.shape
    k = w2t.shape[0]
    # Explicit loops, not slice assignments: Numba compiles `a[:] = 0.0` several times slower.
    for c in range(k):
        db2[c] = 0.0
        for j in range(h):
            dw2t[c, j] = 0.0
    for j in range(h):
        db1[j] = 0.0
    scale = 1.0 / m
    loss = 0.0
    for i in range(m):
        a = a1[i]
        g = dz1[i]
        for j in range(h):
            if a[j] < 0.0:
                a[j] = 0.0
        for c in range(k):  # output layer for this row
            z = b2[c]
            for j in range(h):
                z += a[j] * w2t[c, j]
            d[c] = z
        loss += row_loss_grad(d, y[i], d, scale, loss_kind)  # d: z2 row -> dz2 row
        for c in range(k):
            db2[c] += d[c]
        for j in range(h):
            g[j] = 0.0
        for c in range(k):  # da1 row and the dw2 row sums
            dc = d[c]
            for j in range(h):
                g[j] += dc * w2t[c, j]
                dw2t[c, j] += dc * a[j]
        for j in range(h):  # ReLU mask (a1 > 0 exactly when z1 > 0) and db1
            if not a[j] > 0.0:
                g[j] = 0.0
            db1[j] += g[j]
    return loss


@njit(**JIT_OPTIONS)
def apply_small_updates(w2, b1, b2, dw2t, db1, db2, lr):
    """The SGD step for ``w2``, ``b1``, ``b2`` from the row pass's sums (``w1``'s is fused into
    the second matmul)."""
    h, k = w2.shape
    for j in range(h):
        b1[j] -= lr * db1[j]
        for c in range(k):
            w2[j, c] -= lr * dw2t[c, j]
    for c in range(k):
        b2[c] -= lr * db2[c]


@njit(**JIT_OPTIONS)
def output_layer(a1, w2t, b2, z2):
    """``z2 = relu(a1) @ w2 + b2``, ReLU applied in place to ``a1`` (which holds ``z1``)."""
    m, h = a1.shape
    k = w2t.shape[0]
    for i in range(m):
        a = a1[i]
        for j in range(h):
            if a[j] < 0.0:
                a[j] = 0.0
        for c in range(k):
            z = b2[c]
            for j in range(h):
                z += a[j] * w2t[c, j]
            z2[i, c] = z

