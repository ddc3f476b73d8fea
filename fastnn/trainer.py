"""The old home of ``fastnn.train``, now the package ``fastnn.training`` (one module a part):
these names still work from here."""
from .training import (DivergenceError, DivergenceWarning, Options, RunConfig,  # noqa: F401
                       TrainingInterrupted, TrainResult, train)
from .training.loop import BLOCK_SECONDS, PROBE_STEPS, next_stop  # noqa: F401
from .training.plan import choose_dual, choose_variant  # noqa: F401
from .training.setup import split, split_rows  # noqa: F401
