"""The kernel variants, one module a rung of the optimisation ladder, and their registry.

    reference_step  0  fastnn.reference, the specification
    numpy_step      1  the careful numpy step: preallocated buffers, ``out=``, in-place updates
    naive           2  fusion in plain Numba prange loops, no BLAS
    tiled           3  a register-blocked SIMD matmul in Numba, fusions in its prologue/epilogue
    fused           4  BLAS called from compiled code, the rest in one serial row pass
    fused_wide      5  all five matmuls through BLAS, the elementwise work in passes between
    chunked         6  hidden units in chunks over Numba's threads, 1-thread BLAS in each
    dual            7  training in the span of the data (fewer rows than features): a form of a
                       whole training run, not a per-step variant
    sparse          8  CSR input: the first layer over the stored entries only (its ``x`` is
                       sparse, so it is listed apart: ``SPARSE``, not ``variants()``)
    bf16            9  the two big matmuls in bfloat16 on AVX512_BF16's vdpbf16ps, float32
                       master weights (its ``x`` is bfloat16: ``BF16``, not ``variants()``), and
                       its exact emulation for any CPU

Each module declares its ``VARIANTS`` (``variant.Variant``: the step contract and the facts the
tests, the benchmarks and ``auto`` read) and, for a form of a whole run, its ``FORMS``
(``variant.TrainingForm``); the registry is the list of those modules, and adding a rung is
adding a module and a line to ``LADDER``.  ``common/`` holds the shared building blocks.
``kernel="auto"`` is not a variant: ``fastnn.auto.choice.resolve`` turns it into one.

``docs/optimisation.md`` walks the ladder, with what each rung bought.
"""
from __future__ import annotations

import warnings

from . import jit

# Every compiled kernel is defined while these modules load, and Numba fixes a function's cache
# folder when it is decorated: so every module of the kernels, the shared blocks of common/
# included (variant imports common/gemm), is first imported inside this block, and nothing is
# ever cached next to the sources (a read-only install, a stale cache: tests/test_cache_and_registry.py).
with jit.cache_location():
    from .variant import TrainingForm, Variant
    from . import (bf16, chunked, dual, fused, fused_wide, naive, numpy_step, reference_step,
                   sparse, tiled)
    from .common import mt19937  # (the estimators' Glorot draw)

LADDER = (reference_step, numpy_step, naive, tiled, fused, fused_wide, chunked, dual, sparse,
          bf16)

_REGISTRY: dict[str, Variant] = {v.name: v for module in LADDER for v in module.VARIANTS}
# The rungs for sparse input (``kernels/sparse.py``): ``x`` a ``sparse.SparseRows``, never a
# dense array, so no dense test or benchmark runs them; sparse input runs nothing else.
SPARSE: dict[str, Variant] = {v.name: v for module in LADDER
                              for v in getattr(module, "SPARSE_VARIANTS", ())}
# The bfloat16 rungs (``kernels/bf16.py``): ``x`` a ``bf16.Bf16Data``, params float32; what
# ``dtype="bfloat16"`` runs, and nothing else does.
BF16: dict[str, Variant] = {v.name: v for module in LADDER
                            for v in getattr(module, "BF16_VARIANTS", ())}
FORMS: dict[str, TrainingForm] = {f.name: f for module in LADDER
                                  for f in getattr(module, "FORMS", ())}

AUTO = "auto"  # resolved to a variant per problem by fastnn.auto.choice
DEFAULT = AUTO
# Names kernel= takes that are forms of a whole training run, not a step: ``train`` runs them,
# ``predict`` and ``loss_and_grads`` (one batch, no training set) run their ``step_variant``.
TRAINING_FORMS = tuple(FORMS)
# The primary route: what auto compiles first and measures always, what a run that started on
# numpy continues on, and the step variant of the training forms.
PRIMARY = "fused-wide"
# Old names that still work, with a warning.
ALIASES = {"blas": "chunked"}


def variants(*, reference: bool = False) -> list[Variant]:
    """The concrete variants, in ladder order (``reference`` included on request)."""
    return [v for v in _REGISTRY.values() if reference or v.name != "reference"]


def names(*, reference: bool = False) -> list[str]:
    """The names of ``variants()``: the list every parametrised test and benchmark runs."""
    return [v.name for v in variants(reference=reference)]


def available() -> list[str]:
    """Every name ``kernel=`` accepts: the variants, ``reference``, the training forms, the
    sparse and bfloat16 rungs and ``auto``."""
    return names(reference=True) + list(TRAINING_FORMS) + list(SPARSE) + list(BF16) + [AUTO]


def get(name) -> Variant:
    """The variant called ``name``; ValueError listing the choices if there is none.  ``auto``
    is not a variant (``fastnn.auto.choice.resolve`` chooses one)."""
    if not isinstance(name, str):
        raise TypeError(f"kernel: expected a name (str), got {name!r}")
    if name in ALIASES:
        warnings.warn(f"kernel {name!r} is now called {ALIASES[name]!r}; the old name will go",
                      FutureWarning, stacklevel=3)
        name = ALIASES[name]
    try:
        return _REGISTRY[name] if name in _REGISTRY else SPARSE.get(name) or BF16[name]
    except KeyError:
        if name == AUTO:
            raise ValueError("kernel: 'auto' is not a variant; fastnn.auto.choice.resolve('auto', "
                             "...) chooses one for a problem") from None
        if name in TRAINING_FORMS:
            raise ValueError(f"kernel: {name!r} is a form of a whole training run (train), not "
                             f"a step variant") from None
        raise ValueError(f"kernel: unknown kernel {name!r}; available: "
                         f"{', '.join(available())}") from None


def ready(name, dtype, optimizers=True) -> bool:
    """Whether ``kernel=name`` runs for ``dtype`` without compiling: numpy code, or every
    compiled function it calls already built for ``dtype``, in this process or in Numba's disk
    cache (``jit.compiled_for``).  ``optimizers=False``: all but the loop of the optimisers
    other than plain SGD (the slowest to compile)."""
    if name in FORMS:
        return all(jit.compiled_for(d, dtype) for d in FORMS[name].dispatchers)
    dispatchers = get(name).dispatchers
    if not optimizers:
        dispatchers = dispatchers[:3]  # step, predict, the plain SGD loop
    return all(jit.compiled_for(d, dtype) for d in dispatchers)


def check_name(name) -> str:
    """The name ``kernel=name`` runs under: ``name`` itself, or for an alias its variant's name
    (with a warning); the error ``get`` raises for a name ``kernel=`` does not accept."""
    if name == AUTO or name in TRAINING_FORMS:
        return name
    return get(name).name
