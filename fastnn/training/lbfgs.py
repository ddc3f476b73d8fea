"""Full-batch training by scipy's L-BFGS-B: ``train(optimizer="lbfgs")`` and the estimators'
``solver="lbfgs"``.

The parameters are one float64 vector in scikit-learn's packing, ``[w1.ravel(), w2.ravel(),
b1, b2]``.  ``Objective`` evaluates the loss and its gradient at such a vector with one fused
``loss_and_grads`` call of the whole training set: in float64 the kernel reads the parameters
as views of scipy's vector and writes the gradient into views of the array it returns, so an
evaluation copies nothing (float32 casts the parameters into a buffer of their size, never the
data).  The L2 term ``(decay / 2) |W|^2`` and any change of scale are added in one pass over the
parameters.  ``minimize`` runs L-BFGS-B on one BLAS thread and the evaluations on the run's
threads (its own work is short vector operations, whose threads cost more to wake than they
save: five times the whole fit on digits; scipy issue 22438).
"""
from __future__ import annotations

import time

import numpy as np
import scipy.optimize

from .. import kernels
from ..auto.choice import resolve
from ..kernels.common import activations
from ..kernels.common import losses as loss_codes
from ..params import Params
from ..threads import _set as set_threads
from ..threads import get_num_threads, num_threads
from .options import check_lbfgs


def layout(n, h, k):
    """``(slices of w1, w2, b1, b2 in the vector, its size)``."""
    cuts = np.cumsum([0, n * h, h * k, h, k])
    return [slice(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])], int(cuts[-1])


def views(flat, parts, n, h, k) -> Params:
    """``Params`` of views of ``flat`` (contiguous: the kernels take them as they are)."""
    w1, w2, b1, b2 = parts
    return Params(flat[w1].reshape(n, h), flat[b1], flat[w2].reshape(h, k), flat[b2])


def pack(params: Params) -> np.ndarray:
    """The float64 vector of ``params``."""
    return np.concatenate([np.ravel(a).astype(np.float64)
                           for a in (params.w1, params.w2, params.b1, params.b2)])


def unpack(flat, dims, dtype) -> Params:
    """New arrays of ``dtype`` from the vector ``flat`` of a network of sizes ``dims``."""
    parts, _ = layout(*dims)
    return Params(*(np.ascontiguousarray(a, dtype=dtype) for a in views(flat, parts, *dims)))


class Objective:
    """``f(vector) -> (value, gradient)``: ``loss / loss_scale + (decay / 2) |W|^2`` and its
    gradient, the kernel's ``grads / grad_scale + decay * W`` (the estimators' scikit-learn
    scale; ``fastnn.train``'s is 1 and 1).  ``x``, ``y``: kernel-ready (``y``'s weights, if any,
    as its last column); ``variant``: the step variant that evaluates; ``dims``: ``(n, h, k)``.
    ``evaluations`` counts the calls; ``first_value`` and ``first_seconds`` are the first's."""

    def __init__(self, variant, x, y, loss_kind, act, dims, dtype, *, decay=0.0,
                 loss_scale=1.0, grad_scale=1.0):
        self.variant, self.x, self.y, self.kind, self.act = variant, x, y, loss_kind, act
        self.dims, self.dtype = dims, np.dtype(dtype)
        self.parts, self.size = layout(*dims)
        self.decay, self.loss_scale, self.grad_scale = decay, loss_scale, grad_scale
        self.in_place = self.dtype == np.float64
        # float32: the parameters and gradients the kernel reads and writes
        self.pbuf = None if self.in_place else np.empty(self.size, self.dtype)
        self.gbuf = None if self.in_place else np.empty(self.size, self.dtype)
        self.threads = get_num_threads()
        self.evaluations, self.first_seconds, self.first_value = 0, 0.0, None

    def __call__(self, flat):
        t0 = time.perf_counter()
        set_threads(self.threads)
        parts, dims = self.parts, self.dims
        g = np.empty(self.size)
        if self.in_place:  # views of scipy's vector (copied only if it is read-only)
            at = flat if flat.flags.c_contiguous and flat.flags.writeable else np.array(flat)
            p, gp = views(at, parts, *dims), views(g, parts, *dims)
        else:
            self.pbuf[...] = flat
            p, gp = views(self.pbuf, parts, *dims), views(self.gbuf, parts, *dims)
        value, _ = self.variant.loss_and_grads(p, self.x, self.y, self.kind, gp, self.act)
        if self.gbuf is not None:
            g[...] = self.gbuf
        if self.grad_scale != 1.0:
            g *= 1.0 / self.grad_scale
        value = float(value) / self.loss_scale
        if self.decay:
            w1, w2 = parts[0], parts[1]
            value += 0.5 * self.decay * (float(np.dot(flat[w1], flat[w1]))
                                         + float(np.dot(flat[w2], flat[w2])))
            g[w1] += self.decay * flat[w1]
            g[w2] += self.decay * flat[w2]
        set_threads(1)
        if self.evaluations == 0:
            self.first_seconds, self.first_value = time.perf_counter() - t0, value
        self.evaluations += 1
        return value, g


