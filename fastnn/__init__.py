"""fastnn: train a two-layer ReLU network on the CPU, fast.

``z1 = x @ w1 + b1``, ``a1 = relu(z1)``, ``z2 = a1 @ w2 + b2``, ``L = (1/m) * sum((z2 - y)**2)``,
plain SGD.  The step runs in fused Numba kernels (``fastnn.kernels``), checked against the plain
numpy reference (``fastnn.reference``).
"""
from . import kernels, reference
from ._version import __version__
from .threads import get_num_threads, set_num_threads
from .api import loss_and_grads, predict, sgd_step, to_bfloat16
from .optim import Optimizer
from .params import Params, init_params
from .training import (DivergenceError, DivergenceWarning, TrainingInterrupted, TrainResult,
                      train)


__all__ = [
    "DivergenceError", "DivergenceWarning", "MLPClassifier", "MLPRegressor", "Optimizer",
    "Params", "TrainResult", "TrainingInterrupted", "get_num_threads", "init_params", "kernels",
    "loss_and_grads", "predict", "reference", "set_num_threads", "sgd_step", "to_bfloat16",
    "train",
    "__version__",
]


def __getattr__(name):
    # The estimators load scikit-learn's base classes when it is installed (~1 s): only on use.
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators

        return getattr(estimators, name)
    if name in ("autotune", "background"):  # the old names of fastnn.auto.choice and .build
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
