"""Full-batch L-BFGS-B training (``fastnn.training.lbfgs``): ``train(optimizer="lbfgs")`` against
scipy's L-BFGS-B on the numpy reference's objective, the CLI's ``--optimizer lbfgs``, its refusals,
and models saved by the estimators (any activation and output layer) predicting through
``fastnn predict``."""
import csv
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.optimize

import fastnn
from fastnn import cli, reference
from fastnn.training import lbfgs
from conftest import params_as, response_tolerance, run_tolerance, tolerance

pytestmark = pytest.mark.rounding


def _problem(loss, m=41, n=7, h=11, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n))
    if loss == "softmax":
        y = rng.integers(0, k, m)
    elif loss == "logistic":
        y = (rng.random((m, k)) < 0.5).astype(float)
    elif loss == "poisson":
        y = rng.poisson(1.0, (m, k)).astype(float)
    else:
        y = rng.standard_normal((m, k))
    return x, y, fastnn.init_params(n, h, k, seed=seed + 1)


def _targets(y, loss, k):
    return np.eye(k)[y] if loss == "softmax" else y


def _scipy_run(x, yy, params, loss, activation, alpha, iters):
    """scipy's L-BFGS-B on the numpy reference's loss and gradient plus the L2 term: the
    function values after each iteration, and the parameters it ends on."""
    dims = params.shape
    parts, _ = lbfgs.layout(*dims)

    def objective(flat):
        p = lbfgs.views(flat, parts, *dims)
        value, g = reference.loss_and_grads(p, x, yy, loss, activation)
        w = np.concatenate([p.w1.ravel(), p.w2.ravel()])
        grad = lbfgs.pack(g)
        grad[:w.size] += alpha * w
        return value + 0.5 * alpha * float(w @ w), grad

    seen = []
    want = scipy.optimize.minimize(objective, lbfgs.pack(params), method="L-BFGS-B", jac=True,
                                   callback=lambda intermediate_result: seen.append(
                                       intermediate_result.fun),
                                   options=dict(maxiter=iters, gtol=0.0, maxfun=15000))
    return np.array(seen), lbfgs.unpack(want.x, dims, np.float64)


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("loss", ["squared", "softmax", "logistic", "poisson"])
def test_lbfgs_runs_scipys_iterates_on_the_reference_objective(loss, activation):
    """The same L-BFGS-B on the numpy reference's loss and gradient (plus the L2 term) from the
    same start: the same iterates to rounding (rule 4: L-BFGS amplifies)."""
    x, y, params = _problem(loss)
    alpha, iters = 1e-3, 15
    res = fastnn.train(x, y, params=params, iters=iters, optimizer="lbfgs", alpha=alpha,
                       loss=loss, activation=activation, tol=0.0)
    dims = params.shape
    yy = _targets(y, loss, dims[2])

    def run(xx):
        seen, p = _scipy_run(xx, yy, params, loss, activation, alpha, iters)
        return [seen, *p]

    want = run(x)
    assert res.ran in fastnn.kernels.names()
    assert len(res.losses) == len(want[0]) + 1
    tol = response_tolerance(run, x, tolerance(np.float64, x.shape[0], *dims), want,
                             run_tolerance(np.float64, 2 * iters, *dims, x.shape[0]))
    np.testing.assert_allclose(res.losses[1:], want[0], rtol=0, atol=tol * np.abs(want[0]).max())
    for a, b in zip(res.params, want[1:]):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * np.abs(b).max())


def test_lbfgs_in_float32_and_with_row_weights():
    x, y, params = _problem("squared")
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(x))

    def run(xx, dtype=np.float64):
        r = fastnn.train(xx.astype(dtype), y, params=params_as(params, dtype), iters=10,
                         optimizer="lbfgs", sample_weight=w, tol=0.0)
        return r, [r.losses, *r.params]

    a, got = run(x, np.float32)
    b, want = run(x)
    assert a.params.dtype == np.float32 and a.n_steps == b.n_steps
    # float32 evaluations follow float64's to float32's rounding, as L-BFGS amplifies it (rule 4)
    eps = tolerance(np.float32, x.shape[0], *params.shape)
    tol = response_tolerance(lambda xx: run(xx)[1], x, eps, want,
                             run_tolerance(np.float32, 20, *params.shape, x.shape[0]))
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=0, atol=tol * np.abs(r).max())


def test_lbfgs_stops_on_tol_and_says_so():
    x, y, params = _problem("squared")
    res = fastnn.train(x, y, params=params, iters=500, optimizer="lbfgs", tol=0.1)
    assert res.stopped_early and res.n_steps < 501


@pytest.mark.parametrize("kw, words", [
    (dict(lr=0.1), "takes no learning rate"),
    (dict(batch_size=8), "batch_size"),
    (dict(validation_fraction=0.2), "validation_fraction"),
    (dict(early_stopping=True), "early_stopping"),
    (dict(momentum=0.9), "momentum"),
])
def test_lbfgs_refuses_what_it_cannot_do(kw, words):
    x, y, params = _problem("squared")
    with pytest.raises(ValueError, match=words):
        fastnn.train(x, y, params=params, iters=3, optimizer="lbfgs", **kw)


def test_cli_optimizer_lbfgs_and_activation(capsys):
    assert cli.main(["train", "--m", "30", "--n", "8", "--hidden", "6", "--out", "2", "--iters",
                     "20", "--optimizer", "lbfgs", "--activation", "tanh", "--quiet"]) == 0
    out = capsys.readouterr().out
    first, last = [float(w.rstrip(",")) for w in out.split("loss        first ")[1].split()[:3:2]]
    assert last < first / 10
    with pytest.raises(SystemExit, match="takes no learning rate"):
        cli.main(["train", "--optimizer", "lbfgs", "--lr", "0.1", "--iters", "2", "--quiet"])


@pytest.mark.parametrize("case", ["tanh-multiclass", "binary", "multilabel", "poisson"])
def test_a_saved_estimator_predicts_the_same_through_fastnn_predict(case, tmp_path):
    """``fastnn predict`` reads the estimator's hidden activation and output layer."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4))
    kw = dict(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    if case == "poisson":
        est = fastnn.MLPRegressor(loss="poisson", **kw)
        y = rng.poisson(2.0, 60)
    else:
        est = fastnn.MLPClassifier(activation="tanh" if case.startswith("tanh") else "logistic",
                                   **kw)
        y = {"tanh-multiclass": rng.integers(0, 3, 60), "binary": rng.integers(0, 2, 60),
             "multilabel": rng.integers(0, 2, (60, 3))}[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(x, y)
    model, data, out = tmp_path / "m.npz", tmp_path / "x.npz", tmp_path / "p.csv"
    est.save(model)
    np.savez(data, x=x)
    res = subprocess.run([sys.executable, "-m", "fastnn", "predict", "--model", str(model),
                          "--data", str(data), "--out", str(out)]
                         + (["--proba"] if case in ("binary", "tanh-multiclass") else []),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    with open(out) as f:
        rows = list(csv.reader(f))
    got = np.array(rows[1:], dtype=float)
    if case == "poisson":
        np.testing.assert_allclose(got[:, 0], est.predict(x), rtol=1e-12)
    elif case == "multilabel":
        np.testing.assert_array_equal(got, est.predict(x))
    else:
        np.testing.assert_array_equal(got[:, 0], est.predict(x))
        np.testing.assert_allclose(got[:, 1:], est.predict_proba(x), rtol=1e-12)
