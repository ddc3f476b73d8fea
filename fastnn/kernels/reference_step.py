"""Rung 0, `reference`: ``fastnn.reference``, the plain numpy specification, as a variant.

Not a contender: what every other variant is tested against, callable with ``kernel="reference"``
so that the same public functions and training loop can run the specification itself.
"""
from __future__ import annotations

from .. import reference
from .common.losses import NAME_OF, SQUARED
from .variant import Variant


def loss_and_grads(params, x, y, loss_kind=SQUARED, grads=None):
    loss, new = reference.loss_and_grads(params, x, y, NAME_OF[loss_kind])
    if grads is None:
        return loss, new
    for g, v in zip(grads, new):
        g[...] = v
    return loss, grads


def sgd_step(params, x, y, lr, loss_kind=SQUARED):
    return reference.sgd_step(params, x, y, lr, NAME_OF[loss_kind])


VARIANTS = [Variant("reference", "plain numpy, the specification (fastnn.reference)",
                    reference.predict, loss_and_grads, sgd_step, pool="numpy")]
