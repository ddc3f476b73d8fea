"""The training loop: validate once, then run the chosen variant's fused steps.

Full-batch (``iters``) or minibatch epochs (``epochs``, ``batch_size``), squared or softmax loss,
plain SGD fused into the step (the compiled whole loop where the variant has one) or any
``fastnn.optim`` optimiser as a fused update pass after the gradients; validation, early stopping,
divergence handling and checkpoints.  Everything that varies between runs comes from ``seed``,
so the same seed gives the same run, and a run resumed from a checkpoint ends bitwise equal to
an uninterrupted one.

The parts, in the order ``train`` uses them:

``RunConfig``      the run's settings, validated (and what a checkpoint must match to resume)
``setup_params``   new, given or resumed parameters, and the data checked against them
``split``          the validation rows (given, or a fraction drawn from the seed)
``choose_variant`` ``kernel=`` resolved once for the run (``auto`` measures, or a resumed run
                   continues with the variant its checkpoint names)
``run_steps``      the one dispatch: a block of steps, compiled or from Python, any optimiser
``next_stop``      where each block of steps ends (epochs, callbacks, checkpoints, the bar)
``_Run``           the state of a run between blocks: curves, early stopping, divergence,
                   checkpoints
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Optional

import numpy as np

from . import checkpoint as ckpt_io
from . import kernels, reference
from .auto import build, choice, policy
from .auto.choice import resolve
from .auto.thread_watch import ThreadWatch
from .auto.thread_watch import key as decision_key
from .kernels.common import losses as loss_codes
from .kernels.variant import optim_step_loop, step_loop, step_flops
from .optim import Optimizer
from .params import Params, _positive_int, as_float_dtype, init_params
from .threads import _set as set_threads_now
from .threads import get_num_threads, num_threads
from .threads import held as threads_held
from .validation import (as_numeric_array, check_finite, check_inputs, check_lr, check_params,
                         check_targets, check_x)

# In full-batch runs every step is an epoch; a snapshot of the params (the fallback when a
# diverging step has already made them non-finite) is taken at most this often.
SNAPSHOT_STEPS = 32
# A block of steps (one compiled call) lasts about this long: Ctrl-C, the progress bar and the
# epoch's figures wait at most that, and a block's Python round trip (~50 us) stays negligible.
# The first block after the first step (which includes the compile) probes the step time.
BLOCK_SECONDS = 0.25
PROBE_STEPS = 16


class DivergenceWarning(RuntimeWarning):
    """Training stopped because the loss became NaN or infinite."""


class DivergenceError(ValueError):
    """Raised instead of the warning with ``on_divergence="raise"``; ``.result`` holds the
    ``TrainResult`` with the last finite parameters."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training at a step boundary.  ``.result`` holds the ``TrainResult`` so far
    (its parameters are those after the last step taken); ``.checkpoint`` is the checkpoint
    written there (None when the run had none), from which ``resume=`` continues."""

    def __init__(self, message, result, checkpoint=None):
        super().__init__(message)
        self.result = result
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    """What ``train`` returns.

    ``params``: the trained parameters (new arrays; the ``params`` passed in are not modified);
    with early stopping, the best ones.  ``losses``: float64, ``losses[t]`` is the training loss
    (of its batch, plus the L2 term) before step ``t``.  ``epoch_losses``: the mean of each
    epoch's step losses; ``val_losses``: the validation loss after each epoch (empty without
    validation data).  ``seconds``: wall time of all steps; ``first_step_seconds``: of the first
    one alone (it includes Numba's compile or cache load when the kernel is new to this process).
    ``diverged_at``: the step whose loss was not finite (None if none); ``stopped_early``,
    ``best_epoch``: early stopping's outcome.  ``optimizer`` holds the optimiser state.
    ``kernel``: the name asked for; ``ran``: the variant that ran (for ``"auto"`` its choice,
    made once for the run and kept in its checkpoints, so a resumed run continues with it; the
    last one when the run switched, see ``schedule``).
    """

    params: Params
    losses: np.ndarray
    kernel: str
    dtype: np.dtype
    seconds: float
    first_step_seconds: float
    epoch_losses: np.ndarray = field(default_factory=lambda: np.empty(0))
    val_losses: np.ndarray = field(default_factory=lambda: np.empty(0))
    steps_per_epoch: int = 1
    seed: Optional[int] = None
    diverged_at: Optional[int] = None
    stopped_early: bool = False
    best_epoch: Optional[int] = None
    optimizer: Optional[Optimizer] = None
    ran: Optional[str] = None  # the variant that ran: for kernel="auto", the one it chose
    resumed_from: Optional[int] = None  # the checkpoint's step, for a resumed run
    interrupted: bool = False  # stopped by Ctrl-C (train raises TrainingInterrupted with it)
    ranks: Optional[int] = None  # fastnn.distributed.train: the ranks, and threads per rank
    threads: Optional[int] = None
    # what ran from which step: [(step, kernel, threads), ...]; more than one entry when the run
    # started on numpy while its compiled kernels were built (fastnn/auto/build.py), or changed
    # its thread count (fastnn/auto/thread_watch.py: a probe, a busy machine)
    schedule: list = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def n_steps(self) -> int:
        return len(self.losses)

    @property
    def n_epochs(self) -> int:
        return len(self.epoch_losses)

    @property
    def seconds_per_iter(self) -> float:
        """Mean time of the steps after the first (the first carries compile/cache-load time)."""
        n = len(self.losses)
        if n <= 1:
            return self.seconds
        return (self.seconds - self.first_step_seconds) / (n - 1)


def train(x, y, *, hidden=None, iters=None, epochs=None, batch_size=None, shuffle=True, lr=None,
          loss="squared", optimizer="sgd", momentum=0.0, nesterov=False, beta1=0.9,
          beta2=0.999, eps=1e-8, alpha=0.0, validation_data=None, validation_fraction=None,
          early_stopping=False, patience=10, tol=1e-4, init="he", seed=None,
          kernel=kernels.DEFAULT, params=None, dtype=None,
          callback: Optional[Callable[[int, float], None]] = None, callback_every: int = 1,
          whole_loop: Optional[bool] = None, checkpoint=None, checkpoint_every=None,
          resume=None, progress=False, on_divergence="warn", threads=None,
          info=None, epoch_callback=None) -> TrainResult:
    """Train the network on ``(x, y)``.

    Data: ``x (N, n)``; ``y (N, k)`` or ``(N,)`` for one output with ``loss="squared"``, integer
    class labels ``(N,)`` in ``[0, k)`` (or (N, k) target rows) with ``loss="softmax"``.

    Length: ``iters`` steps, or ``epochs`` passes over the data, in minibatches of
    ``batch_size`` rows (default: the whole set, one step per epoch).  The last batch of an epoch
    holds the remaining rows (it is used, not dropped).  ``shuffle``: a new row order each epoch,
    drawn from ``seed`` (the same seed gives the same run; ``seed=None`` draws one, recorded in
    ``result.seed``).

    Optimiser: ``optimizer="sgd"`` (``momentum``, ``nesterov``) or ``"adam"`` (``beta1``,
    ``beta2``, ``eps``), step size ``lr``, L2 weight decay ``alpha`` (``fastnn.optim``); or an
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
    ``BLOCK_SECONDS``), writes the checkpoint and raises ``TrainingInterrupted`` with the
    result so far.

    New parameters come from ``init_params(n, hidden, k, init=init, dtype=dtype, seed=seed)``;
    or pass ``params`` to continue from them (they are copied, never modified).  ``dtype``
    defaults to the params' dtype, else x's when it is float32/float64, else float64.
    ``callback(t, loss)`` is called for every step, in order, possibly in bursts of
    ``callback_every``; ``epoch_callback(epoch, losses, params)`` after each epoch with its step
    losses and the current params (to read, not to keep: they change), and training stops
    there when it returns True (the estimators' scikit-learn stopping rules use it).  ``threads``: Numba and BLAS threads for this run (together; the
    previous count is restored afterwards; None keeps the current setting).  ``kernel``: a
    variant's name or ``"auto"`` (chosen once for the run, ``result.ran``).  ``whole_loop``: run
    the steps inside one compiled call per epoch or burst (identical numbers); ``None`` uses it
    when the variant has one, ``True`` insists (an error for a variant without one; ``auto``
    then chooses among those with one).  ``progress``: a progress bar (tqdm) on stderr.
    """
    kernel = kernels.check_name(kernel)
    loss_codes.kind(loss)
    opt = _optimizer(optimizer, lr, alpha=alpha, momentum=momentum, nesterov=nesterov,
                     beta1=beta1, beta2=beta2, eps=eps)
    resumed = ckpt_io.load(resume) if resume is not None else None
    cfg = RunConfig.validated(seed=_seed(seed, resumed), loss=loss, shuffle=shuffle,
                              early_stopping=early_stopping, patience=patience, tol=tol)
    _check_options(iters, epochs, on_divergence, callback_every, whole_loop)
    every = None if checkpoint_every is None else _positive_int(checkpoint_every,
                                                                "checkpoint_every")
    if checkpoint is not None:  # before any work: a bad path fails now, not at the first save
        checkpoint = ckpt_io.check_target(checkpoint)
    params, x, y = setup_params(x, y, params=params, hidden=hidden, dtype=dtype, init=init,
                                seed=cfg.seed, loss=loss, resumed=resumed)
    check_lr(opt.lr, params.dtype)
    rows, x_val, y_val = split(x, y, params, loss, validation_data, validation_fraction, cfg.seed)

    m = x.shape[0] if rows is None else rows.shape[0]
    batch = m if batch_size is None else min(_positive_int(batch_size, "batch_size"), m)
    per_epoch = -(-m // batch)
    if rows is not None and per_epoch == 1:  # full batches: gather the training rows once
        x, y, rows = np.ascontiguousarray(x[rows]), np.ascontiguousarray(y[rows]), None
    total = (_positive_int(iters, "iters") if iters is not None else
             _positive_int(epochs, "epochs") * per_epoch)
    cfg = cfg.with_data(batch, m, None if x_val is None else int(x_val.shape[0]))
    dual = choose_dual(kernel, whole_loop, opt, params, m, batch, total, resumed,
                       materializations=1 + (0 if every is None else total // every)
                       + (total // per_epoch if epoch_callback or early_stopping else 0))
    n, h = params.w1.shape
    # (the dual form's step is G[b] @ A and the primal output layer: 2 B M h + 6 B h k)
    cost = (2 * batch * m * h + 6 * batch * h * params.w2.shape[1] if dual
            else step_flops(batch, n, h, params.w2.shape[1]))
    # kernel="auto" without threads= adapts its thread count to the machine (not bitwise across
    # runs; a resumed run does not: it continues as the checkpoint's run would have, so that it
    # ends bitwise equal to it on the same thread count): on a busy machine the run, its set-up
    # included (the dual form's Gram matrix), starts on the cores other programs leave free, and
    # steps large enough to use threads probe one thread against all (auto/thread_watch.py)
    watch = (ThreadWatch(get_num_threads(), probe=cost >= policy.ADAPT_FLOPS)
             if threads is None and kernel == kernels.AUTO and resumed is None else None)
    start = watch.start_threads() if watch is not None and watch.loaded else None
    with num_threads(threads), threads_held(start):
        if dual and rows is not None:  # the dual form keeps its training rows together
            x, y, rows = np.ascontiguousarray(x[rows]), np.ascontiguousarray(y[rows]), None
        first = slice(0, batch) if rows is None else rows[:batch]

        def compiled_route():
            """(variant, whole, world) of the run's compiled route, chosen now."""
            if dual:
                from .kernels.dual import DualSteps

                return kernels.get(kernels.PRIMARY), True, DualSteps(
                    x, y, params, opt, x_val,
                    arrays=resumed.arrays if resumed is not None else None)
            return (*choose_variant(kernel, whole_loop, params, x[first], y[first], resumed,
                                    opt), None)

        def primary_route():
            """The route a run that started on numpy continues on once it is built: the
            primary one, not measured (a measurement would stall the run ~0.5 s; the next run
            on this shape measures)."""
            return kernels.get(kernels.PRIMARY), whole_loop is not False, None

        pending = None
        if (dual and kernel == kernels.AUTO and resumed is None
                and not build.usable("dual", params.dtype)):
            # start on numpy while the dual form is built; with momentum the dual form cannot
            # take over a primal velocity, so the compiled primal route does
            variant, whole, world = kernels.get(policy.BOOTSTRAP), False, None
            if opt.momentum:
                dual = False
            pending = compiled_route if dual else primary_route
        else:
            variant, whole, world = compiled_route()
            if (kernel == kernels.AUTO and variant.name == policy.BOOTSTRAP and resumed is None
                    and build.building(params.dtype)):
                pending = primary_route  # auto found nothing compiled yet: it is being built
        run = _Run(variant, whole, opt, params, (x, y, rows), (x_val, y_val), total, cfg, kernel,
                   info, epoch_callback, world=world, pending=pending, watch=watch,
                   dual_pending=pending is not None and dual)
        if resumed is not None:
            run.restore(resumed, resume)
        run.execute(callback, callback_every, checkpoint, every, progress)
    result = run.result()
    if (kernel == kernels.AUTO and len(result.schedule) == 1 and result.ran != "dual"
            and result.n_steps > PROBE_STEPS):
        choice.note_run(params, batch, result.ran, result.schedule[0][2],
                        result.seconds_per_iter)
    if run.interrupted:
        where = f"; checkpoint {checkpoint} written there" if checkpoint is not None else ""
        raise TrainingInterrupted(f"training interrupted by Ctrl-C after step "
                                  f"{result.n_steps}{where}", result, checkpoint)
    if result.diverged:
        _report_divergence(result, run.kept, opt.lr, per_epoch, on_divergence)
    return result


