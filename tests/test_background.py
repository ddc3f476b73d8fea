"""Never slow (issue 13): no wait for the compiler (fastnn/background.py), a run's thread count
chosen and watched from its own step times (threads.ThreadWatch), honest measurements."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn
from fastnn import autotune, background, kernels, reference, trainer
from fastnn.threads import ThreadWatch
from conftest import assert_runs_close, params_as, run_tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

# --- the thread watch -------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_watch_probes_one_thread_and_keeps_the_faster():
    w = ThreadWatch(2, clock=Clock())
    assert w.threads() == 2
    w.observe(2, 1.0)
    assert w.threads() == 1  # the one-thread probe
    w.observe(1, 0.5)
    assert w.threads() == 1 and w.current == 1
    w2 = ThreadWatch(2, clock=Clock())
    w2.observe(w2.threads(), 1.0)
    w2.observe(w2.threads(), 1.7)
    assert w2.current == 2 and w2.threads() == 2


def test_watch_falls_back_to_one_thread_when_the_machine_gets_busy_and_comes_back():
    clock = Clock()
    w = ThreadWatch(4, clock=clock)
    w.observe(w.threads(), 1.0)  # 4 threads
    w.observe(w.threads(), 3.0)  # 1 thread: slower, stay on 4
    assert w.threads() == 4
    w.observe(4, 1.1)
    assert w.threads() == 4  # 10% slower: noise
    w.observe(4, 2.5)  # 2.5x the best: busy
    assert w.threads() == 1
    w.observe(1, 2.0)
    clock.t += ThreadWatch.RETRY / 2
    assert w.threads() == 1  # too early to try again
    clock.t += ThreadWatch.RETRY
    assert w.threads() == 4  # a trial block
    w.observe(4, 2.4)  # still busy: no better than one thread
    assert w.threads() == 1
    clock.t += 2 * ThreadWatch.RETRY
    assert w.threads() == 4
    w.observe(4, 1.0)  # quiet again
    assert w.threads() == 4 and w.current == 4


def test_a_watch_started_on_the_free_cores_tries_all_after_a_while():
    clock = Clock()
    w = ThreadWatch(2, clock=clock, start=1)
    assert w.threads() == 1  # no probe at 2: the machine was busy when the run began
    w.observe(1, 1.0)
    assert w.threads() == 1
    clock.t += ThreadWatch.RETRY
    assert w.threads() == 2
    w.observe(2, 0.5)  # quiet again: all threads
    assert w.threads() == 2 and w.current == 2


def test_free_cores_counts_what_other_programs_leave():
    n = fastnn.threads.free_cores()
    assert 1 <= n <= (os.cpu_count() or 1)


def test_an_adaptive_run_on_a_busy_machine_starts_on_one_thread(monkeypatch):
    monkeypatch.setattr(trainer, "free_cores", lambda: 1)
    monkeypatch.setattr(trainer, "ADAPT_FLOPS", 0)
    monkeypatch.setattr(trainer, "BLOCK_SECONDS", 0.0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 2))
    res = fastnn.train(x, y, hidden=5, epochs=4, batch_size=10, lr=0.05, seed=2)
    assert res.schedule[0] == (0, res.ran, 1)
    assert fastnn.threads.get_num_threads() == fastnn.get_num_threads()
    import numba
    assert numba.get_num_threads() == fastnn.get_num_threads()  # the caller's count is back


def test_a_resumed_auto_run_keeps_its_thread_count(monkeypatch, tmp_path):
    """No adapting on resume: the run continues as the checkpoint's would have (bitwise)."""
    monkeypatch.setattr(trainer, "free_cores", lambda: 1)  # busy: a new run would start on 1
    monkeypatch.setattr(trainer, "ADAPT_FLOPS", 0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 2))
    kw = dict(hidden=5, epochs=4, batch_size=10, lr=0.05, seed=2, kernel="fused-wide")
    whole = fastnn.train(x, y, **kw)
    ck = tmp_path / "ck.npz"
    fastnn.train(x, y, **dict(kw, epochs=2), checkpoint=ck)
    resumed = fastnn.train(x, y, **dict(kw, kernel="auto"), resume=ck)
    assert [e[2] for e in resumed.schedule] == [fastnn.get_num_threads()]
    np.testing.assert_array_equal(resumed.losses, whole.losses)


def test_one_thread_never_changes():
    w = ThreadWatch(1)
    for t in (1.0, 100.0, 0.1):
        assert w.threads() == 1
        w.observe(1, t)


