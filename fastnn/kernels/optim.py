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
