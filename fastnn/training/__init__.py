"""Training: ``train`` and the parts it is made of, each readable alone.

``options``   ``Options``: every setting, validated once (``train``, ``fastnn.distributed``, the
              estimators and the command line all build one)
``setup``     the parameters (new, given or resumed), the data checked against them, the seed,
              the validation split
``plan``      what the run will do, decided before its first step: primal or dual form, the
              variant, compiled loops or Python, numpy while the compiled route is built
``backends``  how the steps run: ``LocalSteps`` (a variant), ``DualSteps`` (the dual form), and
              ``fastnn.distributed``'s ``CollectiveSteps``, behind one interface
``state``     where a run is (losses, curves, early stopping, schedule) and its checkpoint form
``loop``      the blocks of steps and what happens between them: epochs, validation,
              callbacks, checkpoints, threads, the switch from numpy, the bar, Ctrl-C
``result``    ``TrainResult`` and the ways a run ends early (divergence, Ctrl-C)

Following ``train`` from the call to the kernel: ``train`` (here) -> ``plan.plan`` ->
``backends.LocalSteps.steps`` -> the variant's compiled loop (``kernels/<rung>.py``).
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import replace

import numpy as np

from .. import checkpoint as ckpt_io
from ..kernels.bf16 import Bf16Data
from ..kernels import AUTO
from ..auto import choice, policy
from ..auto.thread_watch import ThreadWatch
from ..threads import get_num_threads, num_threads
from ..threads import held as threads_held
from ..validation import check_lr, is_sparse
from .backends import Backend, DualSteps, LocalSteps
from .loop import PROBE_STEPS, Run
from .options import Options
from .plan import Plan, Route, plan
from .result import DivergenceError, DivergenceWarning, TrainingInterrupted, TrainResult
from .setup import resolve_seed, setup_params, split
from .state import RunConfig, RunState

__all__ = ["Backend", "DivergenceError", "DivergenceWarning", "Options", "Plan", "Route",
           "RunConfig", "RunState", "TrainResult", "TrainingInterrupted", "train"]


def train(x, y, **options) -> TrainResult:
    """Train the network on ``(x, y)``.

    Data: ``x (N, n)``; ``y (N, k)`` or ``(N,)`` for one output with ``loss="squared"``, integer
    class labels ``(N,)`` in ``[0, k)`` (or (N, k) target rows) with ``loss="softmax"``.

    Length: ``iters`` steps, or ``epochs`` passes over the data, in minibatches of
    ``batch_size`` rows (default: the whole set, one step per epoch).  The last batch of an epoch
    holds the remaining rows (it is used, not dropped).  ``shuffle``: a new row order each epoch,
    drawn from ``seed`` (the same seed gives the same run; ``seed=None`` draws one, recorded in
    ``result.seed``).

    Optimiser: ``optimizer="sgd"`` (``momentum``, ``nesterov``) or ``"adam"`` (``beta1``,
    ``beta2``, ``eps``), step size ``lr``, L2 weight decay ``alpha`` (``fastnn.optim``);
    ``lazy=True`` (sparse ``x`` only, opt-in): momentum, Adam and L2 update only the rows of
    ``w1`` each batch names, another method than theirs (``fastnn.optim.Optimizer``).
    ``"lbfgs"``: full-batch L-BFGS-B (scipy's), ``iters`` its iterations at most, ``tol`` the
    gradient's size where it stops, no ``lr`` (``fastnn.training.lbfgs``); or an
    ``Optimizer`` object, whose hyperparameters and state are used and updated (to continue a
    run: the estimators' ``partial_fit``).  Plain SGD is fused into the kernels' step; the others
    run as one fused update pass after the gradients.

    Validation: ``validation_data=(x_val, y_val)`` or ``validation_fraction`` of the rows held
    out (drawn from ``seed``); the validation loss is taken after each epoch.
    ``early_stopping``: stop when the validation loss (the epoch's training loss without
    validation data) has not improved by ``tol`` for ``patience`` epochs; the best parameters
    are returned.

    Divergence: when a loss is NaN or infinite training stops at once; that step makes no
    update, so the parameters are those of the last finite step (if they are themselves no
    longer finite, the last finite snapshot, taken each epoch).  ``on_divergence="warn"``
    returns the result with ``diverged_at`` set and a ``DivergenceWarning``; ``"raise"`` raises
    ``DivergenceError`` carrying the result.

    Checkpoints: ``checkpoint=PATH`` with ``checkpoint_every=N`` steps (and at the end) saves
    params, optimiser state and position atomically; ``resume=PATH`` continues from one (the same
    data and settings; ``seed`` may be omitted), ending bitwise equal to an uninterrupted run.
    ``PATH`` must be new or a fastnn checkpoint (no other file is ever replaced), in a folder
    that exists: checked before any step.  ``info``: a JSON-able dict every checkpoint carries
    (``fastnn train`` records the class labels, the feature names and its settings there, so a
    checkpoint is a usable model).  Ctrl-C stops at the next step boundary (within
    ``loop.BLOCK_SECONDS``), writes the checkpoint and raises ``TrainingInterrupted`` with the
    result so far.

    New parameters come from ``init_params(n, hidden, k, init=init, dtype=dtype, seed=seed)``;
    or pass ``params`` to continue from them (they are copied, never modified).  ``dtype``
    defaults to the params' dtype, else x's when it is float32/float64, else float64.
    ``callback(t, loss)`` is called for every step, in order, possibly in bursts of
    ``callback_every``; ``epoch_callback(epoch, losses, params)`` after each epoch with its step
    losses and the current params (to read, not to keep: they change), and training stops
    there when it returns True (the estimators' scikit-learn stopping rules use it).
    ``epoch_order(epoch)``: the epoch's order of the training rows, a permutation of
    ``range(m)``, in place of the shuffle from ``seed`` (with ``shuffle``; called once per epoch,
    in order, also for a single batch: the estimators draw scikit-learn's stream with it; a
    resumed run calls it again for the epoch it resumes in).
    ``threads``: Numba and BLAS threads for this run (together; the previous count is restored
    afterwards; None: ``auto`` runs choose theirs, ``fastnn/auto/thread_watch.py``).  ``kernel``: a
    variant's name or ``"auto"`` (chosen once for the run, ``result.ran``).  ``whole_loop``: run
    the steps inside one compiled call per epoch or burst (identical numbers); ``None`` uses it
    when the variant has one, ``True`` insists (an error for a variant without one; ``auto``
    then chooses among those with one).  ``progress``: a progress bar (tqdm) on stderr.
    """
    return run(x, y, Options.of(**options))


def run(x, y, opts: Options) -> TrainResult:
    """``train`` with its options already built (``Options.of``)."""
    if opts.optimizer == "lbfgs":
        from . import lbfgs

        return lbfgs.train(x, y, opts)
    opt = opts.new_optimizer()
    resumed = ckpt_io.load(opts.resume) if opts.resume is not None else None
    cfg = RunConfig.of(opts, resolve_seed(opts.seed, resumed))
    checkpoint = opts.checkpoint
    if checkpoint is not None:  # before any work: a bad path fails now, not at the first save
        checkpoint = ckpt_io.check_target(checkpoint)
    params, x, y = setup_params(opts, x, y, cfg.seed, resumed)
    if isinstance(x, Bf16Data) and not cfg.bfloat16:  # rows given as fastnn.to_bfloat16(x)
        cfg = replace(cfg, bfloat16=True)
    check_lr(opt.lr, params.dtype)
    if opt.lazy and not is_sparse(x):
        raise ValueError("lazy: updates only the rows of w1 a sparse batch's stored entries name; "
                         "x is dense (every row of w1 is in every batch's gradient): pass "
                         "lazy=False, or sparse x")
    rows, x_val, y_val = split(x, y, params, opts, cfg.seed)
    m = x.shape[0] if rows is None else rows.shape[0]
    batch = m if opts.batch_size is None else min(opts.batch_size, m)
    per_epoch = -(-m // batch)
    if rows is not None and per_epoch == 1:  # full batches: gather the training rows once
        x, y, rows = _rows_of(x, rows), np.ascontiguousarray(y[rows]), None
    total = opts.iters if opts.iters is not None else opts.epochs * per_epoch
    cfg = cfg.with_data(batch, m, None if x_val is None else int(x_val.shape[0]))
    every = opts.checkpoint_every
    # kernel="auto" without threads= adapts its thread count to the machine (not bitwise across
    # runs; a resumed run does not: it continues as the checkpoint's run would have, so that it
    # ends bitwise equal to it on the same thread count): on a busy machine the run, its set-up
    # and auto's measurement included, starts on the cores other programs leave free
    watch = (ThreadWatch(get_num_threads())
             if opts.threads is None and opts.kernel == AUTO and resumed is None else None)
    start = watch.start_threads() if watch is not None and watch.loaded else None
    with num_threads(opts.threads), threads_held(start):
        materializations = (1 + (0 if every is None else total // every)
                            + (total // per_epoch if opts.epoch_callback or opts.early_stopping
                               else 0))

        def first_batch():
            first = slice(0, batch) if rows is None else rows[:batch]
            return x[first], y[first]

        p = plan(opts, opt, params, m, batch, total, resumed, first_batch, materializations)
        if watch is not None:
            watch.probe = p.cost >= policy.ADAPT_FLOPS
        if p.dual and rows is not None:  # the dual form keeps its training rows together
            x, y, rows = _rows_of(x, rows), np.ascontiguousarray(y[rows]), None

        def backend_for(route: Route) -> Backend:
            if route.form == "dual":
                return DualSteps(route.variant, x, y, params, opt, x_val,
                                 arrays=resumed.arrays if resumed is not None else None)
            return LocalSteps(route.variant, route.whole)

        pending = (lambda: backend_for(p.then)) if p.then is not None else None
        loop = Run(backend_for(p.route), opt, params, (x, y, rows), (x_val, y_val), total, cfg,
                   opts.kernel, opts.info, opts.epoch_callback, pending, p.waits_for, watch,
                   opts.epoch_order)
        if resumed is not None:
            loop.restore(resumed, opts.resume)
        loop.execute(opts.callback, opts.callback_every, checkpoint, every, opts.progress)
    result = loop.result()
    if (opts.kernel == AUTO and len(result.schedule) == 1 and not p.dual
            and result.n_steps > PROBE_STEPS and isinstance(x, np.ndarray)):  # (dense data's)
        choice.note_run(params, batch, result.ran, result.schedule[0][2],
                        result.seconds_per_iter)
    finish(result, loop, opt, per_epoch, opts.on_divergence, checkpoint)
    return result


def _rows_of(x, rows):
    """The rows ``rows`` of ``x`` together: a C-contiguous copy of a dense ``x``; for sparse
    input (``SparseRows``) the same matrix with those rows selected (no entry copied), for
    bfloat16 data (``Bf16Data``) a copy of their words."""
    return np.ascontiguousarray(x[rows]) if isinstance(x, np.ndarray) else x[rows]


def finish(result, loop, opt, per_epoch, on_divergence, checkpoint=None) -> None:
    """How a run that did not simply finish ends: Ctrl-C raises ``TrainingInterrupted`` (with
    the result), a divergence warns or raises ``DivergenceError``."""
    if loop.state.interrupted:
        where = f"; checkpoint {checkpoint} written there" if checkpoint is not None else ""
        raise TrainingInterrupted(f"training interrupted by Ctrl-C after step "
                                  f"{result.n_steps}{where}", result, checkpoint)
    if result.diverged:
        t = result.diverged_at
        msg = (f"training diverged at step {t} (epoch {t // per_epoch}): the loss is "
               f"{result.losses[t]}; stopped there, keeping {loop.kept}.  Try a smaller learning "
               f"rate than lr={opt.lr:g}.")
        if on_divergence == "raise":
            raise DivergenceError(msg, result)
        warnings.warn(msg, DivergenceWarning, stacklevel=4)


# ``train``'s signature is ``Options``' fields: one place to add an option, shown by help().
train.__signature__ = inspect.Signature(
    [inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD),
     inspect.Parameter("y", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
       for f in Options.__dataclass_fields__.values()],
    return_annotation=TrainResult)
