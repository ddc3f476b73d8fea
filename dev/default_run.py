"""The default run against the best run: what a user gets from ``fastnn.train`` with no
``kernel=`` and no ``threads=``, measured beside the same run pinned.  One mode each; run with
nothing else on the machine (a test suite or another benchmark beside it spoils the figures).

    python dev/default_run.py quiet [WORKLOAD ...]   defaults against the same run pinned to the
                                                     variant it ran and all cores (rounds in every
                                                     order, medians, the schedules the runs
                                                     chose); the epoch also against the careful
                                                     numpy epoch
    python dev/default_run.py busy seed|digits HOGS  defaults against threads=1 with HOGS busy
                                                     Python processes beside (4: two per core)
    python dev/default_run.py build                  a new process with empty caches: its own
                                                     numpy work while the background build runs,
                                                     against the same work after it
    python dev/default_run.py alternate [KERNEL]     blocks of fastnn steps alternating with numpy
                                                     matmuls, each side against itself alone, in
                                                     both import orders (numpy's BLAS first, and
                                                     fastnn's first)
    python dev/default_run.py cold                   new processes with empty caches: import, the
                                                     first sgd_step, the seed's 100-step train,
                                                     and the careful numpy loop's

Workloads (``quiet``): ``epoch`` (8192x784 float32, hidden 512, batches of 128, softmax, SGD),
``adam`` (4096x784 float32, hidden 800, Adam, softmax), ``momentum`` (2048x256 float64, hidden
256, momentum), ``seed`` (the seed's experiment, 100 full-batch steps).  Figures measured with it
are in README ("Busy machines and the first run").
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROUNDS = 7
HOGS = "while True: pass"


def workload(name):
    """``(x, y, train keyword arguments)`` of a named workload."""
    rng = np.random.default_rng(0)
    if name == "seed":
        x, y = rng.standard_normal((64, 1000)), rng.standard_normal((64, 10))
        return x, y, dict(hidden=100, iters=100, lr=1e-5, seed=1)
    if name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = (x[:1437] / 16.0).astype(np.float32)  # the 80% a train/test split keeps
        return x, y[:1437], dict(hidden=100, epochs=3, batch_size=64, optimizer="adam", lr=1e-3,
                                 loss="softmax", dtype="float32", seed=1)
    m, n, h, dt, kw = {
        "epoch": (8192, 784, 512, np.float32, dict(lr=0.01)),
        "adam": (4096, 784, 800, np.float32, dict(optimizer="adam", lr=1e-3)),
        "momentum": (2048, 256, 256, np.float64, dict(momentum=0.9, lr=0.01)),
    }[name]
    x = rng.standard_normal((m, n)).astype(dt)
    labels = rng.integers(0, 10, m)
    batch = 128
    return x, labels, dict(hidden=h, epochs=1, batch_size=batch, loss="softmax", seed=1, **kw)


def _timed(f):
    began = time.perf_counter()
    out = f()
    return time.perf_counter() - began, out


def quiet(names) -> None:
    # auto's remembered choices start empty (a user's first runs); the kernels are built first
    # (``fastnn build``), so that what is timed is training, not the compiler
    os.environ["FASTNN_TUNE_DIR"] = tempfile.mkdtemp(prefix="fastnn-default-run-")
    subprocess.run([sys.executable, "-m", "fastnn", "build", "--dtype", "float32,float64"],
                   check=True, stdout=subprocess.DEVNULL)
    import fastnn
    from fastnn.profiling.timing import SETTLE
    from fastnn.profiling.train_bench import NumpyEpoch

    cores = fastnn.threads.max_threads()
    print(f"machine: {fastnn.machine.cpu_name()}, {fastnn.machine.simd_description()}; "
          f"BLAS {fastnn.kernels.common.gemm.BACKEND_NAME}; {cores} threads")
    for name in names or ("epoch", "adam", "momentum", "seed"):
        x, y, kw = workload(name)
        first = fastnn.train(x, y, **kw)  # compiled code loaded, auto's choice made
        ran = first.ran
        sides = {"default": lambda: fastnn.train(x, y, **kw),
                 "pinned": lambda: fastnn.train(x, y, kernel=ran, threads=cores, **kw)}
        if name == "epoch":
            params = fastnn.init_params(x.shape[1], kw["hidden"], 10, dtype=x.dtype, seed=1)
            base = NumpyEpoch(x, y, params, kw["lr"], kw["batch_size"])
            sides["numpy"] = lambda: base.epoch()
        times = {side: [] for side in sides}
        schedules = []
        orders = list(itertools.permutations(sides))  # every side in every position alike
        for r in range(ROUNDS * len(orders) // 2):
            for side in orders[r % len(orders)]:
                time.sleep(SETTLE)
                t, res = _timed(sides[side])
                times[side].append(t)
                if side == "default":
                    schedules.append(res.schedule)
        med = {side: float(np.median(t)) * 1e3 for side, t in times.items()}
        line = (f"{name}: default {med['default']:.1f} ms, pinned ({ran}, {cores} threads) "
                f"{med['pinned']:.1f} ms: {med['default'] / med['pinned']:.2f}x")
        if "numpy" in med:
            line += (f"; careful numpy epoch {med['numpy']:.1f} ms: default "
                     f"{med['numpy'] / med['default']:.2f}x numpy, pinned "
                     f"{med['numpy'] / med['pinned']:.2f}x")
        print(line)
        print(f"    first run's schedule {first.schedule}; the rounds': "
              f"{sorted(set(map(str, schedules)))}")


def busy(which: str, hogs: int) -> None:
    import fastnn

    x, y, kw = workload(which)

    def run(threads):
        return _timed(lambda: fastnn.train(x, y, threads=threads, **kw))

    run(None), run(1)  # compiled code loaded, auto's choice made
    procs = [subprocess.Popen([sys.executable, "-c", HOGS]) for _ in range(hogs)]
    time.sleep(1.0)
    times = {None: [], 1: []}
    try:
        for r in range(9):
            for threads in ((None, 1) if r % 2 == 0 else (1, None)):  # paired, order alternated
                t, res = run(threads)
                times[threads].append(t)
                if threads is None:
                    schedule = res.schedule
    finally:
        for p in procs:
            p.kill()
    d, o = np.median(times[None]) * 1e3, np.median(times[1]) * 1e3
    print(f"{which}, {hogs} busy processes: defaults {d:.1f} ms, threads=1 {o:.1f} ms: "
          f"{d / o:.2f}x (schedule of the last default run: {schedule})")


BUILD = r'''
import sys, time
import numpy as np
import fastnn
from fastnn import background
rng = np.random.default_rng(0)
a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
x, y = rng.standard_normal((64, 1000)), rng.standard_normal((64, 10))

def rate(seconds):
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        a @ b
        n += 1
    return n / (time.perf_counter() - began)

def numpy_loop():
    from fastnn.profiling.step_bench import NumpyStep
    p = fastnn.init_params(1000, 100, 10, seed=0)
    s = NumpyStep(x, y, (p.w1, p.b1, p.w2, p.b2), 1e-5)
    began = time.perf_counter()
    for _ in range(100):
        s.step()
    return time.perf_counter() - began

res = fastnn.train(x, y, hidden=100, iters=100, lr=1e-5, seed=1)  # starts the build
during = [rate(0.5) for _ in range(4)] if background.building(np.float64) else []
loop_during = numpy_loop() if background.building(np.float64) else float("nan")
still = background.building(np.float64)
background.wait(np.float64)
after = [rate(0.5) for _ in range(4)]
loop_after = numpy_loop()
print(f"{np.median(during) if during else float('nan'):.0f} {np.median(after):.0f} "
      f"{loop_during:.4f} {loop_after:.4f} {int(still)} {res.schedule}")
'''


def build() -> None:
    """The parent's numpy work while the background build runs, against the same after it."""
    for trial in range(3):
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, NUMBA_CACHE_DIR=d + "/numba", FASTNN_TUNE_DIR=d + "/tune")
            out = subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True,
                                 text=True, check=True).stdout.split(maxsplit=5)
        during, after, loop_d, loop_a, still, schedule = out
        print(f"trial {trial}: 256^2 float64 matmuls {during}/s during the build, {after}/s "
              f"after ({float(after) / float(during):.2f}x); numpy 100-step loop "
              f"{float(loop_d) * 1e3:.0f} ms during, {float(loop_a) * 1e3:.0f} ms after "
              f"({float(loop_d) / float(loop_a):.2f}x; build still running at the end: "
              f"{bool(int(still))}); the train's schedule {schedule.strip()}")


