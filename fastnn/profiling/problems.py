"""The benchmark shapes and the one problem generator of tests, benchmarks and ``fastnn tune``.

Flop counts (multiply-add = 2 flops), for one SGD step at shape (m, n, h, k)::

    forward   2mnh (x @ w1) + 2mhk (a1 @ w2)
    backward  2mhk (dw2) + 2mhk (da1) + 2mnh (dw1)
    step      4mnh + 6mhk
"""
from __future__ import annotations

import numpy as np

from ..kernels.variant import step_flops
from ..params import init_params

SHAPES = {
    "seed": (64, 1000, 100, 10),
    "mnist": (128, 784, 512, 10),
    "medium": (256, 1024, 256, 10),
    "large": (2048, 1024, 1024, 10),
}


def parse_shape(text: str) -> tuple[str, tuple[int, int, int, int]]:
    """``(name, (m, n, h, k))`` for a preset name or ``MxNxHxK``."""
    if text in SHAPES:
        return text, SHAPES[text]
    parts = text.lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"shape: expected one of {', '.join(SHAPES)} or MxNxHxK with positive "
                         f"sizes, got {text!r}")
    return text, dims


def problem(shape, dtype, seed=0, *, init="he", params_seed=None):
    """``(x, y, params)`` for shape ``(m, n, h, k)``: ``x`` and ``y`` standard normal from
    ``default_rng(seed)`` (drawn in float64, then cast), params from ``init_params(init=init,
    seed=params_seed or seed)``.  With ``init="normal"`` and the seed's sizes this is the seed's
    experiment, as ``fastnn train`` runs it."""
    m, n, h, k = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n)).astype(dtype)
    y = rng.standard_normal((m, k)).astype(dtype)
    params = init_params(n, h, k, init=init, dtype=dtype,
                         seed=seed if params_seed is None else params_seed)
    return x, y, params


STAGES = ("forward", "backward", "step", "train")


def stage_flops(stage, m, n, h, k) -> int:
    """Flops of one call of a benchmark stage (``train``: of one of its iterations)."""
    if stage == "forward":
        return 2 * m * n * h + 2 * m * h * k
    return step_flops(m, n, h, k)
