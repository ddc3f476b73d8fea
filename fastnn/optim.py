"""Optimisers: plain SGD, SGD with (Nesterov) momentum, Adam, each with L2 weight decay.

An ``Optimizer`` holds the hyperparameters and the state (momentum buffers or Adam's moments,
and the step count).  ``step(params, grads)`` applies one update through the fused kernel in
``fastnn.kernels.common.updates``; ``reference_step`` is the same math in plain numpy, the
specification the kernel is tested against.  The objective with weight decay is

    L + (alpha / 2) * (sum(w1**2) + sum(w2**2))          (biases are not decayed)

so the gradient of each weight gains ``alpha * w``, as ``weight_decay`` in ``torch.optim``.
``form="scikit-learn"`` runs the same optimisers in the form of scikit-learn's MLP (the
estimators use it): ``alpha`` divided by each batch's size (or its rows' weights' sum), the
velocity holding steps rather than gradients (the same numbers until a schedule changes ``lr``),
and Adam's ``eps`` added outside its bias correction (``kernels/common/updates.py``).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .kernels.common import updates
from .params import Params

NAMES = ("sgd", "adam")
# state arrays per optimiser, one set per parameter
STATE = {"sgd": ("velocity",), "adam": ("m", "v")}
DECAYED = (True, False, True, False)  # w1, b1, w2, b2
FORMS = {"pytorch": updates.TORCH, "scikit-learn": updates.SKLEARN}
# hyperparameters newer than some checkpoints, and the value those checkpoints ran with
ADDED = {"form": "pytorch", "l2_weight": 1.0, "lazy": False}


def _real(value, name, low=None, high=None, low_open=False, high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad = bad or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        where = f"in {lo}{hi}" if lo and hi else (
            (f"> {low}" if low_open else f">= {low}") if lo else "finite")
        raise ValueError(f"{name}: expected a finite number {where}, got {value!r}")
    return v


class Optimizer:
    """One optimiser and its state.

    ``name``: ``"sgd"`` or ``"adam"``.  ``lr`` > 0; ``alpha`` >= 0 (L2 weight decay);
    SGD: ``momentum`` in [0, 1], ``nesterov`` (needs momentum > 0); Adam: ``beta1``, ``beta2`` in
    [0, 1), ``eps`` > 0.  ``form``: ``"pytorch"`` or ``"scikit-learn"`` (the module docstring);
    ``l2_weight`` >= 0: the L2 term's weight in the losses a run records (1: the objective's).
    ``t`` counts the steps taken; ``state`` maps each state name to a ``Params`` of arrays
    (created at the first step, or restored from a checkpoint).  ``lr`` may be changed between
    steps (the estimators' schedules do).

    ``lazy`` (sparse ``x`` only; opt-in, another method than the one named): a step updates only
    the rows of ``w1`` the batch's stored entries name, and only their state, as fastText's
    sparse SGD and TensorFlow's ``LazyAdam`` do.  Momentum, Adam and L2 decay by definition
    touch every row (a velocity or a moment decays, a weight decays, where the gradient is 0);
    lazily, a row that no batch names stands still, and its state with it, and the L2 term
    in the recorded losses counts ``w2`` and the rows of ``w1`` the step updated.  Adam's bias
    correction still counts every step.  ``b1``, ``w2``, ``b2`` are updated as always.  Plain
    SGD without L2 is the same method either way (its gradient is 0 on the other rows).
    """

    def __init__(self, name="sgd", lr=0.01, *, alpha=0.0, momentum=0.0, nesterov=False,
                 beta1=0.9, beta2=0.999, eps=1e-8, form="pytorch", l2_weight=1.0, lazy=False):
        if name not in NAMES:
            raise ValueError(f"optimizer: expected one of {', '.join(map(repr, NAMES))}, "
                             f"got {name!r}")
        self.name = name
        self.lr = _real(lr, "lr", 0.0, low_open=True)
        self.alpha = _real(alpha, "alpha", 0.0)
        self.momentum = _real(momentum, "momentum", 0.0, 1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov: expected True or False, got {nesterov!r}")
        if nesterov and (name != "sgd" or self.momentum == 0.0):
            raise ValueError("nesterov: needs optimizer='sgd' with momentum > 0")
        self.nesterov = bool(nesterov)
        self.beta1 = _real(beta1, "beta1", 0.0, 1.0, high_open=True)
        self.beta2 = _real(beta2, "beta2", 0.0, 1.0, high_open=True)
        self.eps = _real(eps, "eps", 0.0, low_open=True)
        if form not in FORMS:
            raise ValueError(f"form: expected one of {', '.join(map(repr, FORMS))}, got {form!r}")
        self.form = form
        self.l2_weight = _real(l2_weight, "l2_weight", 0.0)
        if not isinstance(lazy, (bool, np.bool_)):
            raise TypeError(f"lazy: expected True or False, got {lazy!r}")
        self.lazy = bool(lazy)
        self.t = 0
        # State lives in one flat buffer per kind (all four params' entries back to back), so a
        # compiled training loop takes it as one array; ``state`` shows it as Params of views.
        self._flat: dict[str, np.ndarray] = {}
        self._shapes: list[tuple] = []

    @property
    def state(self) -> dict[str, Params]:
        """State name -> ``Params`` of arrays shaped like the params (views of the buffers)."""
        return {key: self._views(flat) for key, flat in self._flat.items()}

    @state.setter
    def state(self, value: dict) -> None:
        self._flat = {}
        for key, ps in value.items():
            self._shapes = [tuple(np.shape(p)) for p in ps]
            self._flat[key] = np.concatenate([np.asarray(p).reshape(-1) for p in ps])

    def _views(self, flat) -> Params:
        out, start = [], 0
        for shape in self._shapes:
            size = int(np.prod(shape))
            out.append(flat[start:start + size].reshape(shape))
            start += size
        return Params(*out)

    @property
    def is_plain_sgd(self) -> bool:
        """True when the update is ``p -= lr * g``: no state, no decay (the kernels then fuse it
        into the step itself, with BLAS's alpha/beta)."""
        return self.name == "sgd" and self.momentum == 0.0 and self.alpha == 0.0

    def hyperparameters(self) -> dict:
        return dict(name=self.name, lr=self.lr, alpha=self.alpha, momentum=self.momentum,
                    nesterov=self.nesterov, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                    form=self.form, l2_weight=self.l2_weight, lazy=self.lazy)

    def _needs_state(self) -> tuple:
        if self.name == "sgd" and self.momentum == 0.0:
            return ()
        return STATE[self.name]

    def _ensure_state(self, params: Params) -> None:
        shapes = [p.shape for p in params]
        for key in self._needs_state():
            flat = self._flat.get(key)
            if flat is None or flat.dtype != params.dtype or self._shapes != shapes:
                self._shapes = shapes
                self._flat[key] = np.zeros(sum(p.size for p in params), params.dtype)

    def kernel_state(self, params: Params) -> updates.OptimState:
        """This optimiser as the compiled update takes it (``updates.OptimState``): the kind
        code, the flat state buffers (empty arrays when unused), the hyperparameters as
        ``updates.Hyper``, scalars of the params' dtype (so every caller, Python or compiled,
        passes the same scalar types and gets the same bits), and the steps taken."""
        self._ensure_state(params)
        dt = params.dtype
        keys = self._needs_state()
        empty = np.empty(0, dt)
        s1 = self._flat[keys[0]] if keys else empty
        s2 = self._flat[keys[1]] if len(keys) > 1 else empty
        hyper = updates.Hyper(*(dt.type(v) for v in (self.lr, self.alpha, self.momentum,
                                                       self.beta1, self.beta2, self.eps, 0.0,
                                                       self.l2_weight)))
        kind = updates.ADAM if self.name == "adam" else updates.SGD
        return updates.OptimState(kind, s1, s2, hyper, self.nesterov, self.t, FORMS[self.form])

    def decay(self, dtype, batch_weight=None):
        """The weights' decay of a step, in ``dtype``: ``alpha``, or ``alpha / batch_weight`` in
        the scikit-learn form (``batch_weight``: the batch's rows, or the sum of its rows'
        weights, ``kernels.common.losses.batch_weight``), rounded as the compiled loops round
        it."""
        dt = np.dtype(dtype)
        if self.form != "scikit-learn":
            return dt.type(self.alpha)
        if batch_weight is None:
            raise TypeError("step: the scikit-learn form needs batch_weight (the batch's rows, "
                            "or the sum of its rows' weights)")
        return dt.type(float(dt.type(self.alpha)) * (1.0 / batch_weight))

    def step(self, params: Params, grads: Params, batch_weight=None) -> float:
        """Update ``params`` in place (C-contiguous arrays) from ``grads``; returns the L2 term
        ``l2_weight * (decay / 2) * (sum(w1**2) + sum(w2**2))`` of the params before the update
        (``decay``: the step's, see ``decay``)."""
        state = self.kernel_state(params)
        decay = self.decay(params.dtype, batch_weight)
        self.t += 1
        return float(updates.update_all(params, grads, state, self.t, decay))

    def reference_step(self, params: Params, grads: Params, batch_weight=None,
                       rows=None) -> float:
        """``step`` in plain numpy: the specification.  ``rows``: with ``lazy``, the rows of
        ``w1`` the batch names (its stored entries' columns): only they, and their state, are
        updated, and only they count in the returned L2 term."""
        self._ensure_state(params)
        self.t += 1
        decay = float(self.decay(np.float64, batch_weight))
        lazy = self.lazy and rows is not None
        rows = np.unique(np.asarray(rows, dtype=np.int64)) if lazy else None
        # (of the params before the update)
        penalty = self.penalty(params._replace(w1=params.w1[rows]) if lazy else params,
                               batch_weight)
        sk = self.form == "scikit-learn"
        for i, (full, g) in enumerate(zip(params, grads)):
            p = full[rows] if lazy and i == 0 else full  # (a copy, written back below)
            if lazy and i == 0:
                g = g[rows]
            if DECAYED[i]:
                g = g + decay * p
            state = {key: (s[i][rows] if lazy and i == 0 else s[i])
                     for key, s in self.state.items()}
            if self.name == "adam":
                m, v = state["m"], state["v"]
                m[...] = self.beta1 * m + (1 - self.beta1) * g
                v[...] = self.beta2 * v + (1 - self.beta2) * g * g
                c1 = 1 - self.beta1 ** self.t
                c2 = 1 - self.beta2 ** self.t
                if sk:
                    p -= (self.lr * math.sqrt(c2) / c1) * m / (np.sqrt(v) + self.eps)
                else:
                    p -= (self.lr / c1) * m / (np.sqrt(v) / math.sqrt(c2) + self.eps)
            elif self.momentum and sk:
                v = state["velocity"]
                v[...] = self.momentum * v - self.lr * g
                p += self.momentum * v - self.lr * g if self.nesterov else v
            elif self.momentum:
                v = state["velocity"]
                v[...] = self.momentum * v + g
                p -= self.lr * (g + self.momentum * v if self.nesterov else v)
            else:
                p -= self.lr * g
            if lazy and i == 0:
                full[rows] = p
                for key, s in self.state.items():
                    s[0][rows] = state[key]
        return penalty

    def penalty(self, params: Params, batch_weight=None) -> float:
        """The L2 term ``l2_weight * (decay / 2) * (sum(w1**2) + sum(w2**2))`` for
        ``params``."""
        if self.alpha == 0.0:
            return 0.0
        decay = float(self.decay(np.float64, batch_weight))
        return 0.5 * decay * self.l2_weight * sum(float(np.sum(np.square(p, dtype=np.float64)))
                                                  for p, d in zip(params, DECAYED) if d)
