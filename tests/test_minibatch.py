"""Minibatch training, optimisers, validation, early stopping, divergence and checkpoints,
against the plain numpy loop in ``fastnn.reference.train``."""

import numpy as np
import pytest

import fastnn
from fastnn import reference
from fastnn.optim import Optimizer
from conftest import VARIANTS, WHOLE_LOOP, assert_runs_close, params_as, run_tolerance, \
    tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

OPTIMIZERS = [
    dict(optimizer="sgd"),
    dict(optimizer="sgd", momentum=0.9, nesterov=True, alpha=1e-3),
    dict(optimizer="adam", alpha=1e-4),
    # scikit-learn's form (the estimators'): alpha per batch (5 of 10 rows and one of 3)
    dict(optimizer="sgd", momentum=0.9, nesterov=True, alpha=1e-2, form="scikit-learn"),
    dict(optimizer="adam", alpha=1e-2, form="scikit-learn", l2_weight=2.0),
]
OPT_IDS = ["sgd", "nesterov-l2", "adam-l2", "sklearn-nesterov-l2", "sklearn-adam-l2"]


def _train_kw(opt, lr):
    """``fastnn.train``'s optimiser arguments for ``opt`` (the scikit-learn form is an
    ``Optimizer`` object: ``train`` takes the form no other way)."""
    if "form" not in opt:
        return dict(opt, lr=lr)
    kw = dict(opt)
    return dict(optimizer=Optimizer(kw.pop("optimizer"), lr, **kw))


def _data(m=53, n=7, k=3, loss="squared", dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n)).astype(dtype)
    y = rng.integers(0, k, m) if loss == "softmax" else rng.standard_normal((m, k)).astype(dtype)
    return x, y


def _reference_run(x, y, params, loss, opt_kw, lr, epochs, batch, seed):
    kw = dict(opt_kw)
    name = kw.pop("optimizer")
    opt = Optimizer(name, lr, **kw)
    p = params_as(params, np.float64)
    yy = np.eye(params.shape[2])[y] if loss == "softmax" else y.astype(np.float64)
    losses = reference.train(p, x.astype(np.float64), yy, optimizer=opt, epochs=epochs,
                             batch_size=batch, seed=seed, loss=loss)
    return p, losses


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=OPT_IDS)
@pytest.mark.parametrize("loss", ["squared", "softmax"])
def test_minibatch_epochs_match_the_reference_loop(kernel, opt, loss, dtype):
    """53 rows in batches of 10: five full batches and a partial one per epoch, shuffled."""
    x, y = _data(loss=loss, dtype=dtype)
    params = fastnn.init_params(7, 11, 3, dtype=dtype, seed=4)
    lr = 0.01 if opt["optimizer"] == "adam" else 0.05
    res = fastnn.train(x, y, params=params, epochs=3, batch_size=10, loss=loss, seed=9,
                       kernel=kernel, **_train_kw(opt, lr))
    ref, ref_losses = _reference_run(x, y, params, loss, opt, lr, 3, 10, 9)
    assert res.n_steps == 18 and res.steps_per_epoch == 6 and res.n_epochs == 3
    # 18 steps, each within the one-step rounding bound, along a run that converges
    tol = run_tolerance(dtype, 18, 53, 7, 11, 3)
    assert_runs_close(res, (ref_losses, ref), tol)
    np.testing.assert_allclose(res.epoch_losses, ref_losses.reshape(3, 6).mean(axis=1), rtol=tol)


@pytest.mark.parametrize("kernel", VARIANTS)
def test_same_seed_same_run(kernel):
    x, y = _data()
    runs = [fastnn.train(x, y, hidden=9, epochs=2, batch_size=8, lr=0.05, seed=3, kernel=kernel)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].losses, runs[1].losses)
    for a, b in zip(runs[0].params, runs[1].params):
        np.testing.assert_array_equal(a, b)
    other = fastnn.train(x, y, hidden=9, epochs=2, batch_size=8, lr=0.05, seed=4, kernel=kernel)
    assert not np.array_equal(other.losses, runs[0].losses)