# --- the settings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunConfig:
    """The settings a run's steps depend on, validated: a checkpoint records them and a resumed
    run must match them (``_Run.restore``), so that it ends bitwise equal to an uninterrupted
    one.  ``batch``, ``n_samples`` and ``validation`` (the held-out rows, None without) come
    from the data (``with_data``)."""

    seed: int
    loss: str
    shuffle: bool
    early_stopping: bool
    patience: int
    tol: float
    batch: Optional[int] = None
    n_samples: Optional[int] = None
    validation: Optional[int] = None

    @classmethod
    def validated(cls, *, seed, loss, shuffle, early_stopping, patience, tol) -> "RunConfig":
        if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0:
            raise ValueError(f"tol: expected a number >= 0, got {tol!r}")
        return cls(seed=seed, loss=loss, shuffle=bool(shuffle),
                   early_stopping=bool(early_stopping),
                   patience=_positive_int(patience, "patience"), tol=float(tol))

    def with_data(self, batch, n_samples, validation) -> "RunConfig":
        return replace(self, batch=batch, n_samples=n_samples, validation=validation)

    def as_meta(self) -> dict:
        """The settings as a checkpoint records them (the keys of earlier checkpoints)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _optimizer(optimizer, lr, **hyper) -> Optimizer:
    if isinstance(optimizer, Optimizer):  # continue with its hyperparameters and state
        return optimizer
    if lr is None:
        raise TypeError("train: pass lr (the learning rate)")
    return Optimizer(optimizer, lr, **hyper)


def _seed(seed, resumed) -> int:
    """The run's seed: given, else the resumed checkpoint's, else a new one (recorded)."""
    if seed is None and resumed is not None:
        seed = resumed.meta.get("seed")
    if seed is None:
        return int(np.random.SeedSequence().entropy % 2**63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed: expected a non-negative integer or None, got {seed!r}")
    return int(seed)


def _check_options(iters, epochs, on_divergence, callback_every, whole_loop) -> None:
    if (iters is None) == (epochs is None):
        raise TypeError("train: pass exactly one of iters (steps) or epochs")
    if on_divergence not in ("warn", "raise"):
        raise ValueError(f"on_divergence: expected 'warn' or 'raise', got {on_divergence!r}")
    _positive_int(callback_every, "callback_every")
    if whole_loop not in (None, True, False):
        raise TypeError(f"whole_loop: expected None, True or False, got {whole_loop!r}")


# --- parameters, data, validation split -----------------------------------------------------------

def setup_params(x, y, *, params, hidden, dtype, init, seed, loss, resumed):
    """``(params, x, y)``: the run's parameters (a copy of the given or resumed ones, else new
    ones from ``seed``) and the data checked against them (kernel-ready, finite)."""
    if resumed is not None:
        if params is not None:
            raise TypeError("train: pass params or resume, not both")
        params = resumed.params
    if params is not None:
        params = check_params(params).copy()
        if dtype is not None and as_float_dtype(dtype) != params.dtype:
            raise TypeError(f"dtype: got {np.dtype(dtype)}, but params have dtype {params.dtype}")
        if hidden is not None and hidden != params.w1.shape[1]:
            raise ValueError(f"hidden: got {hidden}, but params.w1 has {params.w1.shape[1]} hidden "
                             f"units")
    else:
        if hidden is None:
            raise TypeError("train: pass hidden (the number of hidden units) or params")
        if dtype is None:
            x_dtype = getattr(x, "dtype", None)
            dtype = x_dtype if x_dtype in (np.float32, np.float64) else np.float64
        dtype = as_float_dtype(dtype)
        n = check_inputs(x, dtype).shape[1]
        params = init_params(n, hidden, _n_outputs(y, loss), init=init, dtype=dtype, seed=seed)
    x = check_x(x, params)
    y = check_targets(y, params, x.shape[0], loss)
    check_finite(x, "x")
    check_finite(y, "y")
    return params, x, y


def _n_outputs(y, loss) -> int:
    if loss == "softmax":
        arr = np.asarray(y)
        if arr.ndim == 1 and arr.dtype.kind in "iu" and arr.size:
            return int(arr.max()) + 1
        if arr.ndim == 2:
            return arr.shape[1]
        raise TypeError("y: loss='softmax' takes integer class labels (m,) or (m, k) target rows")
    y = as_numeric_array(y, "y", np.float64)
    return y.shape[1] if y.ndim == 2 else 1  # check_targets rejects any other shape


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for ``key`` (the validation split, one epoch's order)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def split(x, y, params, loss, validation_data, validation_fraction, seed):
    """``(rows, x_val, y_val)``: the training rows of ``x`` (None: all of them) and the
    validation data (None, None without validation): ``validation_data`` as given, or
    ``validation_fraction`` of the rows, drawn from ``seed``'s own stream.  The training rows
    stay where they are in ``x`` (in order): the steps gather each batch from them, so the data
    is never copied (an index array of the rows is)."""
    if validation_data is not None and validation_fraction is not None:
        raise TypeError("train: pass validation_data or validation_fraction, not both")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data: expected a pair (x_val, y_val)")
        x_val = check_x(validation_data[0], params)
        y_val = check_targets(validation_data[1], params, x_val.shape[0], loss)
        check_finite(x_val, "validation_data x")
        check_finite(y_val, "validation_data y")
        return None, x_val, y_val
    if validation_fraction is None:
        return None, None, None
    train_rows, val_rows = split_rows(x.shape[0], validation_fraction, seed)
    return train_rows, x[val_rows], y[val_rows]


def split_rows(m: int, fraction, seed):
    """``(training rows, validation rows)`` of ``m``, sorted: ``fraction`` of them (rounded up)
    drawn for validation from ``seed``'s own stream (``fastnn.distributed`` splits the same)."""
    f = fraction
    if isinstance(f, bool) or not isinstance(f, (float, int)) or not 0.0 < f < 1.0:
        raise ValueError(f"validation_fraction: expected a number in (0, 1), got {f!r}")
    n_val = int(math.ceil(f * m))
    if n_val >= m:
        raise ValueError(f"validation_fraction: {f} of {m} rows leaves no training rows")
    order = _rng(seed, 1).permutation(m)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# --- the variant and the dispatch -----------------------------------------------------------------

