"""What the estimators take from scikit-learn when it is installed, and the same things without it.

With scikit-learn: its ``BaseEstimator`` and mixins (tags, ``clone``, ``repr``, ``score``), its
warning and error classes, its parameter validation (``_parameter_constraints``, built here from
one table), ``train_test_split`` (early stopping's split, drawn as scikit-learn draws it) and
``LabelBinarizer`` (the classifier's targets).  Without it: small stand-ins with the same
behaviour for the common cases (a stratified split and the rarer label types are fastnn's own).
Everything else the estimators need of scikit-learn's behaviour is written here once, the same
with or without it: ``check_random_state``, ``shuffle`` (the per-epoch order), the lbfgs result
check, accuracy and R^2.
"""
from __future__ import annotations

import inspect
import math
import numbers
import warnings

import numpy as np

try:
    import sklearn  # noqa: F401
    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    HAVE_SKLEARN = False

if HAVE_SKLEARN:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning, NotFittedError
    from sklearn.utils._param_validation import (Interval, InvalidParameterError, Options,
                                                 StrOptions)
    from sklearn.utils.metaestimators import available_if
else:
    class DataConversionWarning(UserWarning):
        """Input data was converted (a column vector y taken as 1-D)."""

    class ConvergenceWarning(UserWarning):
        """The optimisation stopped before it converged."""

    class NotFittedError(ValueError, AttributeError):
        """The estimator has not been fitted yet."""

    class InvalidParameterError(ValueError, TypeError):
        """A parameter of the wrong type or out of its range."""

    class BaseEstimator:
        @classmethod
        def _get_param_names(cls):
            sig = inspect.signature(cls.__init__)
            return sorted(p for p in sig.parameters if p != "self")

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for key, value in params.items():
                if key not in valid:
                    raise ValueError(f"Invalid parameter {key!r} for estimator "
                                     f"{type(self).__name__}; valid parameters: {valid}")
                setattr(self, key, value)
            return self

        def _validate_params(self):
            _check_constraints(self)

    class RegressorMixin:
        def score(self, X, y, sample_weight=None):
            """R^2 of ``predict(X)`` against ``y``."""
            return r2(y, self.predict(X), sample_weight)

    class ClassifierMixin:
        def score(self, X, y, sample_weight=None):
            """Mean accuracy of ``predict(X)`` against ``y``."""
            return accuracy(y, self.predict(X), sample_weight)

    def available_if(check):
        """A method that exists only where ``check(self)`` is true (AttributeError otherwise,
        so ``hasattr`` says False): scikit-learn's ``available_if``."""
        class _Available:
            def __init__(self, fn):
                self.fn = fn

            def __get__(self, obj, owner=None):
                if obj is not None:
                    check(obj)  # raises AttributeError when not available
                    return self.fn.__get__(obj, owner)
                return self.fn
        return _Available


# --- parameter constraints: one table, as scikit-learn's objects or checked here --------------

