"""``solver="lbfgs"``: scipy's L-BFGS-B over one flat parameter vector (scikit-learn's
``_fit_lbfgs``), each evaluation one fused ``loss_and_grads`` of the whole training set.

The vector is scikit-learn's packing, ``[w1.ravel(), w2.ravel(), b1, b2]``.  In float64 the
kernel reads the parameters as views of scipy's ``x`` and writes the gradients into views of
the array it returns: an evaluation copies nothing (float32 casts the parameters, a few
hundred kilobytes, never the data).  scikit-learn's objective is fastnn's loss over ``s`` plus
``(alpha / 2) |W|^2 / sum(w)`` and its gradient fastnn's over ``c`` (``_stochastic``'s
docstring says why ``c`` and ``s`` differ), both added here, in one pass over the parameters.
"""
from __future__ import annotations

import numpy as np
import scipy.optimize

from .. import kernels
from ..auto.choice import resolve
from ..kernels.common import activations, losses
from ..params import Params
from ..threads import num_threads
from ..validation import with_weights
from ._compat import check_optimize_result


def layout(n, h, k):
    """``(w1, w2, b1, b2)`` slices of the flat vector and the vector's size."""
    cuts = np.cumsum([0, n * h, h * k, h, k])
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])], int(cuts[-1])


def views(flat, parts, n, h, k) -> Params:
    """``Params`` of views of ``flat`` (contiguous: the kernels take them as they are)."""
    w1, w2, b1, b2 = parts
    return Params(flat[w1].reshape(n, h), flat[b1], flat[w2].reshape(h, k), flat[b2])


def fit(est, X, Y, sw, s) -> None:
    """scikit-learn's ``_fit_lbfgs`` of ``est`` on ``X``, targets ``Y (n, k)``, weights ``sw``."""
    if est.distributed:
        raise ValueError("distributed: solver='lbfgs' runs in one process (its line search is "
                         "sequential); use 'adam' or 'sgd' across ranks")
    loss, c, scale = est._objective()
    kind, act = losses.kind(loss), activations.of(est.activation)
    dt = np.dtype(X.dtype)
    n, h, k = X.shape[1], s.hidden, Y.shape[1]
    parts, size = layout(n, h, k)
    y = np.ascontiguousarray(with_weights(Y, sw))
    weight = float(X.shape[0] if sw is None else np.sum(sw, dtype=np.float64))
    decay = est.alpha / weight
    x0 = np.concatenate([np.ravel(a).astype(np.float64)
                         for a in est.coefs_ + est.intercepts_])
    in_place = dt == np.float64
    # float32: the parameters and gradients the kernel reads and writes
    pbuf = None if in_place else np.empty(size, dt)
    gbuf = None if in_place else np.empty(size, dt)
    w1, w2 = parts[0], parts[1]

    with num_threads(est.threads):
        name = kernels.PRIMARY if est.kernel in kernels.TRAINING_FORMS else est.kernel
        variant = resolve(name, views(x0.astype(dt), parts, n, h, k), X, y)

        def objective(x):
            g = np.empty(size)
            if in_place and x.flags.c_contiguous and x.flags.writeable:
                p, gp = views(x, parts, n, h, k), views(g, parts, n, h, k)
            else:
                flat = x if pbuf is None else pbuf
                if pbuf is None:  # (scipy's x not writeable: a copy, float64 only)
                    flat = np.array(x, dtype=np.float64)
                else:
                    flat[...] = x
                p = views(flat, parts, n, h, k)
                gp = views(g if gbuf is None else gbuf, parts, n, h, k)
            value, _ = variant.loss_and_grads(p, X, y, kind, gp, act)
            if gbuf is not None:
                g[...] = gbuf
            if c != 1.0:
                g *= 1.0 / c
            value = float(value) / scale
            if decay:
                value += 0.5 * decay * (float(np.dot(x[w1], x[w1])) + float(np.dot(x[w2], x[w2])))
                g[w1] += decay * x[w1]
                g[w2] += decay * x[w2]
            return value, g

        result = scipy.optimize.minimize(
            objective, x0, method="L-BFGS-B", jac=True,
            options={"maxfun": est.max_fun, "maxiter": s.max_iter, "gtol": est.tol})
    est.n_iter_ = check_optimize_result(result, s.max_iter)
    est.loss_ = float(result.fun)
    est._set_params(Params(*(np.ascontiguousarray(a, dtype=dt)
                             for a in views(result.x, parts, n, h, k))))
    est.kernel_ = variant.name
