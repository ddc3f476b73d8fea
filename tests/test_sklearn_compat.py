"""fastnn's MLPClassifier / MLPRegressor as a drop-in for scikit-learn's: a script written for
scikit-learn runs with only the import changed, means the same, and what fastnn cannot do is an
error that says so."""
import numpy as np
import pytest

import fastnn


class _Frame:
    """Just enough of a pandas DataFrame: named columns and an array."""

    def __init__(self, data, columns):
        self._data, self.columns = np.asarray(data, float), list(columns)

    def __array__(self, dtype=None, copy=None):
        return self._data if dtype is None else self._data.astype(dtype)

    def __len__(self):
        return len(self._data)

    @property
    def shape(self):
        return self._data.shape

    def reorder(self, columns):
        return _Frame(self._data[:, [self.columns.index(c) for c in columns]], columns)


def test_feature_names_are_kept_and_checked_like_scikit_learn():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 3))
    y = (x[:, 0] > 0).astype(int)
    frame = _Frame(x, ["age", "height", "weight"])
    clf = fastnn.MLPClassifier(8, max_iter=5, random_state=0).fit(frame, y)
    assert clf.feature_names_in_.tolist() == ["age", "height", "weight"]
    clf.predict(frame)
    with pytest.raises(ValueError, match="same order"):
        clf.predict(frame.reorder(["height", "age", "weight"]))
    with pytest.raises(ValueError, match="unseen at fit time"):
        clf.predict(_Frame(x, ["age", "height", "mass"]))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        clf.predict(x)


def test_feature_names_with_pandas():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.standard_normal((50, 2)), columns=["a", "b"])
    clf = fastnn.MLPClassifier(4, max_iter=3, random_state=0).fit(df, rng.integers(0, 2, 50))
    with pytest.raises(ValueError, match="same order"):
        clf.predict(df[["b", "a"]])


# --- a drop-in for scikit-learn's MLP ---------------------------------------------------------------

def _digits():
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.2, random_state=0, stratify=y)


def test_a_scikit_learn_script_runs_with_only_the_import_changed():
    """scikit-learn's parameters, meanings and attributes; accuracy and loss comparable to
    scikit-learn's own fit (averaged over three seeds: each library varies more than that
    between seeds)."""
    import warnings

    xtr, xte, ytr, yte = _digits()
    from sklearn.neural_network import MLPClassifier as SkMLP

    kw = dict(hidden_layer_sizes=(64,), activation="relu", solver="adam", alpha=1e-4,
              batch_size="auto", learning_rate="constant", learning_rate_init=1e-3,
              max_iter=60, shuffle=True, tol=1e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
              n_iter_no_change=10)
    scores, losses = {"ours": [], "theirs": []}, {"ours": [], "theirs": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(3):
            for who, cls in (("ours", fastnn.MLPClassifier), ("theirs", SkMLP)):
                model = cls(random_state=seed, **kw).fit(xtr, ytr)
                scores[who].append(model.score(xte, yte))
                losses[who].append(model.loss_)
        ours = fastnn.MLPClassifier(random_state=0, early_stopping=True, validation_fraction=0.1,
                                    **kw).fit(xtr, ytr)
    assert abs(np.mean(scores["ours"]) - np.mean(scores["theirs"])) < 0.02, scores
    assert 0.5 < np.mean(losses["ours"]) / np.mean(losses["theirs"]) < 2, losses
    for attr in ("coefs_", "intercepts_", "n_iter_", "t_", "loss_", "loss_curve_",
                 "validation_scores_", "best_validation_score_", "classes_", "n_features_in_",
                 "n_layers_", "n_outputs_", "out_activation_", "kernel_"):
        assert hasattr(ours, attr), attr
    assert ours.n_layers_ == 3 and [c.shape for c in ours.coefs_] == [(64, 64), (64, 10)]
    assert len(ours.validation_scores_) == ours.n_iter_ and ours.best_loss_ is None
    assert ours.best_validation_score_ == max(ours.validation_scores_)
    assert ours.t_ == ours.n_iter_ * int(round(0.9 * len(ytr)))
    assert ours.kernel_ in fastnn.kernels.names()


@pytest.mark.parametrize("sizes", [(10, 10), [], (5, 5, 5)])
def test_what_fastnn_cannot_do_is_an_error_that_says_so(sizes):
    """More than one hidden layer (or none): fastnn trains the two-layer network."""
    with pytest.raises(ValueError, match="one hidden layer"):
        fastnn.MLPClassifier(hidden_layer_sizes=sizes).fit(np.eye(4), [0, 1, 0, 1])


def test_the_regressor_reports_scikit_learns_loss_scale():
    """loss_ is sum((z - y)**2) / (2 m k) + the L2 term, as scikit-learn's, for any number of
    outputs k: checked on a step that barely moves the parameters."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((50, 10))
    reg = fastnn.MLPRegressor(hidden_layer_sizes=8, solver="sgd", learning_rate_init=1e-12, momentum=0.0,
                              batch_size=50, max_iter=1, alpha=0.3, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.fit(x, y)
    z = reg.predict(x)
    w2 = sum(float(np.sum(c.astype(np.float64) ** 2)) for c in reg.coefs_)
    want = np.sum((z - y) ** 2) / (2 * 50 * 10) + 0.3 * w2 / (2 * 50)
    assert reg.loss_ == pytest.approx(want, rel=1e-6)


def test_float32_data_stays_float32_and_checks_copy_nothing():
    import tracemalloc

    from fastnn.estimators import _check_X

    x = np.random.default_rng(0).standard_normal((2000, 500)).astype(np.float32)
    clf = fastnn.MLPClassifier(8, max_iter=1)
    tracemalloc.start()
    out = _check_X(clf, x, reset=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out is x and out.dtype == np.float32
    assert peak < x.nbytes / 20, peak
    clf.fit(x[:100], np.arange(100) % 3)
    assert clf.coefs_[0].dtype == np.float32
