"""Rung 8, `sparse`: scipy.sparse input everywhere a dense ``x`` goes, against the reference on
the dense copy of the same matrix (rules 2 and 3 of tests/conftest.py), bitwise across thread
counts (its ``bitwise`` fact), never densified, and bad sparse input refused before any kernel."""
import os
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import reference
from conftest import (ACTIVATION_ULPS, UNIT_ROUNDOFF, assert_close, assert_runs_close, params_as,
                      response_tolerance, run_tolerance, tolerance)

sp = pytest.importorskip("scipy.sparse")

pytestmark = pytest.mark.rounding

# (m, n, h, k): one entry, primes, more columns than rows (the case sparse data is), hidden
# sizes that are no multiple of a vector
SHAPES = [(1, 1, 1, 1), (3, 7, 5, 2), (13, 101, 17, 3), (37, 1009, 31, 10), (64, 300, 129, 1)]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


def random_csr(m, n, density=0.1, seed=0, dtype=np.float64):
    """A CSR matrix with at least one entry, some empty rows and columns likely."""
    x = sp.random(m, n, density=density, random_state=seed, format="csr", dtype=np.float64)
    if x.nnz == 0:
        x = sp.csr_matrix(([1.5], ([0], [n - 1])), shape=(m, n))
    x.data = (x.data * 4 - 2).astype(dtype)  # signed values
    return x.astype(dtype)


def layouts(x):
    """The same matrix in every form a user may pass: CSR/CSC/COO, matrix and array classes,
    int32 and int64 indices, unsorted indices and split duplicates (scipy sums them)."""
    out = {"csr": x.tocsr(), "csc": x.tocsc(), "coo": x.tocoo(), "csr_array": sp.csr_array(x),
           "coo_array": sp.coo_array(x), "lil": x.tolil()}
    big = x.tocsr().copy()
    big.indices = big.indices.astype(np.int64)
    big.indptr = big.indptr.astype(np.int64)
    out["int64"] = big
    unsorted = x.tocsr().copy()
    for r in range(unsorted.shape[0]):  # reverse each row's entries
        s, e = unsorted.indptr[r], unsorted.indptr[r + 1]
        unsorted.indices[s:e] = unsorted.indices[s:e][::-1].copy()
        unsorted.data[s:e] = unsorted.data[s:e][::-1].copy()
    unsorted.has_sorted_indices = False
    out["unsorted"] = unsorted
    coo = x.tocoo()  # every entry split into two halves: duplicates
    out["duplicates"] = sp.csr_matrix(
        (np.concatenate([coo.data / 2, coo.data / 2]),
         (np.concatenate([coo.row, coo.row]), np.concatenate([coo.col, coo.col]))),
        shape=x.shape)
    out["duplicates"] = sp.csr_matrix((out["duplicates"].data, out["duplicates"].indices,
                                       out["duplicates"].indptr), shape=x.shape)
    return out


def dense_problem(shape, dtype, seed=0, density=0.1):
    m, n, h, k = shape
    x = random_csr(m, n, density, seed, dtype)
    rng = np.random.default_rng(seed + 1)
    y = rng.standard_normal((m, k)).astype(dtype)
    params = fastnn.init_params(n, h, k, dtype=dtype, seed=seed + 2)
    params.b1[:] = rng.standard_normal(h)  # some hidden units active without input
    return x, y, params


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_loss_grads_predict_and_step_match_the_reference(shape, dtype):
    x, y, params = dense_problem(shape, dtype)
    dense = x.toarray().astype(np.float64)
    p64 = params_as(params, np.float64)
    tol = tolerance(dtype, *shape)
    loss, grads = fastnn.loss_and_grads(params, x, y)
    ref_loss, ref_grads = reference.loss_and_grads(p64, dense, y.astype(np.float64))
    assert loss == pytest.approx(ref_loss, rel=tol)
    for name, g, r in zip(fastnn.Params._fields, grads, ref_grads):
        assert g.dtype == dtype
        assert_close(g, r, tol, name)
    assert_close(fastnn.predict(params, x), reference.predict(p64, dense), tol, "z2")
    # lr makes the largest update 10% of the largest weight (test_kernels.test_sgd_step: an
    # error in the update is not hidden by the rounding of w itself); the bound is the
    # gradient's error plus the rounding of p
    lr = 0.1 * max(np.abs(p).max() for p in p64) / max(np.abs(g).max() for g in ref_grads)
    stepped = params.copy()
    fastnn.sgd_step(stepped, x, y, lr)
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    for name, p, q, g in zip(fastnn.Params._fields, stepped, p64, ref_grads):
        err = np.abs((q - p.astype(np.float64)) - lr * g).max()
        assert err <= lr * tol * np.abs(g).max() + 4 * u * np.abs(q).max(), name


