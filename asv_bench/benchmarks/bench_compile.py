"""Compile cost, as the user meets it: the first step in a new process, with an empty Numba cache
(cold) and with the cache filled (warm).  asv times the code each method returns in a fresh
interpreter, so these include Python start-up and `import fastnn`."""
from .common import DTYPES, KERNELS

_FIRST_STEP = """
import numpy as np, fastnn
x = np.ones((8, 16), "{dtype}"); y = np.ones((8, 2), "{dtype}")
p = fastnn.init_params(16, 8, 2, dtype="{dtype}", seed=0)
fastnn.sgd_step(p, x, y, 1e-3, kernel="{kernel}")
"""


class Compile:
    params = [[k for k in KERNELS if k != "numpy"], DTYPES]
    param_names = ["kernel", "dtype"]
    timeout = 300
    number = 1
    repeat = 3

    def timeraw_first_step_cold(self, kernel, dtype):
        # a new, empty cache directory for every run: everything is compiled
        return ("import os, tempfile\n"
                "os.environ['NUMBA_CACHE_DIR'] = tempfile.mkdtemp(prefix='fastnn-asv-')\n"
                + _FIRST_STEP.format(kernel=kernel, dtype=dtype))

    def timeraw_first_step_warm(self, kernel, dtype):
        # the default cache, which setup filled
        return _FIRST_STEP.format(kernel=kernel, dtype=dtype)

    def setup(self, kernel, dtype):
        import numpy as np

        import fastnn

        x = np.ones((8, 16), dtype)
        y = np.ones((8, 2), dtype)
        fastnn.sgd_step(fastnn.init_params(16, 8, 2, dtype=dtype, seed=0), x, y, 1e-3,
                        kernel=kernel)
