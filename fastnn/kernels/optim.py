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
its optimisers serve as an outside oracle.  As numpy this is 4-8 passes over memory with
temporaries; here it is one, and it also returns ``sum(p**2)`` (before the update) for the L2
term of the loss, so that costs no extra pass either.

Arrays are 1-D views (the caller flattens each C-contiguous param), so the kernel is compiled
once per dtype.  Serial: the update is memory-bound and small next to the step's matmuls.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS

SGD = 0
ADAM = 1


@njit(**JIT_OPTIONS)
def update(kind, p, g, s1, s2, lr, alpha, mu, nesterov, beta1, beta2, eps, t):
    """Update ``p`` in place from its gradient ``g`` (both ``(size,)``); returns ``sum(p**2)``
    of the params before the update (float64).  ``kind``: ``SGD`` or ``ADAM``; state ``s1``
    (momentum buffer, or Adam's first moment) and ``s2`` (Adam's second moment), each
    ``(size,)`` when used, any array otherwise.  ``t`` is the 1-based step count (Adam's bias
    correction)."""
    sq = 0.0
    if kind == ADAM:
        c1 = 1.0 - beta1 ** t
        step = lr / c1
        root_c2 = np.sqrt(1.0 - beta2 ** t)
    for i in range(p.shape[0]):
        w = p[i]
        sq += np.float64(w) * np.float64(w)
        gi = g[i] + alpha * w
        if kind == ADAM:
            m = beta1 * s1[i] + (1.0 - beta1) * gi
            v = beta2 * s2[i] + (1.0 - beta2) * gi * gi
            s1[i] = m
            s2[i] = v
            p[i] = w - step * m / (np.sqrt(v) / root_c2 + eps)
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
def update_all(kind, w1, b1, w2, b2, dw1, db1, dw2, db2, s1, s2, hyper, nesterov, t):
    """``update`` for all four params; returns the L2 term ``(alpha/2) * (sum(w1**2) +
    sum(w2**2))`` before the update.  ``s1``, ``s2``: flat state buffers holding the four
    params' entries back to back (empty when the optimiser has no such state); ``hyper``:
    ``[lr, alpha, momentum, beta1, beta2, eps, 0]`` in the params' dtype (biases get alpha = 0:
    they are not decayed)."""
    lr, alpha, mu, beta1, beta2, eps, zero = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4],
                                              hyper[5], hyper[6])
    sq = 0.0
    start = 0
    for i in range(4):
        if i == 0:
            p, g, decay = w1.reshape(w1.size), dw1.reshape(dw1.size), alpha
        elif i == 1:
            p, g, decay = b1, db1, zero
        elif i == 2:
            p, g, decay = w2.reshape(w2.size), dw2.reshape(dw2.size), alpha
        else:
            p, g, decay = b2, db2, zero
        end = start + p.shape[0]
        a = s1[start:end] if s1.shape[0] else s1
        b = s2[start:end] if s2.shape[0] else s2
        part = update(kind, p, g, a, b, lr, decay, mu, nesterov, beta1, beta2, eps, t)
        if i == 0 or i == 2:
            sq += part
        start = end
    return 0.5 * np.float64(alpha) * sq


@njit(**JIT_OPTIONS)
def record_and_update(losses, t, loss, kind, w1, b1, w2, b2, dw1, db1, dw2, db2, s1, s2, hyper,
                      nesterov, count):
    """The end of step ``t`` of a compiled optimiser loop, given its loss and gradients: a loss
    that is not finite is recorded and no update made (returns False: the loop stops there);
    otherwise ``update_all`` (step number ``count``) and ``losses[t] = loss + the L2 term``
    (returns True)."""
    if not np.isfinite(loss):
        losses[t] = loss
        return False
    losses[t] = loss + update_all(kind, w1, b1, w2, b2, dw1, db1, dw2, db2, s1, s2, hyper,
                                  nesterov, count)
    return True
