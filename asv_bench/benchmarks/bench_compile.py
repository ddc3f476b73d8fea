"""Compile cost, as the user meets it: the first step in a new process, with an empty Numba cache
(cold) and with the cache filled (warm).  asv times the code each method returns in a fresh
interpreter, so these include Python start-up and `import fastnn`.  At the seed's shape, where
`auto`'s first call also measures its ready candidates (cold: no remembered choice either)."""
import fastnn

from .common import DTYPES

# One per compiled step (an -openblas twin is its variant's code with another argument; numpy
# compiles nothing), and auto.
COMPILED = [v.name for v in fastnn.kernels.variants()
            if v.compiled is not None and not v.name.endswith("-openblas")]

_FIRST_STEP = """
import numpy as np, fastnn
x = np.ones((64, 1000), "{dtype}"); y = np.ones((64, 10), "{dtype}")
p = fastnn.init_params(1000, 100, 10, dtype="{dtype}", seed=0)
fastnn.sgd_step(p, x, y, 1e-3, kernel="{kernel}")
"""


class Compile:
    params = [COMPILED + ["auto"], DTYPES]
    param_names = ["kernel", "dtype"]
    timeout = 300
    number = 1
    repeat = 3

    def timeraw_first_step_cold(self, kernel, dtype):
        # a new, empty cache directory for every run: everything is compiled
        return ("import os, tempfile\n"
                "os.environ['NUMBA_CACHE_DIR'] = tempfile.mkdtemp(prefix='fastnn-asv-')\n"
                "os.environ['FASTNN_TUNE_DIR'] = os.environ['NUMBA_CACHE_DIR']\n"
                + _FIRST_STEP.format(kernel=kernel, dtype=dtype))

    def timeraw_first_step_warm(self, kernel, dtype):
        # the default cache, which setup filled
        return _FIRST_STEP.format(kernel=kernel, dtype=dtype)

    def setup(self, kernel, dtype):
        import numpy as np

        import fastnn

        x = np.ones((64, 1000), dtype)
        y = np.ones((64, 10), dtype)
        fastnn.sgd_step(fastnn.init_params(1000, 100, 10, dtype=dtype, seed=0), x, y, 1e-3,
                        kernel=kernel)
