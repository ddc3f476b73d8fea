"""The plain numpy reference: the specification every kernel is tested against.

Network and objective (x (m, n), y (m, k); w1 (n, h), b1 (h,), w2 (h, k), b2 (k,))::

    z1 = x @ w1 + b1        a1 = relu(z1)        z2 = a1 @ w2 + b2
    L  = (1/m) * sum((z2 - y)**2)

Gradients, exactly dL/dparam::

    dz2 = (2/m) * (z2 - y)
    dw2 = a1.T @ dz2                 db2 = dz2.sum(axis=0)
    dz1 = (dz2 @ w2.T) * (z1 > 0)    db1 = dz1.sum(axis=0)
    dw1 = x.T @ dz1

Two corrections to the seed's code: the ReLU backward is a mask, ``da1 * (z1 > 0)``, not
``max(da1, 0)``; and the bias gradients are per-unit sums over the batch axis, not one scalar.
The ReLU derivative at exactly 0 is taken as 0 (``z1 > 0``), as PyTorch does.

These functions take already-validated arrays in the params' dtype; the public entry points in
``fastnn`` validate and then dispatch here for ``kernel="reference"``.
"""
from __future__ import annotations

import numpy as np

from .params import Params


def forward(params: Params, x):
    """Returns ``(z1, a1, z2)``."""
    w1, b1, w2, b2 = params
    z1 = x @ w1 + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ w2 + b2
    return z1, a1, z2


def predict(params: Params, x):
    """``z2`` for inputs ``x`` (m, n)."""
    return forward(params, x)[2]


def loss_and_grads(params: Params, x, y):
    """``(L, Params(dw1, db1, dw2, db2))`` for one batch.  ``y`` is (m, k)."""
    w1, b1, w2, b2 = params
    m = x.shape[0]
    z1, a1, z2 = forward(params, x)
    r = z2 - y
    loss = float(np.sum(r * r)) / m
    dz2 = (2.0 / m) * r
    dw2 = a1.T @ dz2
    db2 = dz2.sum(axis=0)
    dz1 = (dz2 @ w2.T) * (z1 > 0)
    dw1 = x.T @ dz1
    db1 = dz1.sum(axis=0)
    dt = w1.dtype
    return loss, Params(*(np.asarray(g, dtype=dt) for g in (dw1, db1, dw2, db2)))


def sgd_step(params: Params, x, y, lr):
    """One plain SGD step, ``p -= lr * dp`` for each parameter, in place.  Returns the loss before it."""
    loss, grads = loss_and_grads(params, x, y)
    for p, g in zip(params, grads):
        p -= p.dtype.type(lr) * g
    return loss
