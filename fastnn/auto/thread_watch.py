"""How many threads an ``auto`` training run uses: decided from its own step times, remembered per
problem, and watched for load.

On a quiet machine all cores are faster for all but the smallest steps (measured: 1.03-1.71x
for fused-wide from 2.6 to 210 MFLOP a step), though not always (tiled at 128x784x128x10: one
thread 1.1x faster); on a busy one all cores can be many times slower than one: BLAS and OpenMP
workers busy-wait for each other, and when the OS has given a worker's core to another program
the rest spin until it comes back (100 seed steps 982 ms on 2 threads against 179 ms on one, with
four busy processes on the 2 cores).  So, for each (shape, dtype, variant):

1. **Decide once, from enough evidence.**  After a warm-up block (the one right after the first
   step of a problem new to the process still pays for caches, page faults and the code being
   loaded), short blocks alternate all threads and one,
   ``policy.PROBE_PAIRS`` of each; one thread is kept only when its median step beats all
   threads' by ``policy.ONE_THREAD_MARGIN``.  The samples carry over from one run to the next in
   the process, so short runs finish the probe together, and the decision is remembered in
   memory and in ``tune.json`` (not when the samples spread like a busy machine's): later runs,
   and later processes, start on it without probing.
2. **Watch for load, act on a signal.**  A block ``policy.SLOWER`` times slower a step than the
   best seen at its count is a sign; with other programs' threads runnable now
   (``threads.free_cores``) the run goes to the free cores at once, else after
   ``policy.STRIKES`` such blocks in a row.  A run that starts while other programs hold cores
   starts on the free ones.  One block of noise never changes anything.
3. **Come back.**  On the free cores, every ``policy.RETRY`` seconds one short block tries the
   decided count again (when ``free_cores`` shows it free), and the run returns to it when that
   block is no slower than ``policy.SLOWER`` times its best.

``next_block()`` gives the count (and a shorter block length while probing or trying) for the
next block, ``observe`` takes that block's seconds per step.  With ``n == 1`` nothing changes.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from ..threads import free_cores
from . import build, policy, store


class Decision:
    """What is known for one (shape, dtype, variant): the decided count (None while probing),
    the probe's samples per count, the best seconds per step seen per count."""

    __slots__ = ("threads", "samples", "best", "warmed")

    def __init__(self, threads=None, best=None):
        self.threads = threads
        self.samples: dict[int, list] = {}
        self.best: dict[int, float] = dict(best or {})
        self.warmed = False  # a run of this process has had its warm-up block for this problem


_lock = threading.Lock()
_decisions: dict[str, Decision] = {}
# The free cores as last seen, and when: by a look (threads.free_cores) or by a run's own
# blocks.  A run that starts within policy.LOOK_MEMORY seconds of that trusts it instead of
# looking again (a look costs 0.05-0.3 ms on a quiet machine and ~1.3 ms on a busy one, where
# the seed's whole run takes 6 ms and 19 ms).
_seen = (-1e9, 0)


def key(m, n, h, k, dtype, variant, threads) -> str:
    """The decision's key: the step's shape and dtype, the variant, the threads the run may use."""
    return f"{m}x{n}x{h}x{k}/{np.dtype(dtype).name}/{variant}/t{threads}"


def decision(name: str) -> Decision:
    """The decision for key ``name``: this process's, else the one remembered on disk, else a new
    one (to probe)."""
    with _lock:
        d = _decisions.get(name)
        if d is None:
            entry = store.load("threads").get(name)
            d = Decision()
            if isinstance(entry, dict) and isinstance(entry.get("threads"), int):
                d = Decision(entry["threads"],
                             {int(c): us * 1e-6 for c, us in entry.get("us", {}).items()})
            _decisions[name] = d
        return d


def forget() -> None:
    """Drop every decision held in this process (``store.clear`` drops the disk's)."""
    with _lock:
        _decisions.clear()


def _decide(name, d: Decision, n: int) -> None:
    """The probe's verdict: one thread only when its median step beats ``n`` threads' by the
    margin; remembered on disk unless the samples spread like a busy machine's."""
    med = {c: float(np.median(d.samples[c])) for c in (1, n)}
    d.threads = 1 if med[1] * policy.ONE_THREAD_MARGIN < med[n] else n
    spread = max(max(v) / min(v) for v in d.samples.values())
    if name is not None and spread <= policy.BUSY_SPREAD:
        store.put("threads", name, {"threads": d.threads,
                                    "us": {str(c): t * 1e6 for c, t in med.items()}})


def _free_cores() -> int:
    """``threads.free_cores``, our own background builds not counted (idle class: they take no
    core from anyone)."""
    return free_cores(own_children=build.running())