# name -> the allowed forms: ("int", low, high, closed), ("real", low, high, closed), a set of
# strings, "boolean", "verbose", "random_state", "array-like", "inf", None (the value None),
# "any" (checked elsewhere).  scikit-learn's MLP constraints, then fastnn's own parameters.
CONSTRAINTS = {
    "hidden_layer_sizes": ["array-like", ("int", 1, None, "left")],
    "activation": [{"identity", "logistic", "tanh", "relu"}],
    "solver": [{"lbfgs", "sgd", "adam"}],
    "alpha": [("real", 0, None, "left")],
    "batch_size": [{"auto"}, ("int", 1, None, "left")],
    # (a float: fastnn's older name for learning_rate_init with a constant schedule)
    "learning_rate": [{"constant", "invscaling", "adaptive"}, ("real", 0, None, "neither")],
    "learning_rate_init": [("real", 0, None, "neither")],
    "power_t": [("real", 0, None, "left")],
    "max_iter": [("int", 1, None, "left")],
    "shuffle": ["boolean"],
    "random_state": ["random_state"],
    "tol": [("real", 0, None, "left")],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "momentum": [("real", 0, 1, "both")],
    "nesterovs_momentum": ["boolean"],
    "early_stopping": ["boolean"],
    "validation_fraction": [("real", 0, 1, "left")],
    "beta_1": [("real", 0, 1, "left")],
    "beta_2": [("real", 0, 1, "left")],
    "epsilon": [("real", 0, None, "neither")],
    "n_iter_no_change": [("int", 1, None, "left"), "inf"],
    "max_fun": [("int", 1, None, "left")],
    "dtype": ["any"],
    "kernel": ["any"],
    "threads": [None, ("int", 1, None, "left")],
    "distributed": ["boolean"],
    "lazy": ["boolean"],
    "hidden": [None, "array-like", ("int", 1, None, "left")],
    "epochs": [None, ("int", 1, None, "left")],
    "optimizer": [None, {"lbfgs", "sgd", "adam"}],
    "nesterov": [None, "boolean"],
    "beta1": [None, ("real", 0, 1, "left")],
    "beta2": [None, ("real", 0, 1, "left")],
    "eps": [None, ("real", 0, None, "neither")],
    "patience": [None, ("int", 1, None, "left"), "inf"],
}
REGRESSOR_LOSS = [{"squared_error", "poisson"}]


def sklearn_constraints(table: dict) -> dict:
    """``table`` as scikit-learn's ``_parameter_constraints`` (its objects, its messages)."""
    out = {}
    for name, forms in table.items():
        if forms == ["any"]:
            out[name] = "no_validation"
            continue
        made = []
        for f in forms:
            if f is None:
                made.append(None)
            elif f == "inf":
                made.append(Options(numbers.Real, {np.inf}))
            elif isinstance(f, set):
                made.append(StrOptions(f))
            elif isinstance(f, tuple):
                kind = numbers.Integral if f[0] == "int" else numbers.Real
                made.append(Interval(kind, f[1], f[2], closed=f[3]))
            else:
                made.append(f)
        out[name] = made
    return out


def _allowed(value, form) -> bool:
    if form is None:
        return value is None
    if form == "inf":
        return isinstance(value, numbers.Real) and value == math.inf
    if form == "boolean":
        return isinstance(value, (bool, np.bool_))
    if form == "verbose":
        return isinstance(value, (bool, np.bool_)) or (
            isinstance(value, numbers.Integral) and value >= 0)
    if form == "random_state":
        return value is None or isinstance(value, np.random.RandomState) or (
            isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and 0 <= value < 2**32)
    if form == "array-like":
        return hasattr(value, "__len__") and not isinstance(value, str)
    if isinstance(form, set):
        return isinstance(value, str) and value in form
    kind, low, high, closed = form
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, numbers.Integral if kind == "int" else numbers.Real):
        return False
    if low is not None and (value < low or (value == low and closed in ("right", "neither"))):
        return False
    return high is None or not (value > high or (value == high and closed in ("left", "neither")))


def _check_constraints(est) -> None:
    """scikit-learn's parameter validation, without scikit-learn."""
    for name, forms in type(est)._parameter_constraints.items():
        if forms == ["any"]:
            continue
        value = getattr(est, name)
        if not any(_allowed(value, f) for f in forms):
            raise InvalidParameterError(
                f"The {name!r} parameter of {type(est).__name__} must be one of {forms}. Got "
                f"{value!r} instead.")


def parameter_constraints(regressor: bool) -> dict:
    table = dict(CONSTRAINTS, loss=REGRESSOR_LOSS) if regressor else CONSTRAINTS
    return sklearn_constraints(table) if HAVE_SKLEARN else table


# --- random streams, as scikit-learn draws them --------------------------------------------------

