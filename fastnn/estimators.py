"""scikit-learn's ``MLPClassifier`` / ``MLPRegressor``, on fastnn's kernels: a drop-in.

Scripts written for ``sklearn.neural_network`` run with only the import changed: the same
parameters with the same meanings and defaults (``hidden_layer_sizes``, ``solver``,
``learning_rate_init``, ``max_iter``, ``batch_size="auto"``, ``alpha`` with scikit-learn's
scaling, ``tol`` / ``n_iter_no_change`` stopping, ``early_stopping`` on a validation score, ...)
and the same fitted attributes (``coefs_``, ``intercepts_``, ``n_iter_``, ``t_``, ``loss_``,
``best_loss_``, ``loss_curve_``, ``validation_scores_``, ``feature_names_in_``, ...).  What
fastnn cannot do is an error that says so, never a silent substitute: more than one hidden
layer, ``solver="lbfgs"``, activations other than ReLU, the ``invscaling``/``adaptive``
learning-rate schedules.  fastnn's own names keep working (``hidden``, ``epochs``,
``optimizer``, a float ``learning_rate``, ``nesterov``, ``beta1``, ``beta2``, ``eps``,
``patience``), and ``dtype``, ``kernel``, ``threads`` are fastnn's additions, with
``distributed=True`` to fit across the ranks of an MPI job (every rank calls ``fit`` with the
same data; ``fastnn.distributed``).  ``kernel_`` says which kernel ran.

How the objectives correspond.  scikit-learn minimises, per batch of ``B`` rows, ``data_loss +
(alpha / (2 B)) * |W|^2`` with the squared loss ``sum((z - y)**2) / (2 B k)`` (k outputs) or the
mean cross-entropy.  fastnn's softmax loss is that cross-entropy and its squared loss is ``2k``
times scikit-learn's, so the regressor runs fastnn on ``2k`` times scikit-learn's objective
(L2 coefficient ``2k alpha / B``, SGD step ``lr / 2k``, Adam's ``eps * 2k``: the same steps) and
reports ``loss_``, ``loss_curve_`` on scikit-learn's scale.  Differences that remain: the He
normal initialisation (scikit-learn draws Glorot uniform), fastnn's shuffling streams, the L2
term of a partial last batch (fastnn uses the nominal ``B``), and two softmax outputs for a
binary problem (scikit-learn has one logistic output).

They follow scikit-learn's estimator conventions (parameters stored as given and validated in
``fit``; ``fit`` returns self; fitted attributes end in ``_``), so with scikit-learn installed
they work in ``Pipeline``, ``cross_val_score`` and ``GridSearchCV`` and pass its
``check_estimator``.  scikit-learn is not needed: without it, a small base class supplies
``get_params`` / ``set_params`` and ``score``.
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
from .params import Params, _positive_int, as_float_dtype, init_params
from .reference import softmax
from . import training
from .training.options import Options, check_fraction, check_tol
from .validation import check_finite

try:  # with scikit-learn, be one of its estimators (tags, repr, clone, mixins' score)
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import ClassifierMixin as _ClassifierMixin
    from sklearn.base import RegressorMixin as _RegressorMixin
    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning, NotFittedError
except ImportError:  # pragma: no cover - exercised in environments without scikit-learn
    class DataConversionWarning(UserWarning):
        """Input data was converted (a column vector y taken as 1-D labels)."""

    class ConvergenceWarning(UserWarning):
        """The optimisation stopped at max_iter before it converged."""

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
            return _r2(y, self.predict(X), sample_weight)

    class _ClassifierMixin:
        def score(self, X, y, sample_weight=None):
            """Mean accuracy of ``predict(X)`` against ``y``."""
            return float(np.average(self.predict(X) == np.asarray(y), weights=sample_weight))


def _r2(y, pred, sample_weight=None) -> float:
    """The coefficient of determination, averaged over outputs (scikit-learn's ``r2_score``)."""
    y = np.asarray(y, np.float64)
    pred = np.asarray(pred, np.float64).reshape(y.shape)
    w = np.ones(y.shape[0]) if sample_weight is None else np.asarray(sample_weight)
    w = w.reshape(-1, *([1] * (y.ndim - 1)))
    ss_res = (w * (y - pred) ** 2).sum(axis=0)
    ss_tot = (w * (y - np.average(y, axis=0, weights=w.ravel())) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), 0.0)
    return float(np.mean(r2))


# --- input checks -------------------------------------------------------------------------------