def choose_dual(kernel, whole_loop, opt, params, m, batch, total, resumed,
                materializations=1) -> bool:
    """Whether the run trains in the dual form (``kernels/dual.py``): asked for
    (``kernel="dual"``: an error saying why where it cannot), chosen by ``auto`` where it
    applies and its flop count is under half the primal's, or continued from a checkpoint of
    a dual run."""
    n, h = params.w1.shape
    k = params.w2.shape[1]
    applies = opt.name == "sgd" and m < n and whole_loop is not False
    if kernel == "dual":
        if opt.name != "sgd":
            raise ValueError(f"kernel 'dual': the dual form needs an update linear in the "
                             f"gradient (SGD, momentum, Nesterov, L2); {opt.name} is element-wise "
                             f"in w1 and stays primal: pass kernel='auto' or a step variant")
        if m >= n:
            raise ValueError(f"kernel 'dual': {m} training rows, {n} features: the dual form "
                             f"pays only with fewer rows than features; pass kernel='auto' or "
                             f"a step variant")
        if whole_loop is False:
            raise ValueError("kernel 'dual': its steps run in a compiled loop (whole_loop)")
        return True
    if kernel != kernels.AUTO or not applies:
        return False
    if resumed is not None and resumed.meta.get("ran") is not None:
        return resumed.meta.get("ran") == "dual"
    from .kernels.dual import flops

    primal, dual = flops(m, n, h, k, batch, total, opt.alpha, materializations)
    return dual < policy.DUAL_FLOPS_RATIO * primal


