"""fastnn's MLPClassifier / MLPRegressor against scikit-learn's own, fit for fit.

Both libraries draw the initial weights, the validation split and each epoch's order from
``random_state`` the same way, so the same settings give the same run: the tests compare every
fitted attribute, the warnings and the predictions.  The parameters differ by rounding only (the
sums of a matmul in another order), bounded by the comparison rule's run bound (rule 3,
``conftest.run_tolerance``) over the run's steps, on runs that do not grow
(``assert_non_expanding``), and for L-BFGS, which amplifies, by scikit-learn's own run's
measured response (rule 4, ``conftest.response_tolerance``); counters, labels and stopping
epochs are equal.
"""
import inspect
import pickle
import warnings

import numpy as np
import pytest

import fastnn
from conftest import assert_non_expanding, response_tolerance, run_tolerance, tolerance

sklearn = pytest.importorskip("sklearn")
from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

# compares against another library's sums: .ci/run runs these again on the AVX2 kernels
pytestmark = pytest.mark.rounding

_X, _Y = load_digits(return_X_y=True)
X = _X[:400] / 16.0
LABELS = _Y[:400]
WEIGHTS = np.random.default_rng(0).uniform(0.5, 2.0, 400)
TARGETS = {
    "multiclass": LABELS,
    "binary": LABELS > 4,
    "strings": np.array(["low", "mid", "high"])[LABELS % 3],
    "multilabel": np.stack([LABELS % 2, LABELS > 4, LABELS == 3], axis=1).astype(int),
    "outputs": X[:, 10:13] * 2.0,
    "output": X[:, 10] * 2.0,
    "counts": np.round(X[:, 10] * 3.0),
}
H = 15
# (targets, weighted, settings): every solver, schedule, activation, output layer, early
# stopping and weighting, at settings where both runs stay small and converge
CASES = {
    "adam-relu": ("multiclass", False, dict(max_iter=30)),
    "adam-tanh": ("multiclass", False, dict(max_iter=30, activation="tanh")),
    "adam-logistic": ("multiclass", False, dict(max_iter=30, activation="logistic")),
    "adam-identity": ("multiclass", False, dict(max_iter=30, activation="identity")),
    "sgd-nesterov": ("multiclass", False, dict(max_iter=30, solver="sgd",
                                               learning_rate_init=0.1)),
    "sgd-invscaling": ("multiclass", False, dict(
        max_iter=30, solver="sgd", nesterovs_momentum=False, learning_rate="invscaling",
        learning_rate_init=0.5)),
    "sgd-adaptive": ("multiclass", False, dict(
        max_iter=60, solver="sgd", learning_rate="adaptive", learning_rate_init=0.3, tol=1e-2,
        n_iter_no_change=2)),
    "sgd-plain-batch37": ("multiclass", False, dict(max_iter=20, solver="sgd", momentum=0.0,
                                                    alpha=0.0, batch_size=37,
                                                    learning_rate_init=0.05)),
    "early-stopping": ("multiclass", False, dict(max_iter=60, early_stopping=True,
                                                 n_iter_no_change=3)),
    "binary-early-stopping": ("binary", False, dict(max_iter=60, early_stopping=True,
                                                    n_iter_no_change=3)),
    "string-labels": ("strings", False, dict(max_iter=20)),
    "multilabel": ("multilabel", False, dict(max_iter=30)),
    "multilabel-early-stopping": ("multilabel", False, dict(max_iter=30, early_stopping=True)),
    "weighted-l2": ("multiclass", True, dict(max_iter=30, alpha=0.1)),
    "weighted-early-stopping": ("multiclass", True, dict(max_iter=30, alpha=0.1,
                                                         early_stopping=True)),
    "no-shuffle": ("binary", False, dict(max_iter=20, shuffle=False, solver="sgd")),
    "lbfgs-tanh": ("multiclass", False, dict(max_iter=20, solver="lbfgs", activation="tanh",
                                             alpha=0.01)),
    "lbfgs-weighted": ("binary", True, dict(max_iter=20, solver="lbfgs", alpha=0.01)),
    "lbfgs-max-fun": ("multiclass", False, dict(max_iter=50, solver="lbfgs", max_fun=7)),
    "regressor-adam": ("outputs", False, dict(max_iter=30, alpha=0.01)),
    "regressor-sgd-l2": ("outputs", False, dict(max_iter=30, solver="sgd", alpha=0.3,
                                                batch_size=37)),
    "regressor-early-weighted": ("output", True, dict(max_iter=30, early_stopping=True)),
    "regressor-lbfgs": ("outputs", True, dict(max_iter=20, solver="lbfgs", alpha=0.01)),
    "poisson": ("counts", False, dict(max_iter=30, loss="poisson")),
    "poisson-lbfgs": ("counts", False, dict(max_iter=20, loss="poisson", solver="lbfgs")),
    "regressor-tanh-single": ("output", False, dict(max_iter=30, activation="tanh")),
}
ATTRIBUTES = ("n_iter_", "t_", "n_outputs_", "n_layers_", "out_activation_", "loss_",
              "best_loss_", "loss_curve_", "validation_scores_", "best_validation_score_",
              "_no_improvement_count", "classes_", "n_features_in_")


