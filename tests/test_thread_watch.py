"""How many threads an auto run uses (fastnn/auto/thread_watch.py): decided from several
alternating blocks with a margin, remembered per problem, changed only on a signal of load, and
the runs it drives equal the reference whatever ran."""
import os

import numpy as np
import pytest

import fastnn
from fastnn import reference
from fastnn.training import loop
from fastnn.auto import policy, store, thread_watch
from fastnn.auto.thread_watch import ThreadWatch
from conftest import assert_runs_close, params_as, run_tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Free:
    """``free_cores`` as a test sets it."""

    def __init__(self, n):
        self.n = n

    def __call__(self):
        return self.n


@pytest.fixture(autouse=True)
def _no_decisions(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_TUNE_DIR", str(tmp_path))
    thread_watch.forget()
    yield
    thread_watch.forget()


def _watch(n=2, free=None, name="k", clock=None):
    w = ThreadWatch(n, clock=clock or Clock(), free=free or Free(n))
    w.attach(name)
    return w


def _probe(w, seconds):
    """Run the probe with ``seconds[count]`` a step; returns the counts the blocks ran on."""
    counts = []
    w.observe(*w.next_block()[:1], 1.0)  # the warm-up block: not a sample
    while w.decision.threads is None:
        count, block = w.next_block()
        assert block == policy.PROBE_BLOCK_SECONDS  # probe blocks are short
        counts.append(count)
        w.observe(count, seconds[count], 10)
    return counts


def test_the_probe_alternates_several_blocks_and_one_thread_needs_a_margin():
    w = _watch()
    counts = _probe(w, {2: 1.0, 1: 0.95})  # one thread 5% faster: within the margin
    assert counts == [2, 1] * policy.PROBE_PAIRS
    assert w.decision.threads == 2 and w.next_block() == (2, None)
    w1 = _watch(name="other")
    _probe(w1, {2: 1.0, 1: 0.8})  # 20% faster: one thread wins
    assert w1.decision.threads == 1 and w1.next_block() == (1, None)


def test_the_block_after_the_first_step_is_never_a_sample():
    w = _watch()
    assert w.next_block() == (2, None)  # warming up: the usual block, all threads
    w.observe(2, 50.0)  # a slow warm-up (caches, page faults): ignored
    assert w.decision.samples == {}
    assert w.next_block()[1] == policy.PROBE_BLOCK_SECONDS


def test_only_the_first_run_of_a_problem_in_a_process_warms_up():
    w = _watch(name="p")
    assert w.next_block() == (2, None)
    w.observe(2, 9.0)  # the warm-up: not a sample
    again = _watch(name="p")  # the next run of the same problem: warm already
    assert again.next_block()[1] == policy.PROBE_BLOCK_SECONDS
    again.observe(2, 1.0, 5)
    assert again.decision.samples == {2: [1.0]}


def test_short_runs_finish_the_probe_together_and_the_decision_is_remembered():
    for run in range(policy.PROBE_PAIRS):  # each run sees two probe blocks
        w = _watch(name="shape/float32/fused-wide/t2")
        if run == 0:
            w.observe(2, 1.0)  # the warm-up
        for _ in range(2):
            count, _ = w.next_block()
            w.observe(count, 1.0 if count == 2 else 1.6, 5)
    assert w.decision.threads == 2
    entry = store.load("threads")["shape/float32/fused-wide/t2"]
    assert entry["threads"] == 2 and set(entry["us"]) == {"1", "2"}
    thread_watch.forget()  # a new process: the decision comes from disk, no probe
    w = _watch(name="shape/float32/fused-wide/t2")
    assert w.next_block() == (2, None)
    w.observe(2, 1.0)
    assert w.next_block() == (2, None)


def test_a_probe_disturbed_by_load_is_not_kept_on_disk():
    w = _watch(name="noisy")
    w.observe(2, 1.0)
    times = iter([1.0, 1.6, 3.0, 1.6, 1.0, 1.6])  # a block of 3x: a busy moment
    while w.decision.threads is None:
        count, _ = w.next_block()
        w.observe(count, next(times), 5)
    assert w.decision.threads == 2 and "noisy" not in store.load("threads")


def test_one_slow_block_changes_nothing_a_signal_of_load_does():
    free = Free(2)
    w = _watch(free=free)
    _probe(w, {2: 1.0, 1: 2.0})
    w.observe(2, 1.6)  # slower than SLOWER x best, nothing else runnable: a strike
    assert w.next_block() == (2, None)
    w.observe(2, 1.0)  # back to normal: the strike is forgotten
    free.n = 1  # other programs' threads runnable: at once to the free cores
    w.observe(2, 1.6)
    assert w.next_block() == (1, None) and w.loaded


def test_slow_blocks_in_a_row_mean_load_even_without_runnable_threads():
    w = _watch(n=4, free=Free(4))
    _probe(w, {4: 1.0, 1: 3.0})
    for _ in range(policy.STRIKES):
        w.observe(4, 2.0)
    assert w.loaded and w.next_block() == (2, None)  # half the threads


def test_on_the_free_cores_it_tries_again_and_comes_back():
    clock, free = Clock(), Free(2)
    w = _watch(free=free, clock=clock)
    _probe(w, {2: 1.0, 1: 2.0})
    free.n = 1
    w.observe(2, 2.5)
    assert w.next_block() == (1, None)
    clock.t += policy.RETRY / 2
    assert w.next_block() == (1, None)  # too early
    clock.t += policy.RETRY
    assert w.next_block() == (1, None)  # time to try, but the cores are still taken
    free.n = 2
    clock.t += policy.RETRY
    assert w.next_block() == (2, policy.PROBE_BLOCK_SECONDS)  # a short trial block
    w.observe(2, 2.4)  # still slow: stays on the free cores
    assert w.next_block() == (1, None)
    clock.t += policy.RETRY
    assert w.next_block() == (2, policy.PROBE_BLOCK_SECONDS)
    w.observe(2, 1.2)  # quiet again
    assert not w.loaded and w.next_block() == (2, None)


def test_a_run_that_starts_on_a_busy_machine_starts_on_the_free_cores():
    free = Free(1)
    w = ThreadWatch(2, clock=Clock(), free=free)
    assert w.start_threads() == 1 and w.loaded
    w.attach("k")
    assert w.next_block() == (1, None)
    w.observe(1, 1.0)
    assert w.next_block() == (1, None)


def test_a_look_at_the_load_serves_the_runs_that_start_soon_after():
    """Short runs in a row do not each pay for a look (0.05-1.3 ms): within LOOK_MEMORY of a
    look, or of a run whose blocks were watched, the next run starts from what was seen."""
    clock, free = Clock(), Free(1)
    ThreadWatch(2, clock=clock, free=free)  # looks: busy
    free.n = 2
    assert ThreadWatch(2, clock=clock, free=free).start_threads() == 1  # seen just now
    clock.t += policy.LOOK_MEMORY
    w = ThreadWatch(2, clock=clock, free=free)
    assert w.start_threads() == 2  # a new look: quiet
    free.n = 1
    w.attach("k")
    w.observe(2, 1.0)  # the warm-up
    w.observe(*w.next_block()[:1], 1.0, 5)
    w.finish(1.0)  # a watched run that saw no load: as good as a look
    assert ThreadWatch(2, clock=clock, free=free).start_threads() == 2
    w.finish(10.0)  # a run far slower than its best: the next one looks
    assert ThreadWatch(2, clock=clock, free=free).start_threads() == 1


def test_one_thread_never_changes():
    w = _watch(n=1, free=Free(1))
    for t in (1.0, 100.0, 0.1):
        assert w.next_block() == (1, None)
        w.observe(1, t)


def test_free_cores_counts_what_other_programs_leave():
    n = fastnn.threads.free_cores()
    assert 1 <= n <= (os.cpu_count() or 1)


# --- the runs it drives -------------------------------------------------------------------------


def test_an_adaptive_run_records_its_threads_and_equals_the_reference(monkeypatch):
    """kernel="auto" without threads=: its blocks probe all threads and one (the schedule says
    which ran when); the numbers equal the numpy loop's to rounding whatever ran."""
    monkeypatch.setattr(loop, "BLOCK_SECONDS", 0.0)  # blocks of one step: many blocks
    monkeypatch.setattr(policy, "ADAPT_FLOPS", 0)  # this tiny problem adapts too
    monkeypatch.setattr(policy, "PROBE_MIN_STEPS", 1)
    monkeypatch.setattr(thread_watch, "_free_cores", lambda: os.cpu_count() or 1)  # quiet
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 2))
    p = fastnn.init_params(6, 5, 2, seed=1)
    res = fastnn.train(x, y, params=p, epochs=8, batch_size=10, lr=0.05, seed=2)
    threads = [e[2] for e in res.schedule]
    assert res.schedule[0][0] == 0 and res.schedule[0][1] == res.ran
    if fastnn.get_num_threads() > 1:
        assert 1 in threads and fastnn.get_num_threads() in threads
    assert fastnn.get_num_threads() == fastnn.threads.get_num_threads()  # restored
    ref = params_as(p, np.float64)
    losses = reference.train(ref, x, y, optimizer=fastnn.optim.Optimizer("sgd", 0.05),
                             epochs=8, batch_size=10, seed=2)
    assert_runs_close(res, (losses, ref), run_tolerance(np.float64, 32, 10, 6, 5, 2))


