"""Thread control: one count for Numba's ``prange`` kernels and for every BLAS pool together.

fastnn never runs a parallel Numba kernel and a threaded BLAS call at the same time (``fused`` is
serial Numba code calling BLAS; ``naive`` and ``tiled`` are parallel Numba code without BLAS;
``chunked`` sets BLAS to one thread while its Numba threads run), so one number bounds the threads
a step uses.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import time

import numba

_threads = None


def max_threads() -> int:
    """The most threads Numba can run here (``NUMBA_NUM_THREADS``, by default the core count)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for both Numba's ``prange`` kernels and BLAS (every pool threadpoolctl
    sees: numpy's OpenBLAS, scipy's, MKL when loaded).  ``n`` is clipped to ``max_threads()``."""
    global _threads
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"threads: expected a positive integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"threads: expected a positive integer, got {n}")
    n = min(n, max_threads())
    _set(n)
    _threads = n


_blas = None  # threadpoolctl's controllers of every BLAS library loaded (found once: ~2 ms)


def _set(n: int) -> None:
    """Numba's and every BLAS pool's thread count, at once (a few microseconds: the trainer
    changes it between blocks of steps, ``fastnn.auto.thread_watch``).  ``get_num_threads()`` keeps
    answering the count set for the run, not this one."""
    global _blas, _threads
    if _threads is None:
        _threads = int(numba.get_num_threads())
    numba.set_num_threads(n)
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        from .kernels.common import gemm  # noqa: F401  (loads the BLAS libraries first)

        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    for lib in _blas:
        lib.set_num_threads(n)


def get_num_threads() -> int:
    """The thread count in force: the last ``set_num_threads`` value, else Numba's current count."""
    return _threads if _threads is not None else int(numba.get_num_threads())


@contextlib.contextmanager
def num_threads(n):
    """``set_num_threads(n)`` for the duration of a ``with`` block, then the previous count back;
    nothing when ``n`` is None."""
    if n is None:
        yield
        return
    before = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before)


# Looks at /proc/loadavg, LOOK_GAP seconds apart (growing), before concluding that other
# programs hold cores: a kernel worker is often runnable for an instant (on a quiet machine here
# one look saw "busy" on 1.5-3% of tries, eight back-to-back looks still on 3% right after a
# training run: kworkers woken by it; three looks over 0.3 ms on 0.7%), while a program that
# competes for a core stays runnable.
LOOKS = 3
LOOK_GAP = 1e-4


def free_cores(own_children: int = 0) -> int:
    """The cores other programs leave free right now (at least 1): more threads than that
    wait on each other (``fastnn.auto.thread_watch``).  Linux's ``/proc/loadavg`` counts the
    threads runnable this instant; this process's own are taken off (its BLAS workers spin a
    while after a call), counted before and after so that a worker of ours caught between the
    two reads is not taken for another program's.  Up to ``LOOKS`` looks over ~0.3 ms,
    stopping at the first that sees no other program running.  Elsewhere the one-minute load
    average stands in.  0.05-0.3 ms on a quiet machine, ~1.3 ms on a busy one.
    ``own_children``: runnable processes of ours to take off too (the background build, which
    runs on idle time only: it takes no core from us)."""
    cores = os.cpu_count() or 1
    try:
        others = cores
        for look in range(LOOKS):
            others = min(others, _others_running() - own_children)
            if others <= 0 or look == LOOKS - 1:
                break
            time.sleep(LOOK_GAP * (look + 1))
    except (OSError, ValueError, IndexError):
        try:
            others = int(os.getloadavg()[0])
        except (OSError, AttributeError):
            others = 0
    return max(1, cores - max(0, others))


def _others_running() -> int:
    before = _own_running()
    with open("/proc/loadavg") as f:
        running = int(f.read().split()[3].split("/")[0])
    return running - max(before, _own_running())


def _own_running() -> int:
    """This process's threads that are runnable now (state R in /proc/self/task/*/stat)."""
    n = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            pass
    return n


@contextlib.contextmanager
def held(n):
    """Run the block on ``n`` threads (None: as set), then back to ``get_num_threads()``;
    the fast setter, for the trainer's own changes inside a run."""
    if n is None:
        yield
        return
    before = get_num_threads()
    _set(n)
    try:
        yield
    finally:
        _set(before)