ALTERNATE = r'''
import sys, time
import numpy as np
first = sys.argv[2]
if first == "fastnn":
    import fastnn
    fastnn.kernels.common.gemm  # fastnn's BLAS loaded first
    import numpy as np
else:
    np.ones((64, 64)) @ np.ones((64, 64))  # numpy's BLAS loaded (and its pool started) first
    import fastnn
kernel = sys.argv[1]
rng = np.random.default_rng(0)
x, y = rng.standard_normal((64, 1000)), rng.standard_normal((64, 10))
p = fastnn.init_params(1000, 100, 10, seed=0)
a, b = rng.standard_normal((200, 300)), rng.standard_normal((300, 200))

def step():
    fastnn.sgd_step(p, x, y, 1e-12, kernel=kernel)

def matmul():
    a @ b

def per_call(f, n):
    began = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - began) / n

step(), matmul()
alone_s, alone_m, alt_s, alt_m = [], [], [], []
for _ in range(15):
    alone_s.append(per_call(step, 50))
    time.sleep(0.25)  # the other pool's workers asleep before the next timing
    alone_m.append(per_call(matmul, 50))
    time.sleep(0.25)
    for _ in range(5):  # alternating blocks of 10 calls
        alt_s.append(per_call(step, 10))
        alt_m.append(per_call(matmul, 10))
    time.sleep(0.25)
med = lambda v: float(np.median(v)) * 1e6
from fastnn.kernels.common import gemm
print(f"{gemm.BACKEND_NAME}, {first} first, kernel {kernel}: step alone {med(alone_s):.0f} us, "
      f"alternating {med(alt_s):.0f} us ({med(alt_s) / med(alone_s):.2f}x); numpy matmul alone "
      f"{med(alone_m):.0f} us, alternating {med(alt_m):.0f} us ({med(alt_m) / med(alone_m):.2f}x)")
'''


