"""Issue 13's measurements ("never slow"), one mode each; run with nothing else on the machine.

    python dev/never_slow.py load seed|digits HOGS   fastnn.train with its defaults against the
                                                     same run pinned to one thread, HOGS busy
                                                     Python processes beside it (4: two per core
                                                     here), 9 paired rounds, medians
    python dev/never_slow.py alternate [KERNEL]      blocks of fastnn steps alternating with numpy
                                                     matmuls: each side against itself alone
    python dev/never_slow.py cold                    new processes with empty caches: import, the
                                                     first sgd_step, the seed's 100-step train,
                                                     and the careful numpy loop's

Figures measured with it are in README ("Busy machines and the first run").  The digits problem
is scikit-learn's load_digits (the test extra installs scikit-learn).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HOGS = "while True: pass"


def seed_problem():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 1000)), rng.standard_normal((64, 10))
    return x, y, dict(hidden=100, iters=100, lr=1e-5, seed=1)


def digits_problem():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x[:1437] / 16.0).astype(np.float32)  # the 80% a train/test split keeps
    return x, y[:1437], dict(hidden=100, epochs=3, batch_size=64, optimizer="adam", lr=1e-3,
                             loss="softmax", dtype="float32", seed=1)


def load(which: str, hogs: int) -> None:
    import fastnn

    x, y, kw = seed_problem() if which == "seed" else digits_problem()

    def run(threads):
        began = time.perf_counter()
        res = fastnn.train(x, y, threads=threads, **kw)
        return time.perf_counter() - began, res

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


def alternate(kernel: str) -> None:
    import fastnn

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
        time.sleep(0.05)  # the other pool's workers asleep before the next timing
        alone_m.append(per_call(matmul, 50))
        time.sleep(0.05)
        for _ in range(5):  # alternating blocks of 10 calls
            alt_s.append(per_call(step, 10))
            alt_m.append(per_call(matmul, 10))
        time.sleep(0.05)

    def med(v):
        return float(np.median(v)) * 1e6

    print(f"{kernel}: step alone {med(alone_s):.0f} us, alternating {med(alt_s):.0f} us "
          f"({med(alt_s) / med(alone_s):.2f}x); numpy matmul alone {med(alone_m):.0f} us, "
          f"alternating {med(alt_m):.0f} us ({med(alt_m) / med(alone_m):.2f}x)")


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
    if not argv or argv[0] not in ("load", "alternate", "cold"):
        print(__doc__)
        return 2
    if argv[0] == "load":
        load(argv[1] if len(argv) > 1 else "seed", int(argv[2]) if len(argv) > 2 else 4)
    elif argv[0] == "alternate":
        alternate(argv[1] if len(argv) > 1 else "auto")
    else:
        cold()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
