"""The training loops, written once for every compiled variant.

A compiled variant is a ``step(x, y, p, g, w, lr, update, loss_kind) -> L``: the loss, the
gradients into ``g`` and, with ``update``, the SGD step in place on ``p`` (``p``, ``g``:
``Params``; ``w``: the variant's own work arrays, a NamedTuple).  Given one, the whole-loop mode
of ``train`` is the same for all of them:

``sgd_loop``    up to ``len(losses)`` plain SGD steps, the update fused into each step;
``optim_loop``  the same with any optimiser: the step's gradients (``update`` false), then the
                fused update pass of ``updates.update_all``.

Both run over minibatch blocks (``minibatch.Batches``) and stop after a step whose loss is not
finite (that step makes no update); both return the number of steps taken.  ``losses[t]`` is the
loss before step ``t`` (plus the L2 term in ``optim_loop``).

Why they are ``inline="always"`` and take the step as an argument: Numba's on-disk cache cannot
keep a function that takes another function as a run-time argument, or one made by a closure
factory (a new cache entry every run).  Inlined, the skeleton becomes part of each variant's thin
``cache=True`` wrapper (``fused.train_loop`` is ``sgd_loop(step, ...)``), where ``step`` is a
global the compiler resolves statically: one skeleton in the source, a cached loop per variant.

The step's ``update`` flag goes in as ``np.bool_``, not a literal: Numba specialises a callee on
literal booleans, so ``True`` here would compile a second copy of the step beside the one
``sgd_step`` runs from Python (+2.4 s on a cold start, measured).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..jit import JIT_OPTIONS
from .minibatch import minibatch
from .updates import record_and_update


@njit(**JIT_OPTIONS, inline="always")
def sgd_loop(step, x, y, p, g, w, lr, loss_kind, b, losses):
    """Plain SGD steps over the blocks of ``b``; ``g`` is scratch for the gradients the step
    applies at once (its ``w1`` is never written: BLAS or the tile epilogue carry that update).
    """
    for t in range(losses.shape[0]):
        xv, yv = minibatch(x, y, b, t)
        losses[t] = step(xv, yv, p, g, w, lr, np.bool_(True), loss_kind)
        if not np.isfinite(losses[t]):
            return t + 1
    return losses.shape[0]


@njit(**JIT_OPTIONS, inline="always")
def optim_loop(step, x, y, p, g, w, o, loss_kind, b, losses):
    """Steps of the optimiser ``o`` (an ``updates.OptimState``) over the blocks of ``b``: per
    step the gradients into ``g``, then one fused update pass over each parameter."""
    return optim_loop_with(step, record_and_update, x, y, p, g, w, o, loss_kind, b, losses)


@njit(**JIT_OPTIONS, inline="always")
def optim_loop_with(step, finish, x, y, p, g, w, o, loss_kind, b, losses):
    """``optim_loop`` with ``finish`` in place of ``updates.record_and_update`` (the same
    contract: a rung's own way of making the update, ``kernels/bf16.py``'s)."""
    zero = o.hyper.zero  # lr for a step without update, in the params' dtype (the docstring)
    for t in range(losses.shape[0]):
        xv, yv = minibatch(x, y, b, t)
        loss = step(xv, yv, p, g, w, zero, np.bool_(False), loss_kind)
        if not finish(losses, t, loss, p, g, o, yv):
            return t + 1
    return losses.shape[0]
