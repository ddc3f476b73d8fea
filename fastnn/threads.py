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
    changes it between blocks of steps, ``ThreadWatch``).  ``get_num_threads()`` keeps
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


def free_cores() -> int:
    """The cores other programs leave free right now (at least 1): more threads than that
    wait on each other (``ThreadWatch``).  Linux's ``/proc/loadavg`` counts the threads
    runnable this instant; this process's own are taken off (its BLAS workers spin a while
    after a call).  Elsewhere the one-minute load average stands in.  ~1 ms."""
    cores = os.cpu_count() or 1
    try:
        others = min(_others_running() for _ in range(2))  # two looks: one may catch a worker
    except (OSError, ValueError, IndexError):             # of ours between its two counts
        try:
            others = int(os.getloadavg()[0])
        except (OSError, AttributeError):
            others = 0
    return max(1, cores - max(0, others))


def _others_running() -> int:
    with open("/proc/loadavg") as f:
        running = int(f.read().split()[3].split("/")[0])
    return running - _own_running()


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


class ThreadWatch:
    """A training run's thread count, chosen from its own step times and watched while it runs.

    On a quiet machine more threads are faster for large steps; on a busy one they can be many
    times slower than one: BLAS and OpenMP workers busy-wait for each other, and when the OS has
    given a worker's core to another program the rest spin until it comes back (measured here:
    100 seed steps 982 ms on 2 threads against 179 ms on one, with four busy processes on the 2
    cores).  So the run decides, block by block (the trainer's blocks are ~0.25 s of steps):

    1. the first timed block runs on ``n`` threads (all the run may use), the next on one: the
       faster one is the run's choice (one thread is a candidate, not a fallback);
    2. a block on ``n`` threads ``SLOWER`` times slower a step than the best seen there means the
       machine got busy: one thread from the next block on;
    3. on one thread, every ``RETRY`` seconds one block tries ``n`` again, and the run goes
       back to it when that block is faster.

    A run that starts while other programs already hold cores (``free_cores()``) starts on
    the free ones, as in 3 when that is one, ``n`` tried after ``RETRY`` seconds.  ``threads()`` is the count for the next
    block, ``observe`` takes a block's seconds per step.  With ``n == 1`` it never changes.
    """

    SLOWER = 2.0
    RETRY = 2.0

    def __init__(self, n: int, clock=None, start=None):
        import time

        self.n = n
        self.clock = clock or time.monotonic
        self.best: dict[int, float] = {}
        self.current = n if start is None else start
        self.trying = None  # the count of the next block when it is a trial
        self.recent = float("inf")  # seconds a step in the last block at ``current``
        self.last_trial = self.clock()
        self.probed = n == 1 or self.current < n

    def threads(self) -> int:
        if self.n == 1:
            return 1
        if not self.probed and self.n in self.best:
            self.trying = 1  # phase 1: the one-thread block
        elif self.trying is None and self.current < self.n and \
                self.clock() - self.last_trial >= self.RETRY:
            self.trying = self.n
        return self.trying or self.current

    def observe(self, threads: int, per_step: float) -> None:
        if self.n == 1:
            return
        best = self.best.get(threads)
        self.best[threads] = per_step if best is None else min(best, per_step)
        if self.trying is not None:  # a trial block: keep the faster
            if threads == 1 and not self.probed:
                self.probed = True
                self.current = 1 if per_step < self.best[self.n] else self.n
            elif threads == self.n:
                self.last_trial = self.clock()
                if per_step < 0.9 * self.recent:
                    self.current = self.n
            self.trying = None
        elif threads == self.n and best is not None and per_step > self.SLOWER * best:
            self.current = 1  # the machine got busy
            self.last_trial = self.clock()
        if threads == self.current:
            self.recent = per_step