def alternate(kernel: str) -> None:
    for first in ("numpy", "fastnn"):
        subprocess.run([sys.executable, "-c", ALTERNATE, kernel, first], check=True)


COLD = r'''
import sys, time
t0 = time.perf_counter()
import numpy as np
import fastnn
t1 = time.perf_counter()
rng = np.random.default_rng(0)
x, y = rng.standard_normal((64, 1000)), rng.standard_normal((64, 10))
p = fastnn.init_params(1000, 100, 10, seed=0)
what, ran = sys.argv[1], ""
t2 = time.perf_counter()
if what == "sgd_step":
    fastnn.sgd_step(p, x, y, 1e-5)
elif what == "train":
    ran = fastnn.train(x, y, hidden=100, iters=100, lr=1e-5, seed=1).schedule
else:  # the careful numpy loop, 100 steps (shared/bench/numpy_step.py's, as a variant)
    from fastnn.profiling.step_bench import NumpyStep
    s = NumpyStep(x, y, (p.w1, p.b1, p.w2, p.b2), 1e-5)
    for _ in range(100):
        s.step()
print(f"{t1 - t0:.3f} {time.perf_counter() - t2:.3f} {ran}")
'''


def cold() -> None:
    for what in ("sgd_step", "train", "numpy-loop"):
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, NUMBA_CACHE_DIR=d + "/numba", FASTNN_TUNE_DIR=d + "/tune")
            res = subprocess.run([sys.executable, "-c", COLD, what], env=env,
                                 capture_output=True, text=True, check=True)
        imp, first, *ran = res.stdout.strip().split(maxsplit=2)
        print(f"{what:<10} empty caches: import {imp} s, then {first} s  {' '.join(ran)}")


def main(argv) -> int:
    modes = ("quiet", "busy", "build", "alternate", "cold")
    if not argv or argv[0] not in modes:
        print(__doc__)
        return 2
    if argv[0] == "quiet":
        quiet(argv[1:])
    elif argv[0] == "busy":
        busy(argv[1] if len(argv) > 1 else "seed", int(argv[2]) if len(argv) > 2 else 4)
    elif argv[0] == "build":
        build()
    elif argv[0] == "alternate":
        alternate(argv[1] if len(argv) > 1 else "auto")
    else:
        cold()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
