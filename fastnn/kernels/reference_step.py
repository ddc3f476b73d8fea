"""Rung 0, `reference`: ``fastnn.reference``, the plain numpy specification, as a variant.

Not a contender: what every other variant is tested against, callable with ``kernel="reference"``
so that the same public functions and training loop can run the specification itself.  Weighted
rows arrive as the kernels take them (``y`` with one more column, the weights: ``losses.py``)
and go to the reference as its ``sample_weight``.
"""
from __future__ import annotations

from .. import reference
from .common.activations import RELU, name_of
from .common.losses import NAME_OF, SQUARED
from .variant import Variant


def _targets(params, y):
    k = params.w2.shape[1]
    return (y, None) if y.shape[1] == k else (y[:, :k], y[:, k])


def predict(params, x, act=RELU):
    return reference.predict(params, x, name_of(act))


def loss_and_grads(params, x, y, loss_kind=SQUARED, grads=None, act=RELU):
    y, weights = _targets(params, y)
    loss, new = reference.loss_and_grads(params, x, y, NAME_OF[loss_kind], name_of(act), weights)
    if grads is None:
        return loss, new
    for g, v in zip(grads, new):
        g[...] = v
    return loss, grads


def sgd_step(params, x, y, lr, loss_kind=SQUARED, act=RELU):
    loss, grads = loss_and_grads(params, x, y, loss_kind, None, act)
    if loss == loss and abs(loss) != float("inf"):
        for p, g in zip(params, grads):
            p -= p.dtype.type(lr) * g
    return loss


VARIANTS = [Variant("reference", "plain numpy, the specification (fastnn.reference)",
                    predict, loss_and_grads, sgd_step, pool="numpy")]
