"""The public step functions: validate, resolve ``kernel=`` to a variant, run it."""
from __future__ import annotations

import numpy as np

from . import kernels
from .auto.choice import resolve
from .kernels.common import activations, losses
from .params import Params
from .validation import (check_lr, check_params, check_sample_weight, check_targets, check_x,
                         with_weights)


def predict(params, x, *, kernel: str = kernels.DEFAULT, activation: str = "relu") -> np.ndarray:
    """The network's output ``z2 = act(x @ w1 + b1) @ w2 + b2``, shape (m, k), in the params'
    dtype (the output layer's logits: no softmax or sigmoid applied).  ``activation``: the hidden
    layer's, ``"relu"`` (default), ``"tanh"``, ``"logistic"`` or ``"identity"``."""
    kernel = _one_batch(kernels.check_name(kernel))
    act = activations.of(activation)
    params = check_params(params)
    x = check_x(x, params)
    params = _contiguous(params)
    return resolve(kernel, params, x, measure=False).predict(params, x, act)


def loss_and_grads(params, x, y, *, kernel: str = kernels.DEFAULT, loss: str = "squared",
                   activation: str = "relu", sample_weight=None):
    """``(L, grads)``: the loss and ``Params`` of exactly dL/dparam.

    ``loss="squared"``: ``L = (1/m) * sum((z2 - y)**2)``.  ``loss="softmax"``: the mean softmax
    cross-entropy, ``y`` integer class labels (m,) or (m, k) one-hot/probability rows.
    ``loss="logistic"``: the binary cross-entropy of independent sigmoid outputs, ``y`` (m, k) in
    [0, 1] (or (m,) for one output).  ``loss="poisson"``: half the Poisson deviance of ``exp``
    outputs, ``y >= 0``.  ``activation`` as in ``predict``.  ``sample_weight`` (m,): each row's
    weight, ``L = sum_i w_i l_i / sum_i w_i`` (``fastnn.reference`` states each exactly).
    """
    kernel = _one_batch(kernels.check_name(kernel))
    kind = losses.kind(loss)
    act = activations.of(activation)
    params = check_params(params)
    x = check_x(x, params)
    y = with_weights(check_targets(y, params, x.shape[0], loss),
                     check_sample_weight(sample_weight, x.shape[0], params.dtype))
    params = _contiguous(params)
    variant = resolve(kernel, params, x, y, measure=False)
    value, grads = variant.loss_and_grads(params, x, y, kind, None, act)
    return float(value), grads


def sgd_step(params, x, y, lr, *, kernel: str = kernels.DEFAULT, loss: str = "squared",
             activation: str = "relu") -> float:
    """One SGD step ``p -= lr * dL/dp``, in place on ``params``; returns the loss before the step.
    ``loss`` and ``activation`` as in ``loss_and_grads``.  When that loss is NaN or infinite the
    params are left unchanged."""
    kernel = kernels.check_name(kernel)
    kind = losses.kind(loss)
    act = activations.of(activation)
    params = check_params(params, writeable=True)
    lr = check_lr(lr, params.dtype)
    x = check_x(x, params)
    y = check_targets(y, params, x.shape[0], loss)
    if kernel in kernels.TRAINING_FORMS:
        raise ValueError(f"kernel: {kernel!r} is a form of a whole training run: one sgd_step has "
                         f"no training set to work in; train(kernel={kernel!r}) runs it, or "
                         f"pass a step variant here ({kernels.PRIMARY!r}, 'auto', ...)")
    work = _contiguous(params)
    value = resolve(kernel, work, x, y).sgd_step(work, x, y, lr, kind, act)
    for p, w in zip(params, work):
        if w is not p:  # the kernel worked on a contiguous copy: write the result back
            p[...] = w
    return float(value)


def _one_batch(kernel: str) -> str:
    """A training form (the dual form) computes one batch as the primal route does."""
    return kernels.PRIMARY if kernel in kernels.TRAINING_FORMS else kernel


def _contiguous(params: Params) -> Params:
    """``params`` with every array C-contiguous, aligned and writeable, as the kernels are compiled
    for: the same arrays where they already are, else copies."""
    return Params(*(p if p.flags.c_contiguous and p.flags.aligned and p.flags.writeable
                    else np.array(p, order="C", copy=True) for p in params))


def to_bfloat16(x):
    """``x (m, n)`` rounded to bfloat16 once (to nearest even), for ``train``, ``predict``,
    ``loss_and_grads`` and ``sgd_step`` to use as it is: they run the bf16 rung on it
    (``fastnn/kernels/bf16.py``) with float32 parameters.  ``dtype="bfloat16"`` in ``train``
    does this itself; a loop of your own over ``sgd_step`` rounds each batch again unless it
    passes rows of this (``rows[i:j]``, ``rows[index_array]``)."""
    from .kernels.bf16 import Bf16Data
    from .validation import check_finite, check_inputs

    if isinstance(x, Bf16Data):
        return x
    x = check_inputs(x, np.float32)
    check_finite(x, "x")
    return Bf16Data.of(x)
