"""The plain numpy reference: the specification every kernel is tested against.

Network and objective (x (m, n), y (m, k); w1 (n, h), b1 (h,), w2 (h, k), b2 (k,))::

    z1 = x @ w1 + b1        a1 = act(z1)         z2 = a1 @ w2 + b2
    L  = (1/m) * sum((z2 - y)**2)                           loss="squared" (the default)
    L  = (1/m) * sum(y * (logsumexp(z2) - z2))              loss="softmax", y one-hot (m, k)
    L  = (1/m) * sum(softplus(z2) - y * z2)                 loss="logistic", y in [0, 1]
    L  = (1/m) * sum(exp(z2) - y * z2 + y log y - y)        loss="poisson", y >= 0 (counts)

``act`` is ``relu`` (the default, the seed's), ``tanh``, ``logistic`` or ``identity``.  With
``sample_weight`` (w (m,) >= 0), every ``(1/m) sum_i`` becomes ``sum_i w_i / sum_i w_i``
(scikit-learn's weighting).

Gradients, exactly dL/dparam::

    dz2 = (2/m) * (z2 - y)           (softmax: (1/m) * (softmax(z2) - y); logistic:
                                      (1/m) * (sigmoid(z2) - y); poisson: (1/m) (exp(z2) - y))
    dw2 = a1.T @ dz2                 db2 = dz2.sum(axis=0)
    dz1 = (dz2 @ w2.T) * act'(z1)    db1 = dz1.sum(axis=0)
    dw1 = x.T @ dz1

with ``act'`` taken from ``a1``: ``relu`` ``(a1 > 0)``, ``tanh`` ``1 - a1**2``, ``logistic``
``a1 * (1 - a1)``, ``identity`` 1.

Two corrections to the seed's code: the ReLU backward is a mask, ``da1 * (z1 > 0)``, not
``max(da1, 0)``; and the bias gradients are per-unit sums over the batch axis, not one scalar.
The ReLU derivative at exactly 0 is taken as 0 (``z1 > 0``), as PyTorch and scikit-learn do.

These functions take already-validated arrays in the params' dtype; the public entry points in
``fastnn`` validate and then dispatch here for ``kernel="reference"``.
"""
from __future__ import annotations

import numpy as np

from .params import Params

LOSSES = ("squared", "softmax", "logistic", "poisson")
ACTIVATIONS = ("relu", "tanh", "logistic", "identity")


def activate(name, z):
    """The hidden activation called ``name`` of the array ``z``."""
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "logistic":  # from exp(-|z|), which never overflows (exact down to subnormals)
        e = np.exp(-np.abs(z))
        return np.where(z > 0, 1 / (1 + e), e / (1 + e))
    if name == "identity":
        return z
    raise ValueError(f"activation: expected one of {', '.join(map(repr, ACTIVATIONS))}, got "
                     f"{name!r}")


def derivative(name, a):
    """``da/dz`` of the activation called ``name``, from its values ``a``."""
    if name == "relu":
        return (a > 0).astype(a.dtype)
    if name == "tanh":
        return 1 - a * a
    if name == "logistic":
        return a * (1 - a)
    if name == "identity":
        return np.ones_like(a)
    raise ValueError(f"activation: expected one of {', '.join(map(repr, ACTIVATIONS))}, got "
                     f"{name!r}")


def forward(params: Params, x, activation="relu"):
    """Returns ``(z1, a1, z2)``."""
    w1, b1, w2, b2 = params
    z1 = x @ w1 + b1
    a1 = activate(activation, z1)
    z2 = a1 @ w2 + b2
    return z1, a1, z2


def predict(params: Params, x, activation="relu"):
    """``z2`` for inputs ``x`` (m, n)."""
    return forward(params, x, activation)[2]


