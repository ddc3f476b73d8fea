"""The training loop: validate once, then call the chosen variant's fused step ``iters`` times."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import kernels
from .params import Params, _positive_int, as_float_dtype, init_params
from .validation import as_numeric_array, check_finite, check_inputs, check_lr, check_params, check_x, check_y


@dataclass
class TrainResult:
    """What ``train`` returns.

    ``params``: the trained parameters (new arrays; the ``params`` passed in are not modified).
    ``losses``: float64 array, ``losses[t]`` is the loss before step ``t``.
    ``seconds``: wall time of all steps; ``first_step_seconds``: of the first one alone (it includes
    Numba's compile or cache load when the kernel is new to this process).
    """

    params: Params
    losses: np.ndarray
    kernel: str
    dtype: np.dtype
    seconds: float
    first_step_seconds: float

    @property
    def seconds_per_iter(self) -> float:
        """Mean time of the steps after the first (the first carries compile/cache-load time)."""
        n = len(self.losses)
        if n <= 1:
            return self.seconds
        return (self.seconds - self.first_step_seconds) / (n - 1)


def train(x, y, *, hidden=None, iters, lr, init="he", seed=None, kernel=kernels.DEFAULT,
          params=None, dtype=None, callback: Optional[Callable[[int, float], None]] = None,
          callback_every: int = 1, whole_loop: Optional[bool] = None) -> TrainResult:
    """Full-batch SGD on ``(x, y)`` for ``iters`` steps.

    ``x (m, n)``, ``y (m, k)`` or ``(m,)`` for one output.  New parameters come from
    ``init_params(n, hidden, k, init=init, dtype=dtype, seed=seed)``; or pass ``params`` to continue
    from them (they are copied, never modified; ``hidden`` may then be omitted).  ``dtype`` defaults
    to the params' dtype, else x's when it is float32/float64, else float64.  ``callback(t, loss)``
    is called for every step, in order; with ``callback_every=N`` it may be called in bursts of
    N after N steps, which lets the whole-loop mode keep Python out of the loop.

    ``whole_loop``: run the steps inside one compiled call (per burst) instead of one call per step
    from Python; the numbers are identical.  ``None`` (default) uses it when the kernel has one.
    The first step always runs alone, so ``first_step_seconds`` isolates compile/cache-load time.
    Raises ValueError if x or y hold NaN or inf.
    """
    variant = kernels.get(kernel)
    iters = _positive_int(iters, "iters")
    callback_every = _positive_int(callback_every, "callback_every")
    if whole_loop is None:
        whole_loop = variant.train_loop is not None
    elif whole_loop and variant.train_loop is None:
        with_loop = [k for k in kernels.available() if kernels.get(k).train_loop is not None]
        raise ValueError(f"whole_loop: kernel {variant.name!r} has no compiled training loop; "
                         f"kernels with one: {', '.join(with_loop)}")
    lr = check_lr(lr)
    if params is not None:
        params = check_params(params).copy()
        if dtype is not None and as_float_dtype(dtype) != params.dtype:
            raise TypeError(f"dtype: got {np.dtype(dtype)}, but params have dtype {params.dtype}")
        if hidden is not None and hidden != params.w1.shape[1]:
            raise ValueError(f"hidden: got {hidden}, but params.w1 has {params.w1.shape[1]} hidden "
                             f"units")
    else:
        if hidden is None:
            raise TypeError("train: pass hidden (the number of hidden units) or params")
        if dtype is None:
            x_dtype = getattr(x, "dtype", None)
            dtype = x_dtype if x_dtype in (np.float32, np.float64) else np.float64
        dtype = as_float_dtype(dtype)
        n = check_inputs(x, dtype).shape[1]
        y = as_numeric_array(y, "y", dtype)
        k = y.shape[1] if y.ndim == 2 else 1  # check_y below rejects any other shape
        params = init_params(n, hidden, k, init=init, dtype=dtype, seed=seed)
    x = check_x(x, params)
    y = check_y(y, params, x.shape[0])
    check_finite(x, "x")
    check_finite(y, "y")

    losses = np.empty(iters, np.float64)
    step = variant.sgd_step

    def run(start, stop):
        if whole_loop:
            variant.train_loop(params, x, y, lr, losses[start:stop])
        else:
            for t in range(start, stop):
                losses[t] = step(params, x, y, lr)
        if callback is not None:
            for t in range(start, stop):
                callback(t, float(losses[t]))

    t0 = time.perf_counter()
    run(0, 1)
    first = time.perf_counter() - t0
    burst = callback_every if callback is not None else iters
    for start in range(1, iters, burst):
        run(start, min(iters, start + burst))
    seconds = time.perf_counter() - t0
    return TrainResult(params, losses, variant.name, params.dtype, seconds, first)

