"""scikit-learn style estimators on top of ``fastnn.train``: ``MLPRegressor``, ``MLPClassifier``.

They follow scikit-learn's estimator conventions (constructor parameters stored as given and
validated in ``fit``; ``fit`` returns self; fitted attributes end in ``_``; ``get_params`` /
``set_params``; ``score``), so with scikit-learn installed they work in ``Pipeline``,
``cross_val_score`` and ``GridSearchCV``.  scikit-learn is not needed: without it, the small
base class below supplies ``get_params`` / ``set_params``.
"""
from __future__ import annotations

import inspect
import numbers
import warnings

import numpy as np

from . import kernels
from .checkpoint import Checkpoint
from .checkpoint import load as _load_checkpoint
from .checkpoint import save as _save_checkpoint
from .optim import Optimizer
from .params import _positive_int, as_float_dtype, init_params
from .reference import softmax
from .trainer import train

try:  # with scikit-learn, be one of its estimators (tags, repr, clone, mixins' score)
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import ClassifierMixin as _ClassifierMixin
    from sklearn.base import RegressorMixin as _RegressorMixin
    from sklearn.exceptions import DataConversionWarning, NotFittedError
except ImportError:  # pragma: no cover - exercised in environments without scikit-learn
    class DataConversionWarning(UserWarning):
        """Input data was converted (a column vector y taken as 1-D labels)."""

    class NotFittedError(ValueError, AttributeError):
        """The estimator has not been fitted yet."""

    class _Base:
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

    class _RegressorMixin:
        def score(self, X, y, sample_weight=None):
            """R^2 of ``predict(X)`` against ``y``."""
            y = np.asarray(y, np.float64)
            pred = np.asarray(self.predict(X), np.float64).reshape(y.shape)
            w = np.ones(y.shape[0]) if sample_weight is None else np.asarray(sample_weight)
            w = w.reshape(-1, *([1] * (y.ndim - 1)))
            ss_res = (w * (y - pred) ** 2).sum(axis=0)
            ss_tot = (w * (y - np.average(y, axis=0, weights=w.ravel())) ** 2).sum(axis=0)
            return float(np.mean(1 - ss_res / ss_tot))

    class _ClassifierMixin:
        def score(self, X, y, sample_weight=None):
            """Mean accuracy of ``predict(X)`` against ``y``."""
            return float(np.average(self.predict(X) == np.asarray(y), weights=sample_weight))


def _check_X(est, X, *, reset):
    """X as a 2-D finite float array; scikit-learn's messages for the usual mistakes."""
    name = type(est).__name__
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise TypeError(f"{name} does not accept sparse input; convert it with X.toarray()")
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X: expected a 2-D array of numbers ({exc})") from None
    if arr.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"X: expected numbers, got dtype {arr.dtype} ({exc})") from None
    if arr.ndim != 2:
        raise ValueError(f"Expected 2D array, got {arr.ndim}D array instead: X must have shape "
                         f"(n_samples, n_features).  Reshape your data with X.reshape(-1, 1) "
                         f"for one feature or X.reshape(1, -1) for one sample.")
    if arr.shape[0] < 1:
        raise ValueError(f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum of 1 "
                         f"is required.")
    if arr.shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum of 1 "
                         f"is required.")
    dtype = as_float_dtype(est.dtype, "dtype")
    arr = arr.astype(dtype, copy=False)
    if not np.isfinite(arr).all():
        what = "NaN" if np.isnan(arr).any() else "infinity or a value too large for " + str(dtype)
        raise ValueError(f"Input X contains {what}.")
    if reset:
        est.n_features_in_ = arr.shape[1]
    elif arr.shape[1] != est.n_features_in_:
        raise ValueError(f"X has {arr.shape[1]} features, but {name} is expecting "
                         f"{est.n_features_in_} features as input.")
    return arr


def _check_y_numeric(y, dtype):
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"y: expected numbers, got dtype {arr.dtype} ({exc})") from None
    arr = arr.astype(dtype, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError("Input y contains NaN or infinity.")
    return arr


def _seed(random_state):
    if random_state is None:
        return None
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state) % 2**32
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    raise ValueError(f"random_state: expected None, an int, a RandomState or a Generator, got "
                     f"{random_state!r}")