@pytest.mark.parametrize("form", ["csr", "csc", "coo", "csr_array", "coo_array", "lil", "int64",
                                  "unsorted", "duplicates"])
def test_every_layout_gives_the_same_numbers(form, dtype):
    shape = (13, 101, 17, 3)
    x, y, params = dense_problem(shape, dtype)
    given = layouts(x)[form]
    loss, grads = fastnn.loss_and_grads(params, given, y)
    ref_loss, ref_grads = reference.loss_and_grads(params_as(params, np.float64),
                                                   x.toarray().astype(np.float64),
                                                   y.astype(np.float64))
    tol = tolerance(dtype, *shape)
    assert loss == pytest.approx(ref_loss, rel=tol)
    for name, g, r in zip(fastnn.Params._fields, grads, ref_grads):
        assert_close(g, r, tol, name)


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("loss", ["squared", "softmax", "logistic", "poisson"])
def test_every_activation_and_loss_with_weights(activation, loss, dtype):
    shape = (37, 211, 19, 3)
    x, y, params = dense_problem(shape, dtype, seed=4)
    rng = np.random.default_rng(9)
    if loss == "softmax":
        y = rng.integers(0, 3, shape[0])
    elif loss == "logistic":
        y = (rng.random((shape[0], 3)) > 0.5).astype(dtype)
    elif loss == "poisson":
        y = rng.poisson(1.0, (shape[0], 3)).astype(dtype)
    w = rng.random(shape[0]) + 0.1
    kw = dict(loss=loss, activation=activation, sample_weight=w)
    got, grads = fastnn.loss_and_grads(params, x, y, **kw)
    want, ref = fastnn.loss_and_grads(params_as(params, np.float64), x.toarray(), y,
                                      kernel="reference", **kw)
    # an activation and its derivative add up to 2 * ACTIVATION_ULPS (conftest) to rule 2
    tol = tolerance(dtype, *shape) + 2 * ACTIVATION_ULPS * float(np.finfo(dtype).eps)
    assert got == pytest.approx(want, rel=tol)
    for name, g, r in zip(fastnn.Params._fields, grads, ref):
        assert_close(g, r, tol, name)


@pytest.mark.parametrize("opt", [dict(optimizer="sgd"),
                                 dict(optimizer="sgd", momentum=0.9, nesterov=True, alpha=0.01),
                                 dict(optimizer="adam", alpha=0.001)],
                         ids=["sgd", "nesterov-l2", "adam"])
def test_training_runs_equal_the_reference_loop(opt, dtype):
    x = random_csr(203, 301, 0.05, seed=1, dtype=dtype)
    labels = np.random.default_rng(0).integers(0, 4, 203)
    kw = dict(hidden=17, epochs=3, batch_size=32, loss="softmax", lr=0.05, seed=3, dtype=dtype,
              validation_fraction=0.1, **opt)
    got = fastnn.train(x, labels, **kw)
    want = fastnn.train(x.toarray(), labels, kernel="reference", **kw)
    assert got.ran == "sparse"
    assert_runs_close(got, want, run_tolerance(dtype, got.n_steps, 32, 301, 17, 4),
                      what="sparse run")