def minimize(objective: Objective, x0, *, max_iter, max_fun, gtol, callback=None):
    """scipy's L-BFGS-B from ``x0`` (the run's thread count for the evaluations, one for the
    rest: the module docstring); scipy's ``OptimizeResult``."""
    set_threads(1)
    try:
        return scipy.optimize.minimize(
            objective, x0, method="L-BFGS-B", jac=True, callback=callback,
            options={"maxfun": max_fun, "maxiter": max_iter, "gtol": gtol})
    finally:
        set_threads(objective.threads)


def variant_for(kernel, params, x, y):
    """The step variant of ``kernel`` for full batches of ``x`` (a training form's primary)."""
    name = kernels.PRIMARY if kernel in kernels.TRAINING_FORMS else kernel
    return resolve(name, params, x, y)


def train(x, y, opts):
    """``fastnn.train(optimizer="lbfgs")``: at most ``iters`` (or ``epochs``: the same, each
    iteration sees the whole set) L-BFGS-B iterations on fastnn's objective ``L + (alpha / 2)
    |W|^2``, stopping when the gradient's largest entry is under ``tol``.  ``losses[t]``: the
    objective after ``t`` iterations (``losses[0]`` at the start; ``callback(t, loss)`` is
    called for each); ``stopped_early``: it converged before the last iteration."""
    from .result import DivergenceError, DivergenceWarning, TrainResult
    from .setup import resolve_seed, setup_params

    check_lbfgs(opts)
    seed = resolve_seed(opts.seed, None)
    params, x, y = setup_params(opts, x, y, seed, None)
    dims = (params.w1.shape[0], params.w1.shape[1], params.w2.shape[1])
    total = opts.iters if opts.iters is not None else opts.epochs
    losses = []

    def record(value):
        losses.append(float(value))
        t = len(losses) - 1
        if opts.callback is not None and t % opts.callback_every == 0:
            opts.callback(t, losses[-1])

    with num_threads(opts.threads):
        variant = variant_for(opts.kernel, params, x, y)
        f = Objective(variant, x, y, loss_codes.kind(opts.loss),
                      activations.of(opts.activation), dims, params.dtype, decay=opts.alpha)

        def after(intermediate_result):
            if not losses:
                record(f.first_value)
            record(intermediate_result.fun)

        t0 = time.perf_counter()
        res = minimize(f, pack(params), max_iter=total, max_fun=max(15000, 2 * total),
                       gtol=opts.tol, callback=after)
        seconds = time.perf_counter() - t0
        threads = get_num_threads()
        if not losses:  # no iteration taken
            record(f.first_value)
    losses = np.array(losses, np.float64)
    trained = unpack(res.x, dims, params.dtype)
    diverged = None if np.isfinite(res.fun) else len(losses) - 1
    converged = res.status == 0 and res.nit < total
    result = TrainResult(trained, losses, opts.kernel, params.dtype, seconds, f.first_seconds,
                         epoch_losses=losses.copy(), steps_per_epoch=1, seed=seed,
                         diverged_at=diverged, stopped_early=bool(converged),
                         ran=variant.name, threads=threads,
                         schedule=[(0, variant.name, threads)])
    if diverged is not None:
        msg = (f"training diverged: L-BFGS-B ended on a loss of {res.fun} ({res.message})")
        if opts.on_divergence == "raise":
            raise DivergenceError(msg, result)
        import warnings

        warnings.warn(msg, DivergenceWarning, stacklevel=3)
    return result