class _MLP(_Base):
    """Shared machinery: parameters, fit/partial_fit over ``fastnn.train``, checkpoints."""

    _loss = "squared"

    def __init__(self, hidden=100, *, learning_rate=1e-3, batch_size=200, epochs=200,
                 optimizer="adam", momentum=0.9, nesterov=False, beta1=0.9, beta2=0.999,
                 eps=1e-8, alpha=0.0, shuffle=True, early_stopping=False,
                 validation_fraction=0.1, patience=10, tol=1e-4, dtype="float64",
                 kernel=kernels.DEFAULT, random_state=None, threads=None, verbose=False):
        self.hidden = hidden
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.optimizer = optimizer
        self.momentum = momentum
        self.nesterov = nesterov
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.alpha = alpha
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.tol = tol
        self.dtype = dtype
        self.kernel = kernel
        self.random_state = random_state
        self.threads = threads
        self.verbose = verbose

    # --- what the subclasses define ---

    def _encode_targets(self, y, reset):
        raise NotImplementedError

    # --- fitting ---

    def _make_optimizer(self):
        kw = dict(alpha=self.alpha)
        if self.optimizer == "sgd":
            kw.update(momentum=self.momentum, nesterov=self.nesterov)
        elif self.optimizer == "adam":
            kw.update(beta1=self.beta1, beta2=self.beta2, eps=self.eps)
        return Optimizer(self.optimizer, self.learning_rate, **kw)

    def _fit(self, X, y, *, epochs, reset):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is "
                             f"None")
        X = _check_X(self, X, reset=reset)
        targets = self._encode_targets(y, reset=reset)
        if targets.shape[0] != X.shape[0]:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"[{X.shape[0]}, {targets.shape[0]}]")
        if reset:
            self.optimizer_ = self._make_optimizer()
            self.loss_curve_ = []
            self.validation_loss_curve_ = []
            self.n_iter_ = 0
            self.t_ = 0
            params = None
            self._seed = _seed(self.random_state)
        else:
            params = self.params_
        if not (isinstance(self.batch_size, numbers.Integral) and self.batch_size >= 1):
            raise ValueError(f"batch_size: expected a positive integer, got {self.batch_size!r}")
        hidden = self.hidden
        if isinstance(hidden, (tuple, list)):  # scikit-learn's hidden_layer_sizes style
            if len(hidden) != 1:
                raise ValueError(f"hidden: fastnn has one hidden layer, got {hidden!r}")
            hidden = hidden[0]
        hidden = _positive_int(hidden, "hidden")
        early = bool(self.early_stopping) and reset
        seed = None if self._seed is None else (self._seed + self.n_iter_) % 2**32
        if params is None:  # n_outputs_ from the targets (a classifier's: all its classes)
            params = init_params(X.shape[1], hidden, self.n_outputs_, dtype=X.dtype, seed=seed)
        result = train(
            X, targets, params=params,
            epochs=epochs, batch_size=self.batch_size, shuffle=self.shuffle,
            optimizer=self.optimizer_, loss=self._loss, dtype=self.dtype, kernel=self.kernel,
            seed=seed, early_stopping=early,
            validation_fraction=self.validation_fraction if early else None,
            patience=self.patience, tol=self.tol, progress=bool(self.verbose),
            threads=self.threads)
        self.params_ = result.params
        self.loss_curve_ = list(self.loss_curve_) + result.epoch_losses.tolist()
        self.validation_loss_curve_ = list(self.validation_loss_curve_) + \
            result.val_losses.tolist()
        self.n_iter_ += result.n_epochs
        self.t_ += result.n_steps
        self.best_loss_ = float(np.min(self.loss_curve_)) if self.loss_curve_ else np.nan
        self.diverged_ = result.diverged
        return self

    def fit(self, X, y):
        """Train from new parameters for ``epochs`` epochs (fewer with early stopping)."""
        return self._fit(X, y, epochs=self.epochs, reset=True)

    # --- fitted model ---

    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call "
                                 f"'fit' with appropriate arguments before using this estimator.")

    def _forward(self, X):
        self._check_fitted()
        X = _check_X(self, X, reset=False)
        from .api import predict

        return predict(self.params_, X, kernel=self.kernel)

    @property
    def coefs_(self):
        """``[w1, w2]``, as scikit-learn's MLP names them."""
        self._check_fitted()
        return [self.params_.w1, self.params_.w2]

    @property
    def intercepts_(self):
        self._check_fitted()
        return [self.params_.b1, self.params_.b2]

    # --- checkpoints ---

    def save(self, path):
        """Write the fitted model (params, optimiser state, curves, settings) to ``path``
        atomically, as a ``.npz`` that loads without pickle."""
        self._check_fitted()
        meta = dict(estimator=type(self).__name__, settings=_jsonable(self.get_params()),
                    n_features_in_=self.n_features_in_, n_iter_=self.n_iter_, t_=self.t_,
                    loss_curve_=self.loss_curve_,
                    validation_loss_curve_=self.validation_loss_curve_,
                    seed=self._seed, **self._extra_meta())
        opt = dict(self.optimizer_.hyperparameters(), t=self.optimizer_.t)
        _save_checkpoint(path, Checkpoint(self.params_, 0, np.empty(0), opt,
                                          dict(self.optimizer_.state), meta, {}))

    @classmethod
    def load(cls, path):
        """An estimator restored from ``save``'s file: predicts, scores and continues training
        (``partial_fit``) exactly as the saved one would."""
        ck = _load_checkpoint(path)
        meta = ck.meta
        if meta.get("estimator") != cls.__name__:
            raise ValueError(f"{path!r} holds a {meta.get('estimator')!r}, not a {cls.__name__}")
        est = cls(**meta["settings"])
        hyper = dict(ck.optimizer)
        t = hyper.pop("t", 0)
        name = hyper.pop("name")
        est.optimizer_ = Optimizer(name, hyper.pop("lr"), **hyper)
        est.optimizer_.t = t
        est.optimizer_.state = dict(ck.optimizer_state)
        est.params_ = ck.params
        for key in ("n_features_in_", "n_iter_", "t_", "loss_curve_", "validation_loss_curve_"):
            setattr(est, key, meta[key])
        est._seed = meta.get("seed")
        est._restore_meta(meta)
        est.best_loss_ = float(np.min(est.loss_curve_)) if est.loss_curve_ else np.nan
        est.diverged_ = False
        return est

    def _extra_meta(self):
        return {}

    def _restore_meta(self, meta):
        pass


