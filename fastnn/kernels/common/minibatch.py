"""Minibatch blocks: which rows a training step uses, in compiled code and in Python.

An epoch of ``m`` rows in batches of ``size`` has ``ceil(m / size)`` blocks; block ``b`` holds
the rows at positions ``[s, e)`` with ``s = (b % n_blocks) * size`` and ``e = min(s + size, m)``,
so the last block may be partial and blocks wrap around (``b`` and ``b + n_blocks`` are the same
block).  The positions are rows of ``x``/``y`` themselves (``m`` = all of them), or indices into
the epoch's row ``order`` (``m = len(order)``: a shuffled epoch, or the training rows of a set
whose validation rows are held out).  ``fastnn.reference.train`` defines the same blocks in plain numpy.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ..jit import JIT_OPTIONS


class Batches(NamedTuple):
    """The minibatch arguments of a compiled training loop.

    ``order``: the epoch's rows of ``x`` in order (int64), or an empty array for all rows in
    place.
    ``xb (size, n)``, ``yb (size, k)``: where a shuffled batch's rows are gathered (unused, and
    may be one row, when ``order`` is empty).  ``size``: rows per batch.  ``start``: the block of
    the loop's first step.
    """

    order: np.ndarray
    xb: np.ndarray
    yb: np.ndarray
    size: int
    start: int


def blocks(m: int, size) -> tuple[int, int]:
    """``(size, n_blocks)``: the batch size (None: the whole set, one block) and the blocks of
    an epoch of ``m`` rows."""
    size = m if size is None else min(size, m)
    return size, -(-m // size)


@njit(**JIT_OPTIONS, inline="always")
def minibatch(x, y, b, t):
    """The rows of step ``t`` of a loop over ``b`` (a ``Batches``): block ``b.start + t``.
    ``x[s:e]``, ``y[s:e]`` (views) when ``b.order`` is empty, else rows ``b.order[s:e]`` of ``x``
    and ``y`` gathered into ``b.xb``, ``b.yb``.  Gathering a batch right before its step leaves it
    in cache for the first matmul, and needs no second copy of the whole data set."""
    m = b.order.shape[0] if b.order.shape[0] else x.shape[0]
    size = b.size
    s = ((b.start + t) % ((m + size - 1) // size)) * size
    e = min(s + size, m)
    if b.order.shape[0] == 0:
        return x[s:e], y[s:e]
    n = x.shape[1]
    k = y.shape[1]
    xb, yb = b.xb, b.yb
    for r in range(e - s):
        src = b.order[s + r]
        for j in range(n):
            xb[r, j] = x[src, j]
        for c in range(k):
            yb[r, c] = y[src, c]
    return xb[:e - s], yb[:e - s]


def batch_rows(x, y, order, block, size=None):
    """``minibatch`` in Python: block ``block``'s rows as C-contiguous arrays, ``x[s:e]``,
    ``y[s:e]`` (views), or with ``order`` the rows ``order[s:e]`` (copies)."""
    m = x.shape[0] if order is None else order.shape[0]
    size, n_blocks = blocks(m, size)
    s = (block % n_blocks) * size
    e = min(s + size, m)
    if order is None:
        return x[s:e], y[s:e]
    rows = order[s:e]
    if not isinstance(x, np.ndarray):  # sparse rows (``kernels/sparse.py``): rows of rows
        return x[rows], np.take(y, rows, axis=0)
    return np.take(x, rows, axis=0), np.take(y, rows, axis=0)
