"""Rung 2, `naive`: the step in plain Numba ``prange`` loops, no BLAS, each loop fusing what numpy
does in separate passes.

One step, five parallel kernels (``step`` calls them in order)::

    linear_act_forward    a1 = act(x @ w1 + b1)                   bias and activation in the matmul
    output_loss_grad      z2 = a1 @ w2 + b2, L, dz2 = dL/dz2      one pass over the rows
    act_backward          dz1 = (dz2 @ w2.T) * act'(a1), db1      derivative and bias sum in one loop
    weight_grad           dw2 = a1.T @ dz2, db2                   (update: w2 -= lr * dw2 ...)
    weight_grad           dw1 = x.T @ dz1                         (update: w1 -= lr * dw1)

with the SGD update fused into the weight-gradient kernels: a row of ``dw`` is complete in a
private accumulator and then applied, so a step never stores ``dw1``.

All arrays are C-contiguous and of one float dtype (``fastnn.validation`` guarantees it).  Every
``prange`` loop gives each iteration its own slice of the output (a row of ``a1``, a column of
``dz1``, a block of rows of ``dw``), so there is no shared ``+=`` and every sum is taken in one
fixed order: results are bitwise the same for any thread count.

It loses to numpy (about 0.5x): fusion saves passes over small arrays, but the matmuls are where
the time goes, and an i-k-j loop keeps its output row in memory, so every multiply-add pays a load
and a store.  ``tiled`` (rung 3) keeps the accumulators in registers instead.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .common.activations import RELU, activate, active, for_prange, times_derivative
from .common.loops import optim_loop, sgd_loop
from .common.losses import batch_scale, row_loss_grad, row_scale
from .jit import JIT_OPTIONS, PARALLEL_OPTIONS
from .variant import compiled_variant, scratch, sizes

# Rows of dw handled by one prange iteration; each block allocates its accumulator row once.
WEIGHT_GRAD_BLOCK = 16
# weight_grad's with_bias flag as run-time booleans: literal True/False would compile it twice.
WITH_BIAS = np.bool_(True)
NO_BIAS = np.bool_(False)


# --- forward ------------------------------------------------------------------------------------

@njit(**PARALLEL_OPTIONS)
def linear_act_forward(x, w1, b1, a1, act):
    """``a1 = act(x @ w1 + b1)``, bias and activation fused into the matmul (``act``: a marker
    of ``common/activations.py``).

    Shapes: ``x (m, n)``, ``w1 (n, h)``, ``b1 (h,)``, output ``a1 (m, h)``.

    Row ``i`` of ``a1`` is the accumulator: it starts as ``b1`` (the bias add costs nothing), takes
    ``x[i, p] * w1[p, :]`` for each ``p`` (an i-k-j loop: the inner loop runs along contiguous rows of
    ``w1`` and ``a1``, so it vectorises), and the activation is applied while the row is still
    in L1.  ``z1`` is never stored: the backward pass takes the derivative from ``a1`` (ReLU's
    mask ``a1 > 0`` equals ``z1 > 0`` exactly).
    """
    m, n = x.shape
    h = w1.shape[1]
    kind = for_prange(act)
    for i in prange(m):
        acc = a1[i]
        for j in range(h):
            acc[j] = b1[j]
        for p in range(n):
            xip = x[i, p]
            for j in range(h):
                acc[j] += xip * w1[p, j]
        for j in range(h):
            acc[j] = activate(kind, acc[j])  # NaN stays NaN, as np.maximum keeps it


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
    (``losses.py``).  Shapes: ``a1 (m, h)``, ``w2 (h, k)``, ``b2 (k,)``, ``y (m, k)`` (or
    ``(m, k + 1)``: weighted rows), output ``dz2 (m, k)``.

    ``z2`` is built in ``dz2``'s row and turned into the gradient in place, so neither ``z2`` nor
    the residual is ever stored.  Each row's loss term is summed in float64 into its own slot
    and the slots are added in row order afterwards: a fixed order, whatever the thread count.
    """
    m, k = dz2.shape
    inv = batch_scale(y, k)
    row_loss = np.empty(m, np.float64)
    for i in prange(m):
        row = dz2[i]
        _linear_row(a1[i], w2, b2, row)
        row_loss[i] = row_loss_grad(row, y[i], row, row_scale(y, i, k, inv), loss_kind)
    total = 0.0
    for i in range(m):
        total += row_loss[i]
    return total


# --- backward -------------------------------------------------------------------------------------

@njit(**PARALLEL_OPTIONS)
def act_backward(dz2, w2, a1, dz1, db1, act):
    """``dz1 = (dz2 @ w2.T) * act'(a1)`` and ``db1 = dz1.sum(axis=0)`` in one kernel.

    Shapes: ``dz2 (m, k)``, ``w2 (h, k)``, ``a1 (m, h)``; outputs ``dz1 (m, h)``, ``db1 (h,)``.

    Split over hidden units: iteration ``j`` owns column ``j`` of ``dz1`` and ``db1[j]``, so the bias
    gradient is summed in the same loop that makes ``dz1`` with no race.  For ReLU, ``[a1 > 0]``
    equals ``[z1 > 0]`` because ``a1 = relu(z1)``, and entries with the mask off are set to 0
    without computing their dot product (``da1`` is never stored).
    """
    m, k = dz2.shape
    h = w2.shape[0]
    zero = np.zeros(1, dz2.dtype)[0]  # sums run in the arrays' dtype, like the reference
    kind = for_prange(act)
    for j in prange(h):
        s_col = zero
        for i in range(m):
            g = zero
            if active(kind, a1[i, j]):
                for c in range(k):
                    g += dz2[i, c] * w2[j, c]
                g = times_derivative(kind, a1[i, j], g)
            dz1[i, j] = g
            s_col += dz1[i, j]
        db1[j] = s_col