def test_an_adaptive_run_records_its_threads_and_equals_the_reference(monkeypatch):
    """kernel="auto" without threads=: its blocks probe all threads and one (the schedule says
    which ran when); the numbers equal the numpy loop's to rounding whatever ran."""
    monkeypatch.setattr(trainer, "BLOCK_SECONDS", 0.0)  # blocks of one step: many blocks
    monkeypatch.setattr(trainer, "ADAPT_FLOPS", 0)  # this tiny problem adapts too
    monkeypatch.setattr(trainer, "free_cores", lambda: os.cpu_count() or 1)  # as if quiet
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
    monkeypatch.setattr(trainer, "BLOCK_SECONDS", 0.0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 2))
    for kw in (dict(threads=1), dict(kernel="fused")):
        res = fastnn.train(x, y, hidden=5, epochs=4, batch_size=10, lr=0.05, seed=2, **kw)
        assert len(res.schedule) == 1


# --- starting on numpy while the compiled route is built --------------------------------------


def _simulate_build(monkeypatch, ready_at, building):
    """``background``'s side simulated: nothing compiled is usable when the run starts, the
    build reports ready from the ``ready_at``-th time the trainer asks (at a block boundary),
    and ``building(times asked)`` says whether it still runs; blocks of one step, and the
    thread rules of a run large enough to adapt (one thread while the build runs)."""
    asked = {"n": 0}

    def ready_now(name, dtype, optimizers=True):
        asked["n"] += 1
        return asked["n"] >= ready_at

    monkeypatch.setattr(background, "enabled", lambda: True)
    monkeypatch.setattr(background, "usable", lambda name, dtype: False)
    monkeypatch.setattr(background, "building", lambda dtype: building(asked["n"]))
    monkeypatch.setattr(background, "ready_now", ready_now)
    monkeypatch.setattr(trainer, "ADAPT_FLOPS", 0)
    monkeypatch.setattr(trainer, "BLOCK_SECONDS", 0.0)


def test_a_run_switches_at_a_step_boundary_once_the_build_is_ready(monkeypatch):
    """The trainer's side, with the build simulated: the run starts on numpy (one thread), goes
    on the primary route when it is ready, and its numbers equal the numpy loop's to rounding;
    ``schedule`` says from which step each ran."""
    _simulate_build(monkeypatch, ready_at=3, building=lambda asked: asked < 3)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 8)), rng.standard_normal((50, 3))
    p = fastnn.init_params(8, 7, 3, seed=1)
    res = fastnn.train(x, y, params=p, epochs=3, batch_size=10, lr=0.05, seed=4, momentum=0.5)
    kinds = [e[1] for e in res.schedule]
    assert kinds[0] == "numpy" and res.schedule[0][2] == 1 and kinds[-1] == kernels.PRIMARY
    switch = next(e[0] for e in res.schedule if e[1] == kernels.PRIMARY)
    assert 0 < switch < res.n_steps and res.ran == kernels.PRIMARY
    ref = params_as(p, np.float64)
    losses = reference.train(ref, x, y, optimizer=fastnn.optim.Optimizer("sgd", 0.05,
                                                                         momentum=0.5),
                             epochs=3, batch_size=10, seed=4)
    assert_runs_close(res, (losses, ref), run_tolerance(np.float64, 15, 10, 8, 7, 3))


def test_a_dual_run_starts_on_numpy_and_continues_in_the_dual_form(monkeypatch):
    _simulate_build(monkeypatch, ready_at=2, building=lambda asked: True)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 40)), rng.standard_normal((12, 2))
    p = fastnn.init_params(40, 6, 2, seed=1)
    res = fastnn.train(x, y, params=p, iters=300, lr=0.01, seed=4)
    assert [e[1] for e in res.schedule][::len(res.schedule) - 1] == ["numpy", "dual"]
    ref = params_as(p, np.float64)
    losses = reference.train(ref, x, y, optimizer=fastnn.optim.Optimizer("sgd", 0.01),
                             epochs=300, seed=4)
    # the dual form's steps add G @ A (length 12) to the step's dot products
    assert_runs_close(res, (losses, ref), run_tolerance(np.float64, 300, 12, 40, 6, 2, 12))