def test_bitwise_on_one_and_two_threads():
    x = random_csr(301, 997, 0.05, seed=2)
    labels = np.random.default_rng(1).integers(0, 5, 301)
    runs = [fastnn.train(x, labels, hidden=33, epochs=2, batch_size=64, loss="softmax", lr=0.1,
                         seed=0, threads=t) for t in (1, 2)]
    np.testing.assert_array_equal(runs[0].losses, runs[1].losses)
    for a, b in zip(runs[0].params, runs[1].params):
        np.testing.assert_array_equal(a, b)
    assert fastnn.kernels.get("sparse").bitwise


def test_sgd_touches_only_the_rows_of_w1_the_batch_names():
    x = sp.csr_matrix(([1.0, 2.0, -1.0], ([0, 1, 1], [2, 5, 2])), shape=(2, 9))
    params = fastnn.init_params(9, 4, 2, seed=0)
    before = params.w1.copy()
    fastnn.sgd_step(params, x, np.ones((2, 2)), 0.1)
    changed = np.flatnonzero(np.any(params.w1 != before, axis=1))
    np.testing.assert_array_equal(changed, [2, 5])


def test_never_densified():
    """A matrix whose dense copy would take 1.6 GB trains within a small fraction of that."""
    m, n = 1000, 200_000
    x = random_csr(m, n, density=2e-4, seed=3)
    labels = np.random.default_rng(0).integers(0, 3, m)
    fastnn.train(x[:64], labels[:64], hidden=8, epochs=1, batch_size=64, loss="softmax",
                 lr=0.1, seed=0)  # compiled first: the compile's own memory is not the data's
    tracemalloc.start()
    try:
        run = fastnn.train(x, labels, hidden=8, epochs=1, batch_size=128, loss="softmax",
                           lr=0.1, seed=0, optimizer="adam", validation_fraction=0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    dense_bytes = m * n * 8
    params_bytes = sum(p.nbytes for p in run.params)
    # the parameters, Adam's two moments and the dense gradient of w1 (4 x w1), the CSR copy:
    # nothing near the 1.6 GB of the dense matrix
    assert peak < 8 * params_bytes + 20 * x.nnz + (1 << 24), (peak, params_bytes)
    assert peak < dense_bytes / 20


@pytest.mark.parametrize("case, err, match", [
    ("nan", ValueError, r"x \(its stored values\): contains NaN"),
    ("index", ValueError, "outside"),
    ("negative", ValueError, "outside"),
    ("indptr", ValueError, "indptr"),
    ("indptr-length", ValueError, "indptr"),
    ("complex", TypeError, "real numbers"),
    ("columns", ValueError, "columns|shape"),
    ("coo-index", ValueError, "outside"),
])
def test_bad_sparse_input_is_a_clear_error(case, err, match):
    params = fastnn.init_params(10, 4, 2, seed=0)
    x = random_csr(5, 10, 0.3, seed=0)
    x = sp.csr_matrix((x.data.copy(), x.indices.copy(), x.indptr.copy()), shape=x.shape)
    if case == "nan":
        x.data[0] = np.nan
    elif case == "index":
        x.indices[0] = 10
    elif case == "negative":
        x.indices[-1] = -3
    elif case == "indptr":
        x.indptr[2] = x.indptr[3] + 1
    elif case == "indptr-length":
        x = sp.csr_matrix((x.data, x.indices, x.indptr[:-1]), shape=(4, 10))
        x.indptr = np.concatenate([x.indptr, [x.nnz]])[:-1]
        x._shape = (5, 10)
    elif case == "complex":
        x = x.astype(np.complex128)
    elif case == "columns":
        x = random_csr(5, 11, 0.3)
    elif case == "coo-index":
        x = x.tocoo()
        x.col[0] = 99
    with pytest.raises(err, match=match):
        fastnn.loss_and_grads(params, x, np.zeros((5, 2)))


def test_kernel_names_and_sparse_input():
    params = fastnn.init_params(10, 4, 2, seed=0)
    x = random_csr(5, 10, 0.3)
    y = np.zeros((5, 2))
    with pytest.raises(ValueError, match="takes dense x"):
        fastnn.loss_and_grads(params, x, y, kernel="fused")
    with pytest.raises(ValueError, match="takes sparse x"):
        fastnn.loss_and_grads(params, x.toarray(), y, kernel="sparse")
    with pytest.raises(ValueError, match="dual form takes dense x"):
        fastnn.train(x, y, hidden=4, iters=2, lr=0.1, kernel="dual")
    assert "sparse" in fastnn.kernels.available()
    assert "sparse" not in fastnn.kernels.names()  # no dense test or benchmark runs it
    loss, _ = fastnn.loss_and_grads(params, x, y, kernel="sparse")
    assert np.isfinite(loss)


def test_the_dual_form_is_not_chosen_for_sparse_input():
    """Fewer rows than features with SGD is where auto picks the dual form for dense data."""
    x = random_csr(40, 2000, 0.01, seed=5)
    run = fastnn.train(x, np.random.default_rng(0).standard_normal(40), hidden=8, iters=30,
                       lr=1e-3, seed=0)
    assert run.ran == "sparse"


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_estimator_on_sparse_data_equals_scikit_learns(solver):
    sk = pytest.importorskip("sklearn.neural_network")
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(0)
    x = random_csr(300, 500, 0.03, seed=1)
    labels = (x @ rng.standard_normal(500) > 0).astype(int) + (x @ rng.standard_normal(500) > 0)
    kw = dict(hidden_layer_sizes=(20,), solver=solver, max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = fastnn.MLPClassifier(**kw).fit(x, labels)
        theirs = sk.MLPClassifier(**kw).fit(x, labels)
    assert ours.kernel_ == "sparse"
    # 15 epochs (lbfgs: iterations) of float64 arithmetic in another summation order (rule 3;
    # L-BFGS amplifies: rule 4, scikit-learn's own run's response)
    want = theirs.coefs_ + theirs.intercepts_
    tol = run_tolerance(np.float64, 15 * 2, 200, 500, 20, 3)
    if solver == "lbfgs":
        def fit(xx):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est = sk.MLPClassifier(**kw).fit(xx, labels)
            return est.coefs_ + est.intercepts_

        tol = response_tolerance(fit, x, tolerance(np.float64, 300, 500, 20, 3), want, tol)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=tol)
    for a, b in zip(ours.coefs_ + ours.intercepts_, want):
        assert_close(a, b, tol, "coefs")
    np.testing.assert_array_equal(ours.predict(x.tocsc()), theirs.predict(x.tocsc()))
    # the probabilities: through two more layers of sums, a few times the parameters' bound
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x), rtol=0,
                               atol=100 * tol)


