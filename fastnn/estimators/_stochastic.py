"""The stochastic solvers (``sgd``, ``adam``): scikit-learn's ``_fit_stochastic`` on fastnn's
training loop.

One ``fastnn.training.run`` runs all the epochs of a fit, its minibatches in compiled loops;
scikit-learn's per-epoch work happens between epochs, in ``EpochEnd`` (the run's
``epoch_callback``): ``n_iter_``, ``t_``, ``loss_``, ``loss_curve_``, the validation score and
the best parameters of early stopping, ``_no_improvement_count``, the learning-rate schedules
(``Schedule``), the stop, the ConvergenceWarning.  The epochs' row orders are drawn from the
estimator's ``random_state`` as scikit-learn draws them (``shuffle`` of the previous order, one
per epoch, after the initial weights and the validation split), so with the same
``random_state`` both libraries visit the same batches.

The objectives: scikit-learn's gradient is ``c`` times smaller than fastnn's (``c = 2`` for
the squared error, ``sum((z - y)**2) / B`` in fastnn and half of it in scikit-learn's
gradient; 1 otherwise), so the optimiser runs in scikit-learn's form (``fastnn.optim``) with
``lr / c`` (SGD), ``eps * c`` (Adam) and ``alpha * c`` per batch weight: the same steps.  The
reported loss is ``s`` times smaller than fastnn's (``s = 2k`` for ``k`` squared-error outputs:
scikit-learn averages over the outputs in its loss and not in its gradient), and the L2 term is
recorded with weight ``s / c`` so that ``recorded / s`` is scikit-learn's batch loss.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import training
from ..optim import Optimizer
from ..kernels.bf16 import is_bfloat16
from ..training.options import Options
from ..training.result import DivergenceError, TrainingInterrupted
from ._compat import ConvergenceWarning, shuffle, split_rows


class Schedule:
    """scikit-learn's learning rate of ``sgd`` (``SGDOptimizer``): ``constant``, ``invscaling``
    (``lr_init / (t_ + 1) ** power_t`` after each epoch, ``t_`` the samples seen) or
    ``adaptive`` (divided by 5 where the others stop, until it is at most 1e-6).  ``adam``'s is
    constant (scikit-learn's Adam stops where ``sgd`` would adapt)."""

    def __init__(self, kind, lr_init, power_t):
        self.kind, self.lr_init, self.power_t = kind, float(lr_init), float(power_t)

    def iteration_ends(self, lr, t) -> float:
        if self.kind == "invscaling":
            return self.lr_init / (t + 1) ** self.power_t
        return lr

    def trigger_stopping(self, lr, msg, verbose):
        """``(stop, lr)``."""
        if self.kind != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True, lr
        if lr <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True, lr
        lr /= 5.0
        if verbose:
            print(msg + f" Setting learning rate to {lr:f}")
        return False, lr


def make_optimizer(est, s, c, scale) -> Optimizer:
    """scikit-learn's optimiser of ``est``, as fastnn's in scikit-learn's form on fastnn's
    objective (module docstring)."""
    common = dict(alpha=c * est.alpha, form="scikit-learn", l2_weight=scale / c,
                  lazy=bool(est.lazy))
    if s.solver == "sgd":
        mu = float(est.momentum)
        return Optimizer("sgd", s.lr / c, momentum=mu,
                         nesterov=bool(s.nesterovs_momentum) and mu > 0, **common)
    return Optimizer("adam", s.lr, beta1=s.beta_1, beta2=s.beta_2, eps=s.epsilon * c, **common)


def fit(est, X, Y, sw, s, rs, incremental) -> None:
    """scikit-learn's ``_fit_stochastic`` of ``est`` on ``X``, targets ``Y (n, k)``, weights
    ``sw`` (or None), with the random stream ``rs``."""
    loss, c, scale = est._objective()
    if not incremental or not hasattr(est, "optimizer_"):
        est.optimizer_ = make_optimizer(est, s, c, scale)
        est._learning_rate = float(s.lr)
    schedule = Schedule(s.schedule if s.solver == "sgd" else "constant", s.lr, est.power_t)
    if est.early_stopping and incremental:
        raise ValueError("partial_fit does not support early_stopping=True")
    val = None
    if est.early_stopping:
        # (scikit-learn stratifies a single-output classifier only: binary, not multiclass)
        # (and on its bool targets: the error for a class of one member names it so)
        stratify = Y != 0 if not est._is_regressor and est.n_outputs_ == 1 else None
        train, held = split_rows(X.shape[0], est.validation_fraction, rs, stratify)
        if held.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        val = (X[held], est._truth(Y[held]), None if sw is None else sw[held])
        X, Y, sw = X[train], Y[train], None if sw is None else sw[train]
    n = X.shape[0]
    if est.batch_size == "auto":
        batch = min(200, n)
    else:
        if est.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going "
                          "to be clipped", UserWarning, stacklevel=4)
        batch = int(np.clip(est.batch_size, 1, n))
    est.n_iter_ = 0
    end = EpochEnd(est, s, schedule, c, scale, val, n, batch, incremental)
    order = np.arange(n)

    def epoch_order(epoch):  # scikit-learn's: the previous order shuffled, from rs
        nonlocal order
        order = shuffle(order, rs)
        return order

    opts = Options.of(
        params=est.params_, epochs=1 if incremental else s.max_iter, batch_size=batch,
        shuffle=bool(est.shuffle), optimizer=est.optimizer_, loss=loss,
        activation=est.activation, sample_weight=sw, kernel=est.kernel, threads=est.threads,
        dtype="bfloat16" if is_bfloat16(est.dtype) else None,
        seed=0, epoch_callback=end, epoch_order=epoch_order if est.shuffle else None,
        on_divergence="raise")
    run = training.run
    if est.distributed:  # every rank of the MPI job calls fit with the same data
        from ..distributed import run
    try:
        result = run(X, Y, opts)
    except DivergenceError as exc:  # the run kept its last finite parameters: so do we
        est._set_params(exc.result.params)
        est.kernel_ = exc.result.ran
        raise ValueError(f"Solver produced non-finite parameter weights. The input data may "
                         f"contain large values and need to be preprocessed.  (fastnn stopped "
                         f"at step {exc.result.diverged_at}, where the loss was not finite, and "
                         f"kept the last finite parameters.)") from None
    except TrainingInterrupted as exc:
        warnings.warn("Training interrupted by user.", UserWarning, stacklevel=4)
        result = exc.result
    est._set_params(result.params)
    est.kernel_ = result.ran
    if est.early_stopping:  # the best parameters (scikit-learn's _best_coefs)
        est.coefs_ = est._best_coefs
        est.intercepts_ = est._best_intercepts


