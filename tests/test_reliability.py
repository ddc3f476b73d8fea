"""Reliability under conditions a single test process cannot show: other threading layers and
thread counts (fresh processes), processes killed mid-run, and memory over many steps."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastnn
from fastnn.checkpoint import CheckpointError, load
from conftest import BITWISE

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

HERE = os.path.dirname(os.path.abspath(__file__))


def _python(code, env=None, timeout=300):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=HERE)


# --- threads ---------------------------------------------------------------------------------

CONCURRENT = """
    import numpy as np, fastnn
    from concurrent.futures import ThreadPoolExecutor
    from fastnn.kernels import variant
    assert not variant.concurrent_calls_allowed()
    def problem(i):
        rng = np.random.default_rng(i)
        x = rng.standard_normal((40 + 3 * i, 150 + i)); y = rng.standard_normal((40 + 3 * i, 3))
        return x, y, fastnn.init_params(150 + i, 60 + 5 * i, 3, seed=i)
    def run(args):
        kernel, (x, y, p) = args
        p = p.copy()
        return [fastnn.sgd_step(p, x, y, 1e-3, kernel=kernel) for _ in range(3)], p
    for kernel in [v.name for v in fastnn.kernels.variants() if v.pool.startswith("numba")]:
        jobs = [(kernel, problem(i)) for i in range(8)]
        serial = [run(j) for j in jobs]
        with ThreadPoolExecutor(4) as pool:
            par = list(pool.map(run, jobs))
        bitwise = fastnn.kernels.get(kernel).bitwise
        for i, ((a, pa), (b, pb)) in enumerate(zip(serial, par)):
            # tests/conftest.py's rules 1 and 3: bitwise, else 3 steps' rounding bound
            tol = 0.0 if bitwise else 3 * 2 * (40 + 3 * i + 150 + i + 60 + 5 * i + 3) * 2.0**-53
            assert np.allclose(a, b, rtol=tol, atol=0), kernel
            for p, q in zip(pa, pb):
                assert np.abs(p - q).max() <= tol * np.abs(q).max(), kernel
    print("ok")
"""


def test_workqueue_layer_is_serialised_not_crashed():
    """Numba's workqueue layer aborts the process on concurrent parallel launches; fastnn takes a
    lock around its parallel kernels there, so 4 Python threads still get the right answers."""
    res = _python(CONCURRENT, env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


DETERMINISM = """
    import hashlib, numpy as np, fastnn, numba
    rng = np.random.default_rng(0)
    x = rng.standard_normal((301, 97)); labels = rng.integers(0, 7, 301)
    out = []
    for kernel in [v.name for v in fastnn.kernels.variants() if v.bitwise] + ["fused"]:
        for opt in ["sgd", "adam"]:
            r = fastnn.train(x, labels, hidden=131, epochs=3, batch_size=64, lr=0.01,
                             loss="softmax", optimizer=opt, kernel=kernel, seed=5)
            h = hashlib.sha256(r.losses.tobytes())
            for p in r.params:
                h.update(p.tobytes())
            out.append(f"{kernel}/{opt}:{h.hexdigest()}")
    print(numba.get_num_threads(), " ".join(out))
"""


def test_bitwise_results_for_any_numba_num_threads():
    """The same minibatch run in fresh processes with NUMBA_NUM_THREADS=1 and =2: naive and tiled
    (fixed partitions, fixed summation order) give the same bits; so does the minibatch order.
    fused is compared too: with BLAS left at the same thread count its bits do not change."""
    results = {}
    for n in ("1", "2"):
        res = _python(DETERMINISM, env={"NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": "1"})
        assert res.returncode == 0, res.stderr[-3000:]
        threads, *runs = res.stdout.split()
        assert threads == n
        results[n] = dict(r.split(":") for r in runs)
    for key in results["1"]:
        if key.split("/")[0] in BITWISE:
            assert results["1"][key] == results["2"][key], key


# --- crash safety ------------------------------------------------------------------------------

TRAIN = """
    import sys, numpy as np, fastnn
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 300)); labels = rng.integers(0, 10, 512)
    fastnn.train(x, labels, hidden=256, epochs=int(sys.argv[2]), batch_size=32, lr=1e-3,
                 loss="softmax", optimizer="adam", kernel="tiled", seed=3,
                 checkpoint=sys.argv[1], checkpoint_every=1{resume})