def _classes(targets):
    return (fastnn.MLPRegressor, sk.MLPRegressor) if targets in (
        "outputs", "output", "counts") else (fastnn.MLPClassifier, sk.MLPClassifier)


def _fit(cls, x, y, sw, settings, how="fit"):
    """The estimator after ``how`` ('fit', 'twice': fit twice with warm_start, 'partial': four
    partial_fit calls), with the warnings it gave."""
    est = cls(hidden_layer_sizes=(H,), random_state=0, **settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if how == "partial":
            extra = {} if "Regressor" in cls.__name__ else dict(classes=np.unique(y))
            for _ in range(4):
                est.partial_fit(x, y, sample_weight=sw, **extra)
        else:
            est.fit(x, y, sample_weight=sw)
            if how == "twice":
                est.fit(x, y, sample_weight=sw)
    said = sorted((w.category.__name__, str(w.message)) for w in caught
                  if not issubclass(w.category, DeprecationWarning))
    return est, said


def _bound(theirs, settings, dtype=np.float64):
    """Rule 3's bound over the run's steps: scikit-learn's epochs times batches, or two
    evaluations per L-BFGS iteration (its line search rarely needs a second)."""
    n = len(X)
    if settings.get("solver") == "lbfgs":
        steps, batch = 2 * max(theirs.n_iter_, 1), n
    else:
        batch = min(200, n) if settings.get("batch_size", "auto") == "auto" else \
            settings["batch_size"]
        steps = max(theirs.t_, n) // batch + 1
    return run_tolerance(dtype, steps, batch, X.shape[1], H, 10)


def _params(est):
    return est.coefs_ + est.intercepts_


def _lbfgs_bound(cls, y, sw, settings, theirs, floor):
    """Rule 4's bound for an L-BFGS fit: how far scikit-learn's own fit moves when its data moves
    by one evaluation's rounding bound (``conftest.response_tolerance``), at least ``floor``."""
    eps = tolerance(np.float64, len(X), X.shape[1], H, 10)
    return response_tolerance(lambda x: _params(_fit(cls, x, y, sw, settings)[0]), X, eps,
                              _params(theirs), floor)


def assert_same_fit(ours, theirs, tol):
    for name in ATTRIBUTES:
        assert hasattr(ours, name) == hasattr(theirs, name), name
        if not hasattr(theirs, name):
            continue
        a, b = getattr(ours, name), getattr(theirs, name)
        if isinstance(b, (list, float, np.floating)) and not isinstance(b, str):
            np.testing.assert_allclose(a, b, rtol=tol, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
    for name, a, b in zip(["w1", "w2", "b1", "b2"], ours.coefs_ + ours.intercepts_,
                          theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * np.abs(b).max(), err_msg=name)


@pytest.mark.parametrize("case", CASES)
def test_the_same_fit_as_scikit_learn(case):
    targets, weighted, settings = CASES[case]
    y, sw = TARGETS[targets], WEIGHTS if weighted else None
    ours_cls, their_cls = _classes(targets)
    ours, we_said = _fit(ours_cls, X, y, sw, settings)
    theirs, they_said = _fit(their_cls, X, y, sw, settings)
    if hasattr(theirs, "loss_curve_"):
        assert_non_expanding(theirs.loss_curve_, "scikit-learn's run")
    tol = _bound(theirs, settings)
    if settings.get("solver") == "lbfgs":
        tol = _lbfgs_bound(their_cls, y, sw, settings, theirs, tol)
    assert_same_fit(ours, theirs, tol)
    assert we_said == they_said
    # the outputs: through two more layers of sums (a few times the parameters' bound)
    if hasattr(theirs, "predict_proba"):
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=0,
                                   atol=100 * tol)
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    else:
        want = theirs.predict(X)
        np.testing.assert_allclose(ours.predict(X), want, rtol=0,
                                   atol=100 * tol * np.abs(want).max())


@pytest.mark.parametrize("how", ["twice", "partial"])
@pytest.mark.parametrize("targets", ["multiclass", "outputs"])
def test_warm_starts_and_partial_fits_count_as_scikit_learn(how, targets):
    """``warm_start`` twice: ``n_iter_`` is the second fit's epochs, ``t_`` and
    ``loss_curve_`` run on, a ConvergenceWarning each time; four ``partial_fit`` calls: one
    epoch each, the optimiser continued, no warning."""
    settings = dict(max_iter=3, warm_start=True) if how == "twice" else dict(solver="sgd")
    ours_cls, their_cls = _classes(targets)
    ours, we_said = _fit(ours_cls, X, TARGETS[targets], None, settings, how)
    theirs, they_said = _fit(their_cls, X, TARGETS[targets], None, settings, how)
    assert_same_fit(ours, theirs, _bound(theirs, settings))
    assert we_said == they_said
    assert ours.n_iter_ == (3 if how == "twice" else 1)


def test_float32_fits_as_scikit_learn_does():
    x = X.astype(np.float32)
    settings = dict(max_iter=10)
    ours, _ = _fit(fastnn.MLPClassifier, x, LABELS, None, settings)
    theirs, _ = _fit(sk.MLPClassifier, x, LABELS, None, settings)
    assert ours.coefs_[0].dtype == theirs.coefs_[0].dtype == np.float32
    assert_same_fit(ours, theirs, _bound(theirs, settings, np.float32))


@pytest.mark.parametrize("kernel", ["numpy", "fused", "fused-wide"])
def test_every_kernel_fits_as_scikit_learn_does(kernel):
    settings = dict(max_iter=10, activation="tanh", alpha=0.1)
    ours = fastnn.MLPClassifier((H,), random_state=0, kernel=kernel, **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(X, LABELS, sample_weight=WEIGHTS)
        theirs = sk.MLPClassifier((H,), random_state=0, **settings).fit(X, LABELS, WEIGHTS)
    assert ours.kernel_ == kernel
    assert_same_fit(ours, theirs, _bound(theirs, settings))


# --- behaviour and errors ------------------------------------------------------------------------

def _both(name):
    return getattr(fastnn, name), getattr(sk, name)


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_the_signature_is_scikit_learns(name):
    ours, theirs = _both(name)
    mine = list(inspect.signature(ours).parameters.values())
    for a, b in zip(mine, inspect.signature(theirs).parameters.values()):
        assert (a.name, a.default, a.kind) == (b.name, b.default, b.kind)
    assert set(theirs().get_params()) <= set(ours().get_params())


@pytest.mark.parametrize("solver", ["lbfgs", "sgd", "adam"])
@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_partial_fit_exists_where_scikit_learns_does(name, solver):
    ours, theirs = _both(name)
    assert hasattr(ours(solver=solver), "partial_fit") == hasattr(theirs(solver=solver),
                                                                  "partial_fit")


def _error(make):
    try:
        make()
    except Exception as exc:  # noqa: BLE001 - the error is what is compared
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("what", [
    "partial_fit-early-stopping", "validation-too-small", "one-member-class",
    "alpha-negative", "n_iter_no_change-zero", "solver-unknown", "momentum-above-1",
    "first-partial_fit-without-classes", "new-class-in-partial_fit",
    "warm-start-other-classes", "partial_fit-other-classes", "inconsistent-samples",
    "sample-weight-shape", "not-fitted"])
def test_the_same_errors_as_scikit_learn(what):
    def make(cls):
        x, y = X[:60], LABELS[:60]
        if what == "partial_fit-early-stopping":
            cls(early_stopping=True).partial_fit(x, y, classes=np.arange(10))
        elif what == "validation-too-small":
            cls(early_stopping=True, validation_fraction=0.1).fit(x[:10], y[:10] % 2)
        elif what == "one-member-class":
            cls(early_stopping=True).fit(x, np.r_[np.zeros(59), 1])
        elif what == "alpha-negative":
            cls(alpha=-1.0).fit(x, y)
        elif what == "n_iter_no_change-zero":
            cls(n_iter_no_change=0).fit(x, y)
        elif what == "solver-unknown":
            cls(solver="newton").fit(x, y)
        elif what == "momentum-above-1":
            cls(momentum=1.5).fit(x, y)
        elif what == "first-partial_fit-without-classes":
            cls().partial_fit(x, y)
        elif what == "new-class-in-partial_fit":
            est = cls(max_iter=2).fit(x, y % 3)
            est.partial_fit(x, y % 4)
        elif what == "warm-start-other-classes":
            est = cls(max_iter=2, warm_start=True).fit(x, y % 3)
            est.fit(x, y % 4)
        elif what == "partial_fit-other-classes":
            est = cls().partial_fit(x, y, classes=np.arange(10))
            est.partial_fit(x, y, classes=np.arange(11))
        elif what == "inconsistent-samples":
            cls().fit(x, y[:-1])
        elif what == "sample-weight-shape":
            cls().fit(x, y, sample_weight=np.ones(3))
        elif what == "not-fitted":
            cls().predict(x)

    ours, theirs = _both("MLPClassifier")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine, their = _error(lambda: make(ours)), _error(lambda: make(theirs))
    assert their is not None and mine is not None, (mine, their)
    assert issubclass(mine[0], their[0]) or their[0].__name__ == mine[0].__name__, (mine, their)
    assert _sets_sorted(mine[1].split("(fastnn")[0].strip()) == _sets_sorted(their[1].strip()), (
        mine, their)


def _sets_sorted(message: str) -> str:
    """``message`` with each ``{a, b, c}`` written in sorted order: scikit-learn prints a set of
    options, whose order follows the strings' hashes (a new order in each process)."""
    import re

    return re.sub(r"\{([^{}]*)\}",
                  lambda m: "{" + ", ".join(sorted(p.strip() for p in m.group(1).split(","))) + "}",
                  message)


def test_non_finite_weights_are_scikit_learns_error_and_keep_finite_params():
    x = X * 1e154  # squares overflow in the first step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
            sk.MLPRegressor(solver="sgd", max_iter=5, random_state=0).fit(x, TARGETS["output"])
        ours = fastnn.MLPRegressor(solver="sgd", max_iter=5, random_state=0)
        with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
            ours.fit(x, TARGETS["output"])
    assert all(np.isfinite(c).all() for c in ours.coefs_ + ours.intercepts_)


def test_n_iter_no_change_may_be_infinite():
    settings = dict(max_iter=5, n_iter_no_change=np.inf, tol=10.0)
    ours, we_said = _fit(fastnn.MLPClassifier, X, LABELS, None, settings)
    theirs, they_said = _fit(sk.MLPClassifier, X, LABELS, None, settings)
    assert ours.n_iter_ == theirs.n_iter_ == 5 and we_said == they_said


def test_assigned_coefs_predict_as_scikit_learns():
    """Scripts set ``coefs_`` / ``intercepts_`` and call predict: the assigned lists are used."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sk.MLPClassifier((H,), max_iter=5, random_state=1).fit(X, LABELS)
        ours = fastnn.MLPClassifier((H,), max_iter=1, random_state=0).fit(X, LABELS)
    ours.coefs_ = [c.copy() for c in theirs.coefs_]
    ours.intercepts_ = [i.copy() for i in theirs.intercepts_]
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-12)
    ours.coefs_[1][:] = 0.0  # in place, as a list element
    assert np.ptp(ours.predict_proba(X), axis=0).max() == 0.0


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_a_pickled_estimator_continues_with_partial_fit(solver):
    import joblib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = fastnn.MLPClassifier((H,), max_iter=3, solver=solver, random_state=0)
        est.fit(X, LABELS)
    for back in (pickle.loads(pickle.dumps(est)), _joblib_round_trip(joblib, est)):
        back.partial_fit(X, LABELS)
        twin = pickle.loads(pickle.dumps(est))
        twin.partial_fit(X, LABELS)
        for a, b in zip(back.coefs_ + back.intercepts_, twin.coefs_ + twin.intercepts_):
            np.testing.assert_array_equal(a, b)
        assert back.n_iter_ == 1 and back.t_ == 4 * len(LABELS)


def _joblib_round_trip(joblib, est):
    import io

    buf = io.BytesIO()
    joblib.dump(est, buf)
    buf.seek(0)
    return joblib.load(buf)


def test_integer_weights_are_repeated_rows_with_lbfgs():
    """A weight of 2 is the row twice (full batches, one deterministic solver)."""
    w = np.arange(len(LABELS)) % 3
    rep = np.repeat(np.arange(len(LABELS)), w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = fastnn.MLPClassifier((H,), solver="lbfgs", max_iter=15, random_state=0)
        a.fit(X, LABELS, sample_weight=w)
        b = fastnn.MLPClassifier((H,), solver="lbfgs", max_iter=15, random_state=0)
        b.fit(X[rep], LABELS[rep])
    def fit(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _params(fastnn.MLPClassifier((H,), solver="lbfgs", max_iter=15,
                                                random_state=0).fit(x, LABELS[rep]))

    tol = response_tolerance(fit, X[rep], tolerance(np.float64, len(rep), X.shape[1], H, 10),
                             _params(b), run_tolerance(np.float64, 30, len(rep), X.shape[1], H, 10))
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(p, q, rtol=0, atol=tol * np.abs(q).max())


def test_proba_and_prediction_shapes_follow_the_targets():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for targets, shape, pred in (("binary", (400, 2), (400,)),
                                     ("multiclass", (400, 10), (400,)),
                                     ("multilabel", (400, 3), (400, 3))):
            est = fastnn.MLPClassifier((H,), max_iter=2, random_state=0)
            est.fit(X, TARGETS[targets])
            assert est.predict_proba(X).shape == shape and est.predict(X).shape == pred
            assert est.out_activation_ == ("softmax" if targets == "multiclass" else "logistic")
            np.testing.assert_allclose(np.exp(est.predict_log_proba(X)), est.predict_proba(X))
