"""The `fused-wide` variant: `fused` with the output layer's three matmuls through BLAS as well.

`fused`'s row pass computes ``a1 @ w2``, ``dz2 @ w2.T`` and ``a1.T @ dz2`` (``6*m*h*k`` flops) a
few rows at a time, on one core, fused with everything elementwise.  With a narrow output layer
(k ~ 10) that is cheap next to the two ``n``-sized matmuls.  With a wide one (k = 100 at
256x100x50x100) those three are half the flops, and one core running them in registers loses to
numpy, whose BLAS runs them on every core.  So here all five matmuls are BLAS calls, and the
elementwise work rides in the gaps:

1. ``a1 <- b1``, ``a1 = x @ w1 + a1`` (BLAS, ``beta = 1``), then ReLU in place: one pass.
2. ``z2 <- b2``, ``z2 = a1 @ w2 + z2`` (BLAS, ``beta = 1``).
3. Per row: the loss term and ``dz2`` in place of ``z2`` (``losses.row_loss_grad``), ``db2``.
4. ``dz1 = dz2 @ w2.T`` (BLAS), then the ReLU mask and ``db1`` in one pass.
5. Step: ``w1 = -lr * x.T @ dz1 + w1`` and ``w2 = -lr * a1.T @ dz2 + w2`` (BLAS ``alpha``/
   ``beta``: ``dw1``, ``dw2`` never stored), then the bias updates.  Gradients only: the same two
   products into ``dw1``, ``dw2``.

Four passes over (m, h) against `fused`'s one, but each of them is a plain streaming loop.  Like
`fused` the kernel is serial Numba code and the parallelism is BLAS's.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS
from .blas import NO_TRANS, TRANS, affine, gemm
from .losses import row_loss_grad
from .optim import record_and_update
from .rowpass import minibatch


@njit(**JIT_OPTIONS)
def _relu(a1):
    m, h = a1.shape
    for i in range(m):
        for j in range(h):
            if a1[i, j] < 0.0:
                a1[i, j] = 0.0


@njit(**JIT_OPTIONS)
def _loss_rows(z2, y, db2, loss_kind):
    """``dz2`` in place of ``z2`` and ``db2`` (its column sums); returns ``m * L`` (float64)."""
    m, k = z2.shape
    scale = 1.0 / m
    for c in range(k):
        db2[c] = 0.0
    loss = 0.0
    for i in range(m):
        loss += row_loss_grad(z2[i], y[i], z2[i], scale, loss_kind)
        for c in range(k):
            db2[c] += z2[i, c]
    return loss


@njit(**JIT_OPTIONS)
def _mask_rows(a1, dz1, db1):
    """``dz1 *= (a1 > 0)`` (``a1`` after the ReLU: positive exactly where ``z1 > 0``) and
    ``db1`` = its column sums."""
    m, h = a1.shape
    for j in range(h):
        db1[j] = 0.0
    for i in range(m):
        for j in range(h):
            if a1[i, j] <= 0.0:
                dz1[i, j] = 0.0
            db1[j] += dz1[i, j]


@njit(**JIT_OPTIONS)
def predict(backend, x, w1, b1, w2, b2, a1, z2):
    """``z2 = relu(x @ w1 + b1) @ w2 + b2``.  Scratch ``a1 (m, h)``; output ``z2 (m, k)``."""
    affine(backend, x, w1, b1, a1)
    _relu(a1)
    affine(backend, a1, w2, b2, z2)


@njit(**JIT_OPTIONS)
def step(backend, x, y, w1, b1, w2, b2, lr, update, loss_kind, dw1, db1, dw2, db2, a1, dz1, z2):
    """Loss, gradients and (with ``update``) the SGD step, in one call.  Returns ``L``.

    Arguments as ``fused.step``, but the scratch is ``a1, dz1 (m, h)`` and ``z2 (m, k)``.
    ``update`` false: gradients into ``dw1 .. db2``.  ``update`` true: params updated in place;
    ``dw1``, ``dw2`` unused, ``db1``, ``db2`` scratch.  A NaN or infinite loss skips the update.
    """
    m = x.shape[0]
    affine(backend, x, w1, b1, a1)
    _relu(a1)
    affine(backend, a1, w2, b2, z2)
    loss = _loss_rows(z2, y, db2, loss_kind) / m
    gemm(backend, NO_TRANS, TRANS, 1.0, z2, w2, 0.0, dz1)  # before w2 changes
    _mask_rows(a1, dz1, db1)
    if not update:
        gemm(backend, TRANS, NO_TRANS, 1.0, x, dz1, 0.0, dw1)
        gemm(backend, TRANS, NO_TRANS, 1.0, a1, z2, 0.0, dw2)
    elif np.isfinite(loss):
        gemm(backend, TRANS, NO_TRANS, np.float64(-lr), x, dz1, 1.0, w1)
        gemm(backend, TRANS, NO_TRANS, np.float64(-lr), a1, z2, 1.0, w2)
        for j in range(b1.shape[0]):
            b1[j] -= lr * db1[j]
        for c in range(b2.shape[0]):
            b2[c] -= lr * db2[c]
    return loss


# The two training loops are fused.train_loop and fused.train_loop_optim with this module's step
# (Numba's cache cannot keep a function passed as an argument, so each module has its own loop).

@njit(**JIT_OPTIONS)
def train_loop(backend, x, y, w1, b1, w2, b2, lr, loss_kind, batch, start, losses, db1, db2, a1,
               dz1, z2, order, xb, yb):
    """Up to ``len(losses)`` SGD steps in one compiled call; batches, the return value and the
    stop on a non-finite loss as ``fused.train_loop``.  Scratch ``a1``, ``dz1``, ``z2``, ``xb``,
    ``yb`` have ``batch`` rows."""
    for t in range(losses.shape[0]):  # np.bool_: see fused.train_loop
        xv, yv = minibatch(x, y, order, start + t, batch, xb, yb)
        r = xv.shape[0]
        losses[t] = step(backend, xv, yv, w1, b1, w2, b2, lr, np.bool_(True), loss_kind, w1, db1,
                         w2, db2, a1[:r], dz1[:r], z2[:r])
        if not np.isfinite(losses[t]):
            return t + 1
    return losses.shape[0]


@njit(**JIT_OPTIONS)
def train_loop_optim(backend, x, y, w1, b1, w2, b2, loss_kind, batch, start, losses, dw1, db1,
                     dw2, db2, a1, dz1, z2, kind, s1, s2, hyper, nesterov, t0, order, xb, yb):
    """``fused.train_loop_optim`` with this module's step: gradients, then
    ``optim.update_all``."""
    zero = hyper[6]  # run-time lr and update flag: see fused.train_loop
    for t in range(losses.shape[0]):
        xv, yv = minibatch(x, y, order, start + t, batch, xb, yb)
        r = xv.shape[0]
        loss = step(backend, xv, yv, w1, b1, w2, b2, zero, np.bool_(False), loss_kind, dw1, db1,
                    dw2, db2, a1[:r], dz1[:r], z2[:r])
        if not record_and_update(losses, t, loss, kind, w1, b1, w2, b2, dw1, db1, dw2, db2, s1,
                                 s2, hyper, nesterov, t0 + t + 1):
            return t + 1
    return losses.shape[0]
