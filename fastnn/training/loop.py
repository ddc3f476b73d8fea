"""The block loop: a run's steps in blocks of about ``BLOCK_SECONDS``, and what happens between.

Each block is one call into the backend (one compiled call for the compiled loops).  Between
blocks, and only there: the epoch's figures, validation and early stopping, callbacks,
checkpoints, the thread count of the next block (``auto.thread_watch``), the switch from numpy
to a compiled route once the background build is done, the progress bar, and Ctrl-C, which
stops the run at the next block boundary.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Optional

import numpy as np

from .. import checkpoint as ckpt_io
from .. import reference
from ..auto import build, policy
from ..auto.thread_watch import key as decision_key
from ..kernels.common import activations
from ..kernels.common import losses as loss_codes
from ..params import Params
from ..threads import _set as set_threads_now
from ..threads import get_num_threads
from .backends import Backend
from .result import TrainResult
from .state import RunConfig, RunState

# In full-batch runs every step is an epoch; a snapshot of the params (the fallback when a
# diverging step has already made them non-finite) is taken at most this often.
SNAPSHOT_STEPS = 32
# A block of steps (one compiled call) lasts about this long: Ctrl-C, the progress bar and the
# epoch's figures wait at most that, and a block's Python round trip (~50 us) stays negligible.
# The first block after the first step (which includes the compile) probes the step time.
BLOCK_SECONDS = 0.25
PROBE_STEPS = 16


class Run:
    """One training run: its parameters, data, optimiser and backend, its ``state``, and the
    loop over blocks (``execute``).  ``pending``: a function giving the backend to continue
    on once ``waits_for`` is built (the run started on numpy meanwhile); ``watch``: the thread
    watch (``kernel="auto"`` without ``threads=``), else the thread count set stays;
    ``order_of``: ``epoch -> the epoch's order of the training rows`` (``train``'s
    ``epoch_order``), else the seeded shuffle of ``reference.epoch_order``."""

    def __init__(self, backend: Backend, opt, params, data, validation, total, cfg: RunConfig,
                 kernel, info=None, epoch_callback=None, pending=None, waits_for=None,
                 watch=None, order_of=None):
        self.backend, self.opt, self.kernel = backend, opt, kernel
        self.info, self.epoch_callback = info, epoch_callback
        self.pending, self.waits_for = pending, waits_for
        self.waiting_since = time.monotonic()
        self.params, (self.x, self.y, self.rows) = params, data
        self.x_val, self.y_val = validation
        self.cfg = cfg
        self.kind = loss_codes.kind(cfg.loss)
        self.act = activations.of(cfg.activation)
        self.m = self.x.shape[0] if self.rows is None else self.rows.shape[0]
        self.per_epoch = -(-self.m // cfg.batch)
        self.order_of = order_of
        # (one batch of all rows needs no order, unless the caller gives one: its rows' order
        # sets the order of the sums, and its function may draw from a stream each epoch)
        self.shuffled = cfg.shuffle and (self.per_epoch > 1 or order_of is not None)
        self.grads = None if opt.is_plain_sgd else Params(*(np.empty_like(p) for p in params))
        self.state = RunState(total)
        self.threads = get_num_threads()
        self.watch = watch
        self.block_threads = watch.start_threads() if watch is not None else self.threads
        if watch is None:
            self.state.record(0, backend.name, self.threads)
        else:
            watch.attach(self._watch_key())
        self.kept = "the parameters of the last finite step"
        self.snapshot, self.snapshot_step = params.copy(), 0
        self.backend_snapshot = backend.save_state()
        self.limit = PROBE_STEPS  # steps per block, set from the measured step time
        self.per_step: Optional[float] = None  # seconds a step in the last block
        self.order_epoch, self.order = -1, None
        self.seconds = self.first = 0.0
        self.stop_agreed = False  # a Ctrl-C agreed on inside the backend's steps
        self.interrupt_requested = lambda: False

    @property
    def total(self) -> int:
        return self.state.total

    @property
    def ran(self) -> str:
        return self.backend.name

    def _watch_key(self):
        """The thread watch's key: the step's shape and dtype, what runs, all the threads."""
        n, h = self.params.w1.shape
        return decision_key(self.cfg.batch, n, h, self.params.w2.shape[1], self.params.dtype,
                            self.ran, self.threads)

    # --- checkpoints ---

    def save(self, path) -> None:
        if not self.backend.is_root:
            return
        self.backend.sync(self)
        ckpt_io.save(path, self.state.to_checkpoint(self.cfg, self.params, self.opt, self.ran,
                                                    self.info, self.backend.checkpoint_arrays()),
                     checked=True)

    def restore(self, ck: ckpt_io.Checkpoint, path) -> None:
        self.state.restore(ck, path, self.cfg, self.opt)
        # (a resumed run never adapts its threads: ``train`` gives it no watch)
        self.state.record(ck.step, self.ran, self.threads)
        self.snapshot, self.snapshot_step = self.params.copy(), self.state.step
        self.backend_snapshot = self.backend.save_state()

    # --- the data each block reads ---

    def epoch_order(self, epoch):
        """This epoch's rows of ``x`` in order (None: all rows in place).  The kernels gather each
        batch's rows right before its step: no shuffled copy of the whole data set, and none of
        the training rows when a validation fraction is held out."""
        if not self.shuffled:
            return self.rows
        if self.order_epoch != epoch:
            if self.order_of is None:
                self.order = reference.epoch_order(self.cfg.seed, epoch, self.m)
            else:
                self.order = _checked_order(self.order_of(epoch), self.m, epoch)
            if self.rows is not None:
                self.order = self.rows[self.order]
            self.order_epoch = epoch
        return self.order

    # --- between blocks ---

    def _end_epoch(self, epoch) -> None:
        st = self.state
        if (self.epoch_callback is not None or self.cfg.early_stopping
                or (self.x_val is not None and self.opt.alpha != 0.0)):  # they read w1
            self.backend.sync(self)
        first = epoch * self.per_epoch
        st.epoch_losses.append(float(np.mean(st.losses[first:first + self.per_epoch])))
        monitored = st.epoch_losses[-1]
        if self.x_val is not None:
            st.val_losses.append(float(self.backend.val_loss(self) +
                                       self.opt.penalty(self.params, self._val_weight())))
            monitored = st.val_losses[-1]
        st.end_epoch(epoch, monitored, self.cfg, self.params)
        if self.epoch_callback is not None and self.epoch_callback(
                epoch, st.losses[first:first + self.per_epoch], self.params):
            st.stopped_early = True
        self._snapshot_after(min(self.per_epoch, SNAPSHOT_STEPS))

    def _val_weight(self) -> float:
        """The validation rows' weight (their count, or their weights' sum): the scikit-learn
        form's L2 term is per weight (``cfg.validation``: all ranks' rows in a distributed
        run, whose ``y_val`` is this rank's share)."""
        k = self.params.w2.shape[1]
        if self.y_val.shape[1] > k:
            return loss_codes.batch_weight(self.y_val, k)
        return float(self.cfg.validation or self.y_val.shape[0])

    def _snapshot_after(self, steps) -> None:
        """Copy the params (the fallback if a diverging step leaves them non-finite) when at
        least ``steps`` steps have run since the last copy (the backend's own state too: the
        dual form's ``w1`` here may be stale, its ``A`` is what counts)."""
        if self.state.step - self.snapshot_step >= steps:
            for kept, p in zip(self.snapshot, self.params):  # into the same buffers: a new
                np.copyto(kept, p)  # copy of a large w1 costs its page faults again each time
            self.backend_snapshot = self.backend.save_state()
            self.snapshot_step = self.state.step

    def _diverged(self) -> None:
        """After a step whose loss was not finite: it made no update; stop there, keeping the
        last finite parameters."""
        st = self.state
        st.step -= 1
        st.diverged_at = st.step
        st.losses = st.losses[:st.step + 1]
        self.backend.sync(self)
        if not all(np.isfinite(p).all() for p in self.params):
            self._set_params(self.snapshot)
            self.backend.load_state(self.backend_snapshot)
            self.backend.sync(self)
            self.kept = (f"the parameters after step {self.snapshot_step} (the last finite "
                         f"snapshot; later ones were no longer finite)")

    def _set_params(self, source) -> None:
        for p, q in zip(self.params, source):
            p[...] = q

    def _after_block(self, start, bulk) -> None:
        """Epoch-end work for the steps ``start .. step - 1`` just taken."""
        st = self.state
        if bulk:
            st.epoch_losses.extend(st.losses[start:st.step].tolist())
            self._snapshot_after(SNAPSHOT_STEPS)
        elif st.step % self.per_epoch == 0:  # complete epochs only (resume-safe)
            self._end_epoch((st.step - 1) // self.per_epoch)

    def _set_block_threads(self, step) -> int:
        """The thread count of the next block, from ``watch``; returns the block's length limit
        in steps (shorter while the watch probes)."""
        if self.watch is None:
            return self.limit
        n, seconds = self.watch.next_block()
        if (self.pending is not None and n > 1
                and time.monotonic() - self.waiting_since > policy.BUILD_GRACE):
            n, seconds = n - 1, None  # a long run waiting for its build leaves the build a core
        if n != self.block_threads:
            set_threads_now(n)
            self.block_threads = n
        self.state.record(step, self.ran, n)
        if seconds is None or self.per_step is None:
            return self.limit
        return min(self.limit, max(1, int(seconds / max(self.per_step, 1e-9))))

    def _switch_when_ready(self) -> None:
        """Continue on the compiled route once the background build is done (a build that ended
        without it, a failed one, leaves the run on numpy: a compile here would stall it)."""
        dtype = self.params.dtype
        if not build.ready_now(self.waits_for, dtype, not self.opt.is_plain_sgd):
            if not build.building(dtype):
                self.pending = None
            return
        self.backend = self.pending()
        self.pending = None
        self.snapshot, self.snapshot_step = self.params.copy(), self.state.step
        self.backend_snapshot = self.backend.save_state()
        if self.watch is not None:  # a new kernel: its own decision (the next block records)
            self.watch.attach(self._watch_key())
        else:
            self.state.record(self.state.step, self.ran, self.block_threads)

    # --- the loop ---

    def execute(self, callback, callback_every, checkpoint, every, progress) -> None:
        try:
            self._execute(callback, callback_every, checkpoint, every, progress)
        finally:
            if self.block_threads != self.threads:  # the caller's thread count back
                set_threads_now(self.threads)
                self.block_threads = self.threads

    def _execute(self, callback, callback_every, checkpoint, every, progress) -> None:
        st = self.state
        bar = _progress_bar(self, progress and self.backend.is_root)
        # Epoch-end work (curves, validation, early stopping) runs between blocks; in full-batch
        # runs without it, many steps (epochs of one step) run per block.
        bulk = (self.per_epoch == 1 and self.x_val is None and not self.cfg.early_stopping
                and self.epoch_callback is None)
        burst = callback_every if callback is not None else self.total
        t0 = time.perf_counter()
        with _stop_on_interrupt() as interrupt_requested:
            self.interrupt_requested = interrupt_requested  # the backend's steps share it
            while st.step < self.total and not st.stopped_early:
                start = st.step
                limit = self._set_block_threads(start)
                stop = next_stop(start, self.total, self.per_epoch, bulk=bulk, burst=burst,
                                 callback_every=callback_every if callback is not None else None,
                                 checkpoint_every=every, limit=limit)
                began = time.perf_counter()
                done = self.backend.steps(self, start, stop)
                if start == 0:
                    self.first = time.perf_counter() - t0
                else:  # steps worth BLOCK_SECONDS in the next block
                    self.per_step = (time.perf_counter() - began) / done
                    self.limit = max(1, int(BLOCK_SECONDS / max(self.per_step, 1e-9)))
                    if self.watch is not None:
                        self.watch.observe(self.block_threads, self.per_step, done)
                st.step = start + done
                if not np.isfinite(st.losses[st.step - 1]):
                    self._diverged()
                    break
                if callback is not None:
                    for t in range(start, st.step):
                        callback(t, float(st.losses[t]))
                self._after_block(start, bulk)
                if checkpoint is not None and every is not None and st.step % every == 0:
                    self.save(checkpoint)
                if self.pending is not None:
                    self._switch_when_ready()
                _update_bar(bar, self, start)
                if (self.stop_agreed if self.backend.agrees_on_stop
                        else interrupt_requested()):
                    st.interrupted = True
                    break
        self.seconds = time.perf_counter() - t0
        if self.watch is not None:
            self.watch.finish(self.per_step)
        self.backend.sync(self)
        if st.diverged_at is None:
            st.losses = st.losses[:st.step]
        if st.stopped_early and st.best_params is not None:
            self._set_params(st.best_params)
        if checkpoint is not None:
            self.save(checkpoint)
        if bar is not None:
            bar.close()

    def result(self) -> TrainResult:
        st = self.state
        return TrainResult(self.params, st.losses, self.kernel, self.params.dtype,
                           self.seconds, self.first, np.array(st.epoch_losses, np.float64),
                           np.array(st.val_losses, np.float64), self.per_epoch,
                           self.cfg.seed, st.diverged_at, st.stopped_early,
                           st.best_epoch, self.opt, self.ran, st.resumed_from,
                           st.interrupted, schedule=list(st.schedule))


def _checked_order(order, m, epoch) -> np.ndarray:
    """An ``epoch_order`` function's answer, checked before any kernel reads it: a permutation
    of ``range(m)`` (the kernels gather rows by it without bounds checks)."""
    arr = np.asarray(order)
    if arr.shape != (m,) or arr.dtype.kind not in "iu":
        raise ValueError(f"epoch_order: epoch {epoch}: expected a permutation of the {m} training "
                         f"rows (integers, shape ({m},)), got {arr.dtype} of shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if m and (arr.min() < 0 or arr.max() >= m or np.bincount(arr, minlength=m).max() != 1):
        raise ValueError(f"epoch_order: epoch {epoch}: expected a permutation of range({m}): "
                         f"each row once")
    return arr


def next_stop(step, total, per_epoch, *, bulk, burst, callback_every=None,
              checkpoint_every=None, limit=None) -> int:
    """Where the block of steps that starts at ``step`` ends (exclusive).

    A block never crosses an epoch's end (the epoch's curves, validation and early stopping run
    between blocks), except in ``bulk`` runs (full-batch, nothing to do at epoch ends), whose
    blocks are ``burst`` steps.  The first step runs alone (its time isolates the compile or
    cache load).  With a callback, blocks end every ``callback_every`` steps (counted from step
    1); with checkpoints, at every multiple of ``checkpoint_every``; and no block is longer
    than ``limit`` steps (``BLOCK_SECONDS`` of them)."""
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


def _progress_bar(run: Run, progress):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.total, initial=run.state.step, unit="step", leave=True, desc=run.ran)


def _update_bar(bar, run: Run, start) -> None:
    """The bar after a block: the epoch, the last step's loss and the epoch's mean so far (set
    before the bar moves, so the line drawn shows them, not the previous block's)."""
    if bar is None:
        return
    st = run.state
    epoch = (st.step - 1) // run.per_epoch
    post = {"epoch": f"{epoch + 1}/{-(-run.total // run.per_epoch)}",
            "loss": f"{st.losses[st.step - 1]:.4g}"}
    if run.per_epoch > 1:
        post["epoch mean"] = f"{np.mean(st.losses[epoch * run.per_epoch:st.step]):.4g}"
    if st.val_losses:
        post["val"] = f"{st.val_losses[-1]:.4g}"
    bar.set_postfix(post, refresh=False)
    bar.update(st.step - start)


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
