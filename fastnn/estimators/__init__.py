"""scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` with one hidden layer, on fastnn's kernels.

A script written for ``sklearn.neural_network`` runs with only the import changed and means the
same: the parameters with their meanings, defaults and checks (scikit-learn's own parameter
validation when it is installed), the solvers (``adam``, ``sgd`` with its ``constant``,
``invscaling`` and ``adaptive`` schedules, ``lbfgs`` with ``max_fun``), the hidden activations
(``relu``, ``tanh``, ``logistic``, ``identity``: fused into the kernels), ``sample_weight``,
``warm_start``, ``partial_fit`` (absent where scikit-learn's is), early stopping, the output
layers (identity or ``exp`` for the regressor's ``loss="poisson"``; softmax for several
classes, one logistic output for two, one per label for a multilabel indicator ``y``), the
fitted attributes (``coefs_`` and ``intercepts_`` as lists one may assign, ``n_iter_``, ``t_``,
``loss_``, ``loss_curve_``, ``best_loss_``, ``validation_scores_``, ...) and the warnings and
errors.  The initial weights, the validation split and each epoch's order are drawn from
``random_state`` as scikit-learn draws them, so the two libraries start from the same weights
and visit the same batches; they then agree to rounding (``tests/test_sklearn_parity.py``).

fastnn's own parameters: ``dtype`` (float32/float64, default the data's own float type; or
``"bfloat16"``: the two big matmuls on bfloat16 operands, float32 master weights, ``solver``
``"adam"`` or ``"sgd"``: ``fastnn/kernels/bf16.py``),
``kernel`` (``fastnn.kernels.available()``, default ``"auto"``), ``threads`` (Numba and BLAS
threads while fitting), ``distributed=True`` (fit across the ranks of an MPI job: every rank
calls ``fit`` with the same data; ``fastnn.distributed``), ``lazy=True`` (sparse ``X``, solver
``"adam"`` or ``"sgd"``: update only the rows of the first layer a batch's stored entries name,
opt-in because it is another method than scikit-learn's, ``fastnn.optim.Optimizer``); its
older names keep working
(``hidden``, ``epochs``, ``optimizer``, a float ``learning_rate``, ``nesterov``, ``beta1``,
``beta2``, ``eps``, ``patience``).  ``kernel_`` says which kernel ran, ``params_`` gives the
fitted network as ``fastnn.Params``; ``save`` / ``load`` write and read it without pickle
(pickle and joblib work too).  Refused, with an error that says so: more than one hidden layer
(fastnn trains the two-layer network).

Where the two still differ: fastnn's losses are not clipped (scikit-learn clips probabilities
at the dtype's epsilon in ``loss_``: a confident wrong prediction costs it at most 36 in
float64, 16 in float32); a run whose loss stops being finite stops there, keeping the last
finite parameters, and raises scikit-learn's "non-finite parameter weights" error; lbfgs on
float32 data keeps float32 parameters (scikit-learn's come back float64); without scikit-learn,
a stratified validation split is fastnn's own draw.  How the solvers map scikit-learn's
objective onto fastnn's: ``_stochastic`` and ``_lbfgs``.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..params import Params
from ._base import MLP
from ._compat import (ClassifierMixin, ConvergenceWarning, RegressorMixin, accuracy,
                      available_if, parameter_constraints, r2)
from ._inputs import Labels, check_X, column_or_1d, regression_targets, target_type, \
    unique_labels

_check_X = check_X  # (the name tests and older code import)


def _stochastic_only(est) -> bool:
    if est.solver not in ("sgd", "adam"):
        raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                             f"{est.solver} is not stochastic.")
    return True


class MLPRegressor(RegressorMixin, MLP):
    """scikit-learn's ``MLPRegressor`` (one hidden layer) on fastnn's kernels.

    ``loss="squared_error"`` (half the mean squared error, scikit-learn's scale) or
    ``"poisson"`` (half the Poisson deviance, ``exp`` outputs, ``y >= 0``).  Parameters and
    fitted attributes are scikit-learn's; the module docstring lists fastnn's additions and
    what differs.  ``validation_scores_`` are R^2 with ``early_stopping``.
    """

    _is_regressor = True
    _parameter_constraints = parameter_constraints(regressor=True)

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, kernel=kernels.DEFAULT, threads=None, distributed=False,
                 lazy=False, hidden=None, epochs=None, optimizer=None, nesterov=None, beta1=None,
                 beta2=None, eps=None, patience=None):
        self._set(locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y may be (n_samples, n_outputs)
        tags.target_tags.single_output = True
        tags.input_tags.sparse = True  # scipy.sparse X trains on the sparse rung
        return tags

    def _targets(self, y, n, incremental, reset):
        return regression_targets(y, n, self._dtype)

    def _objective(self):
        if self.loss == "poisson":
            return "poisson", 1.0, 1.0
        return "squared", 2.0, 2.0 * self.n_outputs_

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _truth(self, Y):
        return Y

    def _score_outputs(self, out, y, sample_weight):
        return r2(y, out.reshape(y.shape), sample_weight)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)`` (one run of L-BFGS-B for ``solver="lbfgs"``, as
        scikit-learn's regressor does), continuing from the current parameters and optimiser
        state (from new ones on the first call)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """The network's outputs: shape (n_samples,) for one output, else (n_samples,
        n_outputs)."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def _extra_meta(self):
        return {}


