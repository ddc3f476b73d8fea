"""Bad input gets a clear ValueError/TypeError naming the argument, before any kernel runs."""
import numpy as np
import pytest

import fastnn
from conftest import make_problem

KERNELS = fastnn.kernels.available()


@pytest.fixture
def problem():
    return make_problem(5, 4, 3, 2, np.float64)


def _call(fn, params, x, y, kernel):
    if fn == "predict":
        return fastnn.predict(params, x, kernel=kernel)
    if fn == "loss_and_grads":
        return fastnn.loss_and_grads(params, x, y, kernel=kernel)
    return fastnn.sgd_step(params, x, y, 0.1, kernel=kernel)


FUNCS = ["predict", "loss_and_grads", "sgd_step"]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("bad_x, exc, words", [
    (np.zeros((5, 5)), ValueError, ["x", "(m, 4)", "(5, 5)"]),
    (np.zeros(4), ValueError, ["x", "(4,)"]),
    (np.zeros((0, 4)), ValueError, ["x", "(0, 4)"]),
    (np.zeros((1, 5, 4)), ValueError, ["x", "(1, 5, 4)"]),
    (np.zeros((5, 4), complex), TypeError, ["x", "complex"]),
    (np.array([["a"] * 4] * 5), TypeError, ["x", "<U1"]),
    (None, TypeError, ["x", "None"]),
    ([[1, 2], [3]], TypeError, ["x"]),
    (np.zeros((5, 4), object), TypeError, ["x", "object"]),
])
def test_bad_x(problem, kernel, fn, bad_x, exc, words):
    _, y, params = problem
    with pytest.raises(exc) as info:
        _call(fn, params, bad_x, y, kernel)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fn", ["loss_and_grads", "sgd_step"])
@pytest.mark.parametrize("bad_y, exc, words", [
    (np.zeros((5, 3)), ValueError, ["y", "(5, 2)", "(5, 3)"]),
    (np.zeros((4, 2)), ValueError, ["y", "(4, 2)"]),
    (np.zeros(5), ValueError, ["y", "(5,)"]),  # 1-D only when k == 1
    (np.zeros((5, 2), complex), TypeError, ["y", "complex"]),
    (None, TypeError, ["y", "None"]),
    ("abc", TypeError, ["y"]),
])
def test_bad_y(problem, kernel, fn, bad_y, exc, words):
    x, _, params = problem
    with pytest.raises(exc) as info:
        _call(fn, params, x, bad_y, kernel)
    for w in words:
        assert w in str(info.value)


def _replace(params, **kw):
    return params._replace(**kw)


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("change, exc, words", [
    (dict(b1=np.zeros(4)), ValueError, ["params.b1", "(3,)", "(4,)"]),
    (dict(b1=np.zeros((1, 3))), ValueError, ["params.b1", "(1, 3)"]),
    (dict(w2=np.zeros((4, 2))), ValueError, ["params.w2", "(4, 2)"]),
    (dict(b2=np.zeros(3)), ValueError, ["params.b2", "(2,)", "(3,)"]),
    (dict(w1=np.zeros(3)), ValueError, ["params.w1", "(3,)"]),
    (dict(w1=np.zeros((4, 3), np.int64)), TypeError, ["params.w1", "int64"]),
    (dict(b2=np.zeros(2, np.float32)), TypeError, ["params.b2", "float32", "float64"]),
    (dict(w2=[[0.0, 0.0]] * 3), TypeError, ["params.w2", "list"]),
    (dict(b1=None), TypeError, ["params.b1", "None"]),
])
def test_bad_params(problem, fn, change, exc, words):
    x, y, params = problem
    with pytest.raises(exc) as info:
        _call(fn, _replace(params, **change), x, y, "fused")
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize("bad", [None, (1, 2, 3), "params", np.zeros(4)])
def test_params_not_a_params_tuple(problem, bad):
    x, y, _ = problem
    with pytest.raises(TypeError, match="params"):
        fastnn.loss_and_grads(bad, x, y)


def test_read_only_params_are_refused_by_the_step_but_fine_to_read(problem):
    x, y, params = problem
    params.w1.flags.writeable = False
    with pytest.raises(ValueError, match="params.w1.*read-only"):
        fastnn.sgd_step(params, x, y, 0.1)
    fastnn.loss_and_grads(params, x, y)  # reading is fine
    fastnn.predict(params, x)


