"""The network's parameters and their initialisation."""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Params(NamedTuple):
    """The parameters of ``z1 = x@w1 + b1, a1 = relu(z1), z2 = a1@w2 + b2``.

    Shapes: ``w1 (n, h)``, ``b1 (h,)``, ``w2 (h, k)``, ``b2 (k,)``; all four share one float dtype,
    which is the dtype every kernel computes in.
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def copy(self) -> "Params":
        """A deep copy (C-contiguous arrays)."""
        return Params(*(np.array(p, copy=True, order="C") for p in self))

    @property
    def dtype(self) -> np.dtype:
        return self.w1.dtype

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_in, n_hidden, n_out)``."""
        return self.w1.shape[0], self.w1.shape[1], self.w2.shape[1]


def as_float_dtype(dtype, name: str = "dtype") -> np.dtype:
    """``dtype`` as float32 or float64, else TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name}: expected float32 or float64, got {dtype!r}") from exc
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"{name}: expected float32 or float64, got {dt}")
    return dt


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return int(value)


def init_params(n_in, n_hidden, n_out, *, init="he", dtype=np.float64, seed=None) -> Params:
    """New parameters for an ``n_in -> n_hidden -> n_out`` network.

    ``init="he"``: ``w ~ N(0, 2/fan_in)`` (He et al. 2015, the usual choice before a ReLU), zero
    biases.  ``init="normal"``: every entry of all four arrays ``~ N(0, 1)``, the seed's
    initialisation.  ``seed`` feeds ``numpy.random.default_rng``; draws are made in float64 and then
    cast, so float32 and float64 parameters from one seed hold the same values up to rounding.
    """
    n, h, k = (_positive_int(v, name) for v, name in
               ((n_in, "n_in"), (n_hidden, "n_hidden"), (n_out, "n_out")))
    dt = as_float_dtype(dtype)
    if init not in ("he", "normal"):
        raise ValueError(f"init: expected 'he' or 'normal', got {init!r}")
    rng = np.random.default_rng(seed)
    he = init == "he"
    w1 = _normal_rows(rng, n, h, np.sqrt(2.0 / n) if he else 1.0, dt)
    b1 = np.zeros(h, dt) if he else rng.standard_normal(h).astype(dt)
    w2 = _normal_rows(rng, h, k, np.sqrt(2.0 / h) if he else 1.0, dt)
    b2 = np.zeros(k, dt) if he else rng.standard_normal(k).astype(dt)
    return Params(w1, b1, w2, b2)


def _normal_rows(rng, rows, cols, scale, dt, block_bytes=1 << 22):
    """``(rng.standard_normal((rows, cols)) * scale).astype(dt)``, the same numbers, drawn and
    cast a block of rows at a time: for a wide ``w1`` (200,000 x 256) no float64 temporary
    twice its size, and a third of the time."""
    out = np.empty((rows, cols), dt)
    step = max(1, block_bytes // (8 * cols))
    buf = np.empty((min(step, rows), cols))
    for s in range(0, rows, step):
        part = buf[:min(step, rows - s)]
        rng.standard_normal(out=part)
        if scale != 1.0:
            part *= scale
        out[s:s + part.shape[0]] = part
    return out
