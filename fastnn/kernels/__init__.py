"""The kernel variants: each implements the whole step contract and is chosen with ``kernel=NAME``.

``available()`` lists the names; ``get(name)`` returns a ``Variant``.  Adding a variant is writing
its functions and adding one ``_register`` line; the tests and benchmarks pick it up from here.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

from .. import _config, reference

with _config.kernel_cache():  # every compiled kernel is defined while these modules load
    from . import backward, blas, chunked, forward, fused, rowpass, simd, tiled, variants  # noqa


class Variant(NamedTuple):
    """One kernel variant.  ``train_loop(params, x, y, lr, losses)``, where present, runs
    ``len(losses)`` full-batch steps in one compiled call (the whole-loop mode of ``train``)."""

    name: str
    description: str
    predict: Callable
    loss_and_grads: Callable
    sgd_step: Callable
    train_loop: Optional[Callable] = None


_REGISTRY: dict[str, Variant] = {}

DEFAULT = "fused"


def _register(name, description, predict, loss_and_grads, sgd_step, train_loop=None):
    _REGISTRY[name] = Variant(name, description, predict, loss_and_grads, sgd_step, train_loop)


_register("reference", "plain numpy, the specification (fastnn.reference)",
          reference.predict, reference.loss_and_grads, reference.sgd_step)
_register("naive", "Numba prange loops, no BLAS; bias+ReLU, loss+dz2, mask+db1 and the SGD update "
          "fused into the loops",
          variants.naive_predict, variants.naive_loss_and_grads, variants.naive_sgd_step)
_register("fused", "one serial compiled call per step: BLAS gemm for x@w1 (bias via beta=1) and "
          "x.T@dz1 (update via alpha=-lr, beta=1), everything else in one fused row pass",
          variants.fused_predict, variants.fused_loss_and_grads, variants.fused_sgd_step,
          variants.fused_train_loop)

_register("tiled", "Numba-native, no BLAS: register-blocked SIMD matmuls (4 x 2-vector tiles of "
          "packed FMAs) with the bias and the SGD update in the tile prologue/epilogue, and the "
          "fused variant's row pass in between",
          variants.tiled_predict, variants.tiled_loss_and_grads, variants.tiled_sgd_step,
          variants.tiled_train_loop)
if blas.threads.available:
    _register("blas", "hidden units in chunks over Numba's threads, single-threaded BLAS gemm inside "
              "each chunk (bias via beta=1, update via alpha=-lr), ReLU/loss/masks fused in loops",
              variants.blas_predict, variants.blas_loss_and_grads, variants.blas_sgd_step,
              variants.blas_train_loop)


def _auto(op):
    def run(*args):
        from .. import autotune  # imported late: autotune itself uses this registry

        return getattr(autotune, "auto_" + op)(*args)

    run.__name__ = "auto_" + op
    return run


_register("auto", "the fastest of the other variants for this (shape, dtype, threads), measured "
          "once and remembered on disk (fastnn.autotune)",
          _auto("predict"), _auto("loss_and_grads"), _auto("sgd_step"), _auto("train_loop"))


def available() -> list[str]:
    """The names accepted by ``kernel=``."""
    return list(_REGISTRY)


def get(name) -> Variant:
    """The variant called ``name``; ValueError listing the choices if there is none."""
    if not isinstance(name, str):
        raise TypeError(f"kernel: expected a name (str), got {name!r}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"kernel: unknown kernel {name!r}; available: {', '.join(_REGISTRY)}") \
            from None
