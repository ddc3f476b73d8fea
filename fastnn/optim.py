"""Optimisers: plain SGD, SGD with (Nesterov) momentum, Adam, each with L2 weight decay.

An ``Optimizer`` holds the hyperparameters and the state (momentum buffers or Adam's moments,
and the step count).  ``step(params, grads)`` applies one update through the fused kernel in
``fastnn.kernels.common.updates``; ``reference_step`` is the same math in plain numpy, the
specification the kernel is tested against.  The objective with weight decay is

    L + (alpha / 2) * (sum(w1**2) + sum(w2**2))          (biases are not decayed)

so the gradient of each weight gains ``alpha * w``, as ``weight_decay`` in ``torch.optim`` (and
unlike scikit-learn, whose ``alpha`` is divided by the batch size).
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
    SGD: ``momentum`` in [0, 1), ``nesterov`` (needs momentum > 0); Adam: ``beta1``, ``beta2`` in
    [0, 1), ``eps`` > 0.  ``t`` counts the steps taken; ``state`` maps each state name to a
    ``Params`` of arrays (created at the first step, or restored from a checkpoint).
    """

    def __init__(self, name="sgd", lr=0.01, *, alpha=0.0, momentum=0.0, nesterov=False,
                 beta1=0.9, beta2=0.999, eps=1e-8):
        if name not in NAMES:
            raise ValueError(f"optimizer: expected one of {', '.join(map(repr, NAMES))}, "
                             f"got {name!r}")
        self.name = name
        self.lr = _real(lr, "lr", 0.0, low_open=True)
        self.alpha = _real(alpha, "alpha", 0.0)
        self.momentum = _real(momentum, "momentum", 0.0, 1.0, high_open=True)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov: expected True or False, got {nesterov!r}")
        if nesterov and (name != "sgd" or self.momentum == 0.0):
            raise ValueError("nesterov: needs optimizer='sgd' with momentum > 0")
        self.nesterov = bool(nesterov)
        self.beta1 = _real(beta1, "beta1", 0.0, 1.0, high_open=True)
        self.beta2 = _real(beta2, "beta2", 0.0, 1.0, high_open=True)
        self.eps = _real(eps, "eps", 0.0, low_open=True)
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
                    nesterov=self.nesterov, beta1=self.beta1, beta2=self.beta2, eps=self.eps)

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
                                                       self.beta1, self.beta2, self.eps, 0.0)))
        kind = updates.ADAM if self.name == "adam" else updates.SGD
        return updates.OptimState(kind, s1, s2, hyper, self.nesterov, self.t)

    def step(self, params: Params, grads: Params) -> float:
        """Update ``params`` in place (C-contiguous arrays) from ``grads``; returns the L2 term
        ``(alpha / 2) * (sum(w1**2) + sum(w2**2))`` of the params before the update."""
        state = self.kernel_state(params)
        self.t += 1
        return float(updates.update_all(params, grads, state, self.t))

    def reference_step(self, params: Params, grads: Params) -> float:
        """``step`` in plain numpy: the specification."""
        self._ensure_state(params)
        self.t += 1
        penalty = self.penalty(params)  # of the params before the update
        for i, (p, g) in enumerate(zip(params, grads)):
            if DECAYED[i]:
                g = g + self.alpha * p
            if self.name == "adam":
                m, v = self.state["m"][i], self.state["v"][i]
                m[...] = self.beta1 * m + (1 - self.beta1) * g
                v[...] = self.beta2 * v + (1 - self.beta2) * g * g
                c1 = 1 - self.beta1 ** self.t
                c2 = 1 - self.beta2 ** self.t
                p -= (self.lr / c1) * m / (np.sqrt(v) / math.sqrt(c2) + self.eps)
            elif self.momentum:
                v = self.state["velocity"][i]
                v[...] = self.momentum * v + g
                p -= self.lr * (g + self.momentum * v if self.nesterov else v)
            else:
                p -= self.lr * g
        return penalty

    def penalty(self, params: Params) -> float:
        """The L2 term ``(alpha / 2) * (sum(w1**2) + sum(w2**2))`` for ``params``."""
        if self.alpha == 0.0:
            return 0.0
        return 0.5 * self.alpha * sum(float(np.sum(np.square(p, dtype=np.float64)))
                                      for p, d in zip(params, DECAYED) if d)