def _feature_names(X):
    """The column names of a DataFrame-like ``X`` when all are strings (scikit-learn's rule),
    else None."""
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    if len(names) and all(isinstance(n, str) for n in names):
        return names
    return None


def _check_feature_names(est, X, *, reset):
    """scikit-learn's feature-name checks: remember the names at fit; at predict, a DataFrame
    whose columns differ (other names, missing ones, another order) is an error, a mix of named
    and unnamed input a warning."""
    names = _feature_names(X)
    name = type(est).__name__
    if reset:
        if names is not None:
            est.feature_names_in_ = names
        elif hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
        return
    fitted = getattr(est, "feature_names_in_", None)
    if fitted is None and names is None:
        return
    if names is None:
        warnings.warn(f"X does not have valid feature names, but {name} was fitted with "
                      f"feature names", UserWarning, stacklevel=4)
        return
    if fitted is None:
        warnings.warn(f"X has feature names, but {name} was fitted without feature names",
                      UserWarning, stacklevel=4)
        return
    if len(fitted) == len(names) and np.all(fitted == names):
        return
    unseen = [n for n in names if n not in set(fitted)]
    missing = [n for n in fitted if n not in set(names)]
    message = "The feature names should match those that were passed during fit.\n"
    if unseen:
        message += "Feature names unseen at fit time:\n" + "".join(f"- {n}\n" for n in unseen)
    if missing:
        message += ("Feature names seen at fit time, yet now missing:\n" +
                    "".join(f"- {n}\n" for n in missing))
    if not unseen and not missing:
        message += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(message)


def _check_X(est, X, *, reset):
    """X as a 2-D finite float array in the estimator's dtype (float32 input stays float32
    unless ``dtype`` says otherwise), without a second copy where none is needed (the NaN check
    sums first and looks for the culprit in blocks only when the sum is not finite)."""
    name = type(est).__name__
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise TypeError(f"{name} does not accept sparse input; convert it with X.toarray()")
    _check_feature_names(est, X, reset=reset)
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
    dtype = _dtype(est, arr) if reset else est._dtype
    arr = arr.astype(dtype, copy=False)
    if not np.isfinite(np.add.reduce(arr, axis=None, dtype=np.float64)):
        try:
            check_finite(arr, "X")
        except ValueError:
            what = "NaN" if np.isnan(arr).any() else "infinity or a value too large for " + str(
                dtype)
            raise ValueError(f"Input X contains {what}.") from None
    if reset:
        est.n_features_in_ = arr.shape[1]
        est._dtype = dtype
    elif arr.shape[1] != est.n_features_in_:
        raise ValueError(f"X has {arr.shape[1]} features, but {name} is expecting "
                         f"{est.n_features_in_} features as input.")
    return arr


def _dtype(est, arr) -> np.dtype:
    """``dtype`` when set, else the data's own when it is float32/float64, else float64."""
    if est.dtype is not None:
        return as_float_dtype(est.dtype, "dtype")
    return arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float64)


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


# --- the estimators ------------------------------------------------------------------------------

# fastnn's older names for scikit-learn's parameters (used when set, i.e. not None).
ALIASES = {"hidden": "hidden_layer_sizes", "epochs": "max_iter", "optimizer": "solver",
           "nesterov": "nesterovs_momentum", "beta1": "beta_1", "beta2": "beta_2",
           "eps": "epsilon", "patience": "n_iter_no_change"}


