"""The trainer: the fused curve equals the reference curve on the seed's experiment."""
import numpy as np
import pytest

import fastnn
from conftest import VARIANTS, WHOLE_LOOP, assert_close, assert_same_numbers, run_tolerance, \
    tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

SEED_SHAPE = (64, 1000, 100, 10)


@pytest.fixture(scope="module")
def seed_data():
    m, n, h, k = SEED_SHAPE
    rng = np.random.default_rng(0)
    return rng.standard_normal((m, n)), rng.standard_normal((m, k))


@pytest.fixture(scope="module")
def reference_run(seed_data):
    x, y = seed_data
    return fastnn.train(x, y, hidden=100, iters=100, lr=1e-5, init="normal", seed=1,
                        kernel="reference")


@pytest.mark.parametrize("kernel", VARIANTS)
def test_training_curve_equals_reference(seed_data, reference_run, kernel, dtype):
    x, y = seed_data
    run = fastnn.train(x, y, hidden=100, iters=100, lr=1e-5, init="normal", seed=1,
                       kernel=kernel, dtype=dtype)
    assert run.losses.shape == (100,) and run.losses.dtype == np.float64
    assert run.dtype == dtype and run.kernel == kernel
    assert reference_run.losses[-1] < 0.05 * reference_run.losses[0]  # it does learn
    # Every step is a fresh computation within the one-step bound and SGD at this lr does not
    # amplify the differences (measured: no growth over 100 steps), so the one-step tolerance holds
    # for the whole curve and the final parameters.
    tol = tolerance(dtype, *SEED_SHAPE)
    for t in range(100):
        assert_close(run.losses[t], reference_run.losses[t], tol, f"loss at step {t}")
    for name, p, r in zip(fastnn.Params._fields, run.params, reference_run.params):
        assert_close(p, r, tol, name)


def test_same_seed_same_run_and_inputs_untouched():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((20, 7)), rng.standard_normal((20, 3))
    x0, y0 = x.copy(), y.copy()
    kernel = fastnn.kernels.DEFAULT
    a = fastnn.train(x, y, hidden=6, iters=5, lr=0.01, seed=3)
    b = fastnn.train(x, y, hidden=6, iters=5, lr=0.01, seed=3)
    tol = run_tolerance(np.float64, 5, 20, 7, 6, 3)
    assert_same_numbers(a.losses, b.losses, kernel, tol)
    for p, q in zip(a.params, b.params):
        assert_same_numbers(p, q, kernel, tol)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_continue_from_params_without_modifying_them():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((20, 7)), rng.standard_normal(20)
    first = fastnn.train(x, y, hidden=6, iters=4, lr=0.01, seed=0)
    start = first.params.copy()
    more = fastnn.train(x, y, iters=3, lr=0.01, params=first.params)
    for p, s in zip(first.params, start):
        np.testing.assert_array_equal(p, s)
    whole = fastnn.train(x, y, hidden=6, iters=7, lr=0.01, seed=0)
    assert_same_numbers(np.concatenate([first.losses, more.losses]), whole.losses,
                        fastnn.kernels.DEFAULT, run_tolerance(np.float64, 7, 20, 7, 6, 1))


def test_dtype_defaults_and_callback():
    x32 = np.ones((4, 3), np.float32)
    seen = []
    run = fastnn.train(x32, np.zeros((4, 2)), hidden=2, iters=3, lr=0.1,
                       callback=lambda t, loss: seen.append((t, loss)))
    assert run.dtype == np.float32 and run.params.w1.dtype == np.float32
    assert [t for t, _ in seen] == [0, 1, 2]
    assert [loss for _, loss in seen] == list(run.losses)
    assert fastnn.train([[1, 2]], [3], hidden=2, iters=1, lr=0.1).dtype == np.float64
    assert run.seconds >= run.first_step_seconds > 0


@pytest.mark.parametrize("kernel", WHOLE_LOOP)
def test_whole_loop_mode_equals_the_python_loop(kernel, dtype):
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((37, 23)).astype(dtype), rng.standard_normal((37, 4)).astype(dtype)
    seen = []
    a = fastnn.train(x, y, hidden=41, iters=9, lr=1e-2, seed=2, kernel=kernel, whole_loop=True,
                     callback=lambda t, loss: seen.append(t), callback_every=4)
    b = fastnn.train(x, y, hidden=41, iters=9, lr=1e-2, seed=2, kernel=kernel, whole_loop=False)
    assert seen == list(range(9))
    tol = run_tolerance(dtype, 9, 37, 23, 41, 4)
    assert_same_numbers(a.losses, b.losses, kernel, tol)
    for p, q in zip(a.params, b.params):
        assert_same_numbers(p, q, kernel, tol)


@pytest.mark.parametrize("kernel", [v.name for v in fastnn.kernels.variants(reference=True)
                                    if not v.whole_loop])
def test_whole_loop_unavailable_is_a_clear_error(kernel):
    with pytest.raises(ValueError, match=f"whole_loop.*{kernel}"):
        fastnn.train(np.ones((3, 2)), np.ones(3), hidden=2, iters=2, lr=0.1, kernel=kernel,
                     whole_loop=True)
