"""The child process of ``fastnn/auto/build.py`` (started with ``build.CHILD``, which ignores
Ctrl-C, dies with its parent and takes the idle scheduling class before it imports anything):
builds the compiled kernels ``auto`` runs into Numba's disk cache, then exits.  Arguments:
``DTYPE [TARGET,TARGET...]``."""
from __future__ import annotations

import fcntl
import os


def main(argv) -> int:
    from ..kernels import jit

    folder = jit.cache_dir()
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f".building-{argv[0]}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds it all built
        build(argv[0], argv[1].split(",") if len(argv) > 1 else None)
    return 0


def build(dtype, todo=None) -> None:
    """Call each target in ``todo`` (default ``targets()``) once on a tiny problem of ``dtype``:
    each compiled function it calls is built (or loaded) and written to the cache.  What the
    child does, and ``fastnn build`` in the foreground."""
    import numpy as np

    import fastnn
    from .. import kernels
    from .build import targets

    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5)).astype(dt)
    y = rng.standard_normal((3, 2)).astype(dt)
    p = fastnn.init_params(5, 4, 2, dtype=dt, seed=0)
    for target in todo or targets():
        if target in kernels.SPARSE:  # (fastnn build only: a tiny CSR through every entry)
            import scipy.sparse

            xs = scipy.sparse.csr_matrix(x)
            fastnn.sgd_step(p.copy(), xs, y, 1e-3, kernel=target)
            fastnn.predict(p, xs, kernel=target)
            fastnn.train(xs, y, params=p, iters=2, lr=1e-3, kernel=target, optimizer="adam")
            fastnn.train(xs, y, params=p, iters=2, lr=1e-3, kernel=target, optimizer="adam",
                         lazy=True)
            continue
        if target in kernels.TRAINING_FORMS:
            fastnn.train(x, y, params=p, iters=2, lr=1e-3, kernel=target)
            continue
        fastnn.sgd_step(p.copy(), x, y, 1e-3, kernel=target)
        fastnn.predict(p, x, kernel=target)
        fastnn.train(x, y, params=p, iters=2, lr=1e-3, kernel=target, whole_loop=True)
        fastnn.train(x, y, params=p, iters=2, lr=1e-3, kernel=target, whole_loop=True,
                     optimizer="adam")  # last: the slowest to compile
