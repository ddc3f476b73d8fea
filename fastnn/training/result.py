"""What a training run returns, and the ways it ends other than by finishing: divergence and
Ctrl-C."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..optim import Optimizer
from ..params import Params


class DivergenceWarning(RuntimeWarning):
    """Training stopped because the loss became NaN or infinite."""


class DivergenceError(ValueError):
    """Raised instead of the warning with ``on_divergence="raise"``; ``.result`` holds the
    ``TrainResult`` with the last finite parameters."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training at a step boundary.  ``.result`` holds the ``TrainResult`` so far
    (its parameters are those after the last step taken); ``.checkpoint`` is the checkpoint
    written there (None when the run had none), from which ``resume=`` continues."""

    def __init__(self, message, result, checkpoint=None):
        super().__init__(message)
        self.result = result
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    """What ``train`` returns.

    ``params``: the trained parameters (new arrays; the ``params`` passed in are not modified);
    with early stopping, the best ones.  ``losses``: float64, ``losses[t]`` is the training loss
    (of its batch, plus the L2 term) before step ``t``.  ``epoch_losses``: the mean of each
    epoch's step losses; ``val_losses``: the validation loss after each epoch (empty without
    validation data).  ``seconds``: wall time of all steps; ``first_step_seconds``: of the first
    one alone (it includes Numba's compile or cache load when the kernel is new to this process).
    ``diverged_at``: the step whose loss was not finite (None if none); ``stopped_early``,
    ``best_epoch``: early stopping's outcome.  ``optimizer`` holds the optimiser state.
    ``kernel``: the name asked for; ``ran``: the variant that ran (for ``"auto"`` its choice,
    made once for the run and kept in its checkpoints, so a resumed run continues with it; the
    last one when the run switched, see ``schedule``).
    """

    params: Params
    losses: np.ndarray
    kernel: str
    dtype: np.dtype
    seconds: float
    first_step_seconds: float
    epoch_losses: np.ndarray = field(default_factory=lambda: np.empty(0))
    val_losses: np.ndarray = field(default_factory=lambda: np.empty(0))
    steps_per_epoch: int = 1
    seed: Optional[int] = None
    diverged_at: Optional[int] = None
    stopped_early: bool = False
    best_epoch: Optional[int] = None
    optimizer: Optional[Optimizer] = None
    ran: Optional[str] = None  # the variant that ran: for kernel="auto", the one it chose
    resumed_from: Optional[int] = None  # the checkpoint's step, for a resumed run
    interrupted: bool = False  # stopped by Ctrl-C (train raises TrainingInterrupted with it)
    ranks: Optional[int] = None  # fastnn.distributed.train: the ranks, and threads per rank
    threads: Optional[int] = None
    # what ran from which step: [(step, kernel, threads), ...]; more than one entry when the run
    # started on numpy while its compiled kernels were built (fastnn/auto/build.py), or changed
    # its thread count (fastnn/auto/thread_watch.py: a probe, a busy machine)
    schedule: list = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def n_steps(self) -> int:
        return len(self.losses)

    @property
    def n_epochs(self) -> int:
        return len(self.epoch_losses)

    @property
    def seconds_per_iter(self) -> float:
        """Mean time of the steps after the first (the first carries compile/cache-load time)."""
        n = len(self.losses)
        if n <= 1:
            return self.seconds
        return (self.seconds - self.first_step_seconds) / (n - 1)