def test_read_only_inputs_are_fine(problem):
    x, y, params = problem
    x.flags.writeable = False
    y.flags.writeable = False
    want = fastnn.loss_and_grads(params, x.copy(), y.copy())[0]
    assert fastnn.loss_and_grads(params, x, y)[0] == want


@pytest.mark.parametrize("lr, exc", [(None, TypeError), ("0.1", TypeError), (1j, TypeError),
                                     (float("nan"), ValueError), (float("inf"), ValueError)])
def test_bad_lr(problem, lr, exc):
    x, y, params = problem
    before = params.copy()
    with pytest.raises(exc, match="lr"):
        fastnn.sgd_step(params, x, y, lr)
    for p, b in zip(params, before):  # nothing was touched
        np.testing.assert_array_equal(p, b)


def test_unknown_kernel(problem):
    x, y, params = problem
    with pytest.raises(ValueError, match="kernel.*nope.*fused"):
        fastnn.predict(params, x, kernel="nope")
    with pytest.raises(TypeError, match="kernel"):
        fastnn.predict(params, x, kernel=None)


@pytest.mark.parametrize("kw, exc, word", [
    (dict(init="xavier"), ValueError, "init"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(dtype="complex128"), TypeError, "dtype"),
    (dict(dtype="nonsense"), TypeError, "dtype"),
])
def test_init_params_bad_options(kw, exc, word):
    with pytest.raises(exc, match=word):
        fastnn.init_params(3, 4, 2, **kw)


@pytest.mark.parametrize("sizes, exc", [((0, 4, 2), ValueError), ((3, -1, 2), ValueError),
                                        ((3, 4, 2.5), TypeError), ((True, 4, 2), TypeError)])
def test_init_params_bad_sizes(sizes, exc):
    with pytest.raises(exc, match="n_"):
        fastnn.init_params(*sizes)


@pytest.mark.parametrize("bad", ["x", "y"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_train_rejects_non_finite_data(bad, value):
    x, y, _ = make_problem(6, 3, 4, 2, np.float64)
    (x if bad == "x" else y)[2, 1] = value
    with pytest.raises(ValueError, match=f"{bad}: contains NaN or inf.*\\(2, 1\\)"):
        fastnn.train(x, y, hidden=4, iters=2, lr=0.1)


@pytest.mark.parametrize("kw, exc, word", [
    (dict(iters=0), ValueError, "iters"),
    (dict(iters=2.0), TypeError, "iters"),
    (dict(lr="big"), TypeError, "lr"),
    (dict(hidden=None), TypeError, "hidden"),
    (dict(hidden=0), ValueError, "n_hidden"),
])
def test_train_bad_options(kw, exc, word):
    x, y, _ = make_problem(6, 3, 4, 2, np.float64)
    args = dict(hidden=4, iters=2, lr=0.1)
    args.update(kw)
    with pytest.raises(exc, match=word):
        fastnn.train(x, y, **args)


def test_train_params_must_match(problem):
    x, y, params = problem
    with pytest.raises(ValueError, match="hidden"):
        fastnn.train(x, y, hidden=7, iters=1, lr=0.1, params=params)
    with pytest.raises(TypeError, match="dtype"):
        fastnn.train(x, y, iters=1, lr=0.1, params=params, dtype=np.float32)
    with pytest.raises(ValueError, match="x"):
        fastnn.train(x[:, :3], y, iters=1, lr=0.1, params=params)


@pytest.mark.parametrize("n", [0, -2, 2.5, "2", True])
def test_set_num_threads_rejects_bad_counts(n):
    with pytest.raises((TypeError, ValueError), match="threads"):
        fastnn.set_num_threads(n)


def test_lr_must_fit_the_dtype():
    params = fastnn.init_params(3, 4, 2, dtype=np.float32, seed=0)
    x, y = np.ones((2, 3)), np.ones((2, 2))
    with pytest.raises(ValueError, match="not representable in float32"):
        fastnn.sgd_step(params, x, y, 1e39)
    with pytest.raises(ValueError, match="not representable in float32"):
        fastnn.train(x, y, params=params, iters=1, lr=1e39)
    with pytest.raises(ValueError, match="not representable in float32"):
        fastnn.sgd_step(params, x, y, 1e-39)  # a float32 subnormal
    fastnn.sgd_step(params, x, y, 0.0)
    fastnn.sgd_step(fastnn.init_params(3, 4, 2, seed=0), x, y, 1e39)  # fine in float64