def check_random_state(seed) -> np.random.RandomState:
    """scikit-learn's ``check_random_state``: None -> numpy's global RandomState, an int -> a new
    one from it, a RandomState -> itself."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


def shuffle(idx, rs) -> np.ndarray:
    """``sklearn.utils.shuffle(idx, random_state=rs)``: ``idx`` permuted by ``rs.shuffle`` of
    ``arange`` (the same draws, so the same order as scikit-learn's for the same stream)."""
    perm = np.arange(idx.shape[0])
    rs.shuffle(perm)
    return idx[perm]


def split_rows(n, fraction, rs, stratify=None):
    """``(train, validation)`` row indices as ``train_test_split(..., test_size=fraction,
    random_state=rs, stratify=stratify)`` draws them (scikit-learn's own when installed)."""
    rows = np.arange(n)
    if HAVE_SKLEARN:
        from sklearn.model_selection import train_test_split

        train, val = train_test_split(rows, test_size=fraction, random_state=rs,
                                      stratify=stratify)
        return train, val
    n_val = int(math.ceil(fraction * n))
    if n - n_val <= 0 or n_val <= 0:
        raise ValueError(f"With n_samples={n}, test_size={fraction} and train_size=None, the "
                         f"resulting train set will be empty. Adjust any of the aforementioned "
                         f"parameters.")
    if stratify is None:  # ShuffleSplit's draw
        perm = rs.permutation(n)
        return perm[n_val:], perm[:n_val]
    from ..data import test_split

    labels = np.unique(np.asarray(stratify).reshape(n, -1), axis=0, return_inverse=True)[1]
    if np.bincount(labels.ravel()).min() < 2:
        raise ValueError("The least populated class in y has only 1 member, which is too few. "
                         "The minimum number of groups for any class cannot be less than 2.")
    train, _, val, _ = test_split(rows, labels.ravel(), fraction,
                                  int(rs.randint(0, 2**31 - 1)), stratify=True,
                                  name="validation_fraction")
    return train, val


def check_optimize_result(result, max_iter) -> int:
    """scikit-learn's ``_check_optimize_result("lbfgs", ...)``: the iterations (at most
    ``max_iter``), and a ConvergenceWarning when L-BFGS-B did not report convergence."""
    n_iter = min(result.nit, max_iter)
    if result.status != 0:
        msg = (f"lbfgs failed to converge after {n_iter} iteration(s) (status={result.status}):"
               f"\n{result.message}\n")
        if n_iter == max_iter:
            msg += (f"\nIncrease the number of iterations to improve the convergence "
                    f"(max_iter={max_iter}).")
        msg += ("\nYou might also want to scale the data as shown in:\n"
                "    https://scikit-learn.org/stable/modules/preprocessing.html")
        warnings.warn(msg, ConvergenceWarning, stacklevel=4)
    return n_iter


# --- scores --------------------------------------------------------------------------------------

def accuracy(y, pred, sample_weight=None) -> float:
    """The (weighted) fraction of rows predicted exactly (all labels of a row, multilabel):
    ``accuracy_score``."""
    if HAVE_SKLEARN:
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, pred, sample_weight=sample_weight))
    y, pred = np.asarray(y), np.asarray(pred)
    right = (y == pred) if y.ndim == 1 else np.all(y == pred, axis=1)
    return float(np.average(right, weights=sample_weight))


def r2(y, pred, sample_weight=None) -> float:
    """The coefficient of determination, averaged over outputs (``r2_score``'s default); 1 for
    a perfectly predicted constant output, 0 for an imperfectly predicted one."""
    y = np.asarray(y, np.float64)
    pred = np.asarray(pred, np.float64).reshape(y.shape)
    y2, p2 = y.reshape(y.shape[0], -1), pred.reshape(y.shape[0], -1)
    w = np.ones(y.shape[0]) if sample_weight is None else np.asarray(sample_weight, np.float64)
    w = w.reshape(-1, 1)
    ss_res = (w * (y2 - p2) ** 2).sum(axis=0)
    ss_tot = (w * (y2 - np.average(y2, axis=0, weights=w.ravel())) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1),
                         np.where(ss_res > 0, 0.0, 1.0))
    return float(np.mean(score))
