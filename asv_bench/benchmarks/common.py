"""Shared set-up for the fastnn benchmarks: shapes and data from fastnn's own problem generator,
the kernel list from its registry, timing from its profiling code."""
import fastnn
from fastnn.profiling.problems import SHAPES, problem as _problem, stage_flops
from fastnn.profiling.step_bench import NumpyStep

SHAPE_NAMES = ["seed", "mnist", "large"]
DTYPES = ["float64", "float32"]
# The concrete variants ("auto" resolves to one of them).  "numpy" is timed as the bare baseline
# object (NumpyStep: the same code as the numpy variant, without the API's argument checks).
KERNELS = fastnn.kernels.names()
# The variants with compiled training loops (the ones an epoch benchmark compares).
WHOLE_LOOP = [v.name for v in fastnn.kernels.variants() if v.whole_loop]
LR = 1e-5


def problem(shape_name, dtype):
    return _problem(SHAPES[shape_name], dtype)


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