COLD = r'''
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np
import fastnn
from fastnn import background
t1 = time.perf_counter()
rng = np.random.default_rng(0)
x, y = rng.standard_normal((64, 1000)), rng.standard_normal((64, 10))
p = fastnn.init_params(1000, 100, 10, seed=0)
t2 = time.perf_counter()
fastnn.sgd_step(p, x, y, 1e-5)
t3 = time.perf_counter()
r = fastnn.train(x, y, hidden=100, iters=100, lr=1e-5, seed=1)
t4 = time.perf_counter()
child = background._children.get("float64")
print(json.dumps(dict(step=t3 - t2, train=t4 - t3, ran=r.ran, schedule=r.schedule,
                      child=child.pid if child else None, building=background.building("float64"))))
if sys.argv[1] == "wait":
    background.wait("float64", timeout=240)
    print(json.dumps(dict(ready=[fastnn.kernels.ready(t, "float64")
                                 for t in background.targets()])))
'''


def _cold(tmp_path, how):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               FASTNN_TUNE_DIR=str(tmp_path / "tune"), FASTNN_BACKGROUND_COMPILE="1")
    out = subprocess.run([sys.executable, "-c", COLD, how], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().split()[2] != "Z"


def test_empty_cache_first_calls_run_numpy_at_once_and_leave_no_process_behind(tmp_path):
    """A new process, empty caches: the first sgd_step and the seed's run take numpy (no
    compile: well under the issue's 0.3 s and 0.6 s targets, which a benchmark measures), a
    child compiles meanwhile, and it is gone when the parent exits."""
    first = _cold(tmp_path, "exit")[0]
    assert first["ran"] == "numpy" and first["schedule"][0][:2] == [0, "numpy"]
    assert first["step"] < 2.0 and first["train"] < 2.0  # a compile takes 3-10 s here
    assert first["child"] is not None and first["building"]
    deadline = time.monotonic() + 10
    while _alive(first["child"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(first["child"])


@pytest.mark.skipif(os.environ.get("FASTNN_SKIP_SLOW") == "1", reason="compiles from empty")
def test_the_background_build_fills_the_cache_for_the_next_process(tmp_path):
    lines = _cold(tmp_path, "wait")
    assert lines[1]["ready"] == [True, True]
    second = _cold(tmp_path, "exit")[0]  # the next process finds it all built
    assert second["ran"] == "dual" and second["child"] is None


# --- honest measurements ------------------------------------------------------------------------


def test_a_busy_measurement_is_kept_in_process_but_not_reused_from_disk(monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 200)), rng.standard_normal((300, 4))
    p = fastnn.init_params(200, 64, 4, seed=0)
    autotune.forget()

    def busy_measure(params, x, y, names=None, spreads=None, **kw):
        spreads.update({n: 3.0 for n in names})
        return {n: 1e-3 * (i + 1) for i, n in enumerate(names)}

    monkeypatch.setattr(autotune, "measure", busy_measure)
    first = autotune.choose(p, x, y)
    key = next(iter(autotune.remembered()))
    assert autotune.remembered()[key]["busy"]
    assert autotune.choose(p, x, y) == first  # this process keeps it
    autotune._memory.clear()  # a new process ...
    calls = []
    monkeypatch.setattr(autotune, "measure", lambda *a, **k: calls.append(1) or
                        busy_measure(*a, **k))
    autotune.choose(p, x, y)
    assert calls  # ... measures again
    autotune.forget()


def test_a_run_far_from_its_remembered_timing_drops_it():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 300)), rng.standard_normal((256, 3))
    p = fastnn.init_params(300, 64, 3, seed=0)
    autotune.forget()
    name = autotune.choose(p, x, y)
    key = next(iter(autotune.remembered()))
    us = autotune.remembered()[key]["us"][name]
    autotune.note_run(p, 256, name, fastnn.get_num_threads(), us * 1e-6 * 1.2)
    assert key in autotune.remembered()  # within the drift
    autotune.note_run(p, 256, name, fastnn.get_num_threads(), us * 1e-6 * 10)
    assert key not in autotune.remembered() and key not in autotune._memory


def test_bench_table_flags_busy_rows_and_names_winners():
    from fastnn.profiling.step_bench import format_table

    base = dict(shape_name="seed", dtype="float64", stage="step", gflops=1.0, pct_peak=1.0)
    rows = [dict(base, kernel="fused", us=10.0, us_min=9.0, us_max=11.0, x_vs_numpy=2.0,
                 spread=1.2),
            dict(base, kernel="tiled", us=20.0, us_min=10.5, us_max=60.0, x_vs_numpy=1.0,
                 spread=5.7)]
    text = format_table(rows)
    assert "5.70!" in text and "busy" in text
    assert "winner  seed float64 step: fused (2.00x numpy, 2.00x ahead of tiled" in text
    assert "overlap" in text
