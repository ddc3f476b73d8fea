"""The dual form (``kernels/dual.py``): training in the span of the data, against the plain numpy
loop ``reference.train`` and against the primal form's own runs.

Rounding.  The dual form computes ``z1 = s * Z0 + G @ A + b1`` where the primal form computes
``x @ w1 + b1``: the same number by a different sum.  ``G = X @ X.T`` and ``Z0 = X @ w1_0`` are
dot products of length ``n``, ``G @ A`` one of length ``M``; every other quantity is the primal
step's.  So one step's error is bounded as the primal step's is (``conftest.tolerance``:
``2 * (n + h + k + m) * u`` relative) with ``M`` added to the lengths, and a run of ``T`` steps
compounds it at most ``T`` times along a run that converges (``conftest``'s rule 3, which
``assert_runs_close`` checks).
"""

import numpy as np
import pytest

import fastnn
import fastnn.checkpoint
from fastnn import reference
from fastnn.kernels import dual
from fastnn.training.backends import DualSteps
from fastnn.optim import Optimizer
from conftest import assert_close, assert_runs_close, params_as, run_tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

# Fewer rows than features: 29 training rows, 41 features (primes, none a multiple of a vector)
M, N, H, K = 29, 41, 13, 3

OPTIMIZERS = {
    "sgd": dict(),
    "momentum": dict(momentum=0.9),
    "nesterov-l2": dict(momentum=0.8, nesterov=True, alpha=1e-2),
    "l2": dict(alpha=3e-2),
    # scikit-learn's form (the estimators'): alpha per batch, the velocity holding steps
    "sklearn-nesterov-l2": dict(momentum=0.8, nesterov=True, alpha=1e-2, form="scikit-learn"),
    "sklearn-momentum-l2": dict(momentum=0.9, alpha=3e-2, form="scikit-learn"),
}


def _data(loss, dtype, m=M, n=N, k=K, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n)).astype(dtype)
    y = rng.integers(0, k, m) if loss == "softmax" else rng.standard_normal((m, k)).astype(dtype)
    return x, y


def _tol(dtype, steps, m=M, n=N, h=H, k=K, batch=M):
    """The run bound with the dual form's extra dot product (``G @ A``, length ``m``)."""
    return run_tolerance(dtype, steps, batch, n, h, k, m)


def _assert_params_close(got, want, tol):
    for name, p, r in zip(fastnn.Params._fields, got, want):
        assert_close(p, r, tol, name)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=list(OPTIMIZERS))
@pytest.mark.parametrize("loss", ["squared", "softmax"])
@pytest.mark.parametrize("batch", [None, 7], ids=["full", "minibatch"])
def test_dual_runs_match_the_reference_loop(opt, loss, batch, dtype):
    """Full batches, and shuffled minibatches of 7 over 29 rows (four full and a partial one
    per epoch): losses and final params equal the numpy loop's to rounding."""
    x, y = _data(loss, dtype)
    params = fastnn.init_params(N, H, K, dtype=dtype, seed=4)
    epochs = 12 if batch is None else 3
    res = fastnn.train(x, y, params=params, epochs=epochs, batch_size=batch, loss=loss, seed=9,
                       kernel="dual", optimizer=Optimizer("sgd", 0.02, **OPTIMIZERS[opt]))
    assert res.ran == "dual"
    ref = params_as(params, np.float64)
    yy = np.eye(K)[y] if loss == "softmax" else y.astype(np.float64)
    ref_losses = reference.train(ref, x.astype(np.float64), yy,
                                 optimizer=Optimizer("sgd", 0.02, **OPTIMIZERS[opt]),
                                 epochs=epochs, batch_size=batch, seed=9, loss=loss)
    assert res.n_steps == len(ref_losses)
    assert_runs_close(res, (ref_losses, ref), _tol(dtype, len(ref_losses), batch=batch or M))