def test_estimator_partial_fit_regressor_and_errors():
    x = random_csr(100, 80, 0.05, seed=2)
    y = np.asarray(x.sum(axis=1)).ravel()
    reg = fastnn.MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.fit(x, y)
        reg.partial_fit(x.tocoo(), y)
    assert reg.kernel_ == "sparse" and reg.score(x, y) > -10
    with pytest.raises(ValueError, match="X has 81 features"):
        reg.predict(random_csr(3, 81))
    bad = x.copy()
    bad.data[0] = np.inf
    with pytest.raises(ValueError, match="Input X contains NaN or infinity"):
        fastnn.MLPRegressor(max_iter=2).fit(bad, y)


def test_distributed_world_of_one_equals_train():
    from fastnn import distributed

    x = random_csr(203, 301, 0.05, seed=1)
    labels = np.random.default_rng(0).integers(0, 4, 203)
    kw = dict(hidden=17, epochs=2, batch_size=32, loss="softmax", lr=0.05, seed=3,
              optimizer="adam", validation_fraction=0.1)
    a, b = distributed.train(x, labels, **kw), fastnn.train(x, labels, **kw)
    assert a.ran == "sparse"
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.val_losses, b.val_losses)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastnn", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))


def test_cli_trains_on_sparse_files_and_predicts(tmp_path):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    x = random_csr(200, 3000, 0.01, seed=1)
    y = (x @ np.random.default_rng(0).standard_normal(3000) > 0).astype(int)
    sp.save_npz(tmp_path / "x.npz", x)
    np.save(tmp_path / "y.npy", y)
    sklearn_datasets.dump_svmlight_file(x, y, str(tmp_path / "d.svm"), zero_based=False)
    r = _cli("train", "--data", "x.npz", "--labels", "y.npy", "--task", "classify", "--epochs",
             "2", "--batch-size", "32", "--hidden", "8", "--checkpoint", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ran sparse" in r.stdout and "n=3000" in r.stdout
    r = _cli("train", "--data", "d.svm", "--task", "classify", "--epochs", "1", "--hidden", "4",
             "--optimizer", "adam", "--lazy", cwd=tmp_path)
    assert r.returncode == 0 and "ran sparse" in r.stdout, r.stderr
    r = _cli("train", "--lazy", "--optimizer", "adam", "--epochs", "1", cwd=tmp_path)
    assert r.returncode != 0 and "lazy" in r.stderr and "Traceback" not in r.stderr
    r = _cli("predict", "--model", "m.npz", "--data", "d.svm", "--out", "p.csv", "--proba",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "prediction,p_0,p_1" and len(lines) == 201
    (tmp_path / "bad.svm").write_text("1 3:0.5 7:1\n0 2:x\n")
    r = _cli("train", "--data", "bad.svm", "--task", "classify", cwd=tmp_path)
    assert r.returncode != 0 and "line 2" in r.stderr and "Traceback" not in r.stderr
    r = _cli("train", "--data", "x.npz", "--task", "classify", cwd=tmp_path)
    assert r.returncode != 0 and "--labels" in r.stderr and "Traceback" not in r.stderr


def test_svmlight_reader_without_scikit_learn(tmp_path):
    from fastnn.data import _parse_svmlight

    (tmp_path / "a.svm").write_text("# a comment\n1 qid:3 2:0.5 5:-1 # tail\n\n-1 1:2\n")
    x, y = _parse_svmlight(str(tmp_path / "a.svm"))
    np.testing.assert_array_equal(y, [1, -1])
    np.testing.assert_array_equal(x.toarray(), [[0, 0.5, 0, 0, -1], [2, 0, 0, 0, 0]])
    (tmp_path / "b.svm").write_text("1 2:0.5 2:1\n")
    with pytest.raises(ValueError, match="line 1: index 2 after 2"):
        _parse_svmlight(str(tmp_path / "b.svm"))


def test_estimator_early_stopping_on_sparse_data_equals_scikit_learns():
    sk = pytest.importorskip("sklearn.neural_network")
    x = random_csr(400, 300, 0.03, seed=6)
    labels = (x @ np.random.default_rng(1).standard_normal(300) > 0).astype(int)
    kw = dict(hidden_layer_sizes=(16,), early_stopping=True, max_iter=12, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = fastnn.MLPClassifier(**kw).fit(x, labels), sk.MLPClassifier(**kw).fit(
            x, labels)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
    tol = run_tolerance(np.float64, 2 * ours.n_iter_ * 2, 200, 300, 16, 1)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        assert_close(a, b, tol, "coefs")


MPI_SPARSE_JOB = """
    import hashlib, sys, numpy as np, scipy.sparse as sp, fastnn
    from fastnn import distributed
    from mpi4py import MPI
    x = sp.random(97, 400, density=0.05, random_state=1, format="csr")
    y = np.random.default_rng(0).integers(0, 3, 97)
    kw = dict(hidden=13, epochs=3, batch_size=16, loss="softmax", lr=0.05, seed=2,
              optimizer="adam", validation_fraction=0.2)
    got = distributed.train(x, y, **kw)
    want = fastnn.train(x, y, **dict(kw, threads=1))
    err = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(got.params,
                                                                          want.params))
    digest = hashlib.sha256(b"".join(p.tobytes() for p in got.params)).hexdigest()
    with open(f"{sys.argv[1]}.{MPI.COMM_WORLD.Get_rank()}", "w") as f:
        f.write(f"{got.ran} {digest} {err!r} {got.n_steps}")
"""


def test_an_mpi_job_on_sparse_rows(tmp_path):
    """Two ranks, each its share of every batch's CSR rows: the same bits on both, one
    machine's run to the run bound."""
    from fastnn import distributed
    import test_distributed as td

    if not distributed.mpi_available():
        pytest.skip("mpi4py not installed")
    res = td._mpi(2, MPI_SPARSE_JOB, tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [(tmp_path / f"out.{r}").read_text().split() for r in range(2)]
    assert ranks[0][0] == "sparse" and ranks[0][1] == ranks[1][1]
    steps = int(ranks[0][3])
    assert float(ranks[0][2]) <= run_tolerance(np.float64, steps, 16, 400, 13, 3)


@pytest.mark.parametrize("nnz", [0, 3])
def test_empty_rows_empty_columns_and_no_entries_at_all(nnz, dtype):
    """Rows with no entries get z1 = b1; a matrix with none at all is valid input too."""
    rows, cols = np.array([1, 1, 3][:nnz]), np.array([4, 0, 4][:nnz])
    x = sp.csr_matrix((np.array([2.0, -1.0, 0.5][:nnz]), (rows, cols)), shape=(5, 6))
    params = fastnn.init_params(6, 4, 2, dtype=dtype, seed=0)
    params.b1[:] = [0.5, -0.5, 1.0, 0.0]
    y = np.random.default_rng(0).standard_normal((5, 2))
    loss, grads = fastnn.loss_and_grads(params, x, y)
    ref_loss, ref = reference.loss_and_grads(params_as(params, np.float64),
                                             x.toarray().astype(np.float64), y)
    tol = tolerance(dtype, 5, 6, 4, 2)
    assert loss == pytest.approx(ref_loss, rel=tol)
    for name, g, r in zip(fastnn.Params._fields, grads, ref):
        assert_close(g, r, tol, name)
    assert not grads.w1[[2, 3, 5]].any()  # columns no row stores: no gradient


# --- lazy updates (Optimizer(lazy=True), opt-in) -------------------------------------------------

LAZY_OPTS = [dict(optimizer="adam"), dict(optimizer="adam", alpha=0.01),
             dict(optimizer="sgd", momentum=0.9), dict(optimizer="sgd", momentum=0.9,
                                                        nesterov=True, alpha=0.01),
             dict(optimizer="sgd", alpha=0.02)]
LAZY_IDS = ["adam", "adam-l2", "momentum", "nesterov-l2", "sgd-l2"]


def _lazy_reference(x, labels, params, k, opt, epochs, batch):
    """The lazy run in plain numpy: the reference's gradients of each batch (in order) and
    ``Optimizer.reference_step`` with the batch's stored columns as ``rows``."""
    p = params.copy()
    name = opt.pop("optimizer")
    o = fastnn.Optimizer(name, 0.05, lazy=True, **opt)
    xd, y = x.toarray(), np.eye(k)[labels].astype(x.dtype)
    losses = []
    for _ in range(epochs):
        for s in range(0, x.shape[0], batch):
            loss, g = reference.loss_and_grads(p, xd[s:s + batch], y[s:s + batch], "softmax")
            losses.append(loss + o.reference_step(p, g, rows=x[s:s + batch].indices))
    return np.array(losses), p


@pytest.mark.parametrize("opt", LAZY_OPTS, ids=LAZY_IDS)
def test_lazy_runs_equal_the_reference(opt, dtype):
    """Every optimiser's lazy run against ``reference_step(rows=...)`` on the dense copy, odd
    shapes; the rows no batch names (the empty columns) keep their initial values."""
    m, n, h, k = 53, 211, 13, 3
    x = random_csr(m, n, 0.02, seed=5, dtype=dtype)
    labels = np.random.default_rng(2).integers(0, k, m)
    params = fastnn.init_params(n, h, k, dtype=dtype, seed=1)
    got = fastnn.train(x, labels, params=params, epochs=3, batch_size=8, loss="softmax",
                       lr=0.05, shuffle=False, lazy=True, **opt)
    assert got.ran == "sparse"
    want = _lazy_reference(x, labels, params, k, dict(opt), 3, 8)
    assert_runs_close((got.losses, got.params), want,
                      run_tolerance(dtype, got.n_steps, 8, n, h, k), what="lazy run")
    never = np.setdiff1d(np.arange(n), x.tocsr().indices)
    assert never.size  # (the case the test is about)
    np.testing.assert_array_equal(got.params.w1[never], params.w1[never])
    # the exact method moves rows between the batches that name them (a velocity or moment
    # goes on), and with L2 decays even the rows no batch names
    exact = fastnn.train(x, labels, params=params, epochs=3, batch_size=8, loss="softmax",
                         lr=0.05, shuffle=False, **opt)
    assert not np.array_equal(exact.params.w1, got.params.w1)
    if opt.get("alpha"):
        assert np.all(exact.params.w1[never] != params.w1[never])


def test_lazy_is_bitwise_on_one_and_two_threads_and_resumes_bitwise(tmp_path):
    x = random_csr(301, 997, 0.05, seed=2)
    labels = np.random.default_rng(1).integers(0, 5, 301)
    kw = dict(hidden=33, epochs=4, batch_size=64, loss="softmax", lr=0.01, seed=0,
              optimizer="adam", alpha=0.001, lazy=True)
    runs = [fastnn.train(x, labels, threads=t, **kw) for t in (1, 2)]
    np.testing.assert_array_equal(runs[0].losses, runs[1].losses)
    for a, b in zip(runs[0].params, runs[1].params):
        np.testing.assert_array_equal(a, b)
    ck = tmp_path / "lazy.npz"
    fastnn.train(x, labels, checkpoint=ck, **dict(kw, epochs=2))
    with pytest.raises(ValueError, match="lazy"):  # the checkpoint's method, not another
        fastnn.train(x, labels, resume=ck, **dict(kw, lazy=False))
    resumed = fastnn.train(x, labels, resume=ck, **kw)
    np.testing.assert_array_equal(resumed.losses, runs[1].losses)
    for a, b in zip(resumed.params, runs[1].params):
        np.testing.assert_array_equal(a, b)


def test_lazy_is_refused_where_it_has_no_meaning():
    x = random_csr(20, 30, 0.1, seed=0)
    labels = np.arange(20) % 2
    with pytest.raises(ValueError, match="lazy: .*x is dense"):
        fastnn.train(x.toarray(), labels, hidden=4, epochs=1, lr=0.1, loss="softmax",
                     optimizer="adam", lazy=True)
    with pytest.raises(ValueError, match="lazy: optimizer='lbfgs'"):
        fastnn.train(x, labels, hidden=4, iters=3, loss="softmax", optimizer="lbfgs", lazy=True)
    with pytest.raises(TypeError, match="lazy: expected True or False"):
        fastnn.train(x, labels, hidden=4, epochs=1, lr=0.1, loss="softmax", lazy="yes")
    with pytest.raises(ValueError, match="lazy: solver='lbfgs'"):
        fastnn.MLPClassifier(solver="lbfgs", lazy=True, max_iter=2).fit(x, labels)


def test_lazy_estimator_moves_only_the_rows_its_batches_name():
    """scikit-learn's form, lazily: a first-layer row whose feature is never stored keeps its
    Glorot value under Adam with L2 (the default estimator's), which moves it without
    ``lazy``; plain SGD without L2 is the same method either way, to the bit."""
    x = random_csr(120, 80, 0.05, seed=3)
    labels = np.random.default_rng(4).integers(0, 3, 120)
    never = np.setdiff1d(np.arange(80), x.indices)
    assert never.size
    kw = dict(hidden_layer_sizes=(9,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (not converged)
        lazy = fastnn.MLPClassifier(lazy=True, **kw).fit(x, labels)
        exact = fastnn.MLPClassifier(**kw).fit(x, labels)
        sgd = dict(kw, solver="sgd", momentum=0.0, alpha=0.0)
        a = fastnn.MLPClassifier(lazy=True, **sgd).fit(x, labels)
        b = fastnn.MLPClassifier(**sgd).fit(x, labels)
    bound = np.sqrt(6.0 / (80 + 9))  # scikit-learn's Glorot draw, its first array
    w1 = np.random.RandomState(0).uniform(-bound, bound, (80, 9))
    np.testing.assert_array_equal(lazy.coefs_[0][never], w1[never])
    assert np.all(exact.coefs_[0][never] != w1[never])
    assert lazy.optimizer_.lazy and np.isfinite(lazy.loss_)
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(p, q)
