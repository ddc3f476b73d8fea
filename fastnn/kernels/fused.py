"""The `fused` variant: one compiled call per step, BLAS for the two big matmuls, one row pass for
everything else.

Where the time goes at the seed's shape (m=64, n=1000, h=100, k=10): the two ``n``-sized matmuls,
``x @ w1`` and ``x.T @ dz1``, are 95% of the flops, and BLAS does them at close to the machine's
peak.  Everything else is ``O(m*h*k)`` or less but, written as numpy calls, costs a dozen passes
over memory and a dozen Python round trips.  So:

1. ``a1 <- b1`` (broadcast), then ``gemm``: ``a1 = x @ w1 + 1 * a1``.  The bias rides on BLAS's
   ``beta = 1``.
2. One pass over the rows of the batch, with row ``i`` of ``a1`` hot in L1: ReLU, ``z2``, the
   residual, the loss, ``dz2``, ``dz1 = (dz2 @ w2.T) * [a1 > 0]``, and the sums for ``db1``,
   ``dw2 = a1.T @ dz2`` and ``db2``.  None of ``z1``, ``z2``, ``da1`` or the mask is stored.
3. ``gemm`` again: for a step, ``w1 = -lr * (x.T @ dz1) + 1 * w1``, so ``dw1`` is never stored (BLAS's
   ``alpha``/``beta`` carry the SGD update); for ``loss_and_grads``, ``dw1 = x.T @ dz1``.
4. The small updates of ``w2``, ``b1``, ``b2``.

The kernel is serial Numba code: the parallelism is BLAS's own threads.  Keeping Numba's thread
pool out of it avoids the two pools spinning against each other (both busy-wait).

Arrays are C-contiguous, one float dtype; ``fastnn.validation`` guarantees it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS
from .blas import gemm


@njit(**JIT_OPTIONS)
def _hidden_preactivation(backend, x, w1, b1, a1):
    """``a1 = x @ w1 + b1`` (before the ReLU), the bias via BLAS's ``beta = 1``."""
    m, h = a1.shape
    for i in range(m):
        for j in range(h):
            a1[i, j] = b1[j]
    gemm(backend, False, False, 1.0, x, w1, 1.0, a1)


@njit(**JIT_OPTIONS)
def predict(backend, x, w1, b1, w2, b2, a1, w2t, z2):
    """``z2 = relu(x @ w1 + b1) @ w2 + b2``.

    ``backend``: ``blas.BACKEND``.  Shapes: ``x (m, n)``, params as usual, scratch ``a1 (m, h)``,
    ``w2t (k, h)``, output ``z2 (m, k)``.  The ReLU and the whole output layer happen in one pass
    over the rows of ``a1``; ``w2`` is used transposed so that each output is a dot product along
    a contiguous row of length ``h``.
    """
    _hidden_preactivation(backend, x, w1, b1, a1)
    m, h = a1.shape
    k = w2.shape[1]
    _transpose(w2, w2t)
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


@njit(**JIT_OPTIONS)
def _transpose(w2, w2t):
    h, k = w2.shape
    for j in range(h):
        for c in range(k):
            w2t[c, j] = w2[j, c]


@njit(**JIT_OPTIONS)
def _row_pass(y, b2, a1, dz1, w2t, dw2t, db1, db2, d):
    """Step 2 of the module docstring: everything between the two gemms, one row at a time.

    In: ``a1`` holding ``z1`` (before the ReLU), ``w2t = w2.T``.  Out: ``a1 = relu(z1)``,
    ``dz1``, ``dw2t = dw2.T``, ``db1``, ``db2``; returns ``sum((z2 - y)**2)`` (float64).
    ``d (k,)`` is scratch for one row of ``dz2``.
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
    scale = 2.0 / m
    loss = 0.0
    for i in range(m):
        a = a1[i]
        g = dz1[i]
        for j in range(h):
            if a[j] < 0.0:
                a[j] = 0.0
        for c in range(k):  # output layer, residual, loss and dz2 for this row
            z = b2[c]
            for j in range(h):
                z += a[j] * w2t[c, j]
            r = z - y[i, c]
            loss += np.float64(r) * np.float64(r)
            d[c] = scale * r
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
def step(backend, x, y, w1, b1, w2, b2, lr, update, dw1, db1, dw2, db2, a1, dz1, w2t, dw2t, d):
    """Loss, gradients and (with ``update``) the SGD step, in one call.  Returns ``L``.

    Math: see ``fastnn.reference``.  ``backend``: ``blas.BACKEND``.  Shapes: ``x (m, n)``, ``y (m, k)``, params ``w1 (n, h)``,
    ``b1 (h,)``, ``w2 (h, k)``, ``b2 (k,)``.

    ``update`` false: the gradients are written to ``dw1 (n, h)``, ``db1 (h,)``, ``dw2 (h, k)``,
    ``db2 (k,)`` and the params are not touched.  ``update`` true: the params are updated in place,
    ``p -= lr * dp``; ``dw1`` is not used (pass any array of the dtype) and ``db1``, ``dw2``,
    ``db2`` serve as scratch.  Scratch: ``a1, dz1 (m, h)``, ``w2t, dw2t (k, h)``, ``d (k,)``.

    ``w2`` is used transposed (``w2t``) and ``dw2`` is accumulated transposed (``dw2t``), so every
    inner loop of the row pass runs along a contiguous row of length ``h`` (vectorised) rather than
    along ``k``, which is often 1 to 10.
    """
    m = x.shape[0]
    h = w1.shape[1]
    k = w2.shape[1]
    _hidden_preactivation(backend, x, w1, b1, a1)
    _transpose(w2, w2t)
    loss = _row_pass(y, b2, a1, dz1, w2t, dw2t, db1, db2, d)
    if update:
        gemm(backend, True, False, -lr, x, dz1, 1.0, w1)
        for j in range(h):
            for c in range(k):
                w2[j, c] -= lr * dw2t[c, j]
        for j in range(h):
            b1[j] -= lr * db1[j]
        for c in range(k):
            b2[c] -= lr * db2[c]
    else:
        gemm(backend, True, False, 1.0, x, dz1, 0.0, dw1)
        for j in range(h):
            for c in range(k):
                dw2[j, c] = dw2t[c, j]
    return loss / m


@njit(**JIT_OPTIONS)
def train_loop(backend, x, y, w1, b1, w2, b2, lr, losses, db1, dw2, db2, a1, dz1, w2t, dw2t, d):
    """``len(losses)`` SGD steps in one compiled call (the whole-loop mode): no Python between
    steps.  ``losses[t]`` is the loss before step ``t``.  Arguments as ``step`` with ``update``."""
    for t in range(losses.shape[0]):
        losses[t] = step(backend, x, y, w1, b1, w2, b2, lr, True, w1, db1, dw2, db2, a1, dz1,
                         w2t, dw2t, d)