class EpochEnd:
    """scikit-learn's end of an epoch, as ``train``'s ``epoch_callback`` (module docstring);
    returns True where scikit-learn's loop breaks."""

    def __init__(self, est, s, schedule, c, scale, val, n, batch, incremental):
        self.est, self.s, self.schedule = est, s, schedule
        self.c, self.scale, self.val, self.n = c, scale, val, n
        self.incremental = incremental
        sizes = np.full(-(-n // batch), batch, dtype=np.float64)
        sizes[-1] = n - batch * (len(sizes) - 1)
        self.sizes = sizes  # scikit-learn weighs each batch's loss by its rows
        self.talk = bool(est.verbose)
        if est.distributed and self.talk:  # one rank speaks for the job
            from ..distributed import world

            self.talk = world().is_root

    def __call__(self, epoch, losses, params) -> bool:
        est, s = self.est, self.s
        est.n_iter_ += 1
        est.loss_ = float(np.dot(losses, self.sizes)) / self.n / self.scale
        est.t_ += self.n
        est.loss_curve_.append(est.loss_)
        if self.talk:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
        self._update_no_improvement_count(params)
        lr = self.schedule.iteration_ends(est._learning_rate, est.t_)
        stop = False
        if est._no_improvement_count > s.n_iter_no_change:
            what = "Validation score" if self.val is not None else "Training loss"
            msg = (f"{what} did not improve more than tol={est.tol:f} for "
                   f"{s.n_iter_no_change} consecutive epochs.")
            stop, lr = self.schedule.trigger_stopping(lr, msg, self.talk)
            if not stop:
                est._no_improvement_count = 0
        self._set_lr(lr)
        if stop or self.incremental:
            return True
        if est.n_iter_ == s.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({s.max_iter}) reached and "
                          f"the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=2)
        return False

    def _set_lr(self, lr) -> None:
        """scikit-learn's learning rate for the next epoch (the SGD step of fastnn's objective
        is ``lr / c``; Adam's lr does not change)."""
        est = self.est
        if lr != est._learning_rate:
            est._learning_rate = lr
            est.optimizer_.lr = lr / self.c

    def _update_no_improvement_count(self, params) -> None:
        est = self.est
        if self.val is not None:
            score = est._validation_score(params, *self.val)
            est.validation_scores_.append(score)
            if self.talk:
                print(f"Validation score: {score:f}")
            if score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_coefs = [params.w1.copy(), params.w2.copy()]
                est._best_intercepts = [params.b1.copy(), params.b2.copy()]
        else:
            loss = est.loss_curve_[-1]
            if loss > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if loss < est.best_loss_:
                est.best_loss_ = loss