@pytest.mark.parametrize("kernel", WHOLE_LOOP)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=OPT_IDS)
@pytest.mark.parametrize("loss", ["squared", "softmax"])
def test_whole_loop_and_python_loop_agree(kernel, opt, loss, dtype):
    """The compiled loops (plain SGD fused into the step; other optimisers' update inside the
    loop) give the very numbers of one call per step from Python."""
    x, y = _data(loss=loss, dtype=dtype)
    kw = dict(hidden=9, epochs=3, batch_size=8, seed=3, loss=loss, kernel=kernel)
    a = fastnn.train(x, y, whole_loop=True, **kw, **_train_kw(opt, 0.01))
    b = fastnn.train(x, y, whole_loop=False, **kw, **_train_kw(opt, 0.01))
    assert a.optimizer.t == b.optimizer.t
    np.testing.assert_array_equal(a.losses, b.losses)
    for p, q in zip(a.params, b.params):
        np.testing.assert_array_equal(p, q)


def test_seed_none_is_recorded_and_reproduces():
    x, y = _data()
    a = fastnn.train(x, y, hidden=5, epochs=2, batch_size=8, lr=0.05)
    b = fastnn.train(x, y, hidden=5, epochs=2, batch_size=8, lr=0.05, seed=a.seed)
    np.testing.assert_array_equal(a.losses, b.losses)


def test_iters_with_batches_run_across_epochs():
    x, y = _data()
    res = fastnn.train(x, y, hidden=5, iters=10, batch_size=20, lr=0.05, seed=1)
    ref = fastnn.train(x, y, hidden=5, epochs=4, batch_size=20, lr=0.05, seed=1)
    np.testing.assert_array_equal(res.losses, ref.losses[:10])


def test_validation_and_early_stopping_keep_the_best_params():
    x, y = _data(m=200)
    res = fastnn.train(x, y, hidden=64, epochs=200, batch_size=16, lr=0.05, seed=0,
                       validation_fraction=0.25, early_stopping=True, patience=3)
    assert res.stopped_early and res.n_epochs < 200
    assert len(res.val_losses) == res.n_epochs
    assert res.best_epoch == int(np.argmin(res.val_losses))
    # the returned params are the best epoch's: their validation loss is the minimum
    rows = np.sort(np.random.default_rng(np.random.SeedSequence(0, spawn_key=(1,)))
                   .permutation(200)[:50])
    z2 = fastnn.predict(res.params, x[rows])
    # the same forward pass by another call: within one step's bound (2.8e-14; was 1e-12)
    assert reference.output_loss(z2, y[rows])[0] == pytest.approx(
        res.val_losses.min(), rel=tolerance(np.float64, 50, 7, 64, 3))


def test_validation_data_is_used_as_given():
    x, y = _data(m=60)
    res = fastnn.train(x[:40], y[:40], hidden=6, epochs=3, batch_size=16, lr=0.05, seed=0,
                       validation_data=(x[40:], y[40:]))
    z2 = fastnn.predict(res.params, x[40:])
    assert res.val_losses[-1] == pytest.approx(reference.output_loss(z2, y[40:])[0],
                                               rel=tolerance(np.float64, 20, 7, 6, 3))


