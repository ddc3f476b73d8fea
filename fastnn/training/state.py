"""A run's state between blocks of steps, and its checkpoint form.

``RunConfig`` is what the steps depend on (a resumed run must match it); ``RunState`` is where
the run is: the step, the losses, the epoch curves, early stopping's bookkeeping, what ran when.
``to_checkpoint`` and ``restore`` turn them into a checkpoint and back, so that a run resumed
from one ends bitwise equal to an uninterrupted run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Optional

import numpy as np

from .. import checkpoint as ckpt_io
from ..optim import ADDED
from ..params import Params


# What a checkpoint written before a setting existed ran with.
_OLDER = {"activation": "relu", "bfloat16": False}


@dataclass(frozen=True)
class RunConfig:
    """The settings a run's steps depend on: a checkpoint records them and a resumed run must
    match them (``RunState.restore``).  ``batch``, ``n_samples`` and ``validation`` (the
    held-out rows, None without) come from the data (``with_data``)."""

    seed: int
    loss: str
    shuffle: bool
    early_stopping: bool
    patience: int
    tol: float
    activation: str = "relu"
    bfloat16: bool = False  # dtype="bfloat16": the bf16 rung's arithmetic
    batch: Optional[int] = None
    n_samples: Optional[int] = None
    validation: Optional[int] = None

    @classmethod
    def of(cls, options, seed: int) -> "RunConfig":
        return cls(seed=seed, loss=options.loss, shuffle=bool(options.shuffle),
                   early_stopping=bool(options.early_stopping), patience=int(options.patience),
                   tol=float(options.tol), activation=options.activation,
                   bfloat16=options.bfloat16)

    def with_data(self, batch, n_samples, validation) -> "RunConfig":
        return replace(self, batch=batch, n_samples=n_samples, validation=validation)

    def as_meta(self) -> dict:
        """The settings as a checkpoint records them (the keys of earlier checkpoints)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class RunState:
    """Where a run is.  ``losses[t]``: the loss before step ``t`` (NaN ahead of ``step``);
    ``best*``, ``bad_epochs``, ``stopped_early``: early stopping's; ``schedule``: ``(step,
    kernel, threads)`` for every change of what ran."""

    total: int
    losses: np.ndarray = None
    step: int = 0
    epoch_losses: list = field(default_factory=list)
    val_losses: list = field(default_factory=list)
    best: float = math.inf
    best_epoch: Optional[int] = None
    best_params: Optional[Params] = None
    bad_epochs: int = 0
    stopped_early: bool = False
    diverged_at: Optional[int] = None
    resumed_from: Optional[int] = None
    interrupted: bool = False
    schedule: list = field(default_factory=list)

    def __post_init__(self):
        if self.losses is None:
            self.losses = np.full(self.total, np.nan)

    def record(self, step, ran, threads) -> None:
        """``schedule``: from ``step`` on, ``ran`` on ``threads`` (when that is a change)."""
        if not self.schedule or self.schedule[-1][1:] != (ran, threads):
            self.schedule.append((step, ran, threads))

    def end_epoch(self, epoch, monitored, cfg: RunConfig, params: Params) -> None:
        """Early stopping after ``epoch``, whose monitored loss is ``monitored`` (the validation
        loss, else the epoch's mean training loss): the best parameters kept, and the run ends
        after ``cfg.patience`` epochs without an improvement by ``cfg.tol``."""
        if not cfg.early_stopping:
            return
        if monitored < self.best - cfg.tol:
            self.best, self.best_epoch, self.bad_epochs = monitored, epoch, 0
            self.best_params = params.copy()
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= cfg.patience:
                self.stopped_early = True

    def to_checkpoint(self, cfg: RunConfig, params, opt, ran, info=None,
                      arrays=None) -> ckpt_io.Checkpoint:
        meta = dict(cfg.as_meta(), epoch_losses=self.epoch_losses, val_losses=self.val_losses,
                    best=self.best if math.isfinite(self.best) else None,
                    best_epoch=self.best_epoch, bad_epochs=self.bad_epochs,
                    stopped_early=self.stopped_early, ran=ran,
                    schedule=[list(e) for e in self.schedule])
        if info is not None:
            meta["info"] = info
        extra = {"best": self.best_params} if self.best_params is not None else {}
        return ckpt_io.Checkpoint(params, self.step, self.losses[:self.step],
                                  dict(opt.hyperparameters(), t=opt.t), dict(opt.state), meta,
                                  extra, arrays or {})

    def restore(self, ck: ckpt_io.Checkpoint, path, cfg: RunConfig, opt) -> None:
        """Continue from checkpoint ``ck`` (read from ``path``): its settings must be this run's
        (a ValueError names the first that differs); the optimiser's step count and state come
        back with it."""
        meta = ck.meta
        for key, value in cfg.as_meta().items():
            if meta.get(key, _OLDER.get(key)) != value:
                raise ValueError(f"resume: checkpoint {path!r} was written with {key}="
                                 f"{meta.get(key)!r}, this run has {key}={value!r}")
        for key, value in opt.hyperparameters().items():
            if ck.optimizer.get(key, ADDED.get(key)) != value:
                raise ValueError(f"resume: checkpoint {path!r} was written with optimizer "
                                 f"{key}={ck.optimizer.get(key)!r}, this run has {value!r}")
        if ck.step > self.total:
            raise ValueError(f"resume: checkpoint {path!r} is at step {ck.step}, past this run's "
                             f"{self.total} steps")
        self.step = self.resumed_from = ck.step
        self.schedule = [tuple(e) for e in meta.get("schedule", [])]
        self.losses[:ck.step] = ck.losses
        opt.t = int(ck.optimizer.get("t", 0))
        opt.state = {k: v.copy() for k, v in ck.optimizer_state.items()}
        self.epoch_losses = list(meta.get("epoch_losses", []))
        self.val_losses = list(meta.get("val_losses", []))
        self.best = meta.get("best") if meta.get("best") is not None else math.inf
        self.best_epoch = meta.get("best_epoch")
        self.bad_epochs = int(meta.get("bad_epochs", 0))
        self.stopped_early = bool(meta.get("stopped_early", False))
        if "best" in ck.extra:
            self.best_params = ck.extra["best"].copy()
