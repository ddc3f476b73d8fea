"""Rung 7, `dual`: training in the span of the data, for data with fewer rows than features.

With an update linear in the gradient (SGD, momentum, Nesterov, L2), the first layer's update is
``w1 -= lr * x.T @ dz1``: every step adds a combination of training rows.  So ``w1`` never leaves

    w1 = s * w1_0 + X.T @ A            X (M, n): the M training rows, A (M, h), s a scalar

and the forward pass needs ``w1`` only through ``X @ w1``::

    z1 = x_b @ w1 + b1 = s * Z0[b] + G[b] @ A + b1      Z0 = X @ w1_0 (M, h), G = X @ X.T (M, M)

``G`` and ``Z0`` are computed once (``prepare``).  (The trainer's side of the form -- its steps,
validation loss, ``w1`` formed on demand, checkpoints -- is ``fastnn.training.backends.DualSteps``.)  A step then costs ``B * M * h`` multiply-adds
for ``z1`` (``G[b] @ A``, one ``gemm``) where the primal step costs ``2 * B * n * h`` (``x @ w1``
and ``x.T @ dz1``), and its update is ``A[b] -= lr * dz1``: a scatter of ``B * h`` numbers where
the primal one rewrites all ``n * h`` of ``w1``.  It wins by about ``2n / M`` when ``M < n``: the
seed's experiment (64 rows, 1000 features) is one such problem, as are genomics, text features,
any ``p >> n`` regression.  ``w1`` itself is formed (``materialize``, ``n * M * h``) only when
asked for: at the end, for checkpoints, epoch callbacks, the best parameters of early stopping.

The rest of the step is `fused`'s: the row pass (``common/rowpass.py``) between ``z1`` and the
update, and ``w2``, ``b1``, ``b2`` updated as usual (``common/updates.py``).  In ``A``-space:

    gradient      g_A = (rows b: dz1) + alpha * A          g_s = alpha * s
    momentum      V = mu * V + g_A                         v0 = mu * v0 + g_s
    update        A -= lr * (g_A + mu * V) (Nesterov), else A -= lr * V;  s likewise

and the L2 term ``|w1|^2 = s^2 |w1_0|^2 + 2 s <Z0, A> + <A, G A>``.  Adam is element-wise in
``w1``, not linear in the gradient, and has no dual form: it stays primal (the trainer says so
when ``kernel="dual"`` is asked for with it).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .common.activations import RELU
from .common.gemm import NO_TRANS, gemm
from .common.rowpass import ROWS, row_pass, transpose
from .common.updates import SKLEARN, batch_decay, update
from .jit import JIT_OPTIONS
from .variant import TrainingForm, scratch


class DualState(NamedTuple):
    """``w1 = coef[0] * w1_0 + X.T @ A`` and what the steps need of the data.

    ``G (M, M)``: ``X @ X.T``; ``Z0 (M, h)``: ``X @ w1_0``; ``A (M, h)``; ``V (M, h)``: the
    momentum of ``A`` (``(0, h)`` without momentum); ``Y (M, k)``: the targets; ``coef``
    (float64): ``[s, v0, |w1_0|^2]``, the coefficient of ``w1_0``, its momentum, and its squared
    norm (for the L2 term)."""

    G: np.ndarray
    Z0: np.ndarray
    A: np.ndarray
    V: np.ndarray
    Y: np.ndarray
    coef: np.ndarray


class DualWork(NamedTuple):
    """The BLAS library and the step's scratch: ``a1, dz1 (B, h)``, ``w2t, dw2t (k, h)``,
    ``d (rowpass.ROWS, k)``, ``gb (B, M)`` (the batch's rows of ``G``), ``yb (B, k)`` (``k + 1``
    columns with weighted rows), ``ga (M, h)`` (``G @ A``, for the L2 term) and ``act``, the
    hidden activation's marker (the dual form changes only how ``z1`` is computed and how ``w1``
    moves, so any activation has it)."""

    backend: int
    a1: np.ndarray
    dz1: np.ndarray
    w2t: np.ndarray
    dw2t: np.ndarray
    d: np.ndarray
    gb: np.ndarray
    yb: np.ndarray
    ga: np.ndarray
    act: object


def prepare(x, y, w1_0, momentum: bool) -> DualState:
    """The dual state of a run starting at ``w1_0`` on the training rows ``x (M, n)`` with
    targets ``y (M, k)``: ``G`` and ``Z0`` by BLAS (numpy's ``matmul``), ``A = 0``, ``s = 1``."""
    M, h = x.shape[0], w1_0.shape[1]
    dt = w1_0.dtype
    G = np.matmul(x, x.T)
    Z0 = np.matmul(x, w1_0)
    sq = float(np.sum(np.square(w1_0, dtype=np.float64)))
    return DualState(G, Z0, np.zeros((M, h), dt), np.zeros((M if momentum else 0, h), dt),
                     np.ascontiguousarray(y, dtype=dt), np.array([1.0, 0.0, sq]))


def materialize(x, w1_0, st: DualState, out) -> None:
    """``out = s * w1_0 + x.T @ A`` (``n * M * h`` multiply-adds), in place."""
    np.matmul(x.T, st.A, out=out)
    out += out.dtype.type(st.coef[0]) * w1_0


def work(params, m, M, backend, penalty: bool, targets=None, act=RELU) -> DualWork:
    """Scratch for steps of ``m`` rows over ``M`` training rows (``targets``: the columns of
    the state's ``Y``, ``k`` or ``k + 1``)."""
    h, k = params.w2.shape
    dt = params.dtype
    return DualWork(backend, scratch("a1", (m, h), dt), scratch("dz1", (m, h), dt),
                    scratch("w2t", (k, h), dt), scratch("dw2t", (k, h), dt),
                    scratch("d", (ROWS, k), dt), scratch("gb", (m, M), dt),
                    scratch("yb", (m, targets or k), dt),
                    scratch("ga", (M, h), dt) if penalty else np.empty((0, h), dt), act)


@njit(**JIT_OPTIONS)
def _gather(st, p, w, order, s0, e0):
    """The batch of positions ``s0 .. e0-1`` (rows ``order[...]``, or themselves when ``order``
    is empty): its rows of ``G`` into ``gb``, of the targets into ``yb``, and
    ``a1 = b1 + s * Z0[rows]``, ready for ``a1 += gb @ A``."""
    M = st.G.shape[0]
    h = st.A.shape[1]
    k = st.Y.shape[1]
    s = st.coef[0]
    for r in range(e0 - s0):
        i = order[s0 + r] if order.shape[0] else s0 + r
        for j in range(M):
            w.gb[r, j] = st.G[i, j]
        for c in range(k):
            w.yb[r, c] = st.Y[i, c]
        for j in range(h):
            w.a1[r, j] = p.b1[j] + s * st.Z0[i, j]


@njit(**JIT_OPTIONS)
def _w1_square(st, w):
    """``|w1|^2 = s^2 |w1_0|^2 + 2 s <Z0, A> + <A, G A>`` in float64 (``w.ga`` = ``G @ A``)."""
    gemm(w.backend, NO_TRANS, NO_TRANS, 1.0, st.G, st.A, 0.0, w.ga)
    s = st.coef[0]
    cross = 0.0
    quad = 0.0
    M, h = st.A.shape
    for i in range(M):
        for j in range(h):
            a = np.float64(st.A[i, j])
            cross += np.float64(st.Z0[i, j]) * a
            quad += np.float64(w.ga[i, j]) * a
    return s * s * st.coef[2] + 2.0 * s * cross + quad


@njit(**JIT_OPTIONS)
def _update_a(st, dz1, order, s0, e0, lr, alpha, mu, nesterov, sk):
    """The first layer's step in ``A``-space (module docstring): ``g_A`` is ``alpha * A`` plus
    ``dz1`` on the batch's rows; ``A`` and ``s`` move together.  ``sk``: scikit-learn's form of
    momentum (``updates``: the velocity holds steps, ``V = mu * V - lr * g_A``)."""
    M, h = st.A.shape
    A, V, coef = st.A, st.V, st.coef
    s = coef[0]
    if mu == 0.0:
        if alpha != 0.0:
            keep = 1.0 - lr * alpha
            for i in range(M):
                for j in range(h):
                    A[i, j] *= keep
            coef[0] = s * keep
        for r in range(e0 - s0):
            i = order[s0 + r] if order.shape[0] else s0 + r
            for j in range(h):
                A[i, j] -= lr * dz1[r, j]
        return
    g0 = alpha * s
    if sk:
        v0 = mu * coef[1] - lr * g0
        coef[1] = v0
        coef[0] = s + (mu * v0 - lr * g0) if nesterov else s + v0
        for i in range(M):  # the alpha * A part of g_A, on every row
            for j in range(h):
                V[i, j] = mu * V[i, j] - lr * (alpha * A[i, j])
        for r in range(e0 - s0):  # the batch's part
            i = order[s0 + r] if order.shape[0] else s0 + r
            for j in range(h):
                V[i, j] -= lr * dz1[r, j]
        if nesterov:  # A += mu * V - lr * g_A, in the same two parts
            for i in range(M):
                for j in range(h):
                    A[i, j] += mu * V[i, j] - lr * (alpha * A[i, j])
            for r in range(e0 - s0):
                i = order[s0 + r] if order.shape[0] else s0 + r
                for j in range(h):
                    A[i, j] -= lr * dz1[r, j]
        else:
            for i in range(M):
                for j in range(h):
                    A[i, j] += V[i, j]
        return
    v0 = mu * coef[1] + g0
    coef[1] = v0
    coef[0] = s - lr * (g0 + mu * v0) if nesterov else s - lr * v0
    for i in range(M):  # the alpha * A part of g_A, on every row
        for j in range(h):
            V[i, j] = mu * V[i, j] + alpha * A[i, j]
    for r in range(e0 - s0):  # the batch's part
        i = order[s0 + r] if order.shape[0] else s0 + r
        for j in range(h):
            V[i, j] += dz1[r, j]
    if nesterov:  # A -= lr * (g_A + mu * V), g_A = alpha * A + the batch's rows, in two parts
        for i in range(M):
            for j in range(h):
                A[i, j] -= lr * (alpha * A[i, j] + mu * V[i, j])
        for r in range(e0 - s0):
            i = order[s0 + r] if order.shape[0] else s0 + r
            for j in range(h):
                A[i, j] -= lr * dz1[r, j]
    else:
        for i in range(M):
            for j in range(h):
                A[i, j] -= lr * V[i, j]


@njit(**JIT_OPTIONS)
def train_loop(st, p, g, w, o, loss_kind, order, size, start, losses):
    """Up to ``len(losses)`` steps of SGD (``o``: an ``updates.OptimState`` of kind SGD, with its
    momentum, Nesterov and L2) in the dual form, over blocks of ``size`` positions of the
    training rows from block ``start`` (``order``: the epoch's order, empty for in place).
    ``losses[t]``: the loss plus the L2 term; a non-finite loss ends the loop without an update.
    ``g``: scratch for the gradients of ``b1``, ``w2``, ``b2`` (its ``w1`` unused)."""
    M = st.G.shape[0]
    hp = o.hyper
    lr, mu = hp.lr, hp.momentum
    sk = o.form == SKLEARN
    n_blocks = (M + size - 1) // size
    h, k = p.w2.shape
    for t in range(losses.shape[0]):
        s0 = ((start + t) % n_blocks) * size
        e0 = min(s0 + size, M)
        B = e0 - s0
        _gather(st, p, w, order, s0, e0)
        a1, dz1 = w.a1[:B], w.dz1[:B]
        gemm(w.backend, NO_TRANS, NO_TRANS, 1.0, w.gb[:B], st.A, 1.0, a1)  # z1
        transpose(p.w2, w.w2t)
        loss = row_pass(w.yb[:B], p.b2, a1, dz1, w.w2t, w.dw2t, g.b1, g.b2, w.d, loss_kind,
                        w.act)
        if not np.isfinite(loss):
            losses[t] = loss
            return t + 1
        alpha = batch_decay(o, w.yb[:B], k)
        penalty = 0.0
        if alpha != 0.0:
            penalty = 0.5 * np.float64(alpha) * _w1_square(st, w)
        transpose(w.dw2t, g.w2)
        _update_a(st, dz1, order, s0, e0, lr, alpha, mu, o.nesterov, sk)
        # b1, w2, b2 as updates.update_all does, on their parts of the optimiser's state
        offset = p.w1.size
        for which in range(3):
            if which == 0:
                q, dq, decay = p.b1, g.b1, hp.zero
            elif which == 1:
                q, dq, decay = p.w2.reshape(h * k), g.w2.reshape(h * k), alpha
            else:
                q, dq, decay = p.b2, g.b2, hp.zero
            end = offset + q.shape[0]
            s1 = o.s1[offset:end] if o.s1.shape[0] else o.s1
            part = update(o.kind, o.form, q, dq, s1, o.s2, lr, decay, mu, o.nesterov,
                          hp.beta1, hp.beta2, hp.eps, o.t + t + 1)
            if which == 1:
                penalty += 0.5 * np.float64(alpha) * part
            offset = end
        losses[t] = loss + np.float64(hp.l2_weight) * penalty
    return losses.shape[0]


def flops(m_train, n, h, k, batch, steps, alpha, materializations) -> tuple[int, int]:
    """``(primal, dual)``: the multiply-adds x 2 of a run in each form (the two big matmuls of a
    primal step against the dual form's set-up, steps, L2 term and the ``w1`` it forms)."""
    primal = steps * 4 * batch * n * h
    dual = (2 * m_train * m_train * n + 2 * m_train * n * h + steps * 2 * batch * m_train * h
            + (steps * 2 * m_train * m_train * h if alpha else 0)
            + materializations * 2 * n * m_train * h)
    return primal, dual


# The rung's declaration (kernels/__init__.py reads it): a training form, whose one-batch calls
# run fused-wide (the primary route: the same BLAS, the same row pass).
FORM = TrainingForm(
    "dual", "training in the span of the data, for fewer training rows than features: "
            "w1 = s * w1_0 + X.T @ A, each step G[b] @ A and a scatter into A",
    step_variant="fused-wide", dispatchers=(train_loop,))
VARIANTS = []
FORMS = [FORM]
