"""Rung 4, `fused`: one compiled call per step, BLAS for the two big matmuls, one row pass for
everything else.

Where the time goes at the seed's shape (m=64, n=1000, h=100, k=10): the two ``n``-sized matmuls,
``x @ w1`` and ``x.T @ dz1``, are 95% of the flops, and BLAS does them at close to the machine's
peak.  Everything else is ``O(m*h*k)`` or less but, written as numpy calls, costs a dozen passes
over memory and a dozen Python round trips.  So:

1. ``a1 <- b1`` (broadcast), then ``gemm``: ``a1 = x @ w1 + 1 * a1``.  The bias rides on BLAS's
   ``beta = 1`` (``gemm.affine``).
2. ``rowpass.row_pass``: the activation, output layer, loss, ``dz2``, ``dz1``, ``db1``, ``dw2``,
   ``db2`` in one pass over the rows.
3. ``gemm`` again: for a step, ``w1 = -lr * (x.T @ dz1) + 1 * w1``, so ``dw1`` is never stored
   (BLAS's ``alpha``/``beta`` carry the SGD update); for ``loss_and_grads``, ``dw1 = x.T @ dz1``.
4. The small updates of ``w2``, ``b1``, ``b2``.

The kernel is serial Numba code: the parallelism is BLAS's own threads.  Keeping Numba's thread
pool out of it avoids the two pools spinning against each other (both busy-wait).  The BLAS
library is a run-time argument (``FusedWork.backend``), so ``fused-openblas`` is this same machine
code with numpy's OpenBLAS.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .common.gemm import NO_TRANS, TRANS, affine, gemm
from .common.loops import optim_loop, sgd_loop
from .common.rowpass import ROWS, apply_small_updates, output_layer, row_pass, transpose
from .common.activations import RELU
from .jit import JIT_OPTIONS
from .variant import scratch, sizes, with_openblas_twin


class FusedWork(NamedTuple):
    """The BLAS library (``gemm.BACKEND``) and the step's scratch: ``a1, dz1 (m, h)``, ``w2t,
    dw2t (k, h)`` (``w2`` and ``dw2`` transposed, so the row pass runs along ``h``) and
    ``d (rowpass.ROWS, k)``.  At least ``m`` rows: a shorter minibatch uses the first rows.
    ``act``: the hidden activation's marker (``common/activations.py``)."""

    backend: int
    a1: np.ndarray
    dz1: np.ndarray
    w2t: np.ndarray
    dw2t: np.ndarray
    d: np.ndarray
    act: object


def work(params, m, backend, full=True, act=RELU) -> FusedWork:
    """Scratch for a step on ``m`` rows (``full`` false: for ``predict``, which needs ``a1`` and
    ``w2t`` only)."""
    _, _, h, k, dt = sizes(params, m)
    if not full:
        none = np.empty((0, h), dt)
        return FusedWork(backend, scratch("a1", (m, h), dt), none, scratch("w2t", (k, h), dt),
                         none, np.empty((0, k), dt), act)
    return FusedWork(backend, scratch("a1", (m, h), dt), scratch("dz1", (m, h), dt),
                     scratch("w2t", (k, h), dt), scratch("dw2t", (k, h), dt),
                     scratch("d", (ROWS, k), dt), act)


@njit(**JIT_OPTIONS)
def predict(x, p, w, z2):
    """``z2 = act(x @ w1 + b1) @ w2 + b2``.  Shapes: ``x (m, n)``, ``p`` the ``Params``,
    ``w`` a ``FusedWork``, output ``z2 (m, k)``."""
    a1 = w.a1[:x.shape[0]]
    affine(w.backend, x, p.w1, p.b1, a1)  # z1, before the activation
    transpose(p.w2, w.w2t)
    output_layer(a1, w.w2t, p.b2, z2, w.act)


@njit(**JIT_OPTIONS)
def step(x, y, p, g, w, lr, update, loss_kind):
    """Loss, gradients and (with ``update``) the SGD step, in one call.  Returns ``L``.

    Math: see ``fastnn.reference``; ``loss_kind`` is a ``losses`` code, ``w.act`` the hidden
    activation.  Shapes: ``x (m, n)``, ``y (m, k)`` (or ``(m, k + 1)``: weighted rows), params ``p`` (``w1 (n, h)``, ``b1 (h,)``, ``w2 (h, k)``,
    ``b2 (k,)``), ``w`` a ``FusedWork``.

    ``update`` false: the gradients are written to ``g`` and the params are not touched.
    ``update`` true: the params are updated in place, ``p -= lr * dp``; ``g.w1`` is not used
    and ``g.b1``, ``g.w2``, ``g.b2`` serve as scratch.

    The loss is known before any parameter changes, so when it is NaN or infinite the update is
    skipped: the params stay those of the last finite step (the trainer stops there).
    """
    m = x.shape[0]
    a1, dz1 = w.a1[:m], w.dz1[:m]
    affine(w.backend, x, p.w1, p.b1, a1)  # z1, before the activation
    transpose(p.w2, w.w2t)
    loss = row_pass(y, p.b2, a1, dz1, w.w2t, w.dw2t, g.b1, g.b2, w.d, loss_kind, w.act)
    if not update:
        gemm(w.backend, TRANS, NO_TRANS, 1.0, x, dz1, 0.0, g.w1)
        transpose(w.dw2t, g.w2)
    elif np.isfinite(loss):
        gemm(w.backend, TRANS, NO_TRANS, np.float64(-lr), x, dz1, 1.0, p.w1)
        apply_small_updates(p.w2, p.b1, p.b2, w.dw2t, g.b1, g.b2, lr)
    return loss


@njit(**JIT_OPTIONS)
def train_loop(x, y, p, g, w, lr, loss_kind, b, losses):
    """Up to ``len(losses)`` SGD steps in one compiled call (``common/loops.py``)."""
    return sgd_loop(step, x, y, p, g, w, lr, loss_kind, b, losses)


@njit(**JIT_OPTIONS)
def train_loop_optim(x, y, p, g, w, o, loss_kind, b, losses):
    """Up to ``len(losses)`` steps of the optimiser ``o`` in one compiled call
    (``common/loops.py``).  In here a step costs no Python dispatch (about 30-60 us for the six
    calls), which is most of a step on small data such as scikit-learn's digits."""
    return optim_loop(step, x, y, p, g, w, o, loss_kind, b, losses)


# How this module becomes a variant (tests build it with each BLAS backend from here).
SPEC = dict(
    name="fused", step=step, predict=predict, work=work, train_loop=train_loop,
    train_loop_optim=train_loop_optim, pool="blas", blas_update=("w1",), candidate=True,
    description="one serial compiled call per step: BLAS gemm for x@w1 (bias via beta=1) and "
                "x.T@dz1 (update via alpha=-lr, beta=1), everything else in one fused row pass")
VARIANTS = with_openblas_twin(SPEC)
