"""The child process of ``fastnn/background.py``: ``python -m fastnn._build DTYPE [TARGETS]``
builds the compiled kernels ``auto`` runs into Numba's disk cache, then exits."""
from __future__ import annotations

import os
import sys

from .background import targets


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (a no-op elsewhere)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def build(dtype, todo=None) -> None:
    """Call each target in ``todo`` (default ``targets()``) once on a tiny problem of ``dtype``:
    each compiled function it calls is built (or loaded) and written to the cache."""
    import numpy as np

    import fastnn
    from . import kernels

    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5)).astype(dt)
    y = rng.standard_normal((3, 2)).astype(dt)
    p = fastnn.init_params(5, 4, 2, dtype=dt, seed=0)
    for target in todo or targets():
        if target in kernels.TRAINING_FORMS:
            fastnn.train(x, y, params=p, iters=2, lr=1e-3, kernel=target)
            continue
        fastnn.sgd_step(p.copy(), x, y, 1e-3, kernel=target)
        fastnn.predict(p, x, kernel=target)
        fastnn.train(x, y, params=p, iters=2, lr=1e-3, kernel=target, whole_loop=True)
        fastnn.train(x, y, params=p, iters=2, lr=1e-3, kernel=target, whole_loop=True,
                     optimizer="adam")  # last: the slowest to compile


def main(argv) -> int:
    import fcntl

    from .kernels import jit

    _die_with_parent()
    try:
        os.nice(10)  # the training beside us comes first
    except OSError:
        pass
    folder = jit.cache_dir()
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f".building-{argv[0]}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds it all built
        build(argv[0], argv[1].split(",") if len(argv) > 1 else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
