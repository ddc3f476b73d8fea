"""No wait for the compiler (fastnn/auto/build.py): runs start on numpy while a child process
builds the compiled kernels on idle CPU time, then switch at a step boundary; the bench table's
flags for a busy machine."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn
from fastnn import background, kernels, reference
from fastnn.training import loop
from fastnn.auto import policy, thread_watch
from conftest import assert_runs_close, params_as, run_tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

# --- starting on numpy while the compiled route is built --------------------------------------


def _simulate_build(monkeypatch, ready_at, building):
    """``background``'s side simulated: nothing compiled is usable when the run starts, the
    build reports ready from the ``ready_at``-th time the trainer asks (at a block boundary),
    and ``building(times asked)`` says whether it still runs; blocks of one step, and the
    thread rules of a run large enough to adapt, on a quiet machine."""
    asked = {"n": 0}

    def ready_now(name, dtype, optimizers=True):
        asked["n"] += 1
        return asked["n"] >= ready_at

    monkeypatch.setattr(background, "enabled", lambda: True)
    monkeypatch.setattr(background, "usable", lambda name, dtype: False)
    monkeypatch.setattr(background, "building", lambda dtype: building(asked["n"]))
    monkeypatch.setattr(background, "ready_now", ready_now)
    monkeypatch.setattr(policy, "ADAPT_FLOPS", 0)
    monkeypatch.setattr(thread_watch, "_free_cores", lambda: os.cpu_count() or 1)
    monkeypatch.setattr(loop, "BLOCK_SECONDS", 0.0)


def test_a_run_switches_at_a_step_boundary_once_the_build_is_ready(monkeypatch):
    """The trainer's side, with the build simulated: the run starts on numpy (on the threads it
    would use anyway: the build runs on idle time only), goes on the primary route when it is
    ready, and its numbers equal the numpy loop's to rounding; ``schedule`` says from which step
    each ran."""
    _simulate_build(monkeypatch, ready_at=3, building=lambda asked: asked < 3)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 8)), rng.standard_normal((50, 3))
    p = fastnn.init_params(8, 7, 3, seed=1)
    res = fastnn.train(x, y, params=p, epochs=3, batch_size=10, lr=0.05, seed=4, momentum=0.5)
    kinds = [e[1] for e in res.schedule]
    assert kinds[0] == "numpy" and kinds[-1] == kernels.PRIMARY
    assert res.schedule[0][2] == fastnn.get_num_threads()
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
idle = session = None
if child:  # the child takes the idle class as its first act: give it a moment
    for _ in range(100):
        idle = os.sched_getscheduler(child.pid) == os.SCHED_IDLE
        if idle:
            break
        time.sleep(0.02)
    session = os.getsid(child.pid) == os.getsid(0)
print(json.dumps(dict(step=t3 - t2, train=t4 - t3, ran=r.ran, schedule=r.schedule,
                      child=child.pid if child else None, building=background.building("float64"),
                      idle=idle, session=session)))
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
    child compiles meanwhile, on idle time only, and it is gone when the parent exits."""
    first = _cold(tmp_path, "exit")[0]
    assert first["ran"] == "numpy" and first["schedule"][0][:2] == [0, "numpy"]
    assert first["step"] < 2.0 and first["train"] < 2.0  # a compile takes 3-10 s here
    assert first["child"] is not None and first["building"]
    # nobody feels it: Linux's idle class, in the parent's session (a session of its own is an
    # autogroup the scheduler shares the cores with equally, whatever its priority)
    assert first["idle"] and first["session"]
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