class _MLP(_Base):
    """Shared machinery: the parameters, fit/partial_fit over ``fastnn.train``, checkpoints."""

    _loss = "squared"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, kernel=kernels.DEFAULT, threads=None, distributed=False,
                 hidden=None, epochs=None,
                 optimizer=None, nesterov=None, beta1=None, beta2=None, eps=None,
                 patience=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.kernel = kernel
        self.threads = threads
        self.distributed = distributed
        self.hidden = hidden
        self.epochs = epochs
        self.optimizer = optimizer
        self.nesterov = nesterov
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.patience = patience

    # --- what the subclasses define ---

    def _encode_targets(self, y, reset):
        raise NotImplementedError

    def _validation_score(self, params, x_val, y_val) -> float:
        raise NotImplementedError

    _loss_scale = 1.0  # fastnn's loss / scikit-learn's (set per fit by the regressor)

    # --- settings ---

    def _settings(self) -> dict:
        """The parameters, scikit-learn's names, fastnn's aliases applied, checked."""
        s = {name: getattr(self, name) for name in (
            "hidden_layer_sizes", "solver", "max_iter", "nesterovs_momentum", "beta_1", "beta_2",
            "epsilon", "n_iter_no_change")}
        for old, new in ALIASES.items():
            if getattr(self, old) is not None:
                s[new] = getattr(self, old)
        lr, schedule = self.learning_rate_init, self.learning_rate
        if isinstance(schedule, numbers.Real) and not isinstance(schedule, bool):
            lr, schedule = schedule, "constant"  # fastnn's name for the step size
        sizes = s["hidden_layer_sizes"]
        if isinstance(sizes, numbers.Integral):
            sizes = (sizes,)
        if not isinstance(sizes, (tuple, list)) or len(sizes) != 1:
            raise ValueError(f"hidden_layer_sizes: fastnn has one hidden layer, got {sizes!r}; "
                             f"pass one size, such as (100,)")
        s["hidden"] = _positive_int(sizes[0], "hidden_layer_sizes")
        if self.activation != "relu":
            raise ValueError(f"activation: fastnn's hidden layer is ReLU; {self.activation!r} is "
                             f"not available (use 'relu')")
        if s["solver"] not in ("adam", "sgd"):
            raise ValueError(f"solver: fastnn trains with 'adam' or 'sgd'; {s['solver']!r} is not "
                             f"available")
        if s["solver"] == "sgd" and schedule != "constant":
            raise ValueError(f"learning_rate: fastnn runs a constant step size; the "
                             f"{schedule!r} schedule is not available (use 'constant')")
        if schedule not in ("constant", "invscaling", "adaptive"):
            raise ValueError(f"learning_rate: expected 'constant', 'invscaling' or 'adaptive' "
                             f"(or a float, fastnn's step size), got {schedule!r}")
        s["lr"] = lr
        s["max_iter"] = _positive_int(s["max_iter"], "max_iter")
        s["n_iter_no_change"] = _positive_int(s["n_iter_no_change"], "n_iter_no_change")
        check_tol(self.tol)
        if not isinstance(self.alpha, numbers.Real) or self.alpha < 0:
            raise ValueError(f"alpha: expected a number >= 0, got {self.alpha!r}")
        return s

    def _batch(self, n_samples) -> int:
        b = self.batch_size
        if b == "auto":
            return min(200, n_samples)
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1:
            raise ValueError(f"batch_size: expected 'auto' or a positive integer, got {b!r}")
        if b > n_samples:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going "
                          "to be clipped", UserWarning, stacklevel=4)
        return min(int(b), n_samples)

    def _make_optimizer(self, s, batch) -> Optimizer:
        """The optimiser on fastnn's objective, ``_loss_scale`` times scikit-learn's (see the
        module docstring): the same steps as scikit-learn's."""
        scale = self._loss_scale
        alpha = scale * self.alpha / batch
        if s["solver"] == "sgd":
            return Optimizer("sgd", s["lr"] / scale, alpha=alpha, momentum=self.momentum,
                             nesterov=bool(s["nesterovs_momentum"]) and self.momentum > 0)
        return Optimizer("adam", s["lr"], alpha=alpha, beta1=s["beta_1"], beta2=s["beta_2"],
                         eps=s["epsilon"] * scale)

    # --- fitting ---

    def _fit(self, X, y, *, incremental):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is "
                             f"None")
        s = self._settings()
        first = not hasattr(self, "params_")
        reset = first or not (incremental or self.warm_start)
        X = _check_X(self, X, reset=reset)
        targets = self._encode_targets(y, reset=reset)
        if targets.shape[0] != X.shape[0]:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"[{X.shape[0]}, {targets.shape[0]}]")
        if reset:
            self._seed = _seed(self.random_state)
            self.n_iter_ = self.t_ = 0
            self.loss_curve_, self.validation_scores_ = [], None
            self.best_loss_, self.best_validation_score_ = np.inf, None
            self._no_improvement = 0
        early = bool(self.early_stopping) and not incremental
        x_fit, y_fit, val = X, targets, None
        if early:
            x_fit, y_fit, val = self._split(X, targets)
            if reset or self.validation_scores_ is None:
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
                self.best_loss_ = None
        batch = self._batch(x_fit.shape[0])
        if reset or not incremental or not hasattr(self, "optimizer_"):
            self.optimizer_ = self._make_optimizer(s, batch)
        params = self.params_ if not reset else init_params(
            X.shape[1], s["hidden"], self.n_outputs_, dtype=X.dtype, seed=self._seed)
        epochs = 1 if incremental else s["max_iter"]
        stop = _Stopping(self, s, early, val, batch, x_fit.shape[0])
        options = Options.of(
            params=params, epochs=epochs, batch_size=batch, shuffle=self.shuffle,
            optimizer=self.optimizer_, loss=self._loss, kernel=self.kernel, threads=self.threads,
            seed=None if self._seed is None else (self._seed + self.n_iter_) % 2**32,
            epoch_callback=stop)
        run = training.run
        if self.distributed:  # every rank of the MPI job calls fit with the same data
            from .distributed import run
        result = run(x_fit, y_fit, options)
        self.params_ = stop.best if early and stop.best is not None else result.params
        self.kernel_ = result.ran
        self.diverged_ = result.diverged
        if (not incremental and not stop.stopped and stop.epochs == s["max_iter"]
                and not result.diverged):
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({s['max_iter']}) reached "
                          f"and the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=3)
        return self

    def _split(self, X, targets):
        """scikit-learn's early-stopping split: ``validation_fraction`` of the rows (stratified
        for a classifier), from ``random_state``."""
        from .data import test_split

        f = check_fraction(self.validation_fraction)
        labels = targets if targets.ndim == 1 else np.zeros(targets.shape[0])
        seed = 0 if self._seed is None else self._seed
        rows = np.arange(X.shape[0])
        tr, _, te, _ = test_split(rows, labels, f, seed, stratify=self._loss == "softmax",
                                  name="validation_fraction")
        return X[tr], targets[tr], (X[te], targets[te])

    def fit(self, X, y):
        """Train for ``max_iter`` epochs at most (fewer when ``tol`` / ``n_iter_no_change`` or
        ``early_stopping`` stop it); from new parameters unless ``warm_start``."""
        return self._fit(X, y, incremental=False)

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

    @property
    def n_layers_(self) -> int:
        return 3

    @property
    def loss_(self):
        """The last epoch's training loss (scikit-learn's scale)."""
        self._check_fitted()
        return self.loss_curve_[-1] if self.loss_curve_ else None

    # --- files ---

    def save(self, path):
        """Write the fitted model (params, optimiser state, curves, settings) to ``path``
        atomically, as a ``.npz`` that loads without pickle; only a new file or a fastnn
        checkpoint is ever replaced."""
        self._check_fitted()
        names = getattr(self, "feature_names_in_", None)
        meta = dict(estimator=type(self).__name__, settings=_jsonable(self.get_params()),
                    n_features_in_=self.n_features_in_, n_iter_=self.n_iter_, t_=self.t_,
                    loss_curve_=self.loss_curve_, validation_scores_=self.validation_scores_,
                    best_loss_=_finite_or_none(self.best_loss_),
                    best_validation_score_=_finite_or_none(self.best_validation_score_),
                    feature_names_in_=None if names is None else [str(n) for n in names],
                    dtype=np.dtype(self._dtype).name, seed=self._seed,
                    no_improvement=self._no_improvement, **self._extra_meta())
        opt = dict(self.optimizer_.hyperparameters(), t=self.optimizer_.t)
        _save_checkpoint(path, Checkpoint(self.params_, 0, np.empty(0), opt,
                                          dict(self.optimizer_.state), meta, {}))

    @classmethod
    def load(cls, path):
        """The model in ``path``: a file of ``save`` (predicts, scores and continues training
        with ``partial_fit`` exactly as the saved estimator would), or a training checkpoint of
        ``fastnn train --checkpoint`` (its class labels and feature names included)."""
        ck = _load_checkpoint(path)
        meta = ck.meta
        if "estimator" not in meta:
            return cls.from_checkpoint(path)
        if meta["estimator"] != cls.__name__:
            raise ValueError(f"{path!r} holds a {meta['estimator']!r}, not a {cls.__name__}")
        est = cls(**meta["settings"])
        hyper = dict(ck.optimizer)
        t = hyper.pop("t", 0)
        name = hyper.pop("name")
        est.optimizer_ = Optimizer(name, hyper.pop("lr"), **hyper)
        est.optimizer_.t = t
        est.optimizer_.state = dict(ck.optimizer_state)
        est.params_ = ck.params
        for key in ("n_features_in_", "n_iter_", "t_", "loss_curve_", "validation_scores_"):
            setattr(est, key, meta[key])
        est.best_loss_ = np.inf if meta["best_loss_"] is None else meta["best_loss_"]
        est.best_validation_score_ = meta["best_validation_score_"]
        if meta.get("feature_names_in_") is not None:
            est.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
        est._dtype = np.dtype(meta["dtype"])
        est._seed = meta.get("seed")
        est._no_improvement = meta.get("no_improvement", 0)
        est._restore_meta(meta)
        est.diverged_ = False
        est.kernel_ = None
        return est

    @classmethod
    def from_checkpoint(cls, path):
        """A fitted estimator from a training checkpoint (``fastnn train --checkpoint``, or
        ``fastnn.train(checkpoint=..., info=...)``): its parameters, task, class labels and
        feature names; ready to predict (``partial_fit`` continues with a new optimiser)."""
        from .model import read_model

        model = read_model(path)
        want = "classify" if cls._loss == "softmax" else "regress"
        if model.task != want:
            raise ValueError(f"{path!r} holds a {model.task} model, not one for {cls.__name__}")
        est = cls(hidden_layer_sizes=(model.params.w1.shape[1],))
        est.params_ = model.params
        est.n_features_in_ = model.n_features
        est._dtype = model.params.dtype
        if model.feature_names is not None:
            est.feature_names_in_ = np.asarray(model.feature_names, dtype=object)
        est.n_iter_ = est.t_ = 0
        est.loss_curve_, est.validation_scores_ = [], None
        est.best_loss_, est.best_validation_score_ = np.inf, None
        est._seed, est._no_improvement = None, 0
        est._from_model(model)
        est.diverged_, est.kernel_ = False, None
        return est

    def _extra_meta(self):
        return {}

    def _restore_meta(self, meta):
        pass


