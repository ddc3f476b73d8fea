"""The estimators' input checks, scikit-learn's: ``X`` (its feature names, its dtype, no copy
where none is needed), ``sample_weight``, the regressor's targets and the classifier's labels
(``Labels``: scikit-learn's ``LabelBinarizer`` when installed, the same rules otherwise)."""
from __future__ import annotations

import numbers
import warnings

import numpy as np

from ..kernels.bf16 import is_bfloat16
from ..params import as_float_dtype
from ..validation import check_finite, check_sparse_x, is_sparse
from ._compat import HAVE_SKLEARN, DataConversionWarning


def feature_names(X):
    """The column names of a DataFrame-like ``X`` when all are strings (scikit-learn's rule),
    else None."""
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    if len(names) and all(isinstance(n, str) for n in names):
        return names
    return None


def check_feature_names(est, X, *, reset):
    """scikit-learn's feature-name checks: remember the names at fit; at predict, a DataFrame
    whose columns differ (other names, missing ones, another order) is an error, a mix of named
    and unnamed input a warning."""
    names = feature_names(X)
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
                      f"feature names", UserWarning, stacklevel=5)
        return
    if fitted is None:
        warnings.warn(f"X has feature names, but {name} was fitted without feature names",
                      UserWarning, stacklevel=5)
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


def check_X(est, X, *, reset):
    """X as a 2-D finite float array in the estimator's dtype (float32 input stays float32
    unless ``dtype`` says otherwise), without a second copy where none is needed (the NaN check
    sums first and looks for the culprit in blocks only when the sum is not finite)."""
    name = type(est).__name__
    check_feature_names(est, X, reset=reset)
    if is_sparse(X):
        return _check_sparse_X(est, X, name, reset)
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
                         f"is required by {name}.")
    if arr.shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum of 1 "
                         f"is required by {name}.")
    dtype = data_dtype(est, arr) if reset else est._dtype
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


def _check_sparse_X(est, X, name, reset):
    """``check_X`` of a scipy.sparse matrix or array: a ``SparseRows`` (the sparse rung's input,
    ``fastnn.validation.check_sparse_x``: never densified), with scikit-learn's messages."""
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    shape = X.shape
    if len(shape) != 2:
        raise ValueError(f"Expected 2D array, got {len(shape)}D array instead")
    for axis, what in ((0, "sample"), (1, "feature")):
        if shape[axis] < 1:
            raise ValueError(f"Found array with 0 {what}(s) (shape={shape}) while a minimum of "
                             f"1 is required by {name}.")
    if not reset and shape[1] != est.n_features_in_:
        raise ValueError(f"X has {shape[1]} features, but {name} is expecting "
                         f"{est.n_features_in_} features as input.")
    dtype = data_dtype(est, X) if reset else est._dtype
    try:
        arr = check_sparse_x(X, dtype, None, "X")
    except ValueError as exc:
        if "NaN or inf" in str(exc):
            raise ValueError("Input X contains NaN or infinity.") from None
        raise
    if reset:
        est.n_features_in_ = shape[1]
        est._dtype = dtype
    return arr


def data_dtype(est, arr) -> np.dtype:
    """``dtype`` when set (float32 for ``"bfloat16"``: the master weights'), else the data's own
    when it is float32/float64, else float64."""
    if is_bfloat16(est.dtype):
        return np.dtype(np.float32)
    if est.dtype is not None:
        return as_float_dtype(est.dtype, "dtype")
    return arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float64)


def check_sample_weight(sample_weight, n, dtype):
    """scikit-learn's ``_check_sample_weight``: None, a number (every row's weight) or ``(n,)``
    finite numbers; fastnn also needs them non-negative with a positive sum (a weighted mean)."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        return np.full(n, sample_weight, dtype=dtype)
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        try:
            w = w.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"sample_weight: expected numbers, got dtype {w.dtype}") from None
    if w.ndim != 1:
        raise ValueError(f"Sample weights must be 1D array or scalar, got shape {w.shape}")
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected {(n,)}!")
    if not np.isfinite(w).all():
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if (w < 0).any():
        raise ValueError("sample_weight: fastnn's weighted mean needs non-negative weights, got "
                         "a negative one")
    if not w.sum() > 0:
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return w.astype(dtype)


def column_or_1d(y):
    """A column vector as 1-D, with scikit-learn's DataConversionWarning."""
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected. Please change "
                      "the shape of y to (n_samples, ), for example using ravel().",
                      DataConversionWarning, stacklevel=5)
        return y.ravel()
    return y