def test_a_pinned_run_never_changes_threads(monkeypatch):
    monkeypatch.setattr(loop, "BLOCK_SECONDS", 0.0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 2))
    for kw in (dict(threads=1), dict(kernel="fused")):
        res = fastnn.train(x, y, hidden=5, epochs=4, batch_size=10, lr=0.05, seed=2, **kw)
        assert len(res.schedule) == 1


def test_an_adaptive_run_on_a_busy_machine_starts_on_one_thread(monkeypatch):
    monkeypatch.setattr(thread_watch, "_free_cores", lambda: 1)
    monkeypatch.setattr(policy, "ADAPT_FLOPS", 0)
    monkeypatch.setattr(loop, "BLOCK_SECONDS", 0.0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 2))
    res = fastnn.train(x, y, hidden=5, epochs=4, batch_size=10, lr=0.05, seed=2)
    assert res.schedule[0] == (0, res.ran, 1)
    assert fastnn.threads.get_num_threads() == fastnn.get_num_threads()
    import numba
    assert numba.get_num_threads() == fastnn.get_num_threads()  # the caller's count is back


def test_a_dual_run_does_not_adapt_its_tiny_steps(monkeypatch):
    """The seed's experiment runs in the dual form, whose step (G[b] @ A, 0.8 MFLOP) is under
    ADAPT_FLOPS though the primal step it replaces is not: no probe in a 6 ms run."""
    # a quiet machine (what this test is about); a loaded one would start the run on fewer
    monkeypatch.setattr(thread_watch, "_free_cores", lambda: fastnn.get_num_threads())
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 1000)), rng.standard_normal((64, 10))
    res = fastnn.train(x, y, hidden=100, iters=100, lr=1e-5, seed=1)
    assert res.ran == "dual" and res.schedule == [(0, "dual", fastnn.get_num_threads())]


def test_a_resumed_auto_run_keeps_its_thread_count(monkeypatch, tmp_path):
    """No adapting on resume: the run continues as the checkpoint's would have (bitwise)."""
    monkeypatch.setattr(thread_watch, "_free_cores", lambda: 1)  # busy: a new run starts on 1
    monkeypatch.setattr(policy, "ADAPT_FLOPS", 0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 2))
    kw = dict(hidden=5, epochs=4, batch_size=10, lr=0.05, seed=2, kernel="fused-wide")
    whole = fastnn.train(x, y, **kw)
    ck = tmp_path / "ck.npz"
    fastnn.train(x, y, **dict(kw, epochs=2), checkpoint=ck)
    resumed = fastnn.train(x, y, **dict(kw, kernel="auto"), resume=ck)
    assert [e[2] for e in resumed.schedule] == [fastnn.get_num_threads()]
    np.testing.assert_array_equal(resumed.losses, whole.losses)