class _Stopping:
    """scikit-learn's end of an epoch, as ``train``'s ``epoch_callback``: record the epoch's
    loss (the batch losses weighted by rows, on scikit-learn's scale), then either the
    validation score (``early_stopping``: keeps the best parameters) or the training loss
    against the best so far; stop after ``n_iter_no_change`` epochs without an improvement of
    ``tol`` (scikit-learn's rule, counted as it counts)."""

    def __init__(self, est, s, early, val, batch, m):
        self.est, self.early, self.val = est, early, val
        self.tol, self.patience = est.tol, s["n_iter_no_change"]
        sizes = np.full(-(-m // batch), batch)
        sizes[-1] = m - batch * (len(sizes) - 1)
        self.weights = sizes / m
        self.m = m
        self.best, self.stopped, self.epochs = None, False, 0
        self.talk = bool(est.verbose)
        if est.distributed and self.talk:  # one rank speaks for the job
            from .distributed import world

            self.talk = world().is_root

    def __call__(self, epoch, losses, params) -> bool:
        est = self.est
        self.epochs += 1
        loss = float(np.dot(losses, self.weights)) / est._loss_scale
        est.loss_curve_.append(loss)
        est.n_iter_ += 1
        est.t_ += self.m
        if self.early:
            score = est._validation_score(params, *self.val)
            est.validation_scores_.append(score)
            improved = score >= est.best_validation_score_ + self.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                self.best = params.copy()
        else:
            improved = loss <= est.best_loss_ - self.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement = 0 if improved else est._no_improvement + 1
        if self.talk:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
            if self.early:
                print(f"Validation score: {est.validation_scores_[-1]:f}")
        if est._no_improvement > self.patience:
            what = "Validation score" if self.early else "Training loss"
            if self.talk:
                print(f"{what} did not improve more than tol={self.tol:f} for "
                      f"{self.patience} consecutive epochs. Stopping.")
            self.stopped = True
            return True
        return False


def _finite_or_none(v):
    return None if v is None or not np.isfinite(v) else float(v)


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
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out


class MLPRegressor(_RegressorMixin, _MLP):
    """scikit-learn's ``MLPRegressor`` on fastnn's kernels: one ReLU hidden layer, squared error.

    Parameters and fitted attributes are scikit-learn's (the module docstring says how the
    objectives correspond and what fastnn cannot do), plus ``dtype`` (float32/float64; default
    the data's own float type), ``kernel`` (``fastnn.kernels.available()``, default
    ``"auto"``), ``threads`` (Numba and BLAS threads while fitting).  Fitted: ``params_``
    (``fastnn.Params``), ``coefs_``, ``intercepts_``, ``loss_`` and ``loss_curve_`` (per epoch,
    scikit-learn's scale: ``sum((z - y)**2) / (2 m k) + the L2 term``), ``best_loss_``,
    ``validation_scores_`` and ``best_validation_score_`` (R^2, with ``early_stopping``),
    ``n_iter_`` (epochs), ``t_`` (samples seen), ``n_features_in_``, ``feature_names_in_``
    (from a DataFrame), ``n_layers_``, ``n_outputs_``, ``out_activation_`` (``"identity"``),
    ``optimizer_``, ``kernel_`` (the kernel that ran).
    """

    _loss = "squared"
    out_activation_ = "identity"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y may be (n_samples, n_outputs)
        tags.target_tags.single_output = True
        return tags

    def _encode_targets(self, y, reset):
        dtype = self._dtype
        arr = np.asarray(y)
        if arr.dtype.kind not in "biuf":
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"y: expected numbers, got dtype {arr.dtype} ({exc})") from None
        arr = arr.astype(dtype, copy=False)
        if not np.isfinite(arr).all():
            raise ValueError("Input y contains NaN or infinity.")
        if arr.ndim not in (1, 2):
            raise ValueError(f"y: expected shape (n_samples,) or (n_samples, n_outputs), got "
                             f"{arr.shape}")
        if reset:
            self._y_1d = arr.ndim == 1
            self.n_outputs_ = 1 if arr.ndim == 1 else arr.shape[1]
        elif (1 if arr.ndim == 1 else arr.shape[1]) != self.n_outputs_:
            raise ValueError(f"y: expected {self.n_outputs_} outputs, as in the first fit")
        self._loss_scale = 2.0 * self.n_outputs_
        return arr.reshape(arr.shape[0], -1)

    def _validation_score(self, params, x_val, y_val) -> float:
        from .api import predict

        return _r2(y_val, predict(params, x_val, kernel=self.kernel))

    def partial_fit(self, X, y):
        """One epoch over ``(X, y)``, continuing from the current parameters and optimiser
        state (from new ones on the first call)."""
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """The network's outputs, shape (n_samples,) when fitted on 1-D y."""
        z2 = self._forward(X)
        return z2.ravel() if self._y_1d else z2

    def _extra_meta(self):
        return dict(y_1d=bool(self._y_1d), n_outputs_=self.n_outputs_)

    def _restore_meta(self, meta):
        self._y_1d = meta["y_1d"]
        self.n_outputs_ = meta["n_outputs_"]
        self._loss_scale = 2.0 * self.n_outputs_

    def _from_model(self, model):
        self.n_outputs_ = model.params.w2.shape[1]
        self._y_1d = self.n_outputs_ == 1
        self._loss_scale = 2.0 * self.n_outputs_


class MLPClassifier(_ClassifierMixin, _MLP):
    """scikit-learn's ``MLPClassifier`` on fastnn's kernels: one ReLU hidden layer, softmax
    cross-entropy over the classes.

    Parameters and fitted attributes as ``MLPRegressor``, with ``classes_`` (the labels, any
    type ``numpy.unique`` sorts, in output order), ``loss_curve_`` the mean cross-entropy per
    epoch (plus the L2 term: scikit-learn's ``loss_``), ``validation_scores_`` the accuracy,
    ``out_activation_`` ``"softmax"`` (also for two classes, where scikit-learn has one logistic
    output), ``predict_proba`` the softmax of the outputs.  One label per sample: multilabel
    indicator targets are not supported.
    """

    _loss = "softmax"
    out_activation_ = "softmax"

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
            raise ValueError(f"y: expected class labels of shape (n_samples,), got {arr.shape} "
                             f"(fastnn's MLPClassifier takes one label per sample; multilabel "
                             f"targets are not supported)")
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

    def _validation_score(self, params, x_val, y_val) -> float:
        from .api import predict

        return float(np.mean(np.argmax(predict(params, x_val, kernel=self.kernel), 1) == y_val))

    def partial_fit(self, X, y, classes=None):
        """One epoch over ``(X, y)``, continuing from the current parameters and optimiser
        state.  The first call needs ``classes`` (all labels that will ever appear) unless
        ``y`` already holds them all."""
        if not hasattr(self, "params_"):
            self._first_classes = classes
            try:
                return self._fit(X, y, incremental=True)
            finally:
                self._first_classes = None
        if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes: {classes!r} differs from the first call's "
                             f"{self.classes_.tolist()!r}")
        return self._fit(X, y, incremental=True)

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

    def _from_model(self, model):
        self.classes_ = model.classes
        self.n_outputs_ = len(model.classes)


__all__ = ["MLPClassifier", "MLPRegressor", "Params"]
