"""Every setting of a training run, in one frozen, validated object.

``Options.of(**kwargs)`` takes the keyword arguments of ``fastnn.train`` and checks everything
that can be checked before the data is seen: names, types, ranges, the combinations that
exclude each other.  ``fastnn.train``, ``fastnn.distributed.train``, the estimators and the
command line all build theirs the same way, so a new setting is one field here and its check;
what needs the data (shapes, the learning rate against the params' dtype, the validation rows)
is checked by ``setup``.  Errors name the argument, what was expected and what was given.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Optional

import numpy as np

from .. import kernels
from ..kernels.common import activations
from ..kernels.common import losses as loss_codes
from ..optim import Optimizer
from ..params import _positive_int


@dataclass(frozen=True)
class Options:
    """``fastnn.train``'s keyword arguments, validated (its docstring says what each means)."""

    hidden: Optional[int] = None
    iters: Optional[int] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    shuffle: bool = True
    lr: Optional[float] = None
    loss: str = "squared"
    activation: str = "relu"
    sample_weight: Any = None
    optimizer: Any = "sgd"  # a name, or an Optimizer whose settings and state continue
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    alpha: float = 0.0
    lazy: bool = False
    validation_data: Any = None
    validation_fraction: Optional[float] = None
    early_stopping: bool = False
    patience: int = 10
    tol: float = 1e-4
    init: str = "he"
    seed: Optional[int] = None
    kernel: str = kernels.DEFAULT
    params: Any = None
    dtype: Any = None
    callback: Optional[Callable[[int, float], None]] = None
    callback_every: int = 1
    whole_loop: Optional[bool] = None
    checkpoint: Any = None
    checkpoint_every: Optional[int] = None
    resume: Any = None
    progress: bool = False
    on_divergence: str = "warn"
    threads: Optional[int] = None
    info: Optional[dict] = None
    epoch_callback: Optional[Callable] = None
    epoch_order: Optional[Callable] = None

    @classmethod
    def of(cls, **kwargs) -> "Options":
        """The options of ``train(x, y, **kwargs)``, checked (TypeError for an argument
        ``train`` does not take, as Python's own)."""
        for key in kwargs:
            if key not in _NAMES:
                raise TypeError(f"train() got an unexpected keyword argument {key!r}")
        return cls(**kwargs).checked()

    def checked(self) -> "Options":
        """These options with the names resolved (an old kernel name warns and becomes the new
        one), after every check that needs no data."""
        kernel = kernels.check_name(self.kernel)
        loss_codes.kind(self.loss)
        activations.of(self.activation)
        if (self.iters is None) == (self.epochs is None):
            raise TypeError("train: pass exactly one of iters (steps) or epochs")
        for name in ("iters", "epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) is not None:
                _positive_int(getattr(self, name), name)
        _positive_int(self.callback_every, "callback_every")
        _positive_int(self.patience, "patience")
        if self.on_divergence not in ("warn", "raise"):
            raise ValueError(f"on_divergence: expected 'warn' or 'raise', got "
                             f"{self.on_divergence!r}")
        if self.whole_loop not in (None, True, False):
            raise TypeError(f"whole_loop: expected None, True or False, got {self.whole_loop!r}")
        check_tol(self.tol)
        check_seed(self.seed)
        if not isinstance(self.lazy, (bool, np.bool_)):
            raise TypeError(f"lazy: expected True or False, got {self.lazy!r}")
        if self.validation_data is not None and self.validation_fraction is not None:
            raise TypeError("train: pass validation_data or validation_fraction, not both")
        if self.validation_fraction is not None:
            check_fraction(self.validation_fraction)
        if self.validation_data is not None and (
                not isinstance(self.validation_data, (tuple, list))
                or len(self.validation_data) != 2):
            raise TypeError("validation_data: expected a pair (x_val, y_val)")
        if self.init not in ("he", "normal"):
            raise ValueError(f"init: expected 'he' or 'normal', got {self.init!r}")
        if self.threads is not None:
            check_threads(self.threads)
        if self.epoch_order is not None and not callable(self.epoch_order):
            raise TypeError(f"epoch_order: expected a function of the epoch number, got "
                            f"{self.epoch_order!r}")
        if self.optimizer == "lbfgs":
            check_lbfgs(self)
        elif not isinstance(self.optimizer, Optimizer) and self.lr is None:
            raise TypeError("train: pass lr (the learning rate)")
        # (the optimiser's own settings are checked when the run makes it: new_optimizer)
        return replace(self, kernel=kernel) if kernel != self.kernel else self

    @property
    def bfloat16(self) -> bool:
        """Whether the run computes in bfloat16 (``dtype="bfloat16"``, or a bfloat16 rung named
        as the kernel): float32 master weights, the data rounded once."""
        return kernels.bf16.is_bfloat16(self.dtype) or self.kernel in kernels.BF16

    def new_optimizer(self) -> Optimizer:
        """The run's optimiser: the one passed (its settings and state continue), else a new
        one from the settings (``"lbfgs"`` has none: ``training.lbfgs`` runs it)."""
        if isinstance(self.optimizer, Optimizer):
            return self.optimizer
        if self.optimizer == "lbfgs":
            raise ValueError("optimizer: 'lbfgs' is not a step optimiser; train() runs it "
                             "through fastnn.training.lbfgs")
        if self.lr is None:
            raise TypeError("train: pass lr (the learning rate)")
        return Optimizer(self.optimizer, self.lr, alpha=self.alpha, momentum=self.momentum,
                         nesterov=self.nesterov, beta1=self.beta1, beta2=self.beta2,
                         eps=self.eps, lazy=self.lazy)


# train's options that have no meaning for a full-batch quasi-Newton run, and why
_NOT_FOR_LBFGS = {
    "batch_size": "it takes the whole training set each evaluation",
    "validation_data": "no validation", "validation_fraction": "no validation",
    "early_stopping": "it stops on tol (its gradient's size)",
    "checkpoint": "its runs are not checkpointed", "resume": "its runs are not checkpointed",
    "epoch_callback": "an iteration is not an epoch of steps",
    "epoch_order": "it takes the whole training set each evaluation",
    "whole_loop": "its iterations run from Python",
    "lazy": "its steps take the whole gradient",
}


# Why L-BFGS is not run in bfloat16 (train, the command line and the estimators say the same).
LBFGS_BF16 = ("dtype='bfloat16': 'lbfgs' needs gradients exact to the parameters' precision "
              "(its line search and curvature pairs); bfloat16 trains with 'adam' or 'sgd'")


def check_lbfgs(opts) -> None:
    """The options ``train(optimizer="lbfgs")`` refuses, named with the reason."""
    if opts.bfloat16:
        raise ValueError(LBFGS_BF16)
    for name, why in _NOT_FOR_LBFGS.items():
        value = getattr(opts, name)
        if value not in (None, False):
            raise ValueError(f"{name}: optimizer='lbfgs' does not take it ({why})")
    if opts.momentum or opts.nesterov:
        raise ValueError("momentum: optimizer='lbfgs' has none (a quasi-Newton method)")
    if opts.lr is not None:
        raise ValueError("lr: optimizer='lbfgs' takes no learning rate (its line search sets "
                         "each step); leave it out")


def check_tol(tol) -> float:
    if not isinstance(tol, (int, float, np.floating)) or isinstance(tol, bool) or not tol >= 0:
        raise ValueError(f"tol: expected a number >= 0, got {tol!r}")
    return float(tol)


def check_fraction(fraction, name="validation_fraction") -> float:
    f = fraction
    if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 < f < 1.0:
        raise ValueError(f"{name}: expected a number in (0, 1), got {f!r}")
    return float(f)


def check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise TypeError(f"seed: expected a non-negative integer or None, got {seed!r}")
    return seed


def check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"threads: expected a positive integer, got {threads!r}")
    if threads < 1:
        raise ValueError(f"threads: expected a positive integer, got {threads}")
    return int(threads)


_NAMES = frozenset(f.name for f in fields(Options))
