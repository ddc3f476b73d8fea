"""Input checks that run before any kernel.

Numba kernels do no bounds checks, so a wrong shape reaching one is a segfault or silent memory
corruption.  Every public function passes its arguments through here first.  What comes out is
what every kernel may assume: float32/float64 arrays of one dtype, C-contiguous, aligned and
writeable (writeable only so that Numba sees one array type, not a second read-only one), with
consistent shapes; ``y`` is 2-D.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .params import SUPPORTED_DTYPES, Params

_NUMERIC_KINDS = "biuf"


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:120]


def _kernel_ready(a: np.ndarray) -> np.ndarray:
    """``a`` itself when a kernel can take it, else a C-contiguous copy."""
    if a.flags.c_contiguous and a.flags.aligned and a.flags.writeable:
        return a
    return np.array(a, order="C", copy=True)


def check_params(params, *, writeable: bool = False) -> Params:
    """``params`` as a ``Params`` of four consistent float32/float64 arrays of one dtype.

    The arrays are returned as given (never copied), so in-place updates reach the caller's arrays.
    """
    if not isinstance(params, tuple) or len(params) != 4:
        raise TypeError(f"params: expected fastnn.Params(w1, b1, w2, b2), got {_describe(params)}")
    names = Params._fields
    for name, p in zip(names, params):
        if not isinstance(p, np.ndarray):
            raise TypeError(f"params.{name}: expected a numpy array, got {_describe(p)}")
        if p.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"params.{name}: expected dtype float32 or float64, got {p.dtype}")
    w1, b1, w2, b2 = params
    for name, p in zip(names[1:], params[1:]):
        if p.dtype != w1.dtype:
            raise TypeError(f"params.{name}: expected dtype {w1.dtype} (the dtype of params.w1), "
                            f"got {p.dtype}")
    if w1.ndim != 2 or 0 in w1.shape:
        raise ValueError(f"params.w1: expected a 2-D array (n_in, n_hidden) with both sizes >= 1, "
                         f"got shape {w1.shape}")
    n, h = w1.shape
    if b1.shape != (h,):
        raise ValueError(f"params.b1: expected shape ({h},), got {b1.shape}")
    if w2.ndim != 2 or w2.shape[0] != h or w2.shape[1] < 1:
        raise ValueError(f"params.w2: expected shape ({h}, n_out) with n_out >= 1, got {w2.shape}")
    k = w2.shape[1]
    if b2.shape != (k,):
        raise ValueError(f"params.b2: expected shape ({k},), got {b2.shape}")
    if writeable:
        for name, p in zip(names, params):
            if not p.flags.writeable:
                raise ValueError(f"params.{name}: is read-only, but the step updates it in place")
    return Params(*params)


def as_numeric_array(value, name: str, dtype: np.dtype) -> np.ndarray:
    if value is None:
        raise TypeError(f"{name}: expected a numeric array, got None")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name}: expected a numeric array, got {_describe(value)} ({exc})") from exc
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{name}: expected real numbers (bool, int or float), got dtype {arr.dtype}")
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr


def check_x(x, params: Params) -> np.ndarray:
    """``x`` as a kernel-ready (m, n) array in the params' dtype."""
    return check_inputs(x, params.dtype, n=params.w1.shape[0])


def check_inputs(x, dtype, n=None) -> np.ndarray:
    """``x`` as a kernel-ready (m, n) array of ``dtype``; any ``n >= 1`` when ``n`` is None."""
    x = as_numeric_array(x, "x", dtype)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1 or (n is not None and x.shape[1] != n):
        want = "(m, n) with m, n >= 1" if n is None else \
            f"(m, {n}) with m >= 1 (n = params.w1.shape[0])"
        raise ValueError(f"x: expected shape {want}, got {x.shape}")
    return _kernel_ready(x)


def check_y(y, params: Params, m: int) -> np.ndarray:
    """``y`` as a kernel-ready (m, k) array in the params' dtype; 1-D ``y`` is taken when k == 1."""
    k = params.w2.shape[1]
    y = as_numeric_array(y, "y", params.dtype)
    if y.ndim == 1 and k == 1 and y.shape[0] == m:
        y = y.reshape(m, 1)
    if y.shape != (m, k):
        expected = f"({m}, {k})" + (f" or ({m},)" if k == 1 else "")
        raise ValueError(f"y: expected shape {expected} (m = x.shape[0], k = params.w2.shape[1]), "
                         f"got {y.shape}")
    return _kernel_ready(y)