def choose_variant(kernel, whole_loop, params, xb, yb, resumed, opt):
    """``(variant, whole)``: the variant for the whole run and whether it runs its compiled loops.

    ``auto`` is resolved once, on the first batch's shape, or taken from a resumed checkpoint
    (the variant that wrote it: ``auto``'s choice may have changed since, and the resumed run must
    continue with the same arithmetic to end bitwise equal).  ``whole_loop=True`` is never
    dropped silently: ``auto`` chooses among the variants with compiled loops, and a variant
    without them is an error."""
    ran = resumed.meta.get("ran") if resumed is not None and kernel == kernels.AUTO else None
    ran = kernels.ALIASES.get(ran, ran)
    if ran in kernels.names(reference=True):
        variant = kernels.get(ran)
    else:
        variant = resolve(kernel, params, xb, yb, whole_loop=bool(whole_loop))
    if whole_loop is None:
        return variant, variant.whole_loop
    if whole_loop and not variant.whole_loop:
        with_loops = [v.name for v in kernels.variants(reference=True) if v.whole_loop]
        how = " (the variant this run resumes with, chosen by auto)" if ran else ""
        raise ValueError(f"whole_loop: kernel {variant.name!r}{how} has no compiled training "
                         f"loop; kernels with one: {', '.join(with_loops)}")
    return variant, bool(whole_loop)


