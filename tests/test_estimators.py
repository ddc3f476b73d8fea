"""MLPRegressor / MLPClassifier: scikit-learn's estimator checks, its tools, labels, checkpoints."""
import numpy as np
import pytest

import fastnn

sklearn = pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

SMALL = dict(hidden=8, epochs=20, batch_size=16, learning_rate=1e-2, random_state=0)


# scikit-learn runs this check on its own MLPs with these settings (full batches: with shuffled
# minibatches a weight of 2 and a repeated row are different runs, in both libraries)
EQUIVALENCE = {"MLPClassifier": dict(solver="lbfgs"),
               "MLPRegressor": dict(solver="sgd", tol=1e-2, random_state=42)}


@parametrize_with_checks([fastnn.MLPRegressor(**SMALL), fastnn.MLPClassifier(**SMALL)])
def test_sklearn_estimator_checks(estimator, check):
    name = getattr(check, "func", check).__name__
    if name in ("check_sample_weight_equivalence_on_dense_data",
                "check_sample_weight_equivalence_on_sparse_data"):
        estimator = type(estimator)(max_iter=100, **EQUIVALENCE[type(estimator).__name__])
    check(estimator)


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.2, random_state=0, stratify=y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_digits_accuracy(dtype):
    xtr, xte, ytr, yte = _digits()
    clf = fastnn.MLPClassifier(100, epochs=100, dtype=dtype, random_state=0).fit(xtr, ytr)
    assert clf.score(xte, yte) >= 0.96
    assert clf.n_iter_ == 100 and len(clf.loss_curve_) == 100
    assert clf.loss_curve_[-1] < clf.loss_curve_[0] / 10
    proba = clf.predict_proba(xte)
    # ten probabilities summed: a few units of the dtype's roundoff
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=10 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(xte))


def test_string_labels_and_classes_order():
    x = np.array([[0.0, 0], [0, 1], [1, 0], [1, 1]] * 10)
    y = np.array(["b", "c", "a", "c"] * 10)
    clf = fastnn.MLPClassifier(16, epochs=300, batch_size=8, learning_rate=0.02,
                               random_state=0).fit(x, y)
    assert clf.classes_.tolist() == ["a", "b", "c"]
    assert (clf.predict(x) == y).all()
    with pytest.raises(ValueError, match="has classes not in"):
        clf.partial_fit(x, np.array(["a", "d"] * 20))


def test_regressor_learns_and_scores():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (400, 3))
    y = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]
    reg = fastnn.MLPRegressor(hidden_layer_sizes=64, epochs=200, batch_size=32, learning_rate=3e-3,
                              random_state=0).fit(x, y)
    assert reg.predict(x).shape == (400,)
    assert reg.score(x, y) > 0.95
    y2 = np.stack([y, -y], axis=1)
    assert fastnn.MLPRegressor(hidden=8, epochs=2, random_state=0).fit(x, y2).predict(x).shape == (400, 2)


def test_pipeline_cross_val_and_grid_search():
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, _, ytr, _ = _digits()
    pipe = make_pipeline(StandardScaler(), fastnn.MLPClassifier(32, epochs=30, batch_size=32,
                                                              learning_rate=1e-2, random_state=0))
    scores = cross_val_score(pipe, xtr[:600], ytr[:600], cv=3)
    assert scores.min() > 0.8
    grid = GridSearchCV(fastnn.MLPClassifier(epochs=5, random_state=0),
                        {"hidden": [8, 32], "learning_rate": [1e-3, 1e-2]}, cv=2)
    grid.fit(xtr[:400], ytr[:400])
    assert set(grid.best_params_) == {"hidden", "learning_rate"}


def test_partial_fit_continues_the_optimiser():
    xtr, xte, ytr, yte = _digits()
    clf = fastnn.MLPClassifier(64, random_state=0)
    clf.partial_fit(xtr[:300], ytr[:300], classes=np.arange(10))
    t = clf.optimizer_.t
    for _ in range(30):
        clf.partial_fit(xtr, ytr)
    # scikit-learn's counters: n_iter_ counts the call's epochs, t_ every sample seen
    assert clf.optimizer_.t > t and clf.n_iter_ == 1 and clf.t_ == 300 + 30 * len(ytr)
    assert clf.score(xte, yte) > 0.9


@pytest.mark.parametrize("cls", ["MLPClassifier", "MLPRegressor"])
def test_save_load_round_trip_continues_bitwise(cls, tmp_path):
    xtr, xte, ytr, _ = _digits()
    est = getattr(fastnn, cls)(hidden=32, epochs=3, random_state=0, optimizer="adam")
    est.fit(xtr, ytr)
    path = tmp_path / "model.npz"
    est.save(path)
    back = getattr(fastnn, cls).load(path)
    np.testing.assert_array_equal(back.predict(xte), est.predict(xte))
    est.partial_fit(xtr, ytr)
    back.partial_fit(xtr, ytr)
    for a, b in zip(est.params_, back.params_):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="holds a"):
        (fastnn.MLPRegressor if cls == "MLPClassifier" else fastnn.MLPClassifier).load(path)


def test_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        fastnn.MLPClassifier().predict(np.zeros((2, 3)))


def test_estimators_work_without_scikit_learn():
    """In a process where scikit-learn cannot be imported, the estimators use fastnn's own small
    base class: fit, predict, score, get_params / set_params, save / load."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None
        import numpy as np, fastnn, tempfile, os
        rng = np.random.default_rng(0)
        x = rng.standard_normal((200, 4)); labels = np.where(x[:, 0] > 0, "yes", "no")
        clf = fastnn.MLPClassifier(16, epochs=100, batch_size=32, learning_rate=1e-2,
                                   random_state=0)
        assert clf.get_params()["hidden_layer_sizes"] == 16
        clf.set_params(hidden=24)
        assert clf.fit(x, labels) is clf and clf.score(x, labels) > 0.9
        reg = fastnn.MLPRegressor(hidden=16, epochs=100, batch_size=32, learning_rate=1e-2,
                                  random_state=0).fit(x, x[:, 0] * 2)
        assert reg.score(x, x[:, 0] * 2) > 0.5
        try:
            fastnn.MLPClassifier().predict(x)
        except ValueError as e:
            assert "not fitted" in str(e)
        path = os.path.join(tempfile.mkdtemp(), "m.npz")
        clf.save(path)
        assert (fastnn.MLPClassifier.load(path).predict(x) == clf.predict(x)).all()
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


def test_partial_fit_keeps_the_classes_given_on_the_first_call():
    x = np.random.default_rng(0).standard_normal((20, 3))
    y = np.array([0, 1] * 10)
    clf = fastnn.MLPClassifier(8, random_state=0).partial_fit(x, y, classes=[0, 1, 2])
    assert clf.classes_.tolist() == [0, 1, 2] and clf.predict_proba(x).shape == (20, 3)
    clf.partial_fit(x, np.full(20, 2))  # a label absent from the first batch
    fresh = fastnn.MLPClassifier(8, random_state=0).fit(x, y)
    assert fresh.classes_.tolist() == [0, 1]
