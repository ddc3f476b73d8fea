"""The `fused` variant: one compiled call per step, BLAS for the two big matmuls, one row pass for
everything else.

Where the time goes at the seed's shape (m=64, n=1000, h=100, k=10): the two ``n``-sized matmuls,
``x @ w1`` and ``x.T @ dz1``, are 95% of the flops, and BLAS does them at close to the machine's
peak.  Everything else is ``O(m*h*k)`` or less but, written as numpy calls, costs a dozen passes
over memory and a dozen Python round trips.  So:

1. ``a1 <- b1`` (broadcast), then ``gemm``: ``a1 = x @ w1 + 1 * a1``.  The bias rides on BLAS's
   ``beta = 1``.
2. ``rowpass.row_pass``: ReLU, output layer, loss, ``dz2``, ``dz1``, ``db1``, ``dw2``, ``db2`` in
   one pass over the rows.
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
from .blas import NO_TRANS, TRANS, affine, gemm
from .optim import record_and_update
from .rowpass import apply_small_updates, minibatch, output_layer, row_pass, transpose


@njit(**JIT_OPTIONS)
def predict(backend, x, w1, b1, w2, b2, a1, w2t, z2):
    """``z2 = relu(x @ w1 + b1) @ w2 + b2``.

    ``backend``: ``blas.BACKEND``.  Shapes: ``x (m, n)``, params as usual, scratch ``a1 (m, h)``,
    ``w2t (k, h)``, output ``z2 (m, k)``.
    """
    affine(backend, x, w1, b1, a1)  # z1, before the ReLU
    transpose(w2, w2t)
    output_layer(a1, w2t, b2, z2)


@njit(**JIT_OPTIONS)
def step(backend, x, y, w1, b1, w2, b2, lr, update, loss_kind, dw1, db1, dw2, db2, a1, dz1, w2t,
         dw2t, d):
    """Loss, gradients and (with ``update``) the SGD step, in one call.  Returns ``L``.

    Math: see ``fastnn.reference``; ``loss_kind`` is ``losses.SQUARED`` or ``losses.SOFTMAX``.
    ``backend``: ``blas.BACKEND``.  Shapes: ``x (m, n)``, ``y (m, k)``, params ``w1 (n, h)``,
    ``b1 (h,)``, ``w2 (h, k)``, ``b2 (k,)``.

    ``update`` false: the gradients are written to ``dw1 (n, h)``, ``db1 (h,)``, ``dw2 (h, k)``,
    ``db2 (k,)`` and the params are not touched.  ``update`` true: the params are updated in place,
    ``p -= lr * dp``; ``dw1`` is not used (pass any array of the dtype) and ``db1``, ``dw2``,
    ``db2`` serve as scratch.  Scratch: ``a1, dz1 (m, h)``, ``w2t, dw2t (k, h)``, ``d (rowpass.ROWS, k)``.

    The loss is known before any parameter changes, so when it is NaN or infinite the update is
    skipped: the params stay those of the last finite step (the trainer stops there).
    """
    m = x.shape[0]
    affine(backend, x, w1, b1, a1)  # z1, before the ReLU
    transpose(w2, w2t)
    loss = row_pass(y, b2, a1, dz1, w2t, dw2t, db1, db2, d, loss_kind) / m
    if not update:
        gemm(backend, TRANS, NO_TRANS, 1.0, x, dz1, 0.0, dw1)
        transpose(dw2t, dw2)
    elif np.isfinite(loss):
        gemm(backend, TRANS, NO_TRANS, np.float64(-lr), x, dz1, 1.0, w1)
        apply_small_updates(w2, b1, b2, dw2t, db1, db2, lr)
    return loss


@njit(**JIT_OPTIONS)
def train_loop(backend, x, y, w1, b1, w2, b2, lr, loss_kind, batch, start, losses, db1, dw2, db2,
               a1, dz1, w2t, dw2t, d, order, xb, yb):
    """Up to ``len(losses)`` SGD steps in one compiled call (the whole-loop mode): no Python
    between steps.  Returns the number of steps taken: fewer when a loss is not finite (that step
    makes no update and is the last).

    Minibatches are consecutive blocks of the epoch's rows: step ``t`` uses block
    ``b = (start + t) % n_blocks``, positions ``[b * batch, min((b + 1) * batch, m))``, so the
    last block may be partial; the positions are rows of ``x``/``y`` themselves when ``order``
    is empty, else rows ``order[position]`` gathered into ``xb``, ``yb`` (``rowpass.minibatch``).
    Full-batch training is ``batch = m``.  ``losses[t]`` is the loss before step ``t``.  Scratch
    ``a1``, ``dz1``, ``xb``, ``yb`` have ``batch`` rows; other arguments as ``step`` with
    ``update``.
    """
    # np.bool_(True), not True: a literal flag would make Numba compile a second ``step``, one
    # specialised on Literal[bool], beside the one ``sgd_step`` calls from Python (+2.4 s cold).
    for t in range(losses.shape[0]):
        xv, yv = minibatch(x, y, order, start + t, batch, xb, yb)
        r = xv.shape[0]
        losses[t] = step(backend, xv, yv, w1, b1, w2, b2, lr, np.bool_(True), loss_kind, w1, db1,
                         dw2, db2, a1[:r], dz1[:r], w2t, dw2t, d)
        if not np.isfinite(losses[t]):
            return t + 1
    return losses.shape[0]


@njit(**JIT_OPTIONS)
def train_loop_optim(backend, x, y, w1, b1, w2, b2, loss_kind, batch, start, losses, dw1, db1,
                     dw2, db2, a1, dz1, w2t, dw2t, d, kind, s1, s2, hyper, nesterov, t0, order,
                     xb, yb):
    """Up to ``len(losses)`` steps of any ``fastnn.optim`` optimiser in one compiled call: per
    step the gradients (``step`` without update, into ``dw1 .. db2``), then ``optim.update_all``
    (``kind``, flat state ``s1``/``s2``, ``hyper``, ``nesterov``; ``t0`` steps taken before).
    ``losses[t]`` is the loss plus the L2 term.  Batches and the return value as ``train_loop``.

    This is the loop the trainer runs in Python for variants without it; in here a step costs
    no Python dispatch (about 30-60 us for the six calls), which is most of a step on small
    data such as scikit-learn's digits.
    """
    zero = hyper[6]  # run-time lr and update flag: the step sgd_step compiles (see train_loop)
    for t in range(losses.shape[0]):
        xv, yv = minibatch(x, y, order, start + t, batch, xb, yb)
        r = xv.shape[0]
        loss = step(backend, xv, yv, w1, b1, w2, b2, zero, np.bool_(False), loss_kind, dw1, db1,
                    dw2, db2, a1[:r], dz1[:r], w2t, dw2t, d)
        if not record_and_update(losses, t, loss, kind, w1, b1, w2, b2, dw1, db1, dw2, db2, s1,
                                 s2, hyper, nesterov, t0 + t + 1):
            return t + 1
    return losses.shape[0]