def output_loss(z2, y, loss="squared", sample_weight=None):
    """``(L, dz2)`` for outputs ``z2`` and targets ``y`` (both (m, k)).

    ``loss="squared"``: ``L = (1/m) * sum((z2 - y)**2)``, ``dz2 = (2/m) * (z2 - y)``.
    ``loss="softmax"``: softmax cross-entropy with one-hot (or probability) targets,
    ``L = (1/m) * sum(y * (lse - z2))`` with ``lse = log(sum(exp(z2), axis=1))`` per row, and
    ``dz2 = (1/m) * (y.sum(axis=1) * softmax(z2) - y)`` (``softmax(z2) - y`` for one-hot rows).
    ``loss="logistic"``: independent sigmoid outputs and their binary cross-entropy,
    ``L = (1/m) * sum(softplus(z2) - y * z2)``, ``dz2 = (1/m) * (sigmoid(z2) - y)``.
    ``loss="poisson"``: ``exp(z2)`` outputs and half the Poisson deviance,
    ``L = (1/m) * sum(exp(z2) - y * z2 + xlogy(y, y) - y)``, ``dz2 = (1/m) * (exp(z2) - y)``.
    The log-sum-exp subtracts each row's max first, so large logits do not overflow; it is taken
    in float64, as the kernels do.  ``sample_weight (m,)``: row ``i`` counts ``w_i / sum(w)``
    instead of ``1/m``.
    """
    m = z2.shape[0]
    scale = np.full((m, 1), 1.0 / m) if sample_weight is None else (
        np.asarray(sample_weight, np.float64).reshape(m, 1) / float(np.sum(sample_weight)))
    with np.errstate(over="ignore", invalid="ignore"):  # overflow gives inf: the caller's to see
        return _output_loss(z2, y, loss, scale)


def _output_loss(z2, y, loss, scale):
    if loss == "squared":
        r = z2 - y
        r64 = r.astype(np.float64)
        return float(np.sum(scale * r64 * r64)), (2.0 * scale * r).astype(z2.dtype)
    z = z2.astype(np.float64)
    t = y.astype(np.float64)
    if loss == "softmax":
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True))
        loss_value = float(np.sum(scale * np.where(t != 0, t * (lse - z), 0.0)))
        dz2 = scale * (t.sum(axis=1, keepdims=True) * np.exp(z - lse) - t)
        return loss_value, dz2.astype(z2.dtype)
    if loss == "logistic":
        softplus = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
        sigmoid = np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))),
                           np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))
        return float(np.sum(scale * (softplus - t * z))), (scale * (sigmoid - t)).astype(z2.dtype)
    if loss == "poisson":
        p = np.exp(z)
        ylogy = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)
        return float(np.sum(scale * (p - t * z + ylogy - t))), (scale * (p - t)).astype(z2.dtype)
    raise ValueError(f"loss: expected one of {', '.join(map(repr, LOSSES))}, got {loss!r}")


def loss_and_grads(params: Params, x, y, loss="squared", activation="relu", sample_weight=None):
    """``(L, Params(dw1, db1, dw2, db2))`` for one batch.  ``y`` is (m, k) (one-hot for
    ``loss="softmax"``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _loss_and_grads(params, x, y, loss, activation, sample_weight)


def _loss_and_grads(params, x, y, loss, activation, sample_weight):
    w1, b1, w2, b2 = params
    z1, a1, z2 = forward(params, x, activation)
    loss_value, dz2 = output_loss(z2, y, loss, sample_weight)
    dw2 = a1.T @ dz2
    db2 = dz2.sum(axis=0)
    dz1 = (dz2 @ w2.T) * derivative(activation, a1)
    dw1 = x.T @ dz1
    db1 = dz1.sum(axis=0)
    dt = w1.dtype
    return loss_value, Params(*(np.asarray(g, dtype=dt) for g in (dw1, db1, dw2, db2)))


def bfloat16_bits(x) -> np.ndarray:
    """float32 values -> the uint32 bits of their bfloat16 rounding (to nearest, ties to even;
    the low 16 bits zero; overflow to infinity as the rounding gives it; a NaN stays a NaN,
    quieted, where plain rounding could carry its fraction into the sign)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, (u | np.uint32(0x00400000)) & np.uint32(0xFFFF0000), r)


def bfloat16(x) -> np.ndarray:
    """``x`` rounded to bfloat16 (through float32), as float32 values (every bfloat16 is one)."""
    return bfloat16_bits(x).view(np.float32).reshape(np.shape(x))