def run_steps(variant, whole, params, x, y, opt, grads, out, loss_kind, batch, block, order):
    """Steps into ``out`` (its length), from minibatch ``block`` of the epoch whose row order is
    ``order`` (None: in place): the variant's compiled loop when ``whole``, else one call per
    step from Python; plain SGD fused into the step, any other optimiser after the gradients.
    Returns the number of steps taken (fewer when a loss is not finite)."""
    if opt.is_plain_sgd:
        if whole:
            return variant.train_loop(params, x, y, opt.lr, out, loss_kind, batch, block, order)
        return step_loop(variant, params, x, y, opt.lr, out, loss_kind, batch, block, order)
    if whole:
        return variant.train_loop_optim(params, x, y, opt, grads, out, loss_kind, batch, block,
                                        order)
    return optim_step_loop(variant, params, x, y, opt, grads, out, loss_kind, batch, block, order)


def next_stop(step, total, per_epoch, *, bulk, burst, callback_every=None,
              checkpoint_every=None, limit=None) -> int:
    """Where the block of steps that starts at ``step`` ends (exclusive).

    A block never crosses an epoch's end (the epoch's curves, validation and early stopping run
    between blocks), except in ``bulk`` runs (full-batch, nothing to do at epoch ends), whose
    blocks are ``burst`` steps.  The first step runs alone (its time isolates the compile or
    cache load).  With a callback, blocks end every ``callback_every`` steps (counted from step
    1); with checkpoints, at every multiple of ``checkpoint_every``; and no block is longer
    than ``limit`` steps (the trainer's ``BLOCK_SECONDS`` of them)."""
    if step == 0:
        return 1
    stop = min(total, step + burst) if bulk else min(total, (step // per_epoch + 1) * per_epoch)
    if limit is not None:
        stop = min(stop, step + limit)
    if callback_every is not None:
        stop = min(stop, step + callback_every - (step - 1) % callback_every)
    if checkpoint_every is not None:
        stop = min(stop, (step // checkpoint_every + 1) * checkpoint_every)
    return stop


def _report_divergence(result, kept, lr, per_epoch, on_divergence):
    t = result.diverged_at
    msg = (f"training diverged at step {t} (epoch {t // per_epoch}): the loss is "
           f"{result.losses[t]}; stopped there, keeping {kept}.  Try a smaller learning rate "
           f"than lr={lr:g}.")
    if on_divergence == "raise":
        raise DivergenceError(msg, result)
    warnings.warn(msg, DivergenceWarning, stacklevel=3)


# --- the run --------------------------------------------------------------------------------------

class _Run:
    """The state of one training run between blocks of steps, so that a checkpoint can capture
    it and ``restore`` can bring it back exactly."""

    def __init__(self, variant, whole, opt, params, data, validation, total, cfg: RunConfig,
                 kernel, info=None, epoch_callback=None, world=None, pending=None,
                 watch=None, dual_pending=False):
        self.variant, self.whole, self.opt, self.kernel = variant, whole, opt, kernel
        self.info, self.epoch_callback = info, epoch_callback
        self.ran = getattr(world, "name", None) or variant.name  # "dual" for the dual form
        # ``pending``: the run started on numpy while its compiled route is built in the
        # background; called at a step boundary once that is ready, it returns (variant,
        # whole, world) to continue with
        self.pending = pending
        self.waits_for = "dual" if dual_pending else kernels.PRIMARY
        self.waiting_since = time.monotonic()
        # ``watch`` (kernel="auto" and no thread count given): the thread count of each block
        # comes from it (fastnn/auto/thread_watch.py), else the run keeps the count set
        self.threads = get_num_threads()
        self.watch = watch
        self.block_threads = watch.start_threads() if watch is not None else self.threads
        self.schedule = [] if self.watch is not None else [(0, self.ran, self.threads)]
        # ``world``: None for this process alone; else ``fastnn.distributed``'s, which runs the
        # steps and the validation loss across ranks, writes checkpoints and shows the bar on
        # rank 0 only, and agrees on Ctrl-C (``stop_agreed``) so that every rank stops together
        self.world = world
        self.stop_agreed = False
        self.params, (self.x, self.y, self.rows) = params, data
        self.x_val, self.y_val = validation
        self.kind = loss_codes.kind(cfg.loss)
        self.total, self.cfg = total, cfg
        self.m = self.x.shape[0] if self.rows is None else self.rows.shape[0]
        self.per_epoch = -(-self.m // cfg.batch)
        self.losses = np.full(total, np.nan)
        self.step = 0
        self.epoch_losses: list[float] = []
        self.val_losses: list[float] = []
        self.best = math.inf
        self.best_epoch: Optional[int] = None
        self.best_params: Optional[Params] = None
        self.bad_epochs = 0
        self.stopped_early = False
        self.diverged_at: Optional[int] = None
        self.kept = "the parameters of the last finite step"
        self.snapshot, self.snapshot_step = params.copy(), 0
        self.world_snapshot = world.save_state() if hasattr(world, "save_state") else None
        self.grads = None if opt.is_plain_sgd else Params(*(np.empty_like(p) for p in params))
        self.shuffled = cfg.shuffle and self.per_epoch > 1
        self.interrupted = False
        self.resumed_from: Optional[int] = None
        self.limit = PROBE_STEPS  # steps per block, set from the measured step time
        self.per_step = None  # seconds a step in the last block
        self.order_epoch, self.order = -1, None
        self.seconds = self.first = 0.0
        if watch is not None:
            watch.attach(self._watch_key())

    def _watch_key(self):
        """The thread watch's key: the step's shape and dtype, the variant, all the threads."""
        n, h = self.params.w1.shape
        return decision_key(self.cfg.batch, n, h, self.params.w2.shape[1], self.params.dtype,
                            self.ran, self.threads)

    # --- checkpoints ---

    def _sync(self):
        """Make ``self.params`` current where the steps keep ``w1`` elsewhere (the dual form)."""
        sync = getattr(self.world, "sync", None)
        if sync is not None:
            sync(self)

    def save(self, path):
        if self.world is not None and not self.world.is_root:
            return
        self._sync()
        arrays = getattr(self.world, "checkpoint_arrays", dict)()
        meta = dict(self.cfg.as_meta(), epoch_losses=self.epoch_losses,
                    val_losses=self.val_losses,
                    best=self.best if math.isfinite(self.best) else None,
                    best_epoch=self.best_epoch, bad_epochs=self.bad_epochs,
                    stopped_early=self.stopped_early, ran=self.ran,
                    schedule=[list(e) for e in self.schedule])
        if self.info is not None:
            meta["info"] = self.info
        opt = dict(self.opt.hyperparameters(), t=self.opt.t)
        extra = {"best": self.best_params} if self.best_params is not None else {}
        ckpt_io.save(path, ckpt_io.Checkpoint(self.params, self.step, self.losses[:self.step],
                                              opt, dict(self.opt.state), meta, extra, arrays),
                     checked=True)

    def restore(self, ck: ckpt_io.Checkpoint, path):
        meta = ck.meta
        for key, value in self.cfg.as_meta().items():
            if meta.get(key) != value:
                raise ValueError(f"resume: checkpoint {path!r} was written with {key}="
                                 f"{meta.get(key)!r}, this run has {key}={value!r}")
        for key, value in self.opt.hyperparameters().items():
            if ck.optimizer.get(key) != value:
                raise ValueError(f"resume: checkpoint {path!r} was written with optimizer "
                                 f"{key}={ck.optimizer.get(key)!r}, this run has {value!r}")
        if ck.step > self.total:
            raise ValueError(f"resume: checkpoint {path!r} is at step {ck.step}, past this run's "
                             f"{self.total} steps")
        self.step = self.resumed_from = ck.step
        self.schedule = [tuple(e) for e in meta.get("schedule", [])]
        # (a resumed run never adapts its threads: ``train`` gives it no watch)
        self._record(ck.step, self.threads)
        self.losses[:ck.step] = ck.losses
        self.opt.t = int(ck.optimizer.get("t", 0))
        self.opt.state = {k: v.copy() for k, v in ck.optimizer_state.items()}
        self.epoch_losses = list(meta.get("epoch_losses", []))
        self.val_losses = list(meta.get("val_losses", []))
        self.best = meta.get("best") if meta.get("best") is not None else math.inf
        self.best_epoch = meta.get("best_epoch")
        self.bad_epochs = int(meta.get("bad_epochs", 0))
        self.stopped_early = bool(meta.get("stopped_early", False))
        if "best" in ck.extra:
            self.best_params = ck.extra["best"].copy()
        self.snapshot, self.snapshot_step = self.params.copy(), self.step
        if hasattr(self.world, "save_state"):
            self.world_snapshot = self.world.save_state()

    # --- the loop ---

    def _epoch_order(self, epoch):
        """This epoch's rows of ``x`` in order (None: all rows in place).  The kernels gather each
        batch's rows right before its step: no shuffled copy of the whole data set, and none of
        the training rows when a validation fraction is held out."""
        if not self.shuffled:
            return self.rows
        if self.order_epoch != epoch:
            self.order = reference.epoch_order(self.cfg.seed, epoch, self.m)
            if self.rows is not None:
                self.order = self.rows[self.order]
            self.order_epoch = epoch
        return self.order

    def _run_steps(self, start, stop) -> int:
        """Steps ``start .. stop-1`` (within one epoch); returns the number taken."""
        if self.world is not None:
            return self.world.steps(self, start, stop)
        return run_steps(self.variant, self.whole, self.params, self.x, self.y, self.opt,
                         self.grads, self.losses[start:stop], self.kind, self.cfg.batch,
                         start % self.per_epoch, self._epoch_order(start // self.per_epoch))

    def _val_loss(self) -> float:
        if self.world is not None:
            return self.world.val_loss(self) + self.opt.penalty(self.params)
        z2 = self.variant.predict(self.params, self.x_val)
        return reference.output_loss(z2, self.y_val, self.cfg.loss)[0] + \
            self.opt.penalty(self.params)

    def _end_epoch(self, epoch):
        if (self.epoch_callback is not None or self.cfg.early_stopping
                or (self.x_val is not None and self.opt.alpha != 0.0)):  # they read w1
            self._sync()
        first = epoch * self.per_epoch
        self.epoch_losses.append(float(np.mean(self.losses[first:first + self.per_epoch])))
        monitored = self.epoch_losses[-1]
        if self.x_val is not None:
            self.val_losses.append(float(self._val_loss()))
            monitored = self.val_losses[-1]
        if self.cfg.early_stopping:
            if monitored < self.best - self.cfg.tol:
                self.best, self.best_epoch, self.bad_epochs = monitored, epoch, 0
                self.best_params = self.params.copy()
            else:
                self.bad_epochs += 1
                if self.bad_epochs >= self.cfg.patience:
                    self.stopped_early = True
        if self.epoch_callback is not None and self.epoch_callback(
                epoch, self.losses[first:first + self.per_epoch], self.params):
            self.stopped_early = True
        self._snapshot_after(min(self.per_epoch, SNAPSHOT_STEPS))

    def _snapshot_after(self, steps):
        """Copy the params (the fallback if a diverging step leaves them non-finite) when at
        least ``steps`` steps have run since the last copy."""
        if self.step - self.snapshot_step >= steps:
            self.snapshot = self.params.copy()  # the dual form: w1 here may be stale ...
            if hasattr(self.world, "save_state"):  # ... its own state is what counts
                self.world_snapshot = self.world.save_state()
            self.snapshot_step = self.step

    def _set_params(self, source):
        for p, q in zip(self.params, source):
            p[...] = q

    def _diverged(self):
        """After a step whose loss was not finite: it made no update; stop there, keeping the
        last finite parameters."""
        self.step -= 1
        self.diverged_at = self.step
        self.losses = self.losses[:self.step + 1]
        self._sync()
        if not all(np.isfinite(p).all() for p in self.params):
            self._set_params(self.snapshot)
            if hasattr(self.world, "load_state"):
                self.world.load_state(self.world_snapshot)
                self._sync()
            self.kept = (f"the parameters after step {self.snapshot_step} (the last finite "
                         f"snapshot; later ones were no longer finite)")

    def _after_block(self, start, bulk):
        """Epoch-end work for the steps ``start .. self.step - 1`` just taken."""
        if bulk:
            self.epoch_losses.extend(self.losses[start:self.step].tolist())
            self._snapshot_after(SNAPSHOT_STEPS)
        elif self.step % self.per_epoch == 0:  # complete epochs only (resume-safe)
            self._end_epoch((self.step - 1) // self.per_epoch)

    def execute(self, callback, callback_every, checkpoint, every, progress):
        try:
            self._execute(callback, callback_every, checkpoint, every, progress)
        finally:
            if self.block_threads != self.threads:  # the caller's thread count back
                set_threads_now(self.threads)
                self.block_threads = self.threads

    def _execute(self, callback, callback_every, checkpoint, every, progress):
        bar = _progress_bar(self, progress and (self.world is None or self.world.is_root))
        # Epoch-end work (curves, validation, early stopping) runs between blocks; in full-batch
        # runs without it, many steps (epochs of one step) run per block.
        bulk = (self.per_epoch == 1 and self.x_val is None and not self.cfg.early_stopping
                and self.epoch_callback is None)
        burst = callback_every if callback is not None else self.total
        t0 = time.perf_counter()
        with _stop_on_interrupt() as interrupt_requested:
            self.interrupt_requested = interrupt_requested  # the world's steps share it
            while self.step < self.total and not self.stopped_early:
                start = self.step
                limit = self._set_block_threads(start)
                stop = next_stop(start, self.total, self.per_epoch, bulk=bulk, burst=burst,
                                 callback_every=callback_every if callback is not None else None,
                                 checkpoint_every=every, limit=limit)
                began = time.perf_counter()
                done = self._run_steps(start, stop)
                if start == 0:
                    self.first = time.perf_counter() - t0
                else:  # steps worth BLOCK_SECONDS in the next block
                    self.per_step = (time.perf_counter() - began) / done
                    self.limit = max(1, int(BLOCK_SECONDS / max(self.per_step, 1e-9)))
                    if self.watch is not None:
                        self.watch.observe(self.block_threads, self.per_step, done)
                self.step = start + done
                if not np.isfinite(self.losses[self.step - 1]):
                    self._diverged()
                    break
                if callback is not None:
                    for t in range(start, self.step):
                        callback(t, float(self.losses[t]))
                self._after_block(start, bulk)
                if checkpoint is not None and every is not None and self.step % every == 0:
                    self.save(checkpoint)
                if self.pending is not None:
                    self._switch_when_ready()
                _update_bar(bar, self, start)
                if (self.stop_agreed if getattr(self.world, "agrees_on_stop", False)
                        else interrupt_requested()):
                    self.interrupted = True
                    break
        self.seconds = time.perf_counter() - t0
        if self.watch is not None:
            self.watch.finish(self.per_step)
        self._sync()
        if self.diverged_at is None:
            self.losses = self.losses[:self.step]
        if self.stopped_early and self.best_params is not None:
            self._set_params(self.best_params)
        if checkpoint is not None:
            self.save(checkpoint)
        if bar is not None:
            bar.close()

    def _set_block_threads(self, step) -> int:
        """The thread count of the next block, from ``watch`` (``auto`` runs without
        ``threads=``); returns the block's length limit in steps (shorter while the watch
        probes)."""
        if self.watch is None:
            return self.limit
        n, seconds = self.watch.next_block()
        if (self.pending is not None and n > 1
                and time.monotonic() - self.waiting_since > policy.BUILD_GRACE):
            n = n - 1  # a long run waiting for its build leaves the build a core
            seconds = None
        if n != self.block_threads:
            set_threads_now(n)
            self.block_threads = n
        self._record(step, n)
        if seconds is None or self.per_step is None:
            return self.limit
        return min(self.limit, max(1, int(seconds / max(self.per_step, 1e-9))))

    def _record(self, step, threads):
        """``schedule``: from ``step`` on, ``ran`` on ``threads`` (when that is a change)."""
        if not self.schedule or self.schedule[-1][1:] != (self.ran, threads):
            self.schedule.append((step, self.ran, threads))

    def _switch_when_ready(self):
        """Continue on the compiled route once the background build is done (a build that ended
        without it, a failed one, leaves the run on numpy: a compile here would stall it)."""
        dtype = self.params.dtype
        if not build.ready_now(self.waits_for, dtype, not self.opt.is_plain_sgd):
            if not build.building(dtype):
                self.pending = None
            return
        variant, whole, world = self.pending()
        self.pending = None
        self.variant, self.whole, self.world = variant, whole, world
        self.ran = getattr(world, "name", None) or variant.name
        self.snapshot, self.snapshot_step = self.params.copy(), self.step
        if hasattr(world, "save_state"):
            self.world_snapshot = world.save_state()
        if self.watch is not None:  # a new kernel: its own decision (the next block records)
            self.watch.attach(self._watch_key())
        else:
            self._record(self.step, self.block_threads)

    def result(self) -> TrainResult:
        return TrainResult(self.params, self.losses, self.kernel, self.params.dtype,
                           self.seconds, self.first, np.array(self.epoch_losses, np.float64),
                           np.array(self.val_losses, np.float64), self.per_epoch,
                           self.cfg.seed, self.diverged_at, self.stopped_early,
                           self.best_epoch, self.opt, self.ran, self.resumed_from,
                           self.interrupted, schedule=list(self.schedule))


def _progress_bar(run: _Run, progress):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.total, initial=run.step, unit="step", leave=True, desc=run.ran)


def _update_bar(bar, run: _Run, start):
    """The bar after a block: the epoch, the last step's loss and the epoch's mean so far (set
    before the bar moves, so the line drawn shows them, not the previous block's)."""
    if bar is None:
        return
    epoch = (run.step - 1) // run.per_epoch
    post = {"epoch": f"{epoch + 1}/{-(-run.total // run.per_epoch)}",
            "loss": f"{run.losses[run.step - 1]:.4g}"}
    if run.per_epoch > 1:
        post["epoch mean"] = f"{np.mean(run.losses[epoch * run.per_epoch:run.step]):.4g}"
    if run.val_losses:
        post["val"] = f"{run.val_losses[-1]:.4g}"
    bar.set_postfix(post, refresh=False)
    bar.update(run.step - start)


@contextlib.contextmanager
def _stop_on_interrupt():
    """Ctrl-C (SIGINT) during training ends it at the next step boundary instead of wherever
    Python happens to be: yields a function telling whether it was pressed.  A second Ctrl-C
    interrupts at once, as usual.  Only the main thread receives signals: elsewhere nothing
    changes."""
    pressed = []
    previous = signal.getsignal(signal.SIGINT)
    if (threading.current_thread() is not threading.main_thread()
            or previous in (signal.SIG_IGN, None)):
        yield lambda: False
        return

    def handler(signum, frame):
        pressed.append(True)
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)
