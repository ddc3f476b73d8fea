"""Shared set-up for the fastnn benchmarks: shapes, data built once from a fixed seed."""
import numpy as np

import fastnn
from fastnn.bench import SHAPES, NumpyStep, stage_flops

SHAPE_NAMES = ["seed", "mnist", "large"]
DTYPES = ["float64", "float32"]
# The concrete variants (auto delegates to one of them).  "numpy" is timed as the bare baseline
# object (NumpyStep: the same code as the numpy variant, without the API's argument checks).
KERNELS = [k for k in fastnn.kernels.available() if k not in ("reference", "auto")]
LR = 1e-5


def problem(shape_name, dtype):
    m, n, h, k = SHAPES[shape_name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, n)).astype(dtype)
    y = rng.standard_normal((m, k)).astype(dtype)
    params = fastnn.init_params(n, h, k, init="he", dtype=dtype, seed=0)
    return x, y, params


class Stages:
    """The three calls of one kernel (or of the numpy baseline) on one problem, warmed up."""

    def __init__(self, kernel, shape_name, dtype):
        x, y, params = problem(shape_name, dtype)
        self.shape = SHAPES[shape_name]
        if kernel == "numpy":
            base = NumpyStep(x, y, params, LR)
            self.forward, self.backward, self.step = base.forward, base.grads, base.step
        else:
            self.forward = lambda: fastnn.predict(params, x, kernel=kernel)
            self.backward = lambda: fastnn.loss_and_grads(params, x, y, kernel=kernel)
            self.step = lambda: fastnn.sgd_step(params, x, y, LR, kernel=kernel)
        # JIT warm-up belongs in setup: compile (or load from cache) before anything is timed.
        self.forward()
        self.backward()
        self.step()

    def flops(self, stage):
        return stage_flops(stage, *self.shape)