@njit(**PARALLEL_OPTIONS)
def weight_grad(a, dz, out_w, out_b, lr, update, with_bias):
    """``dw = a.T @ dz`` and, with ``with_bias``, ``db = dz.sum(axis=0)``; stored in ``out_w`` /
    ``out_b``, or with ``update`` applied as the SGD step ``out -= lr * grad``.

    Shapes: ``a (m, n)``, ``dz (m, h)``, ``out_w (n, h)``, ``out_b (h,)``.  Used for
    ``dw1 = x.T @ dz1`` (``out_w`` is ``w1`` when updating; ``db1`` comes from ``act_backward``)
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


# --- the step -----------------------------------------------------------------------------------

class NaiveWork(NamedTuple):
    """The step's scratch: ``a1, dz1 (m, h)``, ``dz2 (m, k)``, at least ``m`` rows; ``act``
    the hidden activation's marker."""

    a1: np.ndarray
    dz1: np.ndarray
    dz2: np.ndarray
    act: object


def work(params, m, backend, full=True, act=RELU) -> NaiveWork:
    """Scratch for a step on ``m`` rows (``full`` false: for ``predict``, which needs ``a1``).
    ``backend`` is unused: no BLAS here."""
    _, _, h, k, dt = sizes(params, m)
    if not full:
        return NaiveWork(scratch("a1", (m, h), dt), np.empty((0, h), dt), np.empty((0, k), dt),
                         act)
    return NaiveWork(scratch("a1", (m, h), dt), scratch("dz1", (m, h), dt),
                     scratch("dz2", (m, k), dt), act)


@njit(**JIT_OPTIONS)
def predict(x, p, w, z2):
    """``z2 = act(x @ w1 + b1) @ w2 + b2``; ``w`` a ``NaiveWork``."""
    a1 = w.a1[:x.shape[0]]
    linear_act_forward(x, p.w1, p.b1, a1, w.act)
    linear_forward(a1, p.w2, p.b2, z2)


@njit(**JIT_OPTIONS)
def step(x, y, p, g, w, lr, update, loss_kind):
    """Loss, gradients and (with ``update``) the SGD step, the five kernels above in order.
    Arguments as ``fused.step``, with ``w`` a ``NaiveWork``.  With ``update`` the weight-gradient
    kernels write straight into ``p.w1``, ``p.w2`` and ``p.b2``; ``g.b1`` holds ``db1`` until
    ``b1`` is updated last.  A non-finite loss skips the update."""
    m = x.shape[0]
    a1, dz1, dz2 = w.a1[:m], w.dz1[:m], w.dz2[:m]
    linear_act_forward(x, p.w1, p.b1, a1, w.act)
    loss = output_loss_grad(a1, p.w2, p.b2, y, dz2, loss_kind)
    if update and not np.isfinite(loss):  # keep the params of the last finite step
        return loss
    # dz1 needs the old w2, so it comes before any update.
    act_backward(dz2, p.w2, a1, dz1, g.b1, w.act)
    if update:
        weight_grad(a1, dz2, p.w2, p.b2, lr, update, WITH_BIAS)
        weight_grad(x, dz1, p.w1, g.b1, lr, update, NO_BIAS)
        for j in range(p.b1.shape[0]):
            p.b1[j] -= lr * g.b1[j]
    else:
        weight_grad(a1, dz2, g.w2, g.b2, lr, update, WITH_BIAS)
        weight_grad(x, dz1, g.w1, g.b1, lr, update, NO_BIAS)
    return loss


@njit(**JIT_OPTIONS)
def train_loop(x, y, p, g, w, lr, loss_kind, b, losses):
    """Up to ``len(losses)`` SGD steps in one compiled call (``common/loops.py``)."""
    return sgd_loop(step, x, y, p, g, w, lr, loss_kind, b, losses)


@njit(**JIT_OPTIONS)
def train_loop_optim(x, y, p, g, w, o, loss_kind, b, losses):
    """Up to ``len(losses)`` steps of the optimiser ``o`` in one compiled call."""
    return optim_loop(step, x, y, p, g, w, o, loss_kind, b, losses)


SPEC = dict(
    name="naive", step=step, predict=predict, work=work, train_loop=train_loop,
    train_loop_optim=train_loop_optim, pool="numba", bitwise=True,
    description="Numba prange loops, no BLAS; bias+activation, loss+dz2, derivative+db1 and the "
                "SGD update fused into the loops")
VARIANTS = [compiled_variant(**SPEC)]
