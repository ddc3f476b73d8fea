"""Numba settings and thread control, in one place.

Every kernel is compiled with ``JIT_OPTIONS`` (serial kernels) or ``PARALLEL_OPTIONS`` (``prange``
kernels).  Environment variables, read once at import:

``FASTNN_CACHE``     ``0`` turns Numba's on-disk cache off (default on).
``NUMBA_CACHE_DIR``  where the cache goes (default ``~/.cache/fastnn/numba``), in a subfolder
                     named after a hash of the kernels' sources (see ``kernel_cache_dir``).
``FASTNN_FASTMATH``  ``0`` compiles strict IEEE code (default on, see below).

Fastmath: we allow reassociation and contraction (so reductions vectorise and multiply-adds become
FMAs) but NOT ``nnan``/``ninf``: with those LLVM may assume there are no NaNs and delete the checks
that let training detect a diverging loss.  The result of a given binary is still deterministic:
reassociation is decided at compile time, not at run time.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import numbers
import os

import numba

CACHE = os.environ.get("FASTNN_CACHE", "1") != "0"
FASTMATH = (
    {"nsz", "arcp", "contract", "afn", "reassoc"}
    if os.environ.get("FASTNN_FASTMATH", "1") != "0"
    else False
)
JIT_OPTIONS = dict(cache=CACHE, fastmath=FASTMATH, nogil=True, error_model="numpy")
PARALLEL_OPTIONS = dict(JIT_OPTIONS, parallel=True)



def _kernel_source_hash() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha1()
    for path in sorted(glob.glob(os.path.join(here, "kernels", "*.py"))) + [__file__]:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


def kernel_cache_dir() -> str:
    """The folder of fastnn's compiled kernels: ``<base>/fastnn-<hash of the kernel sources>``.

    Numba's cache checks the timestamp of the file that defines a function, not of the files of
    the functions it calls and inlines: after an edit to ``blas.py`` a cached ``fused.step`` would
    still run the old ``gemm``.  Naming the folder after all kernel sources makes any edit start
    from an empty cache.
    """
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "fastnn", "numba")
    return os.path.join(base, "fastnn-" + _kernel_source_hash())


@contextlib.contextmanager
def kernel_cache():
    """Point Numba's cache at ``kernel_cache_dir()`` while the kernel modules are defined (the
    cache locator is fixed when a function is decorated), then restore the user's setting."""
    old = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = kernel_cache_dir()
    try:
        yield
    finally:
        numba.config.CACHE_DIR = old


_threads = None


def max_threads() -> int:
    """The most threads Numba can run here (``NUMBA_NUM_THREADS``, by default the core count)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for both Numba's ``prange`` kernels and BLAS.

    fastnn never runs a parallel Numba kernel and a threaded BLAS call at the same time (the ``fused``
    kernel is serial Numba code calling BLAS; ``naive`` is parallel Numba code without BLAS), so one
    number bounds the threads of a step.  ``n`` is clipped to ``max_threads()``.
    """
    global _threads
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"threads: expected a positive integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"threads: expected a positive integer, got {n}")
    n = min(n, max_threads())
    numba.set_num_threads(n)
    from threadpoolctl import threadpool_limits

    from .kernels import blas  # noqa: F401  (load scipy's BLAS so its pool is limited too)

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
