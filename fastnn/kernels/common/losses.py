"""The output losses, one row at a time: shared by every compiled variant's output pass.

Two losses, chosen by a run-time integer (not a compile-time flag, so each kernel is compiled once
per dtype whatever the loss)::

    SQUARED   L = (1/m) * sum_i sum_c (z2[i, c] - y[i, c])**2       dz2 = (2/m) * (z2 - y)
    SOFTMAX   L = (1/m) * sum_i sum_c y[i, c] * (lse_i - z2[i, c])  dz2 = (1/m) * (s_i * p - y)

with ``lse_i = log(sum_c exp(z2[i, c]))``, ``p = exp(z2 - lse)`` the softmax and ``s_i = sum_c
y[i, c]`` (1 for one-hot or probability targets; the general form keeps the gradient exact for any
non-negative targets).  ``y`` for SOFTMAX is one-hot (the trainer builds it from integer labels).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..jit import JIT_OPTIONS

SQUARED = 0
SOFTMAX = 1
NAMES = {"squared": SQUARED, "softmax": SOFTMAX}
NAME_OF = {code: name for name, code in NAMES.items()}  # code -> the reference's name


def kind(name: str) -> int:
    """The kernels' integer code for the loss called ``name``; ValueError for an unknown name."""
    try:
        return NAMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"loss: expected one of {', '.join(map(repr, NAMES))}, "
                         f"got {name!r}") from None


@njit(**JIT_OPTIONS, inline="always")
def row_loss_grad(z, y, d, scale, loss_kind):
    """One row's loss term and gradient.  ``z (k,)``: the row of ``z2``; ``y (k,)``: its targets.
    Writes ``d = dL/dz2`` for the row (``d`` may be ``z`` itself: each ``z[c]`` is read before
    ``d[c]`` is written) and returns the row's term of ``m * L`` in float64.  ``scale = 1/m``.

    The softmax is taken after subtracting the row's max and the log-sum-exp is computed in
    float64, so logits of 1e3 (or 1e30) give finite losses and exact-enough gradients: ``exp`` of
    a non-positive number never overflows, and the max term contributes exactly 1 to the sum.
    ``exp(z_c - zmax)`` is stored in the dtype of ``d`` between the two passes (a float32 kernel
    rounds it once more: one unit of float32 roundoff in the gradient).
    """
    k = z.shape[0]
    loss = 0.0
    if loss_kind == SOFTMAX:
        zmax = np.float64(z[0])
        for c in range(1, k):
            if z[c] > zmax:
                zmax = np.float64(z[c])
        # One exp per entry: e_c = exp(z_c - zmax) replaces z_c in d, and the loss uses the
        # shifted logits, sum_c y_c * (log(total) - (z_c - zmax)), which never holds the huge
        # values themselves.
        total = 0.0
        ysum = 0.0
        for c in range(k):
            zc = np.float64(z[c]) - zmax
            yc = np.float64(y[c])
            if yc != 0.0:  # 0 * (-inf) would be NaN for an infinitely negative logit
                loss -= yc * zc
            ysum += yc
            e = np.exp(zc)
            total += e
            d[c] = e
        loss += ysum * np.log(total)
        for c in range(k):
            d[c] = scale * (ysum * (np.float64(d[c]) / total) - np.float64(y[c]))
    else:
        for c in range(k):
            r = z[c] - y[c]
            loss += np.float64(r) * np.float64(r)
            d[c] = 2.0 * scale * r
    return loss
