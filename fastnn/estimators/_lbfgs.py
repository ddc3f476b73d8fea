"""``solver="lbfgs"``: scikit-learn's ``_fit_lbfgs`` on ``fastnn.training.lbfgs`` (scipy's
L-BFGS-B over one flat vector in scikit-learn's packing, one fused ``loss_and_grads`` of the
whole set per evaluation, no copies).

scikit-learn's objective is fastnn's loss over ``s`` plus ``(alpha / 2) |W|^2 / sum(w)``, its
gradient fastnn's over ``c`` plus ``alpha W / sum(w)`` (``_stochastic``'s docstring says why ``c``
and ``s`` differ); its ``max_iter``, ``max_fun`` and ``tol`` (the gradient's) are L-BFGS-B's
limits, and its ConvergenceWarning says when one stopped it.
"""
from __future__ import annotations

import numpy as np

from ..kernels.common import activations, losses
from ..kernels.bf16 import is_bfloat16
from ..params import Params
from ..threads import num_threads
from ..training import lbfgs
from ..training.options import LBFGS_BF16
from ..validation import with_weights
from ._compat import check_optimize_result


def fit(est, X, Y, sw, s) -> None:
    """scikit-learn's ``_fit_lbfgs`` of ``est`` on ``X``, targets ``Y (n, k)``, weights ``sw``,
    from its current ``coefs_`` / ``intercepts_``."""
    if est.distributed:
        raise ValueError("distributed: solver='lbfgs' runs in one process (its line search is "
                         "sequential); use 'adam' or 'sgd' across ranks")
    if is_bfloat16(est.dtype):
        raise ValueError(LBFGS_BF16)
    if est.lazy:
        raise ValueError("lazy: solver='lbfgs' takes the whole gradient; lazy updates are for "
                         "'adam' and 'sgd' on sparse X")
    loss, c, scale = est._objective()
    dims = (X.shape[1], s.hidden, Y.shape[1])
    y = np.ascontiguousarray(with_weights(Y, sw))
    weight = float(X.shape[0] if sw is None else np.sum(sw, dtype=np.float64))
    start = Params(est.coefs_[0], est.intercepts_[0], est.coefs_[1], est.intercepts_[1])
    x0 = lbfgs.pack(start)
    with num_threads(est.threads):
        variant = lbfgs.variant_for(est.kernel, lbfgs.unpack(x0, dims, X.dtype), X, y)
        f = lbfgs.Objective(variant, X, y, losses.kind(loss), activations.of(est.activation),
                            dims, X.dtype, decay=est.alpha / weight, loss_scale=scale,
                            grad_scale=c)
        result = lbfgs.minimize(f, x0, max_iter=s.max_iter, max_fun=est.max_fun, gtol=est.tol)
    est.n_iter_ = check_optimize_result(result, s.max_iter)
    est.loss_ = float(result.fun)
    est._set_params(lbfgs.unpack(result.x, dims, X.dtype))
    est.kernel_ = variant.name
