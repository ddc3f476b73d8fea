"""The floor under the sparse rung's cost against features (docs/optimisation.md, rung 8): how
long 2 threads take only to read 51,200 random 1 KB rows (a batch of 256 rows x 200 stored
entries, hidden 256, float32) of a ``w1`` with 20,000 and with 200,000 rows.  A fresh batch of
row numbers each time, as the epochs' batches are.

    python dev/row_bandwidth.py
"""
import time

import numpy as np
from numba import njit, prange


@njit(parallel=True, fastmath=True)
def gather(w, idx, out):
    """``out[t] += w[idx[p]]`` over thread ``t``'s half of ``idx``: each named row read once."""
    T = out.shape[0]
    for t in prange(T):
        o = out[t]
        lo, hi = t * idx.shape[0] // T, (t + 1) * idx.shape[0] // T
        for p in range(lo, hi):
            r = w[idx[p]]
            for j in range(r.shape[0]):
                o[j] += r[j]


def main(features=(20_000, 200_000), entries=51_200, hidden=256, batches=40):
    rng = np.random.default_rng(0)
    for n in features:
        w = rng.standard_normal((n, hidden)).astype(np.float32)
        out = np.zeros((2, hidden), np.float32)
        idx = [rng.integers(0, n, entries) for _ in range(batches)]
        gather(w, idx[0], out)
        t = time.perf_counter()
        for b in idx:
            gather(w, b, out)
        dt = (time.perf_counter() - t) / batches
        print(f"{n} rows: {dt * 1e3:.2f} ms for {entries} random rows of {hidden * 4} B "
              f"({entries * hidden * 4 / dt / 1e9:.1f} GB/s)")


if __name__ == "__main__":
    main()
