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


def check_x(x, params: Params):
    """``x`` as a kernel-ready (m, n) array in the params' dtype, or for sparse input a
    ``SparseRows`` (``check_sparse_x``)."""
    return check_inputs(x, params.dtype, n=params.w1.shape[0])


def check_inputs(x, dtype, n=None, name="x"):
    """``x`` as a kernel-ready (m, n) array of ``dtype``; any ``n >= 1`` when ``n`` is None.
    A scipy.sparse matrix or array (or ``SparseRows``) becomes a ``SparseRows``."""
    if is_sparse(x):
        return check_sparse_x(x, dtype, n, name)
    if getattr(x, "format", None) == "fastnn-bf16-rows":  # rounded once by to_bfloat16
        if n is not None and x.shape[1] != n:
            raise ValueError(f"{name}: expected shape (m, {n}) (n = params.w1.shape[0]), got "
                             f"bfloat16 rows of shape {x.shape}")
        return x
    x = as_numeric_array(x, name, dtype)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1 or (n is not None and x.shape[1] != n):
        want = "(m, n) with m, n >= 1" if n is None else \
            f"(m, {n}) with m >= 1 (n = params.w1.shape[0])"
        raise ValueError(f"{name}: expected shape {want}, got {x.shape}")
    return _kernel_ready(x)


def is_sparse(x) -> bool:
    """Whether ``x`` is a scipy.sparse matrix or array, or fastnn's ``SparseRows`` of one."""
    module = type(x).__module__
    if module.startswith("scipy.sparse"):
        import scipy.sparse

        return scipy.sparse.issparse(x)
    return module == "fastnn.kernels.sparse"


def _check_compressed(indptr, indices, major, minor, name):
    """A CSR (or CSC) structure's invariants, checked before anything reads through it: an
    ``indptr`` of ``major + 1`` non-decreasing offsets from 0 to at most the stored entries, and
    every used index in ``[0, minor)``.  Returns the number of entries in use."""
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    if indptr.ndim != 1 or indptr.shape[0] != major + 1 or indptr.dtype.kind not in "iu":
        raise ValueError(f"{name}: indptr must be {major + 1} integers (rows + 1), got "
                         f"{indptr.shape} of {indptr.dtype}")
    if indptr[0] != 0 or (major and np.any(indptr[1:] < indptr[:-1])):
        raise ValueError(f"{name}: indptr must start at 0 and never decrease")
    nnz = int(indptr[-1])
    if indices.ndim != 1 or indices.dtype.kind not in "iu" or nnz > indices.shape[0]:
        raise ValueError(f"{name}: indptr ends at {nnz}, but there are "
                         f"{indices.shape[0] if indices.ndim == 1 else indices.shape} indices")
    used = indices[:nnz]
    if nnz and (int(used.min()) < 0 or int(used.max()) >= minor):
        bad = int(np.flatnonzero((used < 0) | (used >= minor))[0])
        raise ValueError(f"{name}: stored entry {bad} has index {int(used[bad])}, outside "
                         f"[0, {minor})")
    return nnz


def check_sparse_x(x, dtype, n=None, name="x"):
    """A scipy.sparse matrix or array (CSR, CSC, COO, any other format; int32 or int64 indices;
    unsorted indices and duplicates as scipy means them: summed) as a ``SparseRows`` of
    ``dtype``, never densified: CSR is used as it is (its entries copied only to change their
    dtype or their indices to int64), another format is converted to CSR by scipy once.  Every
    index is checked first (the kernels do no bounds checks), and the values must be finite."""
    from .kernels.sparse import SparseRows

    dtype = np.dtype(dtype)
    if isinstance(x, SparseRows):
        if x.n < 1 or x.shape[0] < 1 or (n is not None and x.n != n):
            raise ValueError(f"{name}: expected sparse rows with {n} columns, got {x.shape}")
        if x.dtype == dtype:
            return x
        return SparseRows(x.indptr, x.indices, x.data.astype(dtype), x.n, x.rows)
    shape = x.shape
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1 or (n is not None and shape[1] != n):
        want = "(m, n) with m, n >= 1" if n is None else \
            f"(m, {n}) with m >= 1 (n = params.w1.shape[0])"
        raise ValueError(f"{name}: expected a sparse matrix of shape {want}, got {shape}")
    if x.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{name}: expected real numbers (bool, int or float), got a sparse "
                        f"matrix of dtype {x.dtype}")
    m, cols = shape
    fmt = x.format
    if fmt == "csc":
        _check_compressed(x.indptr, x.indices, cols, m, name)
    elif fmt == "coo":
        coords = getattr(x, "coords", None) or (x.row, x.col)
        for axis, (c, size) in enumerate(zip(coords, shape)):
            if c.size and (int(c.min()) < 0 or int(c.max()) >= size):
                raise ValueError(f"{name}: a stored entry's {('row', 'column')[axis]} index is "
                                 f"outside [0, {size})")
        if len(coords[0]) != len(x.data):
            raise ValueError(f"{name}: {len(coords[0])} coordinates for {len(x.data)} values")
    elif fmt != "csr" and hasattr(x, "check_format"):
        x.check_format(full_check=True)
    csr = x if fmt == "csr" else x.tocsr()
    nnz = _check_compressed(csr.indptr, csr.indices, m, cols, name)
    data = np.asarray(csr.data)
    if data.shape[0] < nnz:
        raise ValueError(f"{name}: indptr ends at {nnz}, but there are {data.shape[0]} values")
    data = np.ascontiguousarray(data[:nnz], dtype=dtype)
    check_finite(data, f"{name} (its stored values)")
    return SparseRows(np.ascontiguousarray(csr.indptr, dtype=np.int64),
                      np.ascontiguousarray(csr.indices[:nnz], dtype=np.int64), data, cols)


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
