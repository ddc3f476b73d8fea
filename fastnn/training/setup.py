"""A run's parameters and data, checked against each other: new, given or resumed parameters, the
seed, the validation split.  Shared by ``fastnn.train`` and ``fastnn.distributed.train``."""
from __future__ import annotations

import math

import numpy as np

from ..kernels.bf16 import Bf16Data
from ..params import as_float_dtype, init_params
from ..validation import (as_numeric_array, check_finite, check_inputs, check_params,
                          check_sample_weight, check_targets, check_x, is_sparse,
                          with_weights)
from .options import check_fraction


def resolve_seed(seed, resumed) -> int:
    """The run's seed: given, else the resumed checkpoint's, else a new one (recorded)."""
    if seed is None and resumed is not None:
        seed = resumed.meta.get("seed")
    if seed is None:
        return int(np.random.SeedSequence().entropy % 2**63)
    return int(seed)


def initial_params(opts, x_dtype, n_features, y, seed, resumed):
    """The run's starting parameters: a copy of the resumed or given ones (checked against
    ``dtype`` and ``hidden``), else new ones from ``seed``, in ``dtype`` (default: the data's
    ``x_dtype`` when it is float32/float64, else float64), for ``n_features(dtype)`` inputs."""
    params = opts.params
    bf16 = opts.bfloat16 or x_dtype == "bfloat16"  # float32 master weights
    if resumed is not None:
        if params is not None:
            raise TypeError("train: pass params or resume, not both")
        params = resumed.params
    if params is not None:
        params = check_params(params).copy()
        want = np.dtype(np.float32) if bf16 else (
            None if opts.dtype is None else as_float_dtype(opts.dtype))
        if want is not None and want != params.dtype:
            asked = (opts.dtype or "bfloat16") if bf16 else want
            why = " (bfloat16 runs keep float32 master weights)" if bf16 else ""
            raise TypeError(f"dtype: got {asked}, but params have dtype {params.dtype}{why}")
        if opts.hidden is not None and opts.hidden != params.w1.shape[1]:
            raise ValueError(f"hidden: got {opts.hidden}, but params.w1 has "
                             f"{params.w1.shape[1]} hidden units")
        return params
    if opts.hidden is None:
        raise TypeError("train: pass hidden (the number of hidden units) or params")
    dtype = np.float32 if bf16 else opts.dtype
    if dtype is None:
        dtype = x_dtype if x_dtype in (np.float32, np.float64) else np.float64
    dtype = as_float_dtype(dtype)
    return init_params(n_features(dtype), opts.hidden, n_outputs(y, opts.loss), init=opts.init,
                       dtype=dtype, seed=seed)


def setup_params(opts, x, y, seed, resumed):
    """``(params, x, y)``: the run's parameters (``initial_params``) and the data checked
    against them (kernel-ready, finite; ``sample_weight`` as one more column of ``y``, the
    kernels' convention for weighted rows)."""
    ready = is_sparse(x) or isinstance(x, Bf16Data)  # (rows that keep their own shape)
    params = initial_params(opts, getattr(x, "dtype", None),
                            lambda dtype: x.shape[1] if ready else check_inputs(x, dtype).shape[1],
                            y, seed, resumed)
    x = check_x(x, params)  # (sparse: a SparseRows, its values checked finite)
    y = check_targets(y, params, x.shape[0], opts.loss)
    if isinstance(x, np.ndarray):  # (bfloat16 rows were checked when rounded)
        check_finite(x, "x")
    check_finite(y, "y")
    y = with_weights(y, check_sample_weight(opts.sample_weight, x.shape[0], params.dtype))
    return params, as_bf16(x, opts), y


def as_bf16(x, opts):
    """``x`` rounded to bfloat16 once (``kernels.bf16.Bf16Data``) for a ``dtype="bfloat16"``
    run, else as it is."""
    if not opts.bfloat16 or isinstance(x, Bf16Data):
        return x
    if is_sparse(x):
        raise TypeError("dtype='bfloat16' takes dense x; sparse x trains in float32 or float64 "
                        "on the sparse rung")
    return Bf16Data.of(x)


def n_outputs(y, loss) -> int:
    """The output layer's width ``k`` for targets ``y``: the classes of integer labels, the
    columns of target rows."""
    if loss == "softmax":
        arr = np.asarray(y)
        if arr.ndim == 1 and arr.dtype.kind in "iu" and arr.size:
            return int(arr.max()) + 1
        if arr.ndim == 2:
            return arr.shape[1]
        raise TypeError("y: loss='softmax' takes integer class labels (m,) or (m, k) target rows")
    y = as_numeric_array(y, "y", np.float64)
    return y.shape[1] if y.ndim == 2 else 1  # check_targets rejects any other shape


def rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for ``key`` (the validation split, one epoch's order)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def split(x, y, params, opts, seed):
    """``(rows, x_val, y_val)``: the training rows of ``x`` (None: all of them) and the
    validation data (None, None without validation): ``validation_data`` as given, or
    ``validation_fraction`` of the rows, drawn from ``seed``'s own stream.  The training rows
    stay where they are in ``x`` (in order): the steps gather each batch from them, so the data
    is never copied (an index array of the rows is)."""
    if opts.validation_data is not None:
        x_val = check_x(opts.validation_data[0], params)
        y_val = check_targets(opts.validation_data[1], params, x_val.shape[0], opts.loss)
        if not is_sparse(x_val):
            check_finite(x_val, "validation_data x")
        check_finite(y_val, "validation_data y")
        return None, as_bf16(x_val, opts), y_val
    if opts.validation_fraction is None:
        return None, None, None
    train_rows, val_rows = split_rows(x.shape[0], opts.validation_fraction, seed)
    return train_rows, x[val_rows], y[val_rows]


def split_rows(m: int, fraction, seed):
    """``(training rows, validation rows)`` of ``m``, sorted: ``fraction`` of them (rounded up)
    drawn for validation from ``seed``'s own stream (``fastnn.distributed`` splits the same)."""
    f = check_fraction(fraction)
    n_val = int(math.ceil(f * m))
    if n_val >= m:
        raise ValueError(f"validation_fraction: {f} of {m} rows leaves no training rows")
    order = rng(seed, 1).permutation(m)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
