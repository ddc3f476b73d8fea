"""Time each kernel variant (and the numpy baseline) per stage, for each shape and dtype."""
from fastnn.profiling.timing import median_block

from .common import DTYPES, KERNELS, SHAPE_NAMES, Stages


class Step:
    """forward (predict), backward (loss_and_grads: forward + loss + all gradients), step
    (sgd_step), GFLOP/s of the step, and the step's peak memory."""

    params = [KERNELS, SHAPE_NAMES, DTYPES]
    param_names = ["kernel", "shape", "dtype"]
    timeout = 300

    def setup(self, kernel, shape, dtype):
        if kernel == "naive" and shape == "large":
            raise NotImplementedError("naive at the large shape: ~1 s a step, nothing to learn")
        self.stages = Stages(kernel, shape, dtype)

    def time_forward(self, kernel, shape, dtype):
        self.stages.forward()

    def time_backward(self, kernel, shape, dtype):
        self.stages.backward()

    def time_step(self, kernel, shape, dtype):
        self.stages.step()

    def track_gflops(self, kernel, shape, dtype):
        """Median of 7 timed blocks of steps (``fastnn.profiling.timing``)."""
        return self.stages.flops("step") / median_block(self.stages.step, 0.05) / 1e9

    track_gflops.unit = "GFLOP/s"

    def peakmem_step(self, kernel, shape, dtype):
        self.stages.step()


class Activation:
    """The primary kernel's SGD step with each hidden activation, at the seed's shape (float64)
    and at mnist's, the epoch bench's batch (128 x 784 -> 512 -> 10, float32): the issue's target
    is tanh and logistic within 1.15x of ReLU (``fastnn bench --activation`` pairs them)."""

    params = [["seed", "mnist"], ["relu", "tanh", "logistic", "identity"]]
    param_names = ["shape", "activation"]
    timeout = 300

    def setup(self, shape, activation):
        import numpy as np

        import fastnn
        from fastnn.profiling.problems import SHAPES, problem

        x, y, params = problem(SHAPES[shape], "float64" if shape == "seed" else "float32")
        lr = np.dtype(x.dtype).type(1e-5)
        kernel = fastnn.kernels.PRIMARY
        self.step = lambda: fastnn.sgd_step(params, x, y, lr, kernel=kernel,
                                            activation=activation)
        self.step()

    def time_step(self, shape, activation):
        self.step()