def test_the_seed_experiment_runs_dual_under_auto_and_equals_the_primal_form():
    """64 rows, 1000 features: ``auto`` (the default) takes the dual form; its run equals the
    primal one (``fused-wide``) to rounding."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 1000)), rng.standard_normal((64, 10))
    kw = dict(hidden=100, iters=100, lr=1e-5, seed=1)
    d = fastnn.train(x, y, **kw)
    p = fastnn.train(x, y, kernel="fused-wide", **kw)
    assert d.ran == "dual" and p.ran == "fused-wide"
    assert_runs_close(d, p, _tol(np.float64, 100, 64, 1000, 100, 10, 64))


@pytest.mark.parametrize("layout", ["fortran", "strided", "float32-data"])
def test_any_layout_of_x_gives_the_same_run(layout):
    x, y = _data("squared", np.float64)
    base = fastnn.train(x, y, hidden=H, iters=5, lr=0.01, seed=2, kernel="dual")
    if layout == "fortran":
        xx = np.asfortranarray(x)
    elif layout == "strided":
        xx = np.repeat(x, 2, axis=1)[:, ::2]
    else:
        xx, base = x.astype(np.float32), fastnn.train(x.astype(np.float32), y, hidden=H, iters=5,
                                                     lr=0.01, seed=2, dtype="float64",
                                                     kernel="dual")
    other = fastnn.train(xx, y, hidden=H, iters=5, lr=0.01, seed=2, dtype="float64",
                         kernel="dual")
    np.testing.assert_array_equal(other.losses, base.losses)
    for a, b in zip(other.params, base.params):
        np.testing.assert_array_equal(a, b)


def test_auto_keeps_the_primal_form_where_the_dual_does_not_apply_or_pay():
    x, y = _data("squared", np.float64)
    kw = dict(hidden=H, iters=200, lr=0.01, seed=1)
    assert fastnn.train(x, y, **kw).ran == "dual"
    assert fastnn.train(x, y, optimizer="adam", **kw).ran != "dual"
    assert fastnn.train(x, y, whole_loop=False, **kw).ran != "dual"
    # three steps: forming G, Z0 and w1 costs more than the steps it saves
    assert fastnn.train(x, y, hidden=H, iters=3, lr=0.01, seed=1).ran != "dual"
    square = np.random.default_rng(1).standard_normal((N, N))
    assert fastnn.train(square, square[:, :2], **kw).ran != "dual"  # M >= n


@pytest.mark.parametrize("kw, match", [
    (dict(optimizer="adam"), "adam is element-wise"),
    (dict(whole_loop=False), "compiled loop"),
])
def test_asking_for_dual_where_it_cannot_run_says_why(kw, match):
    x, y = _data("squared", np.float64)
    with pytest.raises(ValueError, match=match):
        fastnn.train(x, y, hidden=H, iters=3, lr=0.01, kernel="dual", **kw)


def test_dual_with_as_many_rows_as_features_says_why():
    x = np.random.default_rng(0).standard_normal((N, N))
    with pytest.raises(ValueError, match="fewer rows than features"):
        fastnn.train(x, x[:, :2], hidden=H, iters=3, lr=0.01, kernel="dual")


def test_one_step_calls_refuse_dual_and_one_batch_calls_run_the_primal_route():
    x, y = _data("squared", np.float64)
    params = fastnn.init_params(N, H, K, seed=0)
    with pytest.raises(ValueError, match="sgd_step"):
        fastnn.sgd_step(params, x, y, 0.01, kernel="dual")
    np.testing.assert_array_equal(fastnn.predict(params, x, kernel="dual"),
                                  fastnn.predict(params, x, kernel=fastnn.kernels.PRIMARY))
    a = fastnn.loss_and_grads(params, x, y, kernel="dual")
    b = fastnn.loss_and_grads(params, x, y, kernel=fastnn.kernels.PRIMARY)
    assert a[0] == b[0]


def test_validation_early_stopping_and_epoch_callbacks_see_the_current_w1():
    """Validation losses come from the validation rows' own Gram rows; the best params kept by
    early stopping and the params an epoch callback sees are ``w1`` formed at that point: all
    equal the primal form's to rounding.

    The run converges (training loss 7.9 -> 1.4 over its epochs) while the validation loss
    turns up after epoch 2, so early stopping ends it at epoch 5 and returns epoch 2's params.
    (This test once ran at lr 0.05, where the run diverged, validation losses 7.8 -> 1.9e28, and
    the two forms' last-bit differences grew past any per-step bound: issue 24.)"""
    x, y = _data("squared", np.float64, m=40)
    seen = {}

    def run(kernel):
        seen[kernel] = []

        def cb(epoch, losses, params):
            seen[kernel].append(params.copy())

        return fastnn.train(x, y, hidden=H, epochs=30, batch_size=8, lr=0.01, seed=3,
                            validation_fraction=0.25, early_stopping=True, patience=3,
                            momentum=0.9, kernel=kernel, epoch_callback=cb)

    d, p = run("dual"), run("fused-wide")
    assert d.ran == "dual"
    assert d.stopped_early and d.n_steps == p.n_steps and d.best_epoch == p.best_epoch
    assert 0 < d.best_epoch < d.n_epochs - 1  # the run went on past its best epoch
    tol = _tol(np.float64, d.n_steps, m=30, batch=8)
    # training and validation losses, and the params returned: the best epoch's
    assert_runs_close(d, p, tol, what="dual run")
    np.testing.assert_allclose(d.val_losses, p.val_losses, rtol=tol)
    assert len(seen["dual"]) == len(seen["fused-wide"]) == d.n_epochs
    for epoch, (a, b) in enumerate(zip(seen["dual"], seen["fused-wide"])):
        _assert_params_close(a, b, tol)
    for got, best in zip(d.params, seen["dual"][d.best_epoch]):
        np.testing.assert_array_equal(got, best)
    # the validation loss of the params returned is the best one recorded
    rows = np.sort(np.random.default_rng(np.random.SeedSequence(3, spawn_key=(1,)))
                   .permutation(40)[:10])
    z2 = reference.forward(params_as(d.params, np.float64), x[rows])[2]
    val = reference.output_loss(z2, y[rows])[0]
    assert abs(val - d.val_losses[d.best_epoch]) <= tol * val


@pytest.mark.parametrize("opt", ["sgd", "nesterov-l2"])
def test_resume_is_bitwise_equal_to_an_uninterrupted_dual_run(opt, tmp_path):
    x, y = _data("softmax", np.float64)
    kw = dict(hidden=H, batch_size=6, lr=0.05, seed=5, loss="softmax", **OPTIMIZERS[opt])
    whole = fastnn.train(x, y, epochs=6, kernel="dual", **kw)
    ck = tmp_path / "run.npz"
    first = fastnn.train(x, y, epochs=2, checkpoint=ck, kernel="dual", **kw)
    saved = fastnn.checkpoint.load(ck)
    # the checkpoint's params are the run's: w1 formed from the dual state
    for a, b in zip(saved.params, first.params):
        np.testing.assert_array_equal(a, b)
    resumed = fastnn.train(x, y, epochs=6, resume=ck, **kw)  # auto continues in the dual form
    assert resumed.ran == "dual"
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    for a, b in zip(resumed.params, whole.params):
        np.testing.assert_array_equal(a, b)


def test_divergence_stops_with_the_last_finite_params():
    x, y = _data("squared", np.float64)
    kw = dict(hidden=H, iters=60, lr=5.0, seed=1)
    with pytest.warns(RuntimeWarning):
        d = fastnn.train(x, y, kernel="dual", **kw)
    with pytest.warns(RuntimeWarning):
        p = fastnn.train(x, y, kernel="fused-wide", **kw)
    assert d.diverged and p.diverged and d.n_steps == p.n_steps
    assert all(np.isfinite(a).all() for a in d.params)
    assert all(np.isfinite(a).all() for a in p.params)


def test_flops_model_counts_what_each_form_does():
    primal, done = dual.flops(64, 1000, 100, 10, 64, 100, 0.0, 1)
    assert primal == 100 * 4 * 64 * 1000 * 100
    # G and Z0 once, one (64 x 64) @ (64 x 100) product a step, w1 formed once
    assert done == 2 * 64 * 64 * 1000 + 2 * 64 * 1000 * 100 + 100 * 2 * 64 * 64 * 100 \
        + 2 * 1000 * 64 * 100
    assert done < primal / 10


def test_momentum_state_comes_back_in_the_primal_form():
    """The result's optimiser state holds w1's velocity (``v0 * w1_0 + X.T @ V``), so a dual
    run can be continued in the primal form: equal to an all-primal run to rounding."""
    x, y = _data("squared", np.float64)
    kw = dict(hidden=H, iters=40, lr=0.02, seed=1, momentum=0.9, nesterov=True, alpha=1e-2)
    d = fastnn.train(x, y, kernel="dual", **kw)
    p = fastnn.train(x, y, kernel="fused-wide", **kw)
    assert_runs_close(d, p, _tol(np.float64, 40))
    _assert_params_close(d.optimizer.state["velocity"], p.optimizer.state["velocity"],
                         _tol(np.float64, 40))
    more = dict(iters=20, lr=0.02, seed=1, kernel="fused-wide")
    d2 = fastnn.train(x, y, params=d.params, optimizer=d.optimizer, **more)
    p2 = fastnn.train(x, y, params=p.params, optimizer=p.optimizer, **more)
    assert_runs_close(d2, p2, _tol(np.float64, 60))


def test_a_snapshot_of_the_dual_state_brings_w1_back():
    x, y = _data("squared", np.float64)
    params = fastnn.init_params(N, H, K, seed=0)
    opt = Optimizer("sgd", 0.01, momentum=0.5)
    steps = DualSteps(fastnn.kernels.get(fastnn.kernels.PRIMARY), x, y, params, opt)
    saved = steps.save_state()
    steps.state.A[...] = np.inf
    steps.load_state(saved)
    assert steps.stale and np.isfinite(steps.state.A).all()
    assert not np.shares_memory(saved[0], steps.state.A)