def check_lr(lr, dtype=None) -> float:
    """``lr`` as a finite float; with ``dtype``, also a normal number of it (the kernels compute
    ``lr * grad`` in the params' dtype: 1e39 would be inf in float32, and 1e-39 a subnormal
    with a few bits of precision left)."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr: expected a real number, got {_describe(lr)}")
    lr = float(lr)
    if not math.isfinite(lr):
        raise ValueError(f"lr: expected a finite number, got {lr}")
    if dtype is not None:
        info = np.finfo(dtype)
        if abs(lr) > float(info.max) or 0.0 < abs(lr) < float(info.tiny):
            raise ValueError(f"lr: {lr:g} is not representable in {np.dtype(dtype)} (the params' "
                             f"dtype: normal numbers from {float(info.tiny):.3g} to "
                             f"{float(info.max):.3g})")
    return lr


def check_finite(a: np.ndarray, name: str, block_bytes: int = 1 << 20) -> None:
    """ValueError naming the first NaN or inf in ``a``.  Checked in blocks of rows of about
    ``block_bytes``, so the check never allocates a mask as large as the data."""
    rows = max(1, block_bytes // max(1, a[:1].nbytes)) if a.ndim else 1
    flat = a.reshape(1) if a.ndim == 0 else a
    for start in range(0, flat.shape[0], rows):
        block = flat[start:start + rows]
        finite = np.isfinite(block)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            bad[0] += start
            raise ValueError(f"{name}: contains NaN or inf (first at index "
                             f"{tuple(int(i) for i in bad)})")


def check_targets(y, params: Params, m: int, loss: str = "squared") -> np.ndarray:
    """The targets as the kernels take them: a kernel-ready (m, k) array in the params' dtype.

    ``loss="squared"``: ``y`` as ``check_y`` takes it.  ``loss="softmax"``: either integer class
    labels of shape (m,) in ``[0, k)``, turned into one-hot rows, or an (m, k) array of
    non-negative target weights (one-hot or probabilities) used as given.
    """
    if loss != "softmax":
        return _check_range(check_y(y, params, m), loss)
    k = params.w2.shape[1]
    arr = np.asarray(y) if y is not None else None
    if arr is not None and arr.ndim == 1:
        if arr.dtype.kind not in "iu":
            raise TypeError(f"y: loss='softmax' takes integer class labels (m,) or (m, {k}) target "
                            f"probabilities, got a 1-D array of dtype {arr.dtype}")
        if arr.shape[0] != m:
            raise ValueError(f"y: expected {m} labels (m = x.shape[0]), got {arr.shape[0]}")
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            raise ValueError(f"y: class labels must lie in [0, {k}) (k = params.w2.shape[1]), "
                             f"got values from {arr.min()} to {arr.max()}")
        return one_hot(arr, k, params.dtype)
    y = check_y(y, params, m)
    if not (y >= 0).all():
        raise ValueError("y: softmax targets must be non-negative (one-hot rows or probabilities)")
    return y


def _check_range(y, loss):
    """The logistic loss's targets lie in [0, 1], the Poisson loss's are >= 0 (NaN is checked
    later, by ``check_finite``)."""
    if loss == "logistic" and not ((y >= 0) & (y <= 1) | np.isnan(y)).all():
        raise ValueError("y: loss='logistic' takes targets in [0, 1] (0/1 labels, one column an "
                         "output, or probabilities)")
    if loss == "poisson" and not ((y >= 0) | np.isnan(y)).all():
        raise ValueError("y: loss='poisson' takes non-negative targets (counts or rates)")
    return y


def check_sample_weight(sample_weight, m: int, dtype):
    """``sample_weight`` as the kernels take it: None, or a finite, non-negative (m,) array in
    ``dtype`` whose sum is positive."""
    if sample_weight is None:
        return None
    w = as_numeric_array(sample_weight, "sample_weight", np.float64)
    if w.ndim == 0:
        w = np.full(m, float(w))
    if w.ndim != 1 or w.shape[0] != m:
        raise ValueError(f"sample_weight: expected shape ({m},) (one weight per row of x), got "
                         f"{w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("sample_weight: expected finite numbers, got NaN or infinity")
    if (w < 0).any():
        raise ValueError("sample_weight: expected non-negative weights, got a negative one")
    if not w.sum() > 0:
        raise ValueError("sample_weight: the weights sum to 0; at least one must be positive")
    return w.astype(dtype)


def with_weights(y, weights):
    """The targets with the rows' weights as one more column (the kernels' convention for
    weighted rows, ``kernels/common/losses.py``), or ``y`` itself without weights."""
    if weights is None:
        return y
    return np.ascontiguousarray(np.concatenate([y, weights.reshape(-1, 1).astype(y.dtype)],
                                               axis=1))


def one_hot(labels: np.ndarray, k: int, dtype) -> np.ndarray:
    """(m, k) array with ``out[i, labels[i]] = 1`` and zeros elsewhere."""
    out = np.zeros((labels.shape[0], k), dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out
