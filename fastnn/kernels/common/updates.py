"""The optimiser update, fused into one pass over each parameter array.

For every element, in one read of ``p``, ``g`` and the state (``fastnn.optim`` holds the plain
numpy reference of the same math)::

    g  = g + alpha * p                 L2 weight decay (weights only; alpha = 0 for biases)
    sgd:   v = mu * v + g              (only when mu != 0)
           p = p - lr * (g + mu * v)   nesterov,   p - lr * v  otherwise (p - lr * g when mu == 0)
    adam:  m = b1 * m + (1 - b1) * g
           v = b2 * v + (1 - b2) * g * g
           p = p - (lr / c1) * m / (sqrt(v) / sqrt(c2) + eps),   c1 = 1 - b1**t, c2 = 1 - b2**t

These are PyTorch's ``torch.optim.SGD`` / ``Adam`` formulas (with ``weight_decay = alpha``), so
its optimisers serve as an outside oracle.  ``SKLEARN`` is the same update in scikit-learn's form
(its MLP's ``_stochastic_optimizers``), which the estimators run; it differs in three places::

    g  = g + (alpha / B) * p           B: the batch's rows, or the sum of its rows' weights
    sgd:   v = mu * v - lr * g         the velocity holds steps, not gradients: the same numbers
           p = p + mu * v - lr * g     at a constant lr, not when a schedule changes lr
           (p + v without nesterov)
    adam:  p = p - (lr * sqrt(c2) / c1) * m / (sqrt(v) + eps)      eps outside the correction  As numpy this is 4-8 passes over memory with
temporaries; here it is one, and it also returns ``sum(p**2)`` (before the update) for the L2
term of the loss, so that costs no extra pass either.

``update`` takes 1-D views (``update_all`` flattens each C-contiguous param), so it is compiled
once per dtype.  Serial: the update is memory-bound and small next to the step's matmuls.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ..jit import JIT_OPTIONS
from .losses import batch_scale

SGD = 0
ADAM = 1
# the forms of the update (the docstring)
TORCH = 0
SKLEARN = 1


class Hyper(NamedTuple):
    """An optimiser's settings as the compiled code takes them: scalars of the params' dtype
    (so every caller, Python or compiled, passes the same types and gets the same bits).
    ``zero`` is 0 in that dtype: the step size of a step that only computes gradients, and the
    decay of the biases (they are not decayed).  ``l2_weight``: the L2 term's weight in the loss
    a loop records (1: the objective's own; the estimators report scikit-learn's multi-output
    squared loss, whose data term has another scale than its gradient's)."""

    lr: float
    alpha: float
    momentum: float
    beta1: float
    beta2: float
    eps: float
    zero: float
    l2_weight: float


class OptimState(NamedTuple):
    """An optimiser as the compiled code takes it (``fastnn.optim.Optimizer.kernel_state``).

    ``kind``: ``SGD`` or ``ADAM``.  ``s1``, ``s2``: flat state buffers (momentum, or Adam's two
    moments) holding the four params' entries back to back, empty when unused.  ``hyper``: its
    ``Hyper``.  ``nesterov``.  ``t``: the steps taken before.  ``form``: ``TORCH`` or ``SKLEARN``
    (the module docstring).
    """

    kind: int
    s1: np.ndarray
    s2: np.ndarray
    hyper: Hyper
    nesterov: bool
    t: int
    form: int


@njit(**JIT_OPTIONS)
def update(kind, form, p, g, s1, s2, lr, alpha, mu, nesterov, beta1, beta2, eps, t):
    """Update ``p`` in place from its gradient ``g`` (both ``(size,)``); returns ``sum(p**2)``
    of the params before the update (float64).  ``kind``: ``SGD`` or ``ADAM``; ``form``:
    ``TORCH`` or ``SKLEARN``; state ``s1`` (momentum buffer, or Adam's first moment) and ``s2``
    (Adam's second moment), each ``(size,)`` when used, any array otherwise.  ``alpha``: this
    batch's decay (``batch_decay``).  ``t`` is the 1-based step count (Adam's bias
    correction)."""
    step, scale = adam_factors(form, lr, beta1, beta2, t)
    return update_with(kind, form, p, g, s1, s2, lr, alpha, mu, nesterov, beta1, beta2, eps,
                       step, scale)


@njit(**JIT_OPTIONS, inline="always")
def adam_factors(form, lr, beta1, beta2, t):
    """Adam's step size and the scale of ``sqrt(v)`` at step ``t`` (bias-corrected; unused by
    SGD): once per update, not per element (a caller updating many short rows, the sparse
    rung's lazy update, computes them once for all)."""
    c1 = 1.0 - beta1 ** t
    root_c2 = np.sqrt(1.0 - beta2 ** t)
    if form == SKLEARN:
        return lr * root_c2 / c1, 1.0
    return lr / c1, root_c2


@njit(**JIT_OPTIONS, inline="always")
def update_with(kind, form, p, g, s1, s2, lr, alpha, mu, nesterov, beta1, beta2, eps, step,
                scale):
    """``update``'s element loop, given ``adam_factors``' ``step`` and ``scale``."""
    sq = 0.0
    sk = form == SKLEARN
    for i in range(p.shape[0]):
        w = p[i]
        sq += np.float64(w) * np.float64(w)
        gi = g[i] + alpha * w
        if kind == ADAM:
            m = beta1 * s1[i] + (1.0 - beta1) * gi
            v = beta2 * s2[i] + (1.0 - beta2) * gi * gi
            s1[i] = m
            s2[i] = v
            p[i] = w - step * m / (np.sqrt(v) / scale + eps)
        elif mu != 0.0 and sk:
            v = mu * s1[i] - lr * gi
            s1[i] = v
            if nesterov:
                p[i] = w + (mu * v - lr * gi)
            else:
                p[i] = w + v
        elif mu != 0.0:
            v = mu * s1[i] + gi
            s1[i] = v
            if nesterov:
                p[i] = w - lr * (gi + mu * v)
            else:
                p[i] = w - lr * v
        else:
            p[i] = w - lr * gi
    return sq


@njit(**JIT_OPTIONS)
def batch_decay(o, y, k):
    """The weights' decay for a batch with targets ``y`` (``(B, k)``, or ``(B, k + 1)`` with
    the rows' weights last): ``alpha``, or in the ``SKLEARN`` form ``alpha / B`` (``B`` the
    rows, or their weights' sum), in the params' dtype.  ``Optimizer.step`` takes the same from
    Python (``losses.batch_weight``), to the bit."""
    alpha = o.hyper.alpha
    if o.form != SKLEARN:
        return alpha
    return o.s1.dtype.type(np.float64(alpha) * batch_scale(y, k))  # (s1: the params' dtype)


@njit(**JIT_OPTIONS)
def update_all(p, g, o, t, decay):
    """``update`` for all four params ``p`` from the gradients ``g`` (both ``Params``), with
    the optimiser ``o`` (an ``OptimState``) at step number ``t``, the weights decayed by
    ``decay`` (``batch_decay``); returns the L2 term ``l2_weight * (decay/2) * (sum(w1**2) +
    sum(w2**2))`` before the update.  Biases are not decayed."""
    hp = o.hyper
    size = p.w1.size
    sq = update(o.kind, o.form, p.w1.reshape(size), g.w1.reshape(size),
                o.s1[:size] if o.s1.shape[0] else o.s1, o.s2[:size] if o.s2.shape[0] else o.s2,
                hp.lr, decay, hp.momentum, o.nesterov, hp.beta1, hp.beta2, hp.eps, t)
    sq += update_after_w1(p, g, o, t, decay)
    return l2_term(o, decay, sq)


@njit(**JIT_OPTIONS)
def update_after_w1(p, g, o, t, decay):
    """``update`` for ``b1``, ``w2`` and ``b2`` (their state after ``w1``'s in ``o``'s
    buffers); returns ``sum(w2**2)`` before the update.  ``update_all`` is ``w1``'s update and
    this (a rung may update ``w1`` its own way: ``kernels/bf16.py``)."""
    hp = o.hyper
    sq = 0.0
    start = p.w1.size
    for i in range(1, 4):
        if i == 1:
            w, dw, a = p.b1, g.b1, hp.zero
        elif i == 2:
            w, dw, a = p.w2.reshape(p.w2.size), g.w2.reshape(g.w2.size), decay
        else:
            w, dw, a = p.b2, g.b2, hp.zero
        end = start + w.shape[0]
        s1 = o.s1[start:end] if o.s1.shape[0] else o.s1
        s2 = o.s2[start:end] if o.s2.shape[0] else o.s2
        part = update(o.kind, o.form, w, dw, s1, s2, hp.lr, a, hp.momentum, o.nesterov,
                      hp.beta1, hp.beta2, hp.eps, t)
        if i == 2:
            sq += part
        start = end
    return sq


@njit(**JIT_OPTIONS, inline="always")
def l2_term(o, decay, sq):
    """The L2 term of the loss from ``sq = sum(w1**2) + sum(w2**2)``."""
    return 0.5 * np.float64(decay) * np.float64(o.hyper.l2_weight) * sq


@njit(**JIT_OPTIONS)
def record_and_update(losses, t, loss, p, g, o, y):
    """The end of step ``t`` of a compiled optimiser loop, given its loss, gradients ``g`` and
    batch targets ``y``: a loss that is not finite is recorded and no update made (returns
    False: the loop stops there); otherwise ``update_all`` (step number ``o.t + t + 1``) and
    ``losses[t] = loss + the L2 term`` (returns True)."""
    return record_and_update_with(update_all, losses, t, loss, p, g, o, y)


@njit(**JIT_OPTIONS, inline="always")
def record_and_update_with(update_fn, losses, t, loss, p, g, o, y):
    """``record_and_update`` with ``update_fn`` (``update_all``'s contract) in its place."""
    if not np.isfinite(loss):
        losses[t] = loss
        return False
    decay = batch_decay(o, y, p.w2.shape[1])
    losses[t] = loss + update_fn(p, g, o, o.t + t + 1, decay)
    return True