def regression_targets(y, n, dtype):
    """The regressor's ``y``: numbers, finite, ``(n,)`` or ``(n, k)``, as ``(n, k)`` in
    ``dtype``."""
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"y: expected numbers, got dtype {arr.dtype} ({exc})") from None
    if arr.ndim not in (1, 2):
        raise ValueError(f"y: expected shape (n_samples,) or (n_samples, n_outputs), got "
                         f"{arr.shape}")
    arr = column_or_1d(arr)
    if arr.shape[0] != n:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                         f"[{n}, {arr.shape[0]}]")
    arr = arr.astype(dtype, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError("Input y contains NaN or infinity.")
    return arr.reshape(n, -1)


class Labels:
    """The classifier's targets as scikit-learn's ``LabelBinarizer`` makes them: ``y_type_``
    ``"binary"`` (one column, 1 for ``classes_[1]``), ``"multiclass"`` (one column per class)
    or ``"multilabel-indicator"`` (the indicator matrix itself); ``inverse_transform`` turns
    outputs back into labels (a threshold of 0.5 for the first and last, argmax for the
    other).  scikit-learn's own when it is installed (its errors for label types it refuses)."""

    def __init__(self):
        if HAVE_SKLEARN:
            from sklearn.preprocessing import LabelBinarizer

            self._lb = LabelBinarizer()
        else:
            self._lb = None

    @property
    def y_type_(self):
        return self._lb.y_type_ if self._lb is not None else self._y_type

    @property
    def classes_(self):
        return self._lb.classes_ if self._lb is not None else self._classes

    def fit(self, y):
        if self._lb is not None:
            self._lb.fit(y)
            return self
        arr = np.asarray(y)
        self._y_type = target_type(arr)
        if self._y_type == "multilabel-indicator":
            self._classes = np.arange(arr.shape[1])
        else:
            self._classes = np.unique(arr)
        return self

    def transform(self, y):
        if self._lb is not None:
            return self._lb.transform(y)
        arr = np.asarray(y)
        if self._y_type == "multilabel-indicator":
            return (arr != 0).astype(int)
        classes = self._classes
        idx = np.searchsorted(classes, arr)
        idx = np.clip(idx, 0, len(classes) - 1)
        known = classes[idx] == arr
        if self._y_type == "binary" or len(classes) < 3:
            return (known & (idx == 1)).astype(int).reshape(-1, 1)
        out = np.zeros((arr.shape[0], len(classes)), int)
        out[np.arange(arr.shape[0])[known], idx[known]] = 1
        return out

    def inverse_transform(self, Y):
        if self._lb is not None:
            return self._lb.inverse_transform(Y)
        classes = self._classes
        if self._y_type == "multiclass":
            return classes.take(np.asarray(Y).argmax(axis=1), mode="clip")
        y = (np.asarray(Y) > 0.5).astype(int)
        if self._y_type == "multilabel-indicator":
            return y
        if len(classes) == 1:
            return np.repeat(classes[0], len(y))
        return classes[y.reshape(-1)]


def target_type(y) -> str:
    """scikit-learn's ``type_of_target`` for what a classifier takes (ValueError otherwise)."""
    if y.ndim == 2 and y.shape[1] > 1:
        if y.dtype.kind in "biuf" and np.isin(y, (0, 1)).all():
            return "multilabel-indicator"
        raise ValueError("Multioutput target data is not supported with label binarization")
    if y.ndim != 1:
        raise ValueError(f"y: expected class labels of shape (n_samples,), got {y.shape}")
    if y.dtype.kind == "f" and (not np.isfinite(y).all() or np.any(y != np.round(y))):
        raise ValueError("Unknown label type: continuous. Maybe you are trying to fit a "
                         "classifier, which expects discrete classes on a regression target "
                         "with continuous values.")
    return "binary" if len(np.unique(y)) <= 2 else "multiclass"


def unique_labels(y):
    """The distinct labels of ``y`` (the columns of a multilabel indicator matrix)."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] > 1:
        return np.arange(arr.shape[1])
    if HAVE_SKLEARN:
        from sklearn.utils.multiclass import unique_labels as sk_unique

        return sk_unique(arr)
    return np.unique(arr)