class MLPClassifier(ClassifierMixin, MLP):
    """scikit-learn's ``MLPClassifier`` (one hidden layer) on fastnn's kernels.

    The targets as scikit-learn's ``LabelBinarizer`` makes them: several classes train softmax
    outputs (``out_activation_ = "softmax"``), two classes one logistic output, a multilabel
    indicator matrix one logistic output per label (``predict`` returns the indicator matrix).
    ``classes_`` holds the labels in output order; ``predict_proba`` has a column per class
    (two for a binary problem); ``validation_scores_`` are accuracies with ``early_stopping``.
    Parameters and fitted attributes are scikit-learn's; the module docstring lists fastnn's
    additions and what differs.
    """

    _parameter_constraints = parameter_constraints(regressor=False)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, kernel=kernels.DEFAULT, threads=None, distributed=False,
                 lazy=False, hidden=None, epochs=None, optimizer=None, nesterov=None, beta1=None,
                 beta2=None, eps=None, patience=None):
        self._set(locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.input_tags.sparse = True  # scipy.sparse X trains on the sparse rung
        return tags

    def _targets(self, y, n, incremental, reset):
        """scikit-learn's ``_validate_input``: ``classes_`` (re)defined on a fresh fit, checked
        against ``y`` otherwise; the binarized targets in the fitted dtype."""
        arr = np.asarray(y)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"[{n}, {1 if arr.ndim == 0 else arr.shape[0]}]")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError("Input y contains NaN.")
        arr = column_or_1d(arr)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._labels = Labels().fit(arr)
            self.classes_ = self._labels.classes_
        else:
            classes = unique_labels(arr)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(f"warm_start can only be used where `y` has the same "
                                     f"classes as in the previous call to fit. Previously got "
                                     f"{self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        return np.asarray(self._labels.transform(arr), dtype=self._dtype)

    def _objective(self):
        return ("softmax" if self.out_activation_ == "softmax" else "logistic"), 1.0, 1.0

    def _output_activation(self):
        return "softmax" if self._labels.y_type_ == "multiclass" else "logistic"

    def _truth(self, Y):
        return self._labels.inverse_transform(Y)

    def _score_outputs(self, out, y, sample_weight):
        return accuracy(y, self._decode(out), sample_weight)

    def _decode(self, out):
        return self._labels.inverse_transform(out.ravel() if self.n_outputs_ == 1 else out)

    @available_if(_stochastic_only)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``(X, y)``, continuing from the current parameters and optimiser
        state.  The first call needs ``classes``: every label that will ever appear
        (``np.unique`` of all the targets)."""
        fitted = getattr(self, "classes_", None)
        if fitted is None and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is not None:
            if fitted is not None:
                if not np.array_equal(fitted, unique_labels(classes)):
                    raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                                     f"partial_fit, was: {fitted!r}")
            else:
                self.classes_ = unique_labels(classes)
                self._labels = Labels()
                multilabel = np.ndim(y) == 2 and np.shape(y)[1] > 1
                self._labels.fit(y if multilabel else classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """The predicted classes (an indicator matrix for multilabel targets)."""
        self._check_fitted()
        return self._decode(self._forward(X))

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order
        (two columns, ``1 - p`` and ``p``, for one logistic output)."""
        self._check_fitted()
        out = self._forward(X)
        if self.n_outputs_ == 1:
            p = out.ravel()
            return np.vstack([1 - p, p]).T
        return out

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        proba = self.predict_proba(X)
        return np.log(proba, out=proba)

    def _extra_meta(self):
        classes = self.classes_
        if classes.dtype.kind not in "iufbU":
            raise TypeError(f"save: class labels of dtype {classes.dtype} cannot be stored "
                            f"without pickle; use numbers or strings (or pickle the estimator)")
        return dict(classes_=classes.tolist(), classes_dtype=classes.dtype.str,
                    y_type_=self._labels.y_type_)

    def _restore_meta(self, meta):
        self.classes_ = np.array(meta["classes_"], dtype=np.dtype(meta["classes_dtype"]))
        self._labels = _labels_for(meta["y_type_"], self.classes_)

    def _from_model(self, model):
        self.classes_ = np.asarray(model.classes)
        self._labels = _labels_for("multiclass", self.classes_)
        self.out_activation_ = "softmax"  # fastnn's classification runs: softmax outputs


def _labels_for(y_type, classes) -> Labels:
    """A fitted ``Labels`` for ``classes`` of ``y_type``."""
    labels = Labels()
    if y_type == "multilabel-indicator":
        return labels.fit(np.eye(max(len(classes), 2), dtype=int)[:, :len(classes)])
    labels.fit(classes)
    if y_type == "multiclass" and labels.y_type_ != "multiclass":
        # two classes of a softmax model (a fastnn checkpoint): argmax of two outputs
        labels = _ArgmaxLabels(classes)
    return labels


class _ArgmaxLabels:
    """Labels of a softmax output layer with two classes (fastnn's own classification runs)."""

    y_type_ = "multiclass"

    def __init__(self, classes):
        self.classes_ = np.asarray(classes)

    def transform(self, y):
        arr = np.asarray(y)
        return (arr.reshape(-1, 1) == self.classes_.reshape(1, -1)).astype(int)

    def inverse_transform(self, Y):
        return self.classes_.take(np.asarray(Y).argmax(axis=1), mode="clip")


__all__ = ["ConvergenceWarning", "MLPClassifier", "MLPRegressor", "Params", "target_type"]