def _jsonable(d):
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (np.floating,)):
            v = float(v)
        elif isinstance(v, (np.random.RandomState, np.random.Generator)):
            v = None
        elif isinstance(v, type) or isinstance(v, np.dtype):
            v = np.dtype(v).name
        out[k] = v
    return out


class MLPRegressor(_RegressorMixin, _MLP):
    """A one-hidden-layer ReLU network for regression, squared-error loss, trained with fastnn's
    fused kernels.

    Parameters: ``hidden`` units; ``learning_rate``; ``batch_size`` (capped at the number of
    samples); ``epochs``; ``optimizer`` ``"adam"`` (``beta1``, ``beta2``, ``eps``) or ``"sgd"``
    (``momentum``, ``nesterov``); ``alpha`` L2 weight decay (``fastnn.optim``: not divided by the
    batch size, unlike scikit-learn's); ``shuffle``; ``early_stopping`` on a held-out
    ``validation_fraction`` with ``patience`` and ``tol``; ``dtype`` float32/float64;
    ``kernel`` (``fastnn.kernels.available()``, default ``"auto"``); ``random_state``;
    ``threads`` (Numba and BLAS threads while fitting; None: the current setting); ``verbose``
    (progress bar).

    Fitted attributes: ``params_`` (``fastnn.Params``), ``coefs_``, ``intercepts_``,
    ``loss_curve_`` (training loss per epoch; the objective is ``mean over samples of the summed
    squared error``, twice scikit-learn's ``loss_``), ``validation_loss_curve_``, ``best_loss_``,
    ``n_iter_`` (epochs), ``t_`` (steps), ``n_features_in_``, ``n_outputs_``, ``optimizer_``.
    """

    _loss = "squared"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y may be (n_samples, n_outputs)
        tags.target_tags.single_output = True
        return tags

    def _encode_targets(self, y, reset):
        dtype = as_float_dtype(self.dtype, "dtype")
        arr = _check_y_numeric(y, dtype)
        if arr.ndim not in (1, 2):
            raise ValueError(f"y: expected shape (n_samples,) or (n_samples, n_outputs), got "
                             f"{arr.shape}")
        if reset:
            self._y_1d = arr.ndim == 1
            self.n_outputs_ = 1 if arr.ndim == 1 else arr.shape[1]
        elif (1 if arr.ndim == 1 else arr.shape[1]) != self.n_outputs_:
            raise ValueError(f"y: expected {self.n_outputs_} outputs, as in the first fit")
        return arr.reshape(arr.shape[0], -1)

    def partial_fit(self, X, y):
        """One epoch over ``(X, y)``, continuing from the current parameters and optimiser
        state (from new ones on the first call)."""
        return self._fit(X, y, epochs=1, reset=not hasattr(self, "params_"))

    def predict(self, X):
        """The network's outputs, shape (n_samples,) when fitted on 1-D y."""
        z2 = self._forward(X)
        return z2.ravel() if self._y_1d else z2

    def _extra_meta(self):
        return dict(y_1d=bool(self._y_1d), n_outputs_=self.n_outputs_)

    def _restore_meta(self, meta):
        self._y_1d = meta["y_1d"]
        self.n_outputs_ = meta["n_outputs_"]


