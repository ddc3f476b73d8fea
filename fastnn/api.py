"""The public step functions: validate, then dispatch to the chosen kernel variant."""
from __future__ import annotations

import numpy as np

from . import kernels
from .params import Params
from .kernels import losses
from .validation import check_lr, check_params, check_targets, check_x


def predict(params, x, *, kernel: str = kernels.DEFAULT) -> np.ndarray:
    """The network's output ``z2 = relu(x @ w1 + b1) @ w2 + b2``, shape (m, k), in the params' dtype."""
    variant = kernels.get(kernel)
    params = check_params(params)
    x = check_x(x, params)
    return variant.predict(_contiguous(params), x)


def loss_and_grads(params, x, y, *, kernel: str = kernels.DEFAULT, loss: str = "squared"):
    """``(L, grads)``: the loss and ``Params`` of exactly dL/dparam.

    ``loss="squared"``: ``L = (1/m) * sum((z2 - y)**2)``.  ``loss="softmax"``: the mean softmax
    cross-entropy, ``y`` integer class labels (m,) or (m, k) one-hot/probability rows.
    """
    variant = kernels.get(kernel)
    kind = losses.kind(loss)
    params = check_params(params)
    x = check_x(x, params)
    y = check_targets(y, params, x.shape[0], loss)
    value, grads = variant.loss_and_grads(_contiguous(params), x, y, kind)
    return float(value), grads


def sgd_step(params, x, y, lr, *, kernel: str = kernels.DEFAULT, loss: str = "squared") -> float:
    """One SGD step ``p -= lr * dL/dp``, in place on ``params``; returns the loss before the step.
    ``loss`` as in ``loss_and_grads``.  When that loss is NaN or infinite the params are left
    unchanged."""
    variant = kernels.get(kernel)
    kind = losses.kind(loss)
    params = check_params(params, writeable=True)
    lr = check_lr(lr, params.dtype)
    x = check_x(x, params)
    y = check_targets(y, params, x.shape[0], loss)
    work = _contiguous(params)
    value = variant.sgd_step(work, x, y, lr, kind)
    for p, w in zip(params, work):
        if w is not p:  # the kernel worked on a contiguous copy: write the result back
            p[...] = w
    return float(value)


def _contiguous(params: Params) -> Params:
    """``params`` with every array C-contiguous, aligned and writeable, as the kernels are compiled
    for: the same arrays where they already are, else copies."""
    return Params(*(p if p.flags.c_contiguous and p.flags.aligned and p.flags.writeable
                    else np.array(p, order="C", copy=True) for p in params))
