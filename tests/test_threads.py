"""Thread count as a setting, and results that do not depend on it."""
import numpy as np
import pytest

import fastnn
from conftest import VARIANTS, make_problem


@pytest.fixture
def restore_threads():
    before = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(before)


def test_set_num_threads_limits_numba_and_blas(restore_threads):
    import numba
    from threadpoolctl import threadpool_info

    fastnn.set_num_threads(1)
    assert fastnn.get_num_threads() == 1 and numba.get_num_threads() == 1
    assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    fastnn.set_num_threads(10_000)  # clipped to what Numba has
    assert fastnn.get_num_threads() == numba.config.NUMBA_NUM_THREADS


@pytest.mark.parametrize("kernel", VARIANTS)
def test_results_do_not_depend_on_thread_count(kernel, restore_threads):
    """naive, blas: partitions fixed by the shape and a fixed summation order, so bitwise equal for
    any thread count.  fused: the row pass is serial; OpenBLAS's gemm on these sizes splits work
    over output blocks, not over the reduction, so it too is bitwise stable here (a property of
    this BLAS, not a promise for every BLAS)."""
    x, y, params = make_problem(67, 129, 33, 5, np.float64)
    runs = []
    for n in (1, fastnn._config.max_threads()):
        fastnn.set_num_threads(n)
        p = params.copy()
        losses = [fastnn.sgd_step(p, x, y, 1e-3, kernel=kernel) for _ in range(3)]
        runs.append((losses, p))
    (l1, p1), (l2, p2) = runs
    assert l1 == l2
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)
