"""Thread count as a setting, and results that do not depend on it."""
import numpy as np
import pytest

import fastnn
from conftest import BITWISE, VARIANTS, assert_runs_close, make_problem, run_tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding


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
    x, y, params = make_problem(67, 257, 71, 5, np.float64)  # big enough to run threaded
    runs = []
    for n in (1, fastnn.threads.max_threads(), 1):
        fastnn.set_num_threads(n)
        p = params.copy()
        # lr 1e-4: the loss falls (3.9e4 -> 1.9e4); at 1e-3 it grew 40x in 3 steps (rule 3)
        losses = [fastnn.sgd_step(p, x, y, 1e-4, kernel=kernel) for _ in range(3)]
        runs.append((losses, p))
    for (la, pa) in runs[1:]:
        if kernel in BITWISE:
            assert la == runs[0][0]
            for a, b in zip(pa, runs[0][1]):
                np.testing.assert_array_equal(a, b)
        else:  # the same up to rounding: 3 steps' bound (2.7e-13; this compared to 1e-12)
            assert_runs_close((la, pa), runs[0], run_tolerance(np.float64, 3, 67, 257, 71, 5))


def test_small_problems_run_on_one_thread(restore_threads):
    import numba

    from fastnn.kernels import variant

    fastnn.set_num_threads(2)
    seen = []
    with variant.threads_for(4, 5, 6, 2):
        seen.append(numba.get_num_threads())
    with variant.threads_for(64, 1000, 100, 10):
        seen.append(numba.get_num_threads())
    assert seen == [1, min(2, fastnn.threads.max_threads())]
    assert numba.get_num_threads() == min(2, fastnn.threads.max_threads())


@pytest.mark.parametrize("kernel", VARIANTS)
def test_calls_from_several_python_threads(kernel, restore_threads):
    """4 workers stepping different arrays at once get the results of a serial run (scratch
    buffers are per thread), and the BLAS thread count is as it was afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    from fastnn.kernels.common import gemm as blas

    from conftest import assert_non_expanding, assert_same_numbers

    fastnn.set_num_threads(fastnn.threads.max_threads())
    blas_threads = blas.threads.get() if blas.threads.available else None
    problems = [make_problem(40 + 3 * i, 150 + i, 60 + 5 * i, 3, np.float64, seed=i)
                for i in range(8)]

    def run(problem):
        x, y, params = problem
        p = params.copy()
        losses = [fastnn.sgd_step(p, x, y, 1e-4, kernel=kernel) for _ in range(3)]
        return losses, p

    serial = [run(pr) for pr in problems]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(run, problems))
    for i, ((ls, ps), (lp, pp)) in enumerate(zip(serial, parallel)):
        tol = run_tolerance(np.float64, 3, 40 + 3 * i, 150 + i, 60 + 5 * i, 3)
        assert_non_expanding(ls, f"problem {i}")
        assert_same_numbers(lp, ls, kernel, tol)
        for a, b in zip(pp, ps):
            assert_same_numbers(a, b, kernel, tol)
    if blas_threads is not None:
        assert blas.threads.get() == blas_threads


@pytest.mark.parametrize("kernel", VARIANTS)
def test_train_threads_applies_during_the_run_only(kernel, restore_threads):
    """``train(threads=1)`` runs with one Numba thread and one thread in every BLAS pool (seen
    from inside the run), and puts the previous counts back afterwards."""
    import numba
    from threadpoolctl import threadpool_info

    fastnn.set_num_threads(fastnn.threads.max_threads())
    before = fastnn.get_num_threads()
    seen = []

    def look(t, loss):
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        seen.append((numba.get_num_threads(), max(blas)))

    x, y, params = make_problem(50, 30, 20, 3, np.float64)
    fastnn.train(x, y, params=params, iters=3, lr=1e-3, kernel=kernel, threads=1, callback=look)
    assert seen and all(s == (1, 1) for s in seen)
    assert fastnn.get_num_threads() == before and numba.get_num_threads() == before
