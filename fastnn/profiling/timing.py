"""The timing methods every fastnn figure comes from.

The machine this runs on may be shared and noisy, so every figure that compares two things is a
*paired* ratio: the two callables alternate in short rounds and we take the median of the
per-round ratios (``paired_ratio``).  A slow phase of the machine then hits both sides alike.

The spin trap: OpenBLAS's idle workers busy-wait for up to 2**28 cycles (~0.1 s) after a call,
and OpenMP's for a while after a parallel region.  A kernel timed right after another side would
share the cores with those spinning threads, a cost neither pays in a training loop, where one
kernel runs alone.  So a timed block starts after an idle pause (``SETTLE``), or, where idling
is too slow (``auto``'s first-call measurement), after a warm-up longer than the spin.
"""
from __future__ import annotations

import time

import numpy as np

# Timings of one thing whose repeats spread more than BUSY_SPREAD were taken on a busy machine
# (``fastnn bench`` flags such rows; the threshold is auto's too, stated in its policy).
from ..auto.policy import BUSY_SPREAD  # noqa: F401

# Seconds of idle before each timed block of a benchmark (see the module docstring).
SETTLE = 0.15


def per_call(f, budget: float) -> float:
    """Seconds per call of ``f``, timing enough calls (doubling) to fill ``budget`` seconds."""
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            f()
        t = time.perf_counter() - t0
        if t >= budget:
            return t / reps
        reps *= 2


def block(f, budget: float) -> float:
    """Seconds per call of ``f`` over one block of calls lasting at least ``budget`` seconds
    (at least one call), checking the clock after every call: for short budgets, where
    ``per_call``'s doubling would overshoot."""
    reps = 0
    t0 = time.perf_counter()
    while True:
        f()
        reps += 1
        total = time.perf_counter() - t0
        if total >= budget:
            return total / reps


def median_block(f, budget: float, blocks: int = 7) -> float:
    """The median seconds per call of ``f`` over ``blocks`` blocks of ``budget`` seconds."""
    return float(np.median([block(f, budget) for _ in range(blocks)]))


def paired_ratio(ours, base, rounds=21, budget=0.02, settle=SETTLE):
    """Alternate the two callables in short rounds.

    Returns ``(median of per-round ratios base/ours, per-call seconds of ours per round, of base per
    round)``.  The order within a round alternates too, so neither side always runs second.
    ``settle`` seconds of idle precede each side's block (see ``SETTLE``); 0 turns that off.
    """
    def timed(f):
        if settle:
            time.sleep(settle)
        return per_call(f, budget)

    ta, tb, ratios = [], [], []
    for i in range(rounds):
        if i % 2:
            b = timed(base)
            a = timed(ours)
        else:
            a = timed(ours)
            b = timed(base)
        ta.append(a)
        tb.append(b)
        ratios.append(b / a)
    return float(np.median(ratios)), ta, tb


def blas_peak(dtype, size=2048, reps=5) -> float:
    """GFLOP/s of a ``size``-square numpy matmul (the best of ``reps``): the machine's practical
    ceiling for this dtype and the current BLAS thread count."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)

    def once():
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        return time.perf_counter() - t0

    return 2 * size**3 / min(once() for _ in range(reps)) / 1e9


def quiet_fit(fitted, key, model, x, y):
    """A callable that fits ``model`` on ``(x, y)`` with its warnings silenced (a timed fit
    that stops at ``max_iter`` warns each time) and keeps it as ``fitted[key]``."""
    import warnings

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted[key] = model.fit(x, y)
    return run