def loss_and_grads_bf16(params: Params, x, y, loss="squared", activation="relu",
                        sample_weight=None):
    """``loss_and_grads`` as ``dtype="bfloat16"`` defines it (``fastnn/kernels/bf16.py``): the
    operands of the two big matmuls rounded to bfloat16, ``z1 = bf16(x) @ bf16(w1) + b1`` and
    ``dw1 = bf16(x).T @ bf16(dz1)`` (``dz1`` rounded from float32, as the kernel holds it);
    everything else, and every sum, in float64.  Returns float32 gradients (the master
    weights' dtype)."""
    xb = bfloat16(x).astype(np.float64)
    w1, b1, w2, b2 = (np.asarray(p, np.float64) for p in params)
    with np.errstate(over="ignore", invalid="ignore"):
        z1 = xb @ bfloat16(w1).astype(np.float64) + b1
        a1 = activate(activation, z1)
        z2 = a1 @ w2 + b2
        loss_value, dz2 = output_loss(z2, np.asarray(y, np.float64), loss, sample_weight)
        dz1 = (dz2 @ w2.T) * derivative(activation, a1)
        dw1 = xb.T @ bfloat16(dz1.astype(np.float32)).astype(np.float64)
    grads = (dw1, dz1.sum(axis=0), a1.T @ dz2, dz2.sum(axis=0))
    return loss_value, Params(*(np.asarray(g, np.float32) for g in grads))


def sgd_step(params: Params, x, y, lr, loss="squared", activation="relu"):
    """One plain SGD step, ``p -= lr * dp`` for each parameter, in place.  Returns the loss before
    it; when that loss is not finite, the params are left as they are."""
    loss_value, grads = loss_and_grads(params, x, y, loss, activation)
    if not np.isfinite(loss_value):
        return loss_value
    for p, g in zip(params, grads):
        p -= p.dtype.type(lr) * g
    return loss_value


# each loss's canonical output layer (the network's prediction: ``output_layer``)
OUTPUTS = {"squared": "identity", "softmax": "softmax", "logistic": "logistic", "poisson": "exp"}


def output_layer(name, z):
    """The output layer's activation ``name`` of the logits ``z``, in place: ``identity``,
    ``exp`` (the Poisson loss's), ``softmax`` (row-wise, stably) or ``logistic`` (without
    overflow for large ``|z|``); scikit-learn's ``out_activation_`` names."""
    if name == "exp":
        np.exp(z, out=z)
    elif name == "softmax":
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
    elif name == "logistic":
        e = np.exp(-np.abs(z))
        z[...] = np.where(z < 0, e / (1 + e), 1 / (1 + e))
    elif name != "identity":
        raise ValueError(f"output layer: expected identity, exp, softmax or logistic, got "
                         f"{name!r}")
    return z


def softmax(z2):
    """Row-wise ``exp(z2) / sum(exp(z2))``, computed stably (max subtracted first)."""
    e = np.exp(z2 - z2.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def epoch_order(seed: int, epoch: int, m: int) -> np.ndarray:
    """The row order of epoch ``epoch`` in a shuffled run: a permutation drawn from its own
    stream of ``seed`` (so it depends on the seed and the epoch only, and a resumed run can
    recompute it)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, epoch))).permutation(m)


def train(params: Params, x, y, *, optimizer, epochs, batch_size=None, seed=0, shuffle=True,
          loss="squared", activation="relu", sample_weight=None):
    """Minibatch training in plain numpy, in place on ``params``: the specification of
    ``fastnn.train``'s loop.  ``optimizer``: a ``fastnn.optim.Optimizer`` (its
    ``reference_step`` is used).  Each epoch visits the rows in ``epoch_order`` (or in order
    without ``shuffle``, or when one batch holds them all) in blocks of ``batch_size``, the last
    block holding what remains.  Returns the step losses (batch loss plus the L2 term; in the
    optimiser's scikit-learn form its decay is per batch weight: the rows, or their weights'
    sum)."""
    m = x.shape[0]
    batch = m if batch_size is None else min(batch_size, m)
    n_blocks = -(-m // batch)
    out = []
    for epoch in range(epochs):
        order = epoch_order(seed, epoch, m) if shuffle and n_blocks > 1 else np.arange(m)
        for b in range(n_blocks):
            rows = order[b * batch:(b + 1) * batch]
            weights = None if sample_weight is None else sample_weight[rows]
            value, grads = loss_and_grads(params, x[rows], y[rows], loss, activation, weights)
            weight = len(rows) if weights is None else float(np.sum(weights, dtype=np.float64))
            out.append(value + optimizer.reference_step(params, grads, weight))
    return np.array(out)
