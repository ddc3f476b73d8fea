"""Rung 5, `fused-wide`: `fused` with the output layer's three matmuls through BLAS as well.

`fused`'s row pass computes ``a1 @ w2``, ``dz2 @ w2.T`` and ``a1.T @ dz2`` (``6*m*h*k`` flops) a
few rows at a time, on one core, fused with everything elementwise.  With a narrow output layer
(k ~ 10) that is cheap next to the two ``n``-sized matmuls.  With a wide one (k = 100 at
256x100x50x100) those three are half the flops, and one core running them in registers loses to
numpy, whose BLAS runs them on every core.  So here all five matmuls are BLAS calls, and the
elementwise work rides in the gaps:

1. ``a1 <- b1``, ``a1 = x @ w1 + a1`` (BLAS, ``beta = 1``), then the activation in place: one
   pass.
2. ``z2 <- b2``, ``z2 = a1 @ w2 + z2`` (BLAS, ``beta = 1``).
3. Per row: the loss term and ``dz2`` in place of ``z2`` (``losses.row_loss_grad``), ``db2``.
4. ``dz1 = dz2 @ w2.T`` (BLAS), then the activation's derivative and ``db1`` in one pass.
5. Step: ``w1 = -lr * x.T @ dz1 + w1`` and ``w2 = -lr * a1.T @ dz2 + w2`` (BLAS ``alpha``/
   ``beta``: ``dw1``, ``dw2`` never stored), then the bias updates.  Gradients only: the same two
   products into ``dw1``, ``dw2``.

Four passes over (m, h) against `fused`'s one, but each of them is a plain streaming loop.  Like
`fused` the kernel is serial Numba code and the parallelism is BLAS's.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .common.activations import RELU, activate_all, apply_derivative
from .common.gemm import NO_TRANS, TRANS, affine, gemm
from .common.losses import batch_scale, row_loss_grad, row_scale
from .common.loops import optim_loop, sgd_loop
from .jit import JIT_OPTIONS
from .variant import scratch, sizes, with_openblas_twin


class WideWork(NamedTuple):
    """The BLAS library (``gemm.BACKEND``) and the step's scratch: ``a1, dz1 (m, h)`` and
    ``z2 (m, k)`` (later ``dz2``), at least ``m`` rows; ``act`` the hidden activation's
    marker."""

    backend: int
    a1: np.ndarray
    dz1: np.ndarray
    z2: np.ndarray
    act: object


def work(params, m, backend, full=True, act=RELU) -> WideWork:
    """Scratch for a step on ``m`` rows (``full`` false: for ``predict``, which needs ``a1``)."""
    _, _, h, k, dt = sizes(params, m)
    if not full:
        return WideWork(backend, scratch("a1", (m, h), dt), np.empty((0, h), dt),
                        np.empty((0, k), dt), act)
    return WideWork(backend, scratch("a1", (m, h), dt), scratch("dz1", (m, h), dt),
                    scratch("z2", (m, k), dt), act)


@njit(**JIT_OPTIONS)
def _loss_rows(z2, y, db2, loss_kind):
    """``dz2`` in place of ``z2`` and ``db2`` (its column sums); returns ``L`` (float64)."""
    m, k = z2.shape
    inv = batch_scale(y, k)
    for c in range(k):
        db2[c] = 0.0
    loss = 0.0
    for i in range(m):
        loss += row_loss_grad(z2[i], y[i], z2[i], row_scale(y, i, k, inv), loss_kind)
        for c in range(k):
            db2[c] += z2[i, c]
    return loss


@njit(**JIT_OPTIONS)
def _derivative_rows(a1, dz1, db1, act):
    """``dz1 *= act'(a1)`` (ReLU: ``a1 > 0``, exactly where ``z1 > 0``) and ``db1`` = its column
    sums."""
    m, h = a1.shape
    apply_derivative(act, a1, dz1)
    for j in range(h):
        db1[j] = 0.0
    for i in range(m):
        for j in range(h):
            db1[j] += dz1[i, j]


@njit(**JIT_OPTIONS)
def predict(x, p, w, z2):
    """``z2 = act(x @ w1 + b1) @ w2 + b2``.  ``w`` a ``WideWork``; output ``z2 (m, k)``."""
    a1 = w.a1[:x.shape[0]]
    affine(w.backend, x, p.w1, p.b1, a1)
    activate_all(w.act, a1)
    affine(w.backend, a1, p.w2, p.b2, z2)


@njit(**JIT_OPTIONS)
def step(x, y, p, g, w, lr, update, loss_kind):
    """Loss, gradients and (with ``update``) the SGD step, in one call.  Returns ``L``.

    Arguments as ``fused.step``, with ``w`` a ``WideWork``.  ``update`` false: gradients into
    ``g``.  ``update`` true: params updated in place; ``g.w1``, ``g.w2`` unused, ``g.b1``,
    ``g.b2`` scratch.  A NaN or infinite loss skips the update.
    """
    m = x.shape[0]
    a1, dz1, z2 = w.a1[:m], w.dz1[:m], w.z2[:m]
    affine(w.backend, x, p.w1, p.b1, a1)
    activate_all(w.act, a1)
    affine(w.backend, a1, p.w2, p.b2, z2)
    loss = _loss_rows(z2, y, g.b2, loss_kind)
    gemm(w.backend, NO_TRANS, TRANS, 1.0, z2, p.w2, 0.0, dz1)  # before w2 changes
    _derivative_rows(a1, dz1, g.b1, w.act)
    if not update:
        gemm(w.backend, TRANS, NO_TRANS, 1.0, x, dz1, 0.0, g.w1)
        gemm(w.backend, TRANS, NO_TRANS, 1.0, a1, z2, 0.0, g.w2)
    elif np.isfinite(loss):
        gemm(w.backend, TRANS, NO_TRANS, np.float64(-lr), x, dz1, 1.0, p.w1)
        gemm(w.backend, TRANS, NO_TRANS, np.float64(-lr), a1, z2, 1.0, p.w2)
        for j in range(p.b1.shape[0]):
            p.b1[j] -= lr * g.b1[j]
        for c in range(p.b2.shape[0]):
            p.b2[c] -= lr * g.b2[c]
    return loss


@njit(**JIT_OPTIONS)
def train_loop(x, y, p, g, w, lr, loss_kind, b, losses):
    """Up to ``len(losses)`` SGD steps in one compiled call (``common/loops.py``)."""
    return sgd_loop(step, x, y, p, g, w, lr, loss_kind, b, losses)


@njit(**JIT_OPTIONS)
def train_loop_optim(x, y, p, g, w, o, loss_kind, b, losses):
    """Up to ``len(losses)`` steps of the optimiser ``o`` in one compiled call."""
    return optim_loop(step, x, y, p, g, w, o, loss_kind, b, losses)


# How this module becomes a variant (tests build it with each BLAS backend from here).
SPEC = dict(
    name="fused-wide", step=step, predict=predict, work=work, train_loop=train_loop,
    train_loop_optim=train_loop_optim, pool="blas", blas_update=("w1", "w2"), candidate=True,
    description="fused with the output layer's three matmuls through BLAS too: wins where the "
                "row pass's one-core matmuls lose (wide output layers, small h) and compiles "
                "faster")
VARIANTS = with_openblas_twin(SPEC)
