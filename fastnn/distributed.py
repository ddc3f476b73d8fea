"""Data-parallel training across processes and machines on MPI: the same kernels on every rank,
the same results as one machine.

SPMD: every rank of an ``mpiexec`` job calls ``train(x, y, **the arguments of fastnn.train)``::

    mpiexec -n 4 -hosts a,b python my_script.py        # or: fastnn train --distributed ...

Each step takes the same global minibatch as ``fastnn.train`` (the same epoch order from the same
seed); rank ``r`` of ``P`` computes the loss and gradients of its contiguous share of the batch's
rows with the chosen variant's fused kernels, scales them by its share of the rows, and one
in-place ``Allreduce`` sums all four gradients and the loss in one flat buffer.  Every rank then
runs the same optimiser update on the same numbers, so the parameters stay bitwise identical on
all ranks, and equal to one process's to rounding (the batch's sums are taken in another order).

``x`` may be a path to an ``.npy`` file or an ``np.memmap``: a rank reads only the rows of its
shares (and of its share of the validation rows).  ``kernel="auto"`` is resolved on rank 0 and
shared.  Rank 0 writes the checkpoints and shows the progress bar; a resumed run reads the
checkpoint on rank 0 and may have another number of ranks.  A non-finite loss (on any rank: it is
summed) stops every rank at the same step; Ctrl-C on any rank stops them all after the same step.
A rank that raises prints the error with its rank and aborts the whole job (``MPI_Abort``): no
rank waits forever for a dead one.

``MPIWorld`` is the communicator as the trainer uses it; ``LocalWorld`` is a world of one rank
whose all-reduce does nothing, for tests and for a script that runs with or without ``mpiexec``;
``CollectiveSteps`` is the run's backend (``fastnn.training.backends``).
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

from . import checkpoint as ckpt_io
from . import kernels, reference
from .kernels.common import losses as loss_codes
from .machine import mpi_available, mpi_description  # noqa: F401  (here for users)
from .params import Params
from .training.backends import Backend
from .training.result import DivergenceError
from .validation import (as_numeric_array, check_finite, check_sparse_x, check_targets,
                         is_sparse, one_hot)


class LocalWorld:
    """One rank, no communication: ``train`` with it is ``fastnn.train`` through the distributed
    code path (the test that the decomposition is right)."""

    rank, size, local_size = 0, 1, 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce(self, buf) -> None:
        """Sum ``buf`` over the ranks, in place (one rank: nothing to do)."""

    def bcast(self, obj):
        return obj

    def fail(self, exc) -> None:
        raise exc


class MPIWorld(LocalWorld):
    """``MPI.COMM_WORLD`` (or another communicator) through mpi4py."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        if not MPI.Is_initialized():  # machine.mpi_description imports it without starting it
            MPI.Init()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = node.Get_size()  # ranks on this machine (they share its cores)
        node.Free()

    def allreduce(self, buf) -> None:
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def fail(self, exc) -> None:
        """Print the error with this rank, then end every rank of the job (a rank left waiting
        in a collective for a dead one would hang forever)."""
        print(f"fastnn.distributed: rank {self.rank} of {self.size} failed: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        self.comm.Abort(1)


def world() -> LocalWorld:
    """The world this process runs in: MPI's when mpi4py is installed (one rank when started
    without mpiexec), else a ``LocalWorld``."""
    return MPIWorld() if mpi_available() else LocalWorld()


def share(n: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s contiguous part of ``n`` rows: the first ``n % size`` ranks get one more;
    a rank gets none when ``n < size``."""
    return slice(rank * n // size, (rank + 1) * n // size)


def open_rows(x):
    """``x`` as an array whose rows can be read one by one: a path to an ``.npy`` file is memory
    mapped (read-only), anything else taken as it is."""
    if isinstance(x, (str, os.PathLike)):
        return np.load(x, mmap_mode="r")
    return x


class CollectiveSteps(Backend):
    """The steps of a run across the ranks (``fastnn.training.backends``' interface): each rank
    its share of every global batch, one all-reduce a step, the same update everywhere.  Holds
    the rank's view of the data."""

    agrees_on_stop = True  # Ctrl-C rides in the all-reduce: every rank stops together

    def __init__(self, w, variant, x, labels, params, loss, n_val, x_val, y_val):
        self.w, self.variant, self.name = w, variant, variant.name
        self.x, self.labels, self.loss = x, labels, loss
        self.kind = loss_codes.kind(loss)
        self.k = params.w2.shape[1]
        self.dtype = params.dtype
        self.is_root = w.is_root
        sizes = [p.size for p in params]
        # the flat buffer: the four gradients, the loss in two halves (high and low part: a
        # float32 buffer keeps the loss to ~14 digits) and the stop flag (Ctrl-C on any rank)
        self.flat = np.zeros(sum(sizes) + 3, self.dtype)
        views, start = [], 0
        for p, size in zip(params, sizes):
            views.append(self.flat[start:start + size].reshape(p.shape))
            start += size
        self.grads = Params(*views)
        self.n_grad = start
        self.n_val, self.x_val, self.y_val = n_val, x_val, y_val

    def rows(self, idx):
        """``(x, y)`` of the global rows ``idx``, kernel-ready, checked for NaN and infinity
        (sparse rows: ``SparseRows``, whose values were checked once)."""
        x = _take(self.x, idx, self.dtype)
        if self.loss == "softmax" and self.labels.ndim == 1:
            y = one_hot(self.labels[idx], self.k, self.dtype)
        else:
            y = np.ascontiguousarray(self.labels[idx], dtype=self.dtype)
        return x, y

    def steps(self, run, start, stop) -> int:
        """Steps ``start .. stop-1`` of ``run``: per step this rank's share of the global batch,
        one all-reduce, the same update everywhere.  Returns the number taken."""
        epoch_rows = run.epoch_order(start // run.per_epoch)
        batch = run.cfg.batch
        losses = run.state.losses
        for t in range(stop - start):
            block = (start + t) % run.per_epoch
            s, e = block * batch, min((block + 1) * batch, run.m)
            positions = np.arange(s, e)[share(e - s, self.w.rank, self.w.size)]
            idx = positions if epoch_rows is None else epoch_rows[positions]
            flat = self.flat
            if idx.size:
                x, y = self.rows(idx)
                loss, _ = self.variant.loss_and_grads(run.params, x, y, self.kind, self.grads,
                                                      run.act)
                weight = idx.size / (e - s)
                flat[:self.n_grad] *= flat.dtype.type(weight)
                loss *= weight
            else:
                flat[:self.n_grad] = 0
                loss = 0.0
            flat[-3] = hi = flat.dtype.type(loss)
            flat[-2] = flat.dtype.type(loss - float(hi))
            flat[-1] = 1.0 if run.interrupt_requested() else 0.0
            self.w.allreduce(flat)
            total = float(flat[-3]) + float(flat[-2])
            if not math.isfinite(total):
                losses[start + t] = total
                return t + 1
            losses[start + t] = total + run.opt.step(run.params, self.grads, e - s)
            if flat[-1] > 0:
                run.stop_agreed = True
                return t + 1
        return stop - start

    def val_loss(self, run) -> float:
        """The validation loss: each rank's share of the validation rows, summed."""
        part = np.zeros(1)
        if self.x_val.shape[0]:
            z2 = self.variant.predict(run.params, self.x_val, run.act)
            part[0] = reference.output_loss(z2, self.y_val, self.loss)[0] * (
                self.x_val.shape[0] / self.n_val)
        self.w.allreduce(part)
        return float(part[0])


def train(x, y, *, world_=None, **kwargs):
    """``fastnn.train`` across the ranks of an MPI job (module docstring); the same keyword
    arguments, the same ``TrainResult`` on every rank (bitwise identical parameters).
    ``world_``: a ``LocalWorld`` or ``MPIWorld`` (default: this process's, ``world()``)."""
    from .training.options import Options

    w = world() if world_ is None else world_
    try:
        opts = Options.of(**kwargs)
    except Exception as exc:  # as any error on a rank: the job ends with its message
        w.fail(exc)
        raise
    return run(x, y, opts, w)


def run(x, y, opts, world_=None):
    """``train`` with its options already built (``fastnn.training.Options.of``)."""
    w = world() if world_ is None else world_
    try:
        return _train(w, x, y, opts)
    except (KeyboardInterrupt, _Agreed) as exc:  # every rank stopped at the same step
        raise getattr(exc, "original", exc) from None
    except BaseException as exc:  # noqa: BLE001 - any error on one rank must end them all
        w.fail(exc)
        raise


class _Agreed(Exception):
    """An outcome every rank reaches at once (divergence raised as an error): not a failure."""

    def __init__(self, original):
        super().__init__(str(original))
        self.original = original


def _train(w, x, y, opts):
    from .threads import max_threads, num_threads
    from .training import finish
    from .training.loop import Run
    from .training.setup import resolve_seed
    from .training.state import RunConfig
    from .validation import check_lr

    if opts.kernel in kernels.FORMS and not kernels.FORMS[opts.kernel].distributed:
        raise ValueError(f"kernel: {opts.kernel!r} trains in one process (its Gram matrix spans "
                         f"every training row); distributed training runs the primal form: "
                         f"pass kernel='auto' or a step variant")
    if opts.whole_loop:
        raise ValueError("whole_loop: distributed steps run one by one (an all-reduce each)")
    if opts.optimizer == "lbfgs":
        raise ValueError("optimizer: 'lbfgs' trains in one process (its line search is "
                         "sequential); distributed training takes sgd or adam")
    if opts.sample_weight is not None:
        raise ValueError("sample_weight: fastnn.distributed does not take row weights yet; train "
                         "in one process (fastnn.train) for a weighted run")
    opt = opts.new_optimizer()
    if opt.lazy:
        raise ValueError("lazy: fastnn.distributed updates every row of w1 (each rank's batch "
                         "names other rows); train lazily in one process (fastnn.train)")
    resumed = w.bcast(ckpt_io.load(opts.resume) if opts.resume is not None and w.is_root
                      else None)
    cfg = RunConfig.of(opts, w.bcast(resolve_seed(opts.seed, resumed)))
    if opts.checkpoint is not None and w.is_root:
        ckpt_io.check_target(opts.checkpoint)
    x = open_rows(x)
    params, labels = _setup(x, y, opts, cfg.seed, resumed)
    if is_sparse(x):  # every rank holds the CSR; a batch's share is its rows of it (no copy)
        x = check_sparse_x(x, params.dtype, params.w1.shape[0])
    check_lr(opt.lr, params.dtype)
    rows, val = _split(x, labels, params, opts, cfg.seed)
    m = x.shape[0] if rows is None else rows.shape[0]
    batch = m if opts.batch_size is None else min(opts.batch_size, m)
    per_epoch = -(-m // batch)
    total = opts.iters if opts.iters is not None else opts.epochs * per_epoch
    n_val = None if val is None else len(val)
    cfg = cfg.with_data(batch, m, n_val)
    threads = opts.threads
    if threads is None:  # the ranks on one machine share its cores
        threads = max(1, max_threads() // w.local_size)
    checkpoint = opts.checkpoint if w.is_root else None
    with num_threads(threads):
        variant = _variant(w, opts.kernel, params, x, labels, opts.loss, rows, batch, resumed)
        x_val, y_val = _val_share(w, x, labels, val, params, opts.loss)
        steps = CollectiveSteps(w, variant, x, labels, params, opts.loss, n_val, x_val, y_val)
        run = Run(steps, opt, params, (x, labels, rows), (x_val, y_val), total, cfg,
                  opts.kernel, opts.info, opts.epoch_callback, order_of=opts.epoch_order)
        if resumed is not None:
            run.restore(resumed, opts.resume)
        run.execute(opts.callback, opts.callback_every, checkpoint, opts.checkpoint_every,
                    opts.progress)
        result = run.result()
        result.ranks, result.threads = w.size, threads
    try:
        finish(result, run, opt, per_epoch, opts.on_divergence, checkpoint)
    except DivergenceError as exc:
        raise _Agreed(exc) from None
    return result


def _setup(x, y, opts, seed, resumed):
    """``(params, labels)``: the parameters as ``fastnn.train`` makes them (from the resumed
    checkpoint, given, or new from ``seed``) and the targets, checked; ``x`` is only looked at
    (its shape and type), not read: the rows are, step by step."""
    from .training.setup import initial_params

    if getattr(x, "ndim", None) != 2 or np.dtype(x.dtype).kind not in "biuf":
        raise ValueError(f"x: expected a 2-D numeric array (or the path of an .npy), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    params = initial_params(opts, x.dtype, lambda dtype: x.shape[1], y, seed, resumed)
    if x.shape[1] != params.w1.shape[0]:
        raise ValueError(f"x: expected {params.w1.shape[0]} columns, got {x.shape[1]}")
    labels = np.asarray(y)
    if opts.loss == "softmax" and labels.ndim == 1:
        check_targets(labels, params, x.shape[0], opts.loss)  # integer labels in range
    else:
        labels = check_targets(labels, params, x.shape[0], opts.loss)
        check_finite(labels, "y")
    return params, labels


def _split(x, labels, params, opts, seed):
    """The training rows and the validation rows (global indices, or given data), as
    ``fastnn.train`` splits them."""
    from .training.setup import split, split_rows

    if opts.validation_data is not None:
        _, xv, yv = split(x, labels, params, opts, seed)
        return None, _Given(xv, yv)
    if opts.validation_fraction is None:
        return None, None
    return split_rows(x.shape[0], opts.validation_fraction, seed)


class _Given:
    """Validation data passed as arrays (held whole; a rank uses its share)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return self.x.shape[0]


def _val_share(w, x, labels, val, params, loss):
    """This rank's share of the validation rows, kernel-ready (None, None without validation;
    a rank may hold none)."""
    k = params.w2.shape[1]
    if val is None:
        return None, None
    part = share(len(val), w.rank, w.size)
    if isinstance(val, _Given):
        xv = val.x[part] if is_sparse(val.x) else np.ascontiguousarray(val.x[part])
        return xv, np.ascontiguousarray(val.y[part])
    idx = val[part]
    xv = _take(x, idx, params.dtype, "x (validation rows)")
    if loss == "softmax" and labels.ndim == 1:
        return xv, one_hot(labels[idx], k, params.dtype)
    return xv, np.ascontiguousarray(labels[idx], dtype=params.dtype)


def _take(x, idx, dtype, name=None):
    """Rows ``idx`` of ``x``, kernel-ready and checked finite: a dense copy, or for sparse input
    (``SparseRows``, checked when it was made) the same matrix with those rows selected."""
    if is_sparse(x):
        return x[idx]
    rows = np.ascontiguousarray(as_numeric_array(x[idx], "x", dtype))
    if idx.size:
        check_finite(rows, name or f"x rows {int(idx.min())}..{int(idx.max())}")
    return rows


def _variant(w, kernel, params, x, labels, loss, rows, batch, resumed):
    """The variant every rank runs: ``kernel``, or for ``auto`` the one rank 0 chooses on its
    share of the first batch (a resumed run: the checkpoint's), shared with all."""
    if kernel != kernels.AUTO:
        return kernels.get(kernel)
    name = resumed.meta.get("ran") if resumed is not None else None
    if w.is_root and name not in kernels.names(reference=True):
        from .auto.choice import resolve

        first = np.arange(batch) if rows is None else rows[:batch]
        idx = first[share(len(first), 0, w.size)]
        xs = _take(x, idx, params.dtype)
        ys = (one_hot(labels[idx], params.w2.shape[1], params.dtype)
              if loss == "softmax" and labels.ndim == 1 else
              np.ascontiguousarray(labels[idx], dtype=params.dtype))
        name = resolve(kernel, params, xs, ys).name
    return kernels.get(w.bcast(name))