class MLPClassifier(_ClassifierMixin, _MLP):
    """A one-hidden-layer ReLU network for classification: softmax cross-entropy over the
    classes, trained with fastnn's fused kernels.

    Parameters as ``MLPRegressor``.  Labels may be of any type ``numpy.unique`` sorts (ints,
    strings, ...); ``classes_`` holds them, in that order.  ``predict_proba`` gives the softmax
    of the outputs; ``predict`` the most probable class.  ``loss_curve_`` is the mean
    cross-entropy per epoch (scikit-learn's ``loss_`` for the same network).
    """

    _loss = "softmax"

    def _encode_targets(self, y, reset):
        """Labels as indices into ``classes_``; with ``reset``, ``classes_`` is set first: the
        ``classes`` given to the first ``partial_fit``, else the labels in ``y``."""
        arr = np.asarray(y)
        if arr.ndim == 2 and arr.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected; it is "
                          "taken as labels of shape (n_samples,).", DataConversionWarning,
                          stacklevel=4)
            arr = arr.ravel()
        if arr.ndim != 1:
            raise ValueError(f"y: expected class labels of shape (n_samples,), got {arr.shape}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError("Input y contains NaN or infinity.")
        if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise ValueError("Unknown label type: continuous targets; MLPClassifier needs class "
                             "labels (use MLPRegressor for regression)")
        if reset:
            classes = getattr(self, "_first_classes", None)
            self.classes_ = np.unique(arr) if classes is None else np.unique(classes)
            self.n_outputs_ = len(self.classes_)
        idx = np.searchsorted(self.classes_, arr)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if not np.all(self.classes_[idx] == arr):
            unknown = np.setdiff1d(arr, self.classes_)
            raise ValueError(f"y contains labels not seen in the first fit (or not in classes): "
                             f"{unknown[:5].tolist()}")
        return idx.astype(np.int64)

    def partial_fit(self, X, y, classes=None):
        """One epoch over ``(X, y)``, continuing from the current parameters and optimiser
        state.  The first call needs ``classes`` (all labels that will ever appear) unless
        ``y`` already holds them all."""
        if not hasattr(self, "params_"):
            self._first_classes = classes
            try:
                return self._fit(X, y, epochs=1, reset=True)
            finally:
                self._first_classes = None
        if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes: {classes!r} differs from the first call's "
                             f"{self.classes_.tolist()!r}")
        return self._fit(X, y, epochs=1, reset=False)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        z2 = self._forward(X).astype(np.float64)
        return softmax(z2)

    def predict_log_proba(self, X):
        z2 = self._forward(X).astype(np.float64)
        z = z2 - z2.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X):
        """The most probable class of each sample."""
        z2 = self._forward(X)
        return self.classes_[np.argmax(z2, axis=1)]

    def _extra_meta(self):
        classes = self.classes_
        if classes.dtype.kind not in "iufbU":
            raise TypeError(f"save: class labels of dtype {classes.dtype} cannot be stored "
                            f"without pickle; use numbers or strings")
        return dict(classes_=classes.tolist(), classes_dtype=classes.dtype.str)

    def _restore_meta(self, meta):
        self.classes_ = np.array(meta["classes_"], dtype=np.dtype(meta["classes_dtype"]))
        self.n_outputs_ = len(self.classes_)
