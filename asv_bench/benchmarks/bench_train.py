"""A whole 100-iteration training run (the seed's experiment size), whole-loop mode where the
kernel has one, against the numpy loop."""
import fastnn

from .common import DTYPES, KERNELS, LR, NumpyStep, problem

ITERS = 100


class Train:
    params = [KERNELS, ["seed", "mnist"], DTYPES]
    param_names = ["kernel", "shape", "dtype"]
    timeout = 300

    def setup(self, kernel, shape, dtype):
        self.x, self.y, self.params = problem(shape, dtype)
        if kernel == "numpy":
            base = NumpyStep(self.x, self.y, self.params, LR)
            self.run = lambda: base.train(ITERS)
        else:
            self.run = lambda: fastnn.train(self.x, self.y, iters=ITERS, lr=LR,
                                            params=self.params, kernel=kernel)
        self.run()  # warm-up (compile or cache load)

    def time_train_100_iters(self, kernel, shape, dtype):
        self.run()
