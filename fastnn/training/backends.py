"""How a run's steps are carried out: one interface, three implementations.

``Backend`` is what the block loop (``loop.Run``) calls between blocks; nothing else in the
loop knows which kind it runs:

``LocalSteps``        a step variant in this process: its compiled training loop (``whole``),
                      or one call per step from Python; plain SGD fused into the step, any other
                      optimiser as a fused update pass after the gradients
``DualSteps``         the dual form of rung 7 (``kernels/dual.py``): the steps work in ``A``,
                      ``w1 = s * w1_0 + X.T @ A``, formed only when the run needs it (``sync``)
``CollectiveSteps``   ``fastnn.distributed``'s: each rank's share of the batch, one all-reduce
                      a step, the same update on every rank (it lives there, on this interface)
"""
from __future__ import annotations

import numpy as np

from .. import reference
from ..kernels import sparse
from ..kernels.common.activations import name_of
from ..kernels.variant import Variant, optim_step_loop, scratch, step_loop
from ..params import Params


class Backend:
    """The steps of one run.  ``name``: what ran (``result.ran``, the checkpoints' ``ran``);
    ``variant``: the step variant behind it (predictions, the validation loss); ``is_root``:
    this process writes the checkpoints and shows the bar; ``agrees_on_stop``: a Ctrl-C is
    agreed on with other processes inside ``steps`` (else each run reads its own)."""

    name: str
    variant: Variant
    is_root = True
    agrees_on_stop = False

    def steps(self, run, start, stop) -> int:
        """Steps ``start .. stop-1`` of ``run`` (within one epoch); the number taken (fewer
        when a loss is not finite)."""
        raise NotImplementedError

    def val_loss(self, run) -> float:
        """The validation loss of ``run``'s current parameters (the L2 term not included)."""
        return output_loss(self.variant.predict(run.params, run.x_val, run.act), run.y_val,
                           run.cfg.loss)

    def sync(self, run) -> None:
        """Make ``run.params`` current where the steps keep them elsewhere."""

    def save_state(self):
        """A copy of what the steps keep beyond ``run.params`` (None: nothing), to go back to
        when a step leaves numbers that are not finite."""
        return None

    def load_state(self, saved) -> None:
        """Back to ``save_state``'s copy."""

    def checkpoint_arrays(self) -> dict:
        """What a checkpoint needs beyond the params and the optimiser to continue bitwise."""
        return {}


