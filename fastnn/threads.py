"""Thread control: one count for Numba's ``prange`` kernels and for every BLAS pool together.

fastnn never runs a parallel Numba kernel and a threaded BLAS call at the same time (``fused`` is
serial Numba code calling BLAS; ``naive`` and ``tiled`` are parallel Numba code without BLAS;
``chunked`` sets BLAS to one thread while its Numba threads run), so one number bounds the threads
a step uses.
"""
from __future__ import annotations

import contextlib
import numbers

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
    numba.set_num_threads(n)
    from threadpoolctl import threadpool_limits

    from .kernels.common import gemm  # noqa: F401  (loads the BLAS libraries, so all are limited)

    threadpool_limits(limits=n, user_api="blas")  # applies at once, stays until changed
    _threads = n


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
