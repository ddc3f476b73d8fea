"""The hidden activations (ReLU, tanh, logistic, identity), the output losses (squared, softmax,
logistic, Poisson) and weighted rows: the reference against central differences, the kernels'
own exp/tanh/logistic against numpy, and every variant against the reference."""
import numpy as np
import pytest

import fastnn
from fastnn import reference
from fastnn.kernels.common import activations as acts
from conftest import (ACTIVATION_ULPS, UNIT_ROUNDOFF, VARIANTS, assert_close, assert_runs_close,
                      make_problem, params_as, relayout, run_tolerance, tolerance)

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

ACTIVATIONS = ["relu", "tanh", "logistic", "identity"]
LOSSES = ["squared", "softmax", "logistic", "poisson"]


def _targets(rng, m, k, loss):
    if loss == "squared":
        return rng.standard_normal((m, k))
    if loss == "softmax":
        return np.eye(k)[rng.integers(0, k, m)]
    if loss == "logistic":
        return (rng.random((m, k)) > 0.5).astype(float)
    return rng.poisson(1.5, (m, k)).astype(float)


# --- the reference is the specification: its gradients are dL/dparam ------------------------

@pytest.mark.parametrize("activation", ["tanh", "logistic", "identity"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_reference_gradients_match_central_differences(activation, loss, weighted):
    m, n, h, k = 5, 4, 6, 3
    rng = np.random.default_rng(7)
    x = rng.standard_normal((m, n))
    y = _targets(rng, m, k, loss)
    w = rng.uniform(0.2, 3.0, m) if weighted else None
    params = fastnn.init_params(n, h, k, init="normal", seed=3)
    if loss == "poisson":  # exp outputs: keep the logits moderate
        params = fastnn.Params(*(p * 0.3 for p in params))
    _, grads = reference.loss_and_grads(params, x, y, loss, activation, w)
    eps = 1e-6
    for name, p, g in zip(fastnn.Params._fields, params, grads):
        fd = np.empty_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            up = reference.loss_and_grads(params, x, y, loss, activation, w)[0]
            p[idx] = old - eps
            down = reference.loss_and_grads(params, x, y, loss, activation, w)[0]
            p[idx] = old
            fd[idx] = (up - down) / (2 * eps)
        # as in test_reference: truncation ~1e-12, rounding ~1e-10 |L|; 1e-6 catches any wrong
        # factor (a missing weight, 1/m for 1/sum(w), a derivative from z instead of a)
        assert np.abs(g - fd).max() <= 1e-6 * max(np.abs(fd).max(), 1.0), name


def test_weights_are_scikit_learns_weighted_mean():
    """sum_i w_i l_i / sum_i w_i: integer weights equal repeating the rows."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
    w = np.array([1, 2, 0, 3, 1, 1])
    params = fastnn.init_params(4, 5, 2, seed=1)
    a = reference.loss_and_grads(params, x, y, "squared", "tanh", w)
    b = reference.loss_and_grads(params, np.repeat(x, w, 0), np.repeat(y, w, 0), "squared",
                                 "tanh")
    assert a[0] == pytest.approx(b[0], rel=1e-14)
    for g, r in zip(a[1], b[1]):
        np.testing.assert_allclose(g, r, rtol=1e-13, atol=1e-15)


# --- the kernels' own exp, tanh and logistic ----------------------------------------------------

@pytest.mark.parametrize("name", ACTIVATIONS)
def test_kernel_activations_are_within_a_few_ulps_of_numpy(name, dtype):
    """The polynomial exp/tanh/logistic of common/activations.py (libm's are scalar calls in
    Numba): within ACTIVATION_ULPS units in the last place of numpy's float64 value, over
    magnitudes from 1e-30 to saturation, NaN kept, infinities saturated."""
    from numba import njit

    @njit
    def apply(kind, z, out):
        for i in range(z.size):
            out[i] = acts.activate(kind, z[i])

    rng = np.random.default_rng(0)
    z = np.concatenate([rng.standard_normal(20000) * s for s in (1e-30, 1e-3, 1, 5, 40, 800)]
                       + [[0.0, -0.0, 0.624, 0.626, 88.7, -88.7, 710, -746, np.inf, -np.inf]])
    z = z.astype(dtype)
    out = np.empty_like(z)
    apply(acts.of(name), z, out)
    want = reference.activate(name, z.astype(np.float64))
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    tiny = np.finfo(dtype).tiny  # below it, a subnormal result has fewer bits: absolute there
    ok = np.isfinite(want)
    err = np.abs(out[ok] - want[ok]) / np.maximum(np.abs(want[ok]), tiny)
    assert err.max() <= ACTIVATION_ULPS * u, (name, err.max() / u)
    nan = np.array([np.nan], dtype)
    apply(acts.of(name), nan, nan)
    assert np.isnan(nan[0])


# --- every variant against the reference --------------------------------------------------------

CASES = [(13, 31, 17, 11), (7, 97, 129, 5), (1, 1, 1, 1), (521, 37, 23, 2)]


def _check_step(kernel, shape, dtype, activation, loss, weighted, layout="C"):
    m, n, h, k = shape
    x, _, params = make_problem(*shape, dtype)
    rng = np.random.default_rng(m + n)
    y = _targets(rng, m, k, loss)
    if loss == "poisson":
        params = fastnn.Params(*(p * dtype(0.1) for p in params))
    w = rng.uniform(0.2, 3.0, m) if weighted else None
    want_loss, want = reference.loss_and_grads(params_as(params, np.float64),
                                               x.astype(np.float64), y, loss, activation, w)
    got_loss, got = fastnn.loss_and_grads(
        fastnn.Params(*(relayout(p, layout) for p in params)), relayout(x, layout),
        relayout(y, layout), kernel=kernel, loss=loss, activation=activation, sample_weight=w)
    # one step's rounding, plus the activation's own error reaching each quantity at most twice
    # (through a1 and through its derivative)
    tol = tolerance(dtype, *shape) + 2 * ACTIVATION_ULPS * UNIT_ROUNDOFF[np.dtype(dtype)]
    assert_close(got_loss, want_loss, tol, "loss")
    for name, g, r in zip(fastnn.Params._fields, got, want):
        assert g.dtype == dtype
        assert_close(g, r, tol, f"d{name}")
    z = fastnn.predict(params, x, kernel=kernel, activation=activation)
    assert_close(z, reference.predict(params_as(params, np.float64), x.astype(np.float64),
                                      activation), tol, "z2")


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", CASES, ids=["x".join(map(str, s)) for s in CASES])
def test_every_variant_runs_every_activation(kernel, activation, shape, dtype):
    _check_step(kernel, shape, dtype, activation, "squared", False)


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_every_variant_runs_every_loss_with_and_without_weights(kernel, loss, weighted, dtype):
    _check_step(kernel, (13, 31, 17, 11), dtype, "tanh", loss, weighted)


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("layout", ["F", "strided"])
def test_layouts_with_another_activation(kernel, layout, dtype):
    _check_step(kernel, (13, 31, 17, 11), dtype, "logistic", "logistic", True, layout)


# --- whole runs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["fused-wide", "tiled", "numpy", "dual"])
@pytest.mark.parametrize("activation", ["tanh", "logistic"])
def test_training_runs_equal_the_reference_loop(kernel, activation):
    """Minibatch epochs with momentum, another activation and weighted rows; the dual form
    (fewer rows than features) takes any activation: it changes how z1 is computed, not what
    is computed from it."""
    rng = np.random.default_rng(0)
    m, n, h, k = (29, 41, 13, 3)
    x, y = rng.standard_normal((m, n)), rng.standard_normal((m, k))
    w = rng.uniform(0.5, 2.0, m)
    params = fastnn.init_params(n, h, k, seed=4)
    kw = dict(epochs=3, batch_size=7, lr=0.05, momentum=0.5, seed=9, activation=activation)
    res = fastnn.train(x, y, params=params, kernel=kernel, sample_weight=w, **kw)
    assert res.ran == kernel
    ref = params_as(params, np.float64)
    losses = reference.train(ref, x, y, optimizer=fastnn.Optimizer("sgd", 0.05, momentum=0.5),
                             epochs=3, batch_size=7, seed=9, activation=activation,
                             sample_weight=w)
    tol = run_tolerance(np.float64, len(losses), 7, n, h, k, m) + \
        2 * len(losses) * ACTIVATION_ULPS * UNIT_ROUNDOFF[np.dtype(np.float64)]
    assert_runs_close(res, (losses, ref), tol)


def test_an_unknown_activation_or_loss_is_an_error_naming_it():
    x, y, params = make_problem(3, 2, 4, 1, np.float64)
    with pytest.raises(ValueError, match="activation: expected one of 'relu', 'tanh'"):
        fastnn.predict(params, x, activation="softsign")
    with pytest.raises(ValueError, match="loss: expected one of"):
        fastnn.loss_and_grads(params, x, y, loss="hinge")
    with pytest.raises(ValueError, match="activation"):
        fastnn.train(x, y, hidden=4, iters=2, lr=0.1, activation="elu")
    with pytest.raises(ValueError, match=r"loss='logistic' takes targets in \[0, 1\]"):
        fastnn.loss_and_grads(params, x, [[2.0], [0.0], [1.0]], loss="logistic")
    with pytest.raises(ValueError, match="sample_weight: expected shape"):
        fastnn.loss_and_grads(params, x, y, sample_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="non-negative"):
        fastnn.loss_and_grads(params, x, y, sample_weight=[1.0, -2.0, 1.0])