class LocalSteps(Backend):
    """A step variant in this process (``whole``: its compiled training loops)."""

    def __init__(self, variant: Variant, whole: bool):
        self.variant, self.whole, self.name = variant, whole, variant.name

    def steps(self, run, start, stop) -> int:
        return run_steps(self.variant, self.whole, run.params, run.x, run.y, run.opt,
                         run.grads, run.state.losses[start:stop], run.kind, run.cfg.batch,
                         start % run.per_epoch, run.epoch_order(start // run.per_epoch), run.act)


def output_loss(z2, y, loss) -> float:
    """The reference's loss of outputs ``z2`` for targets ``y`` (their weights, when the rows
    are weighted, in one more column: ``kernels/common/losses.py``)."""
    k = z2.shape[1]
    if y.shape[1] > k:
        return reference.output_loss(z2, y[:, :k], loss, y[:, k])[0]
    return reference.output_loss(z2, y, loss)[0]


def run_steps(variant, whole, params, x, y, opt, grads, out, loss_kind, batch, block, order,
              act):
    """Steps into ``out`` (its length), from minibatch ``block`` of the epoch whose row order is
    ``order`` (None: in place): the variant's compiled loop when ``whole``, else one call per
    step from Python; plain SGD fused into the step, any other optimiser after the gradients.
    Returns the number of steps taken (fewer when a loss is not finite).  A ``lazy`` optimiser
    on sparse rows runs the sparse rung's own loop (``kernels.sparse.lazy_step_loop``)."""
    if opt.lazy and not opt.is_plain_sgd and isinstance(x, sparse.SparseRows):
        return sparse.lazy_step_loop(params, x, y, opt, grads, out, loss_kind, batch, block,
                                     order, act)
    if opt.is_plain_sgd:
        if whole:
            return variant.train_loop(params, x, y, opt.lr, out, loss_kind, batch, block, order,
                                      act)
        return step_loop(variant, params, x, y, opt.lr, out, loss_kind, batch, block, order,
                         act)
    if whole:
        return variant.train_loop_optim(params, x, y, opt, grads, out, loss_kind, batch, block,
                                        order, act)
    return optim_step_loop(variant, params, x, y, opt, grads, out, loss_kind, batch, block, order,
                           act)


class DualSteps(Backend):
    """A run's steps in the dual form (``kernels/dual.py``), holding the training rows ``x`` (the
    data rows the run trains on, in order), the dual state, and the validation rows' own ``G``
    and ``Z0`` (``x_val @ X.T``, ``x_val @ w1_0``).  ``arrays``: a checkpoint's, to resume."""

    name = "dual"

    def __init__(self, variant, x, y, params, opt, x_val=None, arrays=None):
        from ..kernels import dual
        from ..kernels.common import gemm

        self.variant, self.dual = variant, dual
        self.x = np.ascontiguousarray(x)
        self.backend = gemm.BACKEND
        momentum = opt.momentum > 0
        if arrays is None:  # a new run: w1 = w1_0, A = 0
            self.w1_0 = params.w1.copy()
            self.state = dual.prepare(self.x, y, self.w1_0, momentum)
        else:  # a resumed one: the checkpoint's w1_0, A, V and coefficients
            self.w1_0 = arrays["dual/w1_0"].copy()
            st = dual.prepare(self.x, y, self.w1_0, momentum)
            st.A[...] = arrays["dual/A"]
            if momentum:
                st.V[...] = arrays["dual/V"]
            st.coef[...] = arrays["dual/coef"]
            self.state = st
        self.val = None
        if x_val is not None:
            self.val = (np.matmul(x_val, self.x.T), np.matmul(x_val, self.w1_0))
        self.stale = False

    def steps(self, run, start, stop) -> int:
        epoch = start // run.per_epoch
        order = run.epoch_order(epoch)  # (the dual form's rows are in place: no rows map)
        order = np.empty(0, np.int64) if order is None else order
        p = run.params
        h, k = p.w2.shape
        dt = p.dtype
        g = Params(p.w1, scratch("db1", (h,), dt), scratch("dw2", (h, k), dt),
                   scratch("db2", (k,), dt))
        w = self.dual.work(p, run.cfg.batch, run.m, self.backend, run.opt.alpha != 0.0,
                           self.state.Y.shape[1], run.act)
        losses = run.state.losses
        done = self.dual.train_loop(self.state, p, g, w, run.opt.kernel_state(p), run.kind,
                                    order, run.cfg.batch, start % run.per_epoch,
                                    losses[start:stop])
        run.opt.t += done - (0 if np.isfinite(losses[start + done - 1]) else 1)
        self.stale = True
        return done

    def val_loss(self, run) -> float:
        G_val, Z0_val = self.val
        p, st = run.params, self.state
        z1 = np.matmul(G_val, st.A)
        z1 += p.dtype.type(st.coef[0]) * Z0_val
        z1 += p.b1
        a1 = reference.activate(name_of(run.act), z1)
        return output_loss(a1 @ p.w2 + p.b2, run.y_val, run.cfg.loss)

    def sync(self, run) -> None:
        """``run.params.w1`` made current (``materialize``), when steps have run since, and
        with momentum ``w1``'s velocity too (``v0 * w1_0 + X.T @ V``), so that the optimiser's
        state (in the result and in checkpoints) is the primal form's: a run may continue in
        either form."""
        if not self.stale:
            return
        st = self.state
        self.dual.materialize(self.x, self.w1_0, st, run.params.w1)
        if st.V.shape[0]:
            velocity = run.opt.state["velocity"].w1
            self.dual.materialize(self.x, self.w1_0, st._replace(A=st.V, coef=st.coef[1:]),
                                  velocity)
        self.stale = False

    def save_state(self):
        st = self.state
        return st.A.copy(), st.V.copy(), st.coef.copy()

    def load_state(self, saved) -> None:
        st = self.state
        st.A[...], st.V[...], st.coef[...] = saved
        self.stale = True

    def checkpoint_arrays(self) -> dict:
        """``G`` and ``Z0`` are recomputed from the data and ``w1_0``."""
        st = self.state
        arrays = {"dual/w1_0": self.w1_0, "dual/A": st.A, "dual/coef": st.coef}
        if st.V.shape[0]:
            arrays["dual/V"] = st.V
        return arrays
