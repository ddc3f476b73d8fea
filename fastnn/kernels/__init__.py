"""The kernel variants: each implements the whole step contract and is chosen with ``kernel=NAME``.

``available()`` lists the names; ``get(name)`` returns a ``Variant``.  Adding a variant is writing
its functions and adding one ``_register`` line; the tests and benchmarks pick it up from here.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import numpy as np

from .. import _config, reference

with _config.kernel_cache():  # every compiled kernel is defined while these modules load
    from . import (backward, blas, chunked, forward, fused, losses, numpy_step, optim,  # noqa
                   rowpass, simd, tiled, variants, wide)


class Variant(NamedTuple):
    """One kernel variant: functions over validated arrays (C-contiguous, one float dtype, ``y``
    2-D; ``loss_kind`` is ``losses.SQUARED`` or ``losses.SOFTMAX``)::

        predict(params, x) -> z2
        loss_and_grads(params, x, y, loss_kind=SQUARED, grads=None) -> (L, grads)
        sgd_step(params, x, y, lr, loss_kind=SQUARED) -> L          (params updated in place)
        train_loop(params, x, y, lr, losses, loss_kind=SQUARED, batch=None, start=0,
                   order=None) -> steps

    ``grads``: ``Params`` of arrays to write the gradients into (new ones when None).
    ``train_loop``, where present, runs up to ``len(losses)`` SGD steps in one compiled call (the
    whole-loop mode of ``train``) over consecutive row blocks of ``batch`` rows, starting at block
    ``start`` (``step_loop`` is the same loop in Python); with ``order`` (a permutation of the
    rows) block positions index ``order`` (a shuffled epoch, ``batch_rows``).  A step whose loss
    is not finite makes no update and ends the loop.  ``train_loop_optim(params, x, y,
    optimizer, grads, losses, loss_kind, batch, start, order)``, where present, is the same with
    any ``fastnn.optim.Optimizer`` (gradients into ``grads``, then the optimiser's fused update),
    advancing its state."""

    name: str
    description: str
    predict: Callable
    loss_and_grads: Callable
    sgd_step: Callable
    train_loop: Optional[Callable] = None
    train_loop_optim: Optional[Callable] = None


_REGISTRY: dict[str, Variant] = {}

DEFAULT = "auto"


def _register(name, description, predict, loss_and_grads, sgd_step, train_loop=None,
              train_loop_optim=None):
    _REGISTRY[name] = Variant(name, description, predict, loss_and_grads, sgd_step, train_loop,
                              train_loop_optim)


def _reference_loss_and_grads(params, x, y, loss_kind=losses.SQUARED, grads=None):
    loss, new = reference.loss_and_grads(params, x, y, losses.NAME_OF[loss_kind])
    if grads is None:
        return loss, new
    for g, v in zip(grads, new):
        g[...] = v
    return loss, grads


def _reference_sgd_step(params, x, y, lr, loss_kind=losses.SQUARED):
    return reference.sgd_step(params, x, y, lr, losses.NAME_OF[loss_kind])


_register("reference", "plain numpy, the specification (fastnn.reference)",
          reference.predict, _reference_loss_and_grads, _reference_sgd_step)
_register("numpy", "the careful numpy step (kernels.numpy_step): numpy's BLAS for all four "
          "matmuls, preallocated buffers, in-place updates; the speed baseline, and what auto "
          "falls back to where no compiled variant beats it",
          numpy_step.numpy_predict, numpy_step.numpy_loss_and_grads, numpy_step.numpy_sgd_step)
_register("naive", "Numba prange loops, no BLAS; bias+ReLU, loss+dz2, mask+db1 and the SGD update "
          "fused into the loops",
          variants.naive_predict, variants.naive_loss_and_grads, variants.naive_sgd_step)
_register("fused", "one serial compiled call per step: BLAS gemm for x@w1 (bias via beta=1) and "
          "x.T@dz1 (update via alpha=-lr, beta=1), everything else in one fused row pass",
          variants.fused_predict, variants.fused_loss_and_grads, variants.fused_sgd_step,
          variants.fused_train_loop, variants.fused_train_loop_optim)


def _register_openblas_twin(name):
    """``NAME-openblas``: variant ``name``'s functions with numpy's OpenBLAS as their ``backend``,
    when MKL is the default and numpy's CBLAS can be called.  The same compiled code (the BLAS
    library is a run-time argument): which library is faster depends on the shape (MKL at the
    seed's, numpy's OpenBLAS at 1024x4096x64: 11.7 vs 16.1 ms a step)."""
    if blas.BACKEND != blas.MKL_CBLAS or blas.NUMPY_CBLAS not in blas.AVAILABLE_BACKENDS:
        return
    v = _REGISTRY[name]
    _register(f"{name}-openblas", f"{name}, with numpy's own OpenBLAS instead of MKL",
              *(functools.partial(f, backend=blas.NUMPY_CBLAS)
                for f in (v.predict, v.loss_and_grads, v.sgd_step, v.train_loop,
                          v.train_loop_optim)))


_register_openblas_twin("fused")
_register("fused-wide", "fused with the output layer's three matmuls through BLAS too "
          "(kernels/wide.py): wins where the row pass's one-core matmuls lose (wide output "
          "layers, small h) and compiles faster",
          variants.fused_wide_predict, variants.fused_wide_loss_and_grads,
          variants.fused_wide_sgd_step, variants.fused_wide_train_loop,
          variants.fused_wide_train_loop_optim)
_register_openblas_twin("fused-wide")

_register("tiled", "Numba-native, no BLAS: register-blocked SIMD matmuls (4 x 2-vector tiles of "
          "packed FMAs) with the bias and the SGD update in the tile prologue/epilogue, and the "
          "fused variant's row pass in between",
          variants.tiled_predict, variants.tiled_loss_and_grads, variants.tiled_sgd_step,
          variants.tiled_train_loop, variants.tiled_train_loop_optim)
if blas.threads.available:
    _register("blas", "hidden units in chunks over Numba's threads, single-threaded BLAS gemm inside "
              "each chunk (bias via beta=1, update via alpha=-lr), ReLU/loss/masks fused in loops",
              variants.blas_predict, variants.blas_loss_and_grads, variants.blas_sgd_step,
              variants.blas_train_loop)


def _auto(op):
    target = []  # autotune's function, looked up on the first call: autotune imports this module

    def run(*args):
        if not target:
            from .. import autotune

            target.append(getattr(autotune, "auto_" + op))
        return target[0](*args)

    run.__name__ = "auto_" + op
    return run


_register("auto", "the fastest of the other variants for this (shape, dtype, threads), measured "
          "once and remembered on disk (fastnn.autotune)",
          _auto("predict"), _auto("loss_and_grads"), _auto("sgd_step"), _auto("train_loop"),
          _auto("train_loop_optim"))


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


def step_loop(variant: Variant, params, x, y, lr, losses_out, loss_kind=losses.SQUARED,
              batch=None, start=0, order=None) -> int:
    """``train_loop``'s contract, one ``sgd_step`` call per step from Python: for variants
    without a compiled loop, and the plain definition the compiled loops are tested against."""
    for t in range(losses_out.shape[0]):
        xb, yb = batch_rows(x, y, order, start + t, batch)
        losses_out[t] = variant.sgd_step(params, xb, yb, lr, loss_kind)
        if not np.isfinite(losses_out[t]):
            return t + 1
    return losses_out.shape[0]


def batch_rows(x, y, order, block, batch=None):
    """Minibatch ``block`` of an epoch (``rowpass.minibatch`` in Python; ``batch`` None: the
    whole set) as C-contiguous arrays: ``x[s:e]``, ``y[s:e]`` (views), or with ``order`` the
    rows ``order[s:e]`` (copies)."""
    m = x.shape[0]
    batch = m if batch is None else min(batch, m)
    s = (block % -(-m // batch)) * batch
    e = min(s + batch, m)
    if order is None:
        return x[s:e], y[s:e]
    rows = order[s:e]
    return np.take(x, rows, axis=0), np.take(y, rows, axis=0)


def optim_step_loop(variant: Variant, params, x, y, optimizer, grads, losses_out,
                    loss_kind=losses.SQUARED, batch=None, start=0, order=None) -> int:
    """``train_loop_optim``'s contract from Python: per step ``loss_and_grads`` into ``grads``,
    then ``optimizer.step`` (for variants without a compiled optimiser loop)."""
    for t in range(losses_out.shape[0]):
        xb, yb = batch_rows(x, y, order, start + t, batch)
        value, _ = variant.loss_and_grads(params, xb, yb, loss_kind, grads)
        if not np.isfinite(value):
            losses_out[t] = value
            return t + 1
        losses_out[t] = value + optimizer.step(params, grads)
    return losses_out.shape[0]
