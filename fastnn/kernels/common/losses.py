"""The output losses, one row at a time: shared by every compiled variant's output pass.

Four losses, chosen by a run-time integer (not a compile-time flag, so each kernel is compiled once
per dtype whatever the loss), each with its canonical output (the gradient is ``p - y`` with
``p`` the output's activation: no division by ``p`` anywhere)::

    SQUARED   L = (1/m) sum_i sum_c (z2[i, c] - y[i, c])**2       dz2 = (2/m) (z2 - y)
    SOFTMAX   L = (1/m) sum_i sum_c y[i, c] (lse_i - z2[i, c])    dz2 = (1/m) (s_i softmax - y)
    LOGISTIC  L = (1/m) sum_i sum_c softplus(z2) - y z2           dz2 = (1/m) (sigmoid(z2) - y)
    POISSON   L = (1/m) sum_i sum_c exp(z2) - y z2 + y log y - y  dz2 = (1/m) (exp(z2) - y)

with ``lse_i = log(sum_c exp(z2[i, c]))`` and ``s_i = sum_c y[i, c]`` (1 for one-hot or
probability targets; the general form keeps the gradient exact for any non-negative targets).
``y`` for SOFTMAX is one-hot (the trainer builds it from integer labels); LOGISTIC is the binary
cross-entropy of independent sigmoid outputs (binary and multilabel classification: ``y`` in
[0, 1]); POISSON is the Poisson deviance of ``exp(z2)`` (half of it, scikit-learn's), for counts.

Weighted rows: ``y`` may hold one more column than the output layer, the row's weight ``w_i``;
the losses are then ``sum_i w_i l_i / sum_i w_i`` and every ``1/m`` above becomes
``w_i / sum_i w_i`` (``row_scales``): scikit-learn's ``sample_weight``.  The weights ride with the
targets through every gather (minibatches, the dual form's rows), so no kernel takes another
argument for them.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..jit import JIT_OPTIONS

SQUARED = 0
SOFTMAX = 1
LOGISTIC = 2
POISSON = 3
NAMES = {"squared": SQUARED, "softmax": SOFTMAX, "logistic": LOGISTIC, "poisson": POISSON}
NAME_OF = {code: name for name, code in NAMES.items()}  # code -> the reference's name


def kind(name: str) -> int:
    """The kernels' integer code for the loss called ``name``; ValueError for an unknown name."""
    try:
        return NAMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"loss: expected one of {', '.join(map(repr, NAMES))}, "
                         f"got {name!r}") from None


@njit(**JIT_OPTIONS, inline="always")
def batch_scale(y, k):
    """The ``1/m`` of an unweighted batch (``y (m, k)``), or ``1 / sum_i w_i`` of a weighted
    one (``y (m, k + 1)``, the weights in its last column), in float64."""
    m = y.shape[0]
    if y.shape[1] == k:
        return 1.0 / m
    total = 0.0
    for i in range(m):
        total += np.float64(y[i, k])
    return 1.0 / total


def batch_weight(y, k) -> float:
    """``batch_scale``'s denominator from Python, to the bit: the rows of ``y``, or the sum of
    its weights column taken in the same order (``cumsum`` is sequential; ``sum`` is not)."""
    if y.shape[1] == k:
        return float(y.shape[0])
    return float(np.cumsum(y[:, k], dtype=np.float64)[-1])


@njit(**JIT_OPTIONS, inline="always")
def row_scale(y, i, k, inv):
    """Row ``i``'s scale: ``inv`` (``batch_scale``) unweighted, ``w_i * inv`` weighted."""
    if y.shape[1] == k:
        return inv
    return np.float64(y[i, k]) * inv


@njit(**JIT_OPTIONS)
def _exp_family_row(z, y, d, scale, loss_kind):
    """``row_loss_grad`` of the LOGISTIC and POISSON losses, unscaled.  One compiled function
    that every kernel calls, not inlined into each: a kernel compiled for the squared or softmax
    loss then carries a call, not their code (inlined, they added 0.2 s to each kernel's cold
    compile, measured: a ReLU regression paid for them)."""
    k = z.shape[0]
    loss = 0.0
    if loss_kind == LOGISTIC:
        for c in range(k):
            zc = np.float64(z[c])
            yc = np.float64(y[c])
            e = np.exp(-abs(zc))  # in (0, 1]
            loss += max(zc, 0.0) + np.log1p(e) - yc * zc
            sig = 1.0 / (1.0 + e) if zc >= 0.0 else e / (1.0 + e)
            d[c] = scale * (sig - yc)
    elif loss_kind == POISSON:
        for c in range(k):
            zc = np.float64(z[c])
            yc = np.float64(y[c])
            p = np.exp(zc)
            loss += p - yc * zc - yc
            if yc > 0.0:
                loss += yc * np.log(yc)
            d[c] = scale * (p - yc)
    return loss


@njit(**JIT_OPTIONS, inline="always")
def row_loss_grad(z, y, d, scale, loss_kind):
    """One row's loss term and gradient.  ``z (k,)``: the row of ``z2``; ``y``: its targets (a
    weight after them is not read).  Writes ``d = dL/dz2`` for the row (``d`` may be ``z``
    itself: each ``z[c]`` is read before ``d[c]`` is written) and returns the row's term of
    ``L``, ``scale * l_i``, in float64.  ``scale``: the row's ``row_scale``.

    The softmax is taken after subtracting the row's max and the log-sum-exp is computed in
    float64, so logits of 1e3 (or 1e30) give finite losses and exact-enough gradients: ``exp`` of
    a non-positive number never overflows, and the max term contributes exactly 1 to the sum.
    ``exp(z_c - zmax)`` is stored in the dtype of ``d`` between the two passes (a float32 kernel
    rounds it once more: one unit of float32 roundoff in the gradient).  The logistic loss's
    ``softplus(z) = max(z, 0) + log1p(exp(-|z|))`` and its sigmoid are taken from ``exp(-|z|)``,
    which never overflows either.
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
    elif loss_kind == LOGISTIC or loss_kind == POISSON:
        loss = _exp_family_row(z, y, d, scale, loss_kind)
    else:
        for c in range(k):
            r = z[c] - y[c]
            loss += np.float64(r) * np.float64(r)
            d[c] = 2.0 * scale * r
    return scale * loss