class ThreadWatch:
    """The thread count of each block of one run (see the module docstring).  ``n``: all the
    threads the run may use; ``probe``: whether its steps are large enough to probe one thread
    against all (``policy.ADAPT_FLOPS``; smaller ones keep all, and are only watched for
    load); ``clock``, ``free``: injectable for tests."""

    def __init__(self, n: int, *, probe=True, clock=None, free=None):
        self.n = n
        self.probe = probe
        self.clock = clock or time.monotonic
        self.free = free or _free_cores
        self.name = None
        self.decision = Decision()
        self.warm = False
        self.trial = None  # the count of the pending trial block, when one is pending
        self.strikes = 0
        self.last_trial = self.clock()
        self.loaded = False  # running on fewer threads than decided because of load
        self.current = n
        if n > 1:
            free = self._free_at_start()
            if free < n:  # other programs hold cores: start on the free ones
                self.current, self.loaded = free, True

    def _free_at_start(self) -> int:
        global _seen
        when, free = _seen
        if self.clock() - when < policy.LOOK_MEMORY:
            return free
        free = self.free()
        _seen = (self.clock(), free)
        return free

    def start_threads(self) -> int:
        """The count the run starts on (its set-up included)."""
        return self.current

    def attach(self, name) -> None:
        """The next blocks run the problem and variant of key ``name`` (``key()``): its decision
        applies from now on, after a warm-up block."""
        self.name = name
        if not self.probe:  # all threads, watched for load only
            self.decision = Decision(self.n)
        else:
            self.decision = decision(name) if name is not None else Decision()
        # the first block of a problem new to this process warms up (caches, page faults, the
        # code loaded): not a sample; later runs of it count from their first block
        self.warm, self.trial, self.strikes = self.decision.warmed, None, 0
        if not self.loaded:
            self.current = self.target()

    def target(self) -> int:
        """The count decided for this problem on a quiet machine (all while undecided)."""
        return self.decision.threads or self.n

    def _probing(self) -> bool:
        return self.n > 1 and self.decision.threads is None and self.warm and not self.loaded

    def next_block(self):
        """``(threads, seconds)`` for the next block: its thread count, and a shorter block length
        while probing or trying (None: the trainer's usual length)."""
        if self.n == 1:
            return 1, None
        if self.loaded and self.trial is None and self.clock() - self.last_trial >= policy.RETRY:
            self.last_trial = self.clock()
            if self.free() >= self.target():
                self.trial = self.target()
        if self.trial is not None:
            return self.trial, policy.PROBE_BLOCK_SECONDS
        if self._probing():
            s = self.decision.samples
            count = 1 if len(s.get(1, ())) < len(s.get(self.n, ())) else self.n
            return count, policy.PROBE_BLOCK_SECONDS
        return self.current, None

    def observe(self, threads: int, per_step: float, steps: int = policy.PROBE_MIN_STEPS):
        """A block of ``steps`` steps on ``threads`` threads took ``per_step`` seconds a step."""
        if self.n == 1:
            return
        if not self.warm:
            self.warm = self.decision.warmed = True
            return
        d = self.decision
        best = d.best.get(threads)
        d.best[threads] = per_step if best is None else min(best, per_step)
        if self.trial is not None:  # the trial block: back to the decided count if not slow
            self.trial = None
            if best is None or per_step <= policy.SLOWER * best:
                self.loaded, self.current, self.strikes = False, threads, 0
            return
        if self.decision.threads is None and not self.loaded:  # the probe
            if steps >= policy.PROBE_MIN_STEPS:
                d.samples.setdefault(threads, []).append(per_step)
            if all(len(d.samples.get(c, ())) >= policy.PROBE_PAIRS for c in (1, self.n)):
                _decide(self.name, d, self.n)
                self.current = d.threads
            return
        if self.loaded or best is None or threads != self.current:
            return
        if per_step <= policy.SLOWER * best:
            self.strikes = 0
            return
        self.strikes += 1
        free = self.free()
        if free < threads or self.strikes >= policy.STRIKES:
            self.current = free if free < threads else max(1, threads // 2)
            self.loaded, self.strikes = True, 0
            self.last_trial = self.clock()

    def finish(self, per_step=None) -> None:
        """The run ended (``per_step``: its last block's seconds a step): what it saw of the
        load is what the next run starts from (``_seen``).  A run whose steps took far longer
        than the best seen (a machine that got busy since the last look) makes the next one
        look."""
        global _seen
        best = self.decision.best.get(self.current)
        if (self.strikes or per_step is not None and best is not None
                and per_step > policy.SLOWER ** 2 * best):
            _seen = (-1e9, 0)
        elif self.warm:  # its blocks were watched: as good as a look
            _seen = (self.clock(), self.current if self.loaded else self.n)