@pytest.mark.parametrize("kernel", VARIANTS + ["reference"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=OPT_IDS)
def test_divergence_stops_and_keeps_finite_params(kernel, opt):
    x, y = _data(m=32)
    # SGD blows up within a few steps at this scale and rate; Adam's steps are bounded by lr,
    # so for it the inputs alone overflow the loss (at the first step)
    x *= 1e3 if opt["optimizer"] == "sgd" else 1e170
    with pytest.warns(fastnn.DivergenceWarning, match=r"diverged at step \d+.*smaller learning"):
        res = fastnn.train(x, y, hidden=16, epochs=50, batch_size=8, seed=0, kernel=kernel,
                           **_train_kw(opt, 10.0))
    assert res.diverged
    t = res.diverged_at
    assert len(res.losses) == t + 1 and not np.isfinite(res.losses[t])
    assert np.isfinite(res.losses[:t]).all()
    assert all(np.isfinite(p).all() for p in res.params)


def test_divergence_can_raise_with_the_result():
    x, y = _data(m=32)
    with pytest.raises(fastnn.DivergenceError) as info:
        fastnn.train(x * 1e3, y, hidden=16, iters=200, lr=10.0, seed=0, on_divergence="raise")
    assert all(np.isfinite(p).all() for p in info.value.result.params)


@pytest.mark.parametrize("kernel", WHOLE_LOOP)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=OPT_IDS)
def test_resume_is_bitwise_equal_to_an_uninterrupted_run(kernel, opt, tmp_path):
    x, y = _data(m=45, loss="softmax")
    kw = dict(hidden=10, epochs=4, batch_size=8, seed=5, loss="softmax",
              kernel=kernel, validation_fraction=0.2, early_stopping=True, patience=50)
    full = fastnn.train(x, y, **kw, **_train_kw(opt, 0.02))
    path = tmp_path / "ck.npz"
    # stop part-way (mid-epoch), then resume from the checkpoint
    part = dict(kw, epochs=None, iters=7)
    fastnn.train(x, y, checkpoint=path, checkpoint_every=3, **part, **_train_kw(opt, 0.02))
    resumed = fastnn.train(x, y, resume=path, **dict(kw, seed=None), **_train_kw(opt, 0.02))
    np.testing.assert_array_equal(resumed.losses, full.losses)
    np.testing.assert_array_equal(resumed.val_losses, full.val_losses)
    for a, b in zip(resumed.params, full.params):
        np.testing.assert_array_equal(a, b)


def test_resume_refuses_other_settings(tmp_path):
    x, y = _data()
    path = tmp_path / "ck.npz"
    fastnn.train(x, y, hidden=5, iters=3, batch_size=8, lr=0.05, seed=1, checkpoint=path)
    with pytest.raises(ValueError, match="batch"):
        fastnn.train(x, y, hidden=5, iters=6, batch_size=16, lr=0.05, seed=1, resume=path)
    with pytest.raises(ValueError, match="lr"):
        fastnn.train(x, y, hidden=5, iters=6, batch_size=8, lr=0.1, seed=1, resume=path)


@pytest.mark.parametrize("kw, err, match", [
    (dict(iters=3, epochs=2), TypeError, "exactly one of iters"),
    (dict(), TypeError, "exactly one of iters"),
    (dict(epochs=2, batch_size=0), ValueError, "batch_size"),
    (dict(epochs=2, validation_fraction=1.0), ValueError, "validation_fraction"),
    (dict(epochs=2, validation_data=(1, 2, 3)), TypeError, "validation_data"),
    (dict(epochs=2, optimizer="rmsprop"), ValueError, "optimizer"),
    (dict(epochs=2, loss="hinge"), ValueError, "loss"),
    (dict(epochs=2, on_divergence="ignore"), ValueError, "on_divergence"),
    (dict(epochs=2, seed=-1), TypeError, "seed"),
])
def test_bad_training_arguments(kw, err, match):
    x, y = _data()
    with pytest.raises(err, match=match):
        fastnn.train(x, y, hidden=4, lr=0.1, **kw)


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=OPT_IDS)
def test_full_batch_iters_match_the_reference_loop(kernel, opt):
    """Full-batch runs take many steps per chunk: each must use all the rows."""
    x, y = _data()
    params = fastnn.init_params(7, 11, 3, seed=4)
    lr = 0.01
    res = fastnn.train(x, y, params=params, iters=6, seed=9, kernel=kernel, **_train_kw(opt, lr))
    ref, ref_losses = _reference_run(x, y, params, "squared", opt, lr, 6, None, 9)
    # the derived bound for 6 steps (9.9e-14) where this compared to 1e-12
    assert_runs_close(res, (ref_losses, ref), run_tolerance(np.float64, 6, 53, 7, 11, 3))
