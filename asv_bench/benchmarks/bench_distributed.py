"""fastnn.distributed: a step in a world of one rank (the distributed code path, no
communication), and a step of two ranks under mpiexec (track_: microseconds per step, measured
by the job itself).  Skipped where mpi4py is not installed."""
import os
import subprocess
import sys

import numpy as np

import fastnn

from .common import SHAPES

_TWO_RANKS = """
import sys, time, numpy as np, fastnn
from fastnn import distributed
m, n, h, k = map(int, sys.argv[1:5])
rng = np.random.default_rng(0)
x = rng.standard_normal((m, n)); y = rng.standard_normal((m, k))
p = fastnn.init_params(n, h, k, seed=0)
run = lambda: distributed.train(x, y, params=p, iters=50, lr=1e-9, kernel="fused-wide")
run()
ts = []
for _ in range(5):
    t0 = time.perf_counter(); run(); ts.append((time.perf_counter() - t0) / 50)
if distributed.world().is_root:
    print(sorted(ts)[2] * 1e6)
"""


class Distributed:
    params = [["seed", "mnist"]]
    param_names = ["shape"]
    timeout = 300

    def setup(self, shape):
        from fastnn import distributed

        if not distributed.mpi_available():
            raise NotImplementedError("mpi4py is not installed")
        m, n, h, k = SHAPES[shape]
        rng = np.random.default_rng(0)
        self.x, self.y = rng.standard_normal((m, n)), rng.standard_normal((m, k))
        self.params = fastnn.init_params(n, h, k, seed=0)
        self.world = distributed.LocalWorld()
        self.shape = (m, n, h, k)
        self.time_step_one_rank(shape)  # compile or load, outside the timing

    def time_step_one_rank(self, shape):
        from fastnn import distributed

        distributed.train(self.x, self.y, params=self.params, iters=10, lr=1e-9,
                          kernel="fused-wide", world_=self.world)

    def track_step_two_ranks(self, shape):
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        res = subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", _TWO_RANKS,
                              *map(str, self.shape)], capture_output=True, text=True,
                             timeout=240, check=True)
        return float(res.stdout.split()[-1])

    track_step_two_ranks.unit = "us per step"
