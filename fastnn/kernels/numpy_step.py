"""Rung 1, `numpy`: the careful numpy step, and the baseline of every speed figure.

Not a compiled kernel: the same math as ``fastnn.reference`` written the way a careful numpy user
writes it (the method of ``shared/bench/numpy_step.py``): ``np.matmul(..., out=)`` into buffers
allocated once, in-place bias adds, ReLU, scaling and updates.  Fresh ~1 MB temporaries cost page
faults on every step here, which made a naive numpy step about twice as slow.

It is a variant so that ``auto`` can choose it: where no compiled variant beats numpy's BLAS
calls (a large output layer, where the fused row pass does real matmuls one row at a time),
``auto`` runs this, and so is never slower than numpy by construction, to the accuracy of its
measurement.

Operations per step (squared loss), each a pass numpy makes over memory::

    z1 = x @ w1; z1 += b1; a1 = max(z1, 0)            3 passes over (m, h)
    z2 = a1 @ w2; z2 += b2; d = z2 - y; L = d.d; d *= 2/m
    dw2 = a1.T @ d; db2 = d.sum(0)
    da1 = d @ w2.T; mask = a1 > 0; da1 *= mask         3 passes over (m, h)
    dw1 = x.T @ da1; db1 = da1.sum(0)                  1 more
    p -= lr * dp for each parameter                     2 passes over (n, h)

The fused variants do the (m, h) and (n, h) passes inside their matmuls' prologues/epilogues or
in one row pass; this is what they are measured against.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from .. import reference
from ..params import Params
from .common.activations import RELU, name_of
from .common.losses import NAME_OF, SQUARED
from .variant import Variant


class Workspace:
    """The buffers of one step, for up to ``m`` rows: reused across steps (views of the first rows
    serve a shorter last minibatch)."""

    def __init__(self, m, n, h, k, dtype):
        dt = np.dtype(dtype)
        self.key = (n, h, k, dt)
        self.m = m
        self.z1 = np.empty((m, h), dt)
        self.z2 = np.empty((m, k), dt)
        self.da1 = np.empty((m, h), dt)
        self.mask = np.empty((m, h), bool)
        self.dw1 = np.empty((n, h), dt)
        self.dw2 = np.empty((h, k), dt)

    def fits(self, m, n, h, k, dtype) -> bool:
        return m <= self.m and self.key == (n, h, k, np.dtype(dtype))


def forward(work: Workspace, params: Params, x, act=RELU):
    """``z2`` for ``x`` (m, n), a view of the workspace; ``work.z1[:m]`` holds ``a1`` after."""
    m = x.shape[0]
    z1 = np.matmul(x, params.w1, out=work.z1[:m])
    z1 += params.b1
    if act is RELU:
        a1 = np.maximum(z1, 0, out=z1)
    elif act is not None and name_of(act) == "tanh":
        a1 = np.tanh(z1, out=z1)
    elif act is not None and name_of(act) == "logistic":
        a1 = np.negative(z1, out=z1)
        np.exp(a1, out=a1)
        a1 += 1
        np.reciprocal(a1, out=a1)
    else:  # identity
        a1 = z1
    z2 = np.matmul(a1, params.w2, out=work.z2[:m])
    z2 += params.b2
    return z2


def grads(work: Workspace, params: Params, x, y, loss_kind=SQUARED, out=None, act=RELU):
    """``(L, dw1, db1, dw2, db2)``: the loss and exactly dL/dparam.  The gradients go into ``out``
    (a ``Params``) when given, else ``dw1``/``dw2`` are workspace buffers and ``db1``/``db2`` new.
    ``y (m, k + 1)``: weighted rows (``losses.py``), the weights in its last column."""
    m = x.shape[0]
    k = params.w2.shape[1]
    z2 = forward(work, params, x, act)
    a1 = work.z1[:m]
    if y.shape[1] > k:  # weighted rows: the reference's weighted loss
        loss, dz2 = reference.output_loss(z2, y[:, :k], NAME_OF[loss_kind], y[:, k])
        d = z2
        d[...] = dz2
    elif loss_kind == SQUARED:
        d = np.subtract(z2, y, out=z2)
        # summed in float64, as every compiled variant does: float32 squares of residuals below
        # ~1e-19 are subnormal and lose their bits (found by the property test)
        d64 = d if d.dtype == np.float64 else d.astype(np.float64)
        loss = float(np.vdot(d64, d64)) / m
        d *= d.dtype.type(2.0 / m)
    else:  # the reference's log-sum-exp; its (m, k) temporaries are small next to (m, h)
        loss, dz2 = reference.output_loss(z2, y, NAME_OF[loss_kind])
        d = z2
        d[...] = dz2
    dw2 = np.matmul(a1.T, d, out=work.dw2 if out is None else out.w2)
    db2 = np.sum(d, axis=0, out=None if out is None else out.b2)
    da1 = np.matmul(d, params.w2.T, out=work.da1[:m])
    if act is RELU:
        da1 *= np.greater(a1, 0, out=work.mask[:m])
    else:
        da1 *= reference.derivative(name_of(act), a1)
    dw1 = np.matmul(x.T, da1, out=work.dw1 if out is None else out.w1)
    db1 = np.sum(da1, axis=0, out=None if out is None else out.b1)
    return float(loss), dw1, db1, dw2, db2


def step(work: Workspace, params: Params, x, y, lr, loss_kind=SQUARED, act=RELU) -> float:
    """One SGD step in place on ``params``; returns the loss before it.  A loss that is not finite
    leaves the params unchanged (the step contract)."""
    loss, dw1, db1, dw2, db2 = grads(work, params, x, y, loss_kind, None, act)
    if not math.isfinite(loss):
        return loss
    lr = params.dtype.type(lr)
    for p, g in zip(params, (dw1, db1, dw2, db2)):
        g *= lr
        p -= g
    return loss


# --- the variant: one workspace per thread ----------------------------------------------------------

_local = threading.local()


def _work(params: Params, x) -> Workspace:
    m = x.shape[0]
    (n, h), k = params.w1.shape, params.w2.shape[1]
    work = getattr(_local, "work", None)
    if work is None or not work.fits(m, n, h, k, params.dtype):
        work = _local.work = Workspace(m, n, h, k, params.dtype)
    return work


# Overflow gives inf/nan, which the step contract reports through the loss (the compiled variants
# do the same silently); numpy's warnings would only repeat it.
_QUIET = dict(over="ignore", invalid="ignore")


def numpy_predict(params: Params, x, act=RELU):
    with np.errstate(**_QUIET):
        return forward(_work(params, x), params, x, act).copy()


def numpy_loss_and_grads(params: Params, x, y, loss_kind=SQUARED, grads_out=None, act=RELU):
    if grads_out is None:
        grads_out = Params(*(np.empty_like(p) for p in params))
    with np.errstate(**_QUIET):
        loss = grads(_work(params, x), params, x, y, loss_kind, grads_out, act)[0]
    return loss, grads_out


def numpy_sgd_step(params: Params, x, y, lr, loss_kind=SQUARED, act=RELU):
    with np.errstate(**_QUIET):
        return step(_work(params, x), params, x, y, lr, loss_kind, act)


VARIANTS = [Variant(
    "numpy", "the careful numpy step (kernels/numpy_step.py): numpy's BLAS for all four matmuls, "
    "preallocated buffers, in-place updates; the speed baseline, and what auto falls back to "
    "where no compiled variant beats it",
    numpy_predict, numpy_loss_and_grads, numpy_sgd_step, pool="numpy", candidate=True)]