"""


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((512, 300)), rng.integers(0, 10, 512)


def _train(epochs, **kw):
    x, labels = _data()
    return fastnn.train(x, labels, hidden=256, epochs=epochs, batch_size=32, lr=1e-3,
                        loss="softmax", optimizer="adam", kernel="tiled", seed=3, **kw)


def test_sigkill_at_random_moments_leaves_a_loadable_checkpoint(tmp_path):
    """A run writing a checkpoint after every step (~2 MB each, so many kills land inside a
    write) is killed with SIGKILL at random moments.  Every time the checkpoint left behind loads,
    and resuming from it ends bitwise equal to a run that was never interrupted."""
    epochs = 6  # 96 steps
    want = _train(epochs)
    rng = np.random.default_rng(int(os.environ.get("FASTNN_KILL_SEED", "0")))
    trials = int(os.environ.get("FASTNN_KILL_TRIALS", "4"))
    ck = tmp_path / "ck.npz"
    survived = mid_write = 0
    for trial in range(trials):
        if ck.exists():
            ck.unlink()
        script = textwrap.dedent(TRAIN.format(resume=""))
        proc = subprocess.Popen([sys.executable, "-c", script, str(ck), str(epochs)], cwd=HERE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait for the first checkpoint, then kill at a random moment of the training
        deadline = time.time() + 120
        while not ck.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == 0:
            continue  # finished before the kill: nothing to test this time
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
        state = load(ck)  # complete and loadable, never torn
        assert 1 <= state.step <= epochs * 16
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ck.npz"]
        for name in leftovers:  # a temporary file from the interrupted write, at most
            assert name.startswith(".tmp-")
            (tmp_path / name).unlink()
        mid_write += bool(leftovers)
        got = _train(epochs, resume=ck)
        np.testing.assert_array_equal(got.losses, want.losses)
        for a, b in zip(got.params, want.params):
            np.testing.assert_array_equal(a, b)
        survived += 1
    print(f"\nSIGKILL trials {trials}: killed mid-run {survived} (during a checkpoint write "
          f"{mid_write}), every one loaded and resumed bitwise")
    assert survived >= 1, "every run finished before it could be killed"


def test_a_damaged_checkpoint_is_refused_by_resume(tmp_path):
    ck = tmp_path / "ck.npz"
    _train(1, checkpoint=ck, checkpoint_every=4)
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError):
        _train(2, resume=ck)


# --- memory ------------------------------------------------------------------------------------

RSS = """
    import numpy as np, fastnn, resource
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1000)); y = rng.standard_normal((64, 10))
    xs = rng.standard_normal((2048, 100)); labels = rng.integers(0, 10, 2048)
    def steps(n):
        for kernel in ["fused", "tiled", "naive"]:
            p = fastnn.init_params(1000, 100, 10, seed=0)
            for _ in range(n):
                fastnn.sgd_step(p, x, y, 1e-6, kernel=kernel)
    def runs(n):
        for _ in range(n):
            fastnn.train(xs, labels, hidden=64, epochs=20, batch_size=32, lr=1e-3,
                         loss="softmax", optimizer="adam", seed=0)
    steps(1000)
    runs(1)
    start = rss_mb()
    steps(3334)
    after_steps = rss_mb()
    runs(3)
    print(start, after_steps, rss_mb())
"""


def test_rss_does_not_grow_over_10000_steps():
    """10,000 steps through the public API and 3 x 1,280-step minibatch runs, after one round of
    each to warm up: resident memory stays within 5 MB (scratch buffers are reused, nothing
    accumulates)."""
    res = _python(RSS)
    assert res.returncode == 0, res.stderr[-3000:]
    start, after_steps, after_train = map(float, res.stdout.split())
    assert after_steps - start < 5, (start, after_steps)
    assert after_train - start < 5, (start, after_train)


PEAK = """
    import resource, numpy as np, fastnn
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40000, 784), dtype=np.float32)   # 125 MB, no float64 temporary
    labels = rng.integers(0, 10, 40000)
    fastnn.train(x[:256], labels[:256], hidden=128, epochs=1, batch_size=128, lr=0.01,
                 loss="softmax", seed=0)   # compile / load every kernel first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fastnn.train(x, labels, hidden=128, epochs=1, batch_size=128, lr=0.01, loss="softmax",
                 seed=0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(before, after)
"""


def test_minibatch_training_does_not_copy_the_data():
    """An epoch over 125 MB of float32 data raises the peak RSS by far less than the data (measured
    here: 2 MB): batches are gathered row by row into a (batch, n) buffer, never a shuffled copy
    of x, and the NaN/inf check runs in 1 MB blocks (a whole-array mask was 31 MB)."""
    res = _python(PEAK)
    assert res.returncode == 0, res.stderr[-3000:]
    before, after = map(float, res.stdout.split())
    assert after - before < 16, (before, after)


STEP_PEAK = """
    import resource, numpy as np, fastnn
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kernels = [v.name for v in fastnn.kernels.variants() if v.compiled is not None]
    small = fastnn.init_params(7, 5, 3, seed=0)
    for k in kernels:   # compile / load first, on a tiny problem
        fastnn.sgd_step(small, np.ones((4, 7)), np.ones((4, 3)), 1e-3, kernel=k)
        fastnn.loss_and_grads(small, np.ones((4, 7)), np.ones((4, 3)), kernel=k)
    m, n, h, k = 2048, 1024, 1024, 10
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, n)); y = rng.standard_normal((m, k))
    params = fastnn.init_params(n, h, k, seed=0)
    before = peak()
    for kern in kernels:
        fastnn.sgd_step(params, x, y, 1e-6, kernel=kern)
        fastnn.loss_and_grads(params, x, y, kernel=kern)
    print(before, peak(), m * h * 8, sum(p.nbytes for p in params))
"""


def test_peak_memory_of_a_step_is_activations_and_gradients():
    """At the large shape (2048, 1024, 1024, 10) float64, a step and a loss_and_grads call of
    every compiled kernel raise the peak RSS by at most three (m, h) activation buffers plus
    twice the params (the returned gradients, a scratch copy) and 16 MB of slack: nothing of the
    size of x is copied, and the scratch buffers are shared between the kernels."""
    res = _python(STEP_PEAK)
    assert res.returncode == 0, res.stderr[-3000:]
    before, after, mh, params = map(float, res.stdout.split())
    assert after - before <= 3 * mh + 2 * params + 16 * 2**20, (after - before) / 2**20
