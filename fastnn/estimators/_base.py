"""The estimators' shared part: parameters, scikit-learn's ``_fit`` (first pass or not, the
inputs, the initialisation, the solver, the final check), the fitted network's outputs, files.

The solvers live beside it: ``_stochastic`` (``sgd``, ``adam``: the epochs, their bookkeeping,
the schedules) and ``_lbfgs``.  What each estimator adds (its targets, its outputs, its score) is
in ``__init__``'s two classes.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import kernels
from ..auto.choice import bf16_variant
from ..kernels.bf16 import is_bfloat16
from ..kernels.common import mt19937
from ..checkpoint import Checkpoint
from ..checkpoint import load as load_checkpoint
from ..checkpoint import save as save_checkpoint
from ..optim import Optimizer
from ..params import Params
from ..reference import output_layer
from . import _lbfgs, _stochastic
from ._compat import BaseEstimator, NotFittedError, check_random_state
from ._inputs import check_sample_weight, check_X

# fastnn's older names for scikit-learn's parameters (used when set, i.e. not None).
ALIASES = {"hidden": "hidden_layer_sizes", "epochs": "max_iter", "optimizer": "solver",
           "nesterov": "nesterovs_momentum", "beta1": "beta_1", "beta2": "beta_2",
           "eps": "epsilon", "patience": "n_iter_no_change"}
STOCHASTIC = ("sgd", "adam")
# fitted attributes a file of ``save`` records (beside the params, the optimiser, best coefs)
FITTED = ("n_features_in_", "n_iter_", "t_", "n_outputs_", "n_layers_", "out_activation_",
          "loss_", "loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_",
          "_no_improvement_count", "_learning_rate")


class Settings:
    """The parameters as the solvers read them: scikit-learn's names with fastnn's aliases
    applied (``hidden`` the one hidden layer's width, ``lr`` the initial learning rate,
    ``schedule`` its schedule)."""

    def __init__(self, est):
        for name in ("solver", "max_iter", "nesterovs_momentum", "beta_1", "beta_2", "epsilon",
                     "n_iter_no_change"):
            setattr(self, name, getattr(est, name))
        sizes = est.hidden_layer_sizes
        for old, new in ALIASES.items():
            if getattr(est, old) is not None:
                value = getattr(est, old)
                if new == "hidden_layer_sizes":
                    sizes = value
                else:
                    setattr(self, new, value)
        self.lr, self.schedule = est.learning_rate_init, est.learning_rate
        if isinstance(self.schedule, numbers.Real):  # fastnn's name for the step size
            self.lr, self.schedule = float(self.schedule), "constant"
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if np.any(np.array(sizes) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        if len(sizes) != 1:
            raise ValueError(f"hidden_layer_sizes: fastnn trains the two-layer network of one "
                             f"hidden layer, got {len(sizes)} layers {tuple(sizes)}; pass one "
                             f"size, such as (100,)")
        self.hidden = int(sizes[0])
        self.stochastic = self.solver in STOCHASTIC


class MLP(BaseEstimator):
    """What ``MLPClassifier`` and ``MLPRegressor`` share (their docstrings say what they are)."""

    _is_regressor = False

    def _set(self, values: dict) -> None:
        for name, value in values.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    # --- what the subclasses define ---

    def _targets(self, y, n, incremental, reset):
        """``y`` as the (n, k) float targets of the network's outputs."""
        raise NotImplementedError

    def _objective(self):
        """``(loss, c, s)``: fastnn's loss, the factor from scikit-learn's gradient to fastnn's
        (``c``) and from scikit-learn's reported loss to fastnn's (``s``)."""
        raise NotImplementedError

    def _output_activation(self) -> str:
        raise NotImplementedError

    def _score_outputs(self, out, y, sample_weight) -> float:
        """scikit-learn's validation score of outputs ``out`` against ``y``."""
        raise NotImplementedError

    # --- fitting ---

    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y``: ``max_iter`` epochs at most of the stochastic
        solvers (fewer when ``tol`` / ``n_iter_no_change`` or ``early_stopping`` stop them), or
        L-BFGS-B's iterations; from new parameters unless ``warm_start``.  ``sample_weight``
        (n_samples,): each row's weight in the loss (and in the validation score)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, *, incremental):
        self._validate_params()
        s = Settings(self)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is "
                             f"None")
        first = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X = check_X(self, X, reset=first)
        Y = self._targets(y, X.shape[0], incremental, reset=first)
        sw = check_sample_weight(sample_weight, X.shape[0], X.dtype)
        self.n_outputs_ = Y.shape[1]
        rs = check_random_state(self.random_state)
        if first:
            self._initialize(Y, X.shape[1], s, X.dtype, rs)
        if s.stochastic:
            _stochastic.fit(self, X, Y, sw, s, rs, incremental)
        else:
            _lbfgs.fit(self, X, Y, sw, s)
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.")
        return self

    def _initialize(self, Y, n_features, s, dtype, rs):
        """scikit-learn's first pass: counters, the output activation, Glorot-uniform weights
        drawn from ``rs`` (in its order: each layer's weights, then its biases), and the
        stochastic solvers' bookkeeping."""
        self.n_iter_ = self.t_ = 0
        self.n_outputs_ = Y.shape[1]
        self.n_layers_ = 3
        self.out_activation_ = self._output_activation()
        factor = 2.0 if self.activation == "logistic" else 6.0
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in ((n_features, s.hidden), (s.hidden, self.n_outputs_)):
            bound = np.sqrt(factor / (fan_in + fan_out))
            # (scikit-learn's draw to the bit, compiled: it is most of a wide sparse fit)
            self.coefs_.append(mt19937.uniform(rs, -bound, bound, (fan_in, fan_out), dtype))
            intercept = rs.uniform(-bound, bound, fan_out)
            self.intercepts_.append(intercept.astype(dtype, copy=False))
        # (the same arrays, not copies: training never writes into them, it works on a copy
        # and rebinds coefs_ after; early stopping rebinds these to copies of its best)
        self._best_coefs, self._best_intercepts = list(self.coefs_), list(self.intercepts_)
        if s.stochastic:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    # --- the fitted network ---

    def _check_fitted(self):
        if not hasattr(self, "coefs_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call "
                                 f"'fit' with appropriate arguments before using this estimator.")

    @property
    def params_(self) -> Params:
        """``coefs_`` and ``intercepts_`` as fastnn's ``Params(w1, b1, w2, b2)``, in the
        fitted dtype, C-contiguous (the arrays themselves where they already are)."""
        self._check_fitted()
        dt = self._dtype
        (w1, w2), (b1, b2) = self.coefs_, self.intercepts_
        return Params(*(np.ascontiguousarray(a, dtype=dt) for a in (w1, b1, w2, b2)))

    def _set_params(self, params: Params) -> None:
        self.coefs_ = [params.w1, params.w2]
        self.intercepts_ = [params.b1, params.b2]

    def _outputs(self, params, X):
        """The output layer's activations for ``X`` (checked, kernel-ready)."""
        from ..api import predict

        kernel = self.kernel
        if is_bfloat16(self.dtype) and kernel == kernels.AUTO:  # as it trained: bfloat16
            kernel = bf16_variant(kernel, params).name
        z = predict(params, X, kernel=kernel, activation=self.activation)
        return output_layer(self.out_activation_, z)

    def _forward(self, X):
        self._check_fitted()
        X = check_X(self, X, reset=False)
        return self._outputs(self.params_, X)

    def _validation_score(self, params, X, y, sample_weight) -> float:
        """scikit-learn's ``_score`` with the current ``params``: NaN when an output is not
        finite."""
        out = self._outputs(params, X)
        if not np.isfinite(out).all():
            return np.nan
        return self._score_outputs(out, y, sample_weight)

    # --- files ---

    def save(self, path):
        """Write the fitted model (params, optimiser state, curves, settings) to ``path``
        atomically, as a ``.npz`` that loads without pickle; only a new file or a fastnn
        checkpoint is ever replaced.  (Pickle and joblib work too.)"""
        self._check_fitted()
        names = getattr(self, "feature_names_in_", None)
        fitted = {key: _jsonable(getattr(self, key)) for key in FITTED if hasattr(self, key)}
        meta = dict(estimator=type(self).__name__, settings=_jsonable(self.get_params()),
                    fitted=fitted, dtype=np.dtype(self._dtype).name,
                    feature_names_in_=None if names is None else [str(n) for n in names],
                    **self._extra_meta())
        opt = getattr(self, "optimizer_", None)
        best = (self._best_coefs[0], self._best_intercepts[0], self._best_coefs[1],
                self._best_intercepts[1])
        extra = {"best": Params(*(np.ascontiguousarray(a, dtype=self._dtype) for a in best))}
        save_checkpoint(path, Checkpoint(
            self.params_, 0, np.empty(0),
            {} if opt is None else dict(opt.hyperparameters(), t=opt.t),
            {} if opt is None else dict(opt.state), meta, extra))

    @classmethod
    def load(cls, path):
        """The model in ``path``: a file of ``save`` (predicts, scores and continues training
        with ``partial_fit`` exactly as the saved estimator would), or a training checkpoint of
        ``fastnn train --checkpoint`` (its class labels and feature names included)."""
        ck = load_checkpoint(path)
        meta = ck.meta
        if "estimator" not in meta:
            return cls.from_checkpoint(path)
        if meta["estimator"] != cls.__name__:
            raise ValueError(f"{path!r} holds a {meta['estimator']!r}, not a {cls.__name__}")
        if "fitted" not in meta:
            raise ValueError(f"{path!r} was saved by an older fastnn, before the estimators "
                             f"matched scikit-learn's fitting; fit the model again")
        est = cls(**meta["settings"])
        if ck.optimizer:
            hyper = dict(ck.optimizer)
            t = hyper.pop("t", 0)
            est.optimizer_ = Optimizer(hyper.pop("name"), hyper.pop("lr"), **hyper)
            est.optimizer_.t = t
            est.optimizer_.state = dict(ck.optimizer_state)
        est._dtype = np.dtype(meta["dtype"])
        est._set_params(ck.params)
        best = ck.extra["best"]
        est._best_coefs, est._best_intercepts = [best.w1, best.w2], [best.b1, best.b2]
        for key, value in meta["fitted"].items():
            setattr(est, key, _unjson(value))
        if meta.get("feature_names_in_") is not None:
            est.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
        est._restore_meta(meta)
        return est

    @classmethod
    def from_checkpoint(cls, path):
        """A fitted estimator from a training checkpoint (``fastnn train --checkpoint``, or
        ``fastnn.train(checkpoint=..., info=...)``): its parameters, task, class labels and
        feature names; ready to predict (``partial_fit`` continues with a new optimiser).
        fastnn's own runs have softmax outputs for classes (two for a binary problem)."""
        from ..model import read_model

        model = read_model(path)
        want = "regress" if cls._is_regressor else "classify"
        if model.task != want:
            raise ValueError(f"{path!r} holds a {model.task} model, not one for {cls.__name__}")
        kw = dict(loss="poisson") if model.output == "exp" else {}
        est = cls(hidden_layer_sizes=(model.params.w1.shape[1],), activation=model.activation,
                  **kw)
        est._dtype = model.params.dtype
        est._set_params(model.params)
        est._best_coefs = [c.copy() for c in est.coefs_]
        est._best_intercepts = [i.copy() for i in est.intercepts_]
        est.n_features_in_ = model.n_features
        if model.feature_names is not None:
            est.feature_names_in_ = np.asarray(model.feature_names, dtype=object)
        est.n_iter_ = est.t_ = 0
        est.n_layers_ = 3
        est.n_outputs_ = model.params.w2.shape[1]
        est.out_activation_ = model.output
        est.loss_curve_, est.validation_scores_ = [], None
        est.best_loss_, est.best_validation_score_ = np.inf, None
        est._no_improvement_count = 0
        est._from_model(model)
        return est

    def _extra_meta(self):
        return {}

    def _restore_meta(self, meta):
        pass

    def _from_model(self, model):
        pass


def _unjson(v):
    if isinstance(v, list):
        return [_unjson(x) for x in v]
    return float(v) if v in ("inf", "-inf", "nan") else v


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if np.isfinite(v) else repr(v)  # JSON has no inf or nan: 'inf', '-inf', 'nan'

    if isinstance(v, (np.random.RandomState, np.random.Generator)):
        return None
    if isinstance(v, (type, np.dtype)):
        return np.dtype(v).name
    return v


__all__ = ["MLP", "Settings", "kernels"]
