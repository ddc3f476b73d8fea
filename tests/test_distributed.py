"""fastnn.distributed: data-parallel training on MPI gives one machine's results.

A world of one rank (no MPI needed) checks the decomposition against ``fastnn.train`` in every
run; ``mpiexec -n 2, 3, 4`` jobs (skipped where mpi4py is missing) check bitwise-equal ranks,
one-machine results to rounding, a rank that fails, and resuming with another number of ranks."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastnn
from fastnn import checkpoint as ckpt_io
from fastnn import distributed
from conftest import assert_non_expanding, assert_runs_close, run_tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

CASES = [
    dict(loss="squared", optimizer="sgd"),
    dict(loss="softmax", optimizer="sgd", momentum=0.9, nesterov=True, alpha=1e-3),
    dict(loss="softmax", optimizer="adam", alpha=1e-4),
    dict(loss="squared", optimizer="adam", validation_fraction=0.2, early_stopping=True,
         patience=50),
]
IDS = ["squared-sgd", "softmax-nesterov-l2", "softmax-adam", "squared-adam-validation"]


def _data(loss, dtype, m=53, n=7, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n)).astype(dtype)
    y = rng.integers(0, k, m) if loss == "softmax" else rng.standard_normal((m, k)).astype(dtype)
    return x, y


def _tol(dtype, steps, m=53, n=7, h=11, k=3):
    """The run bound (``conftest``'s rule 3) with the whole data's rows as the batch length:
    the all-reduce sums the ranks' partial batch sums in another order than one process."""
    return run_tolerance(dtype, steps, m, n, h, k)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_world_of_one_rank_is_fastnn_train(case, dtype):
    x, y = _data(case["loss"], dtype)
    kw = dict(hidden=11, epochs=3, batch_size=10, lr=0.01, seed=9, kernel="fused", **case)
    got = distributed.train(x, y, world_=distributed.LocalWorld(), **kw)
    want = fastnn.train(x, y, **kw)
    assert_runs_close(got, want, _tol(dtype, want.n_steps))
    assert len(got.val_losses) == len(want.val_losses)


def test_memmap_and_npy_paths_read_rows(tmp_path):
    x, y = _data("softmax", np.float64)
    path = tmp_path / "x.npy"
    np.save(path, x)
    kw = dict(hidden=5, epochs=2, batch_size=8, lr=0.05, seed=1, loss="softmax", kernel="fused")
    a = distributed.train(str(path), y, world_=distributed.LocalWorld(), **kw)
    b = distributed.train(np.load(path, mmap_mode="r"), y, world_=distributed.LocalWorld(), **kw)
    c = distributed.train(x, y, world_=distributed.LocalWorld(), **kw)
    for p, q, r in zip(a.params, b.params, c.params):
        np.testing.assert_array_equal(p, r)
        np.testing.assert_array_equal(q, r)


def test_shares_cover_every_row_once():
    for n in range(0, 12):
        for size in range(1, 6):
            parts = [distributed.share(n, r, size) for r in range(size)]
            assert sum(p.stop - p.start for p in parts) == n
            assert [p.start for p in parts[1:]] == [p.stop for p in parts[:-1]]


# --- real MPI jobs ------------------------------------------------------------------------------

needs_mpi = pytest.mark.skipif(not distributed.mpi_available(), reason="mpi4py not installed")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
if not os.path.exists(MPIEXEC):
    MPIEXEC = shutil.which("mpiexec") or MPIEXEC


def _rank_lines(out, ranks):
    """What each rank wrote to ``out.RANK`` (a file each: ranks' stdout lines interleave)."""
    return [(out.parent / f"{out.name}.{r}").read_text().split() for r in range(ranks)]


def _mpi(n, code, *args, timeout=300):
    script = textwrap.dedent(code)
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-c", script, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


JOB = """
    import hashlib, json, sys, numpy as np, fastnn
    from fastnn import distributed
    from mpi4py import MPI
    rank = MPI.COMM_WORLD.Get_rank()
    out = []
    for case in json.loads(sys.argv[1]):
        rng = np.random.default_rng(0)
        dtype = np.dtype(case.pop("dtype"))
        m, batch = case.pop("m"), case.pop("batch")
        x = rng.standard_normal((m, 7)).astype(dtype)
        y = (rng.integers(0, 3, m) if case["loss"] == "softmax" else
             rng.standard_normal((m, 3)).astype(dtype))
        kw = dict(hidden=11, epochs=3, batch_size=batch, lr=0.01, seed=4, kernel="auto", **case)
        got = distributed.train(x, y, **kw)
        want = fastnn.train(x, y, **dict(kw, kernel=got.ran, threads=1))
        err = max(float(np.abs(a - b).max() / np.abs(b).max())
                  for a, b in zip(got.params, want.params))
        loss_err = float(np.max(np.abs(got.losses - want.losses) / np.abs(want.losses)))
        digest = hashlib.sha256(b"".join(p.tobytes() for p in got.params)).hexdigest()
        out.append(dict(hash=digest, err=err, loss_err=loss_err, steps=got.n_steps,
                        val=len(got.val_losses), losses=want.losses.tolist()))
    with open(f"{sys.argv[2]}.{rank}", "w") as f:  # a file each: ranks' stdout interleaves
        json.dump(out, f)
"""

MPI_CASES = [
    dict(loss="squared", optimizer="sgd", dtype="float64", m=53, batch=10),
    dict(loss="softmax", optimizer="adam", alpha=1e-4, dtype="float32", m=53, batch=10),
    dict(loss="softmax", optimizer="sgd", momentum=0.9, nesterov=True, dtype="float64", m=29,
         batch=3),  # batches of 3 rows: with 4 ranks one holds none
    dict(loss="squared", optimizer="adam", validation_fraction=0.25, early_stopping=True,
         dtype="float64", m=40, batch=8),
]


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_every_rank_holds_the_same_bits_and_one_machines_result(ranks, tmp_path):
    res = _mpi(ranks, JOB, json.dumps(MPI_CASES), tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    results = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(ranks)]
    for i, case in enumerate(MPI_CASES):
        hashes = {r[i]["hash"] for r in results}
        assert len(hashes) == 1, f"ranks differ in case {case}"
        r = results[0][i]
        assert_non_expanding(r["losses"], f"one machine's run of case {case}")
        tol = _tol(case["dtype"], r["steps"], m=case["m"])
        assert r["err"] <= tol and r["loss_err"] <= tol, (case, r)


FAILING = """
    import os, sys, numpy as np, fastnn
    from fastnn import distributed
    from mpi4py import MPI
    rank = MPI.COMM_WORLD.Get_rank()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 50)); y = rng.standard_normal((4000, 2))
    def boom(t, loss):
        if rank == 1 and t == 30:
            raise RuntimeError("this rank gives up")
    distributed.train(x, y, hidden=32, iters=100000, batch_size=64, lr=1e-3, seed=0,
                      callback=boom)
"""


@needs_mpi
def test_a_rank_that_raises_ends_the_job_with_its_name():
    start = time.time()
    res = _mpi(2, FAILING, timeout=120)
    assert res.returncode != 0 and time.time() - start < 60
    assert "rank 1 of 2 failed: RuntimeError: this rank gives up" in res.stderr


KILLED = """
    import os, sys, numpy as np, fastnn
    from fastnn import distributed
    from mpi4py import MPI
    rank = MPI.COMM_WORLD.Get_rank()
    open(sys.argv[1] + f".pid{rank}", "w").write(str(os.getpid()))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 40)); labels = rng.integers(0, 4, 600)
    distributed.train(x, labels, hidden=32, epochs=int(sys.argv[2]), batch_size=32, lr=1e-2,
                      loss="softmax", optimizer="adam", seed=3, kernel="fused",
                      checkpoint=sys.argv[1], checkpoint_every=1)
"""


@needs_mpi
def test_a_killed_rank_ends_the_job_and_resume_works_with_another_number_of_ranks(tmp_path):
    ck = tmp_path / "ck.npz"
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-c",
                             textwrap.dedent(KILLED), str(ck), "200"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    pid_file = tmp_path / "ck.npz.pid1"
    while not (ck.exists() and pid_file.exists()) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    start = time.time()
    proc.communicate(timeout=60)
    assert proc.returncode != 0 and time.time() - start < 30
    state = ckpt_io.load(ck)  # the last checkpoint is intact
    assert 1 <= state.step
    for f in tmp_path.iterdir():
        if f.name.startswith(".tmp-"):
            f.unlink()
    # resume on 3 ranks, two epochs further; equals one process's run to rounding
    epochs = state.step // 19 + 2
    resume = """
        import sys, json, numpy as np, fastnn
        from fastnn import distributed
        rng = np.random.default_rng(0)
        x = rng.standard_normal((600, 40)); labels = rng.integers(0, 4, 600)
        kw = dict(hidden=32, epochs=int(sys.argv[2]), batch_size=32, lr=1e-2, loss="softmax",
                  optimizer="adam", seed=3, kernel="fused")
        got = distributed.train(x, labels, resume=sys.argv[1], **kw)
        want = fastnn.train(x, labels, **kw)
        err = max(float(np.abs(a - b).max() / np.abs(b).max())
                  for a, b in zip(got.params, want.params))
        if distributed.world().is_root:
            print("RESUMED", got.resumed_from, got.n_steps, err, json.dumps(want.losses.tolist()))
    """
    res = _mpi(3, resume, ck, epochs)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [l for l in res.stdout.splitlines() if l.startswith("RESUMED")][0].split(" ", 4)
    assert int(line[1]) == state.step and int(line[2]) == epochs * 19
    assert_non_expanding(json.loads(line[4]), "one process's run")
    assert float(line[3]) <= _tol(np.float64, epochs * 19, m=600, n=40, h=32, k=4)


@needs_mpi
def test_divergence_stops_every_rank_at_the_same_step(tmp_path):
    code = """
        import sys, numpy as np, fastnn, warnings
        from fastnn import distributed
        from mpi4py import MPI
        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, 8)) * 1e3; y = rng.standard_normal((64, 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = distributed.train(x, y, hidden=16, epochs=50, batch_size=8, lr=10.0, seed=0)
        ok = all(np.isfinite(p).all() for p in r.params)
        rank = MPI.COMM_WORLD.Get_rank()
        open(f"{sys.argv[1]}.{rank}", "w").write(f"{r.diverged_at} {ok}")
    """
    res = _mpi(3, code, tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    lines = _rank_lines(tmp_path / "out", 3)
    assert len({l[0] for l in lines}) == 1 and lines[0][0] != "None"
    assert all(l[1] == "True" for l in lines)


@needs_mpi
def test_the_command_line_on_two_workers(tmp_path):
    res = subprocess.run([sys.executable, "-m", "fastnn", "train", "--workers", "2", "--iters",
                          "20", "--quiet", "--checkpoint", str(tmp_path / "ck.npz")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("loss        first") == 1 and "2 ranks" in res.stdout
    assert ckpt_io.load(tmp_path / "ck.npz").step == 20
    single = subprocess.run([sys.executable, "-m", "fastnn", "train", "--iters", "20",
                             "--quiet"], capture_output=True, text=True, timeout=300)
    first = [l for l in res.stdout.splitlines() if l.startswith("loss")]
    assert first == [l for l in single.stdout.splitlines() if l.startswith("loss")]


@needs_mpi
def test_an_estimator_fits_across_ranks(tmp_path):
    code = """
        import sys, numpy as np, fastnn, hashlib, warnings
        from mpi4py import MPI
        rng = np.random.default_rng(0)
        x = rng.standard_normal((300, 6)); y = (x[:, 0] + x[:, 1] > 0).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = fastnn.MLPClassifier(16, max_iter=30, random_state=0, distributed=True,
                                       kernel="fused").fit(x, y)
            one = fastnn.MLPClassifier(16, max_iter=30, random_state=0, kernel="fused").fit(x, y)
        h = hashlib.sha256(b"".join(p.tobytes() for p in clf.params_)).hexdigest()[:16]
        open(f"{sys.argv[1]}.{MPI.COMM_WORLD.Get_rank()}", "w").write(
            f"{h} {clf.score(x, y)} {one.score(x, y)} {clf.n_iter_} {one.n_iter_}")
    """
    res = _mpi(2, code, tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    lines = _rank_lines(tmp_path / "out", 2)
    assert lines[0][0] == lines[1][0]
    assert abs(float(lines[0][1]) - float(lines[0][2])) < 0.02 and lines[0][3] == lines[0][4]
