"""Shared helpers: problems of any shape/dtype/layout, and the tolerance every kernel test uses."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

import fastnn
from fastnn.profiling.problems import problem

# kernel="auto" remembers its choices on disk: keep the tests' choices out of the user's cache.
os.environ["FASTNN_TUNE_DIR"] = tempfile.mkdtemp(prefix="fastnn-tests-tune-")
# auto's first runs on a cold cache would start on numpy while a child process compiles
# (fastnn/auto/build.py): what ran would depend on timing.  Off here; tests/test_background_build.py
# turns it on where it is the subject.
os.environ["FASTNN_BACKGROUND_COMPILE"] = "0"

# The concrete variants that the parametrised tests run, from the registry (auto resolves to one
# of them and has its own tests, since it measures before it first runs).
VARIANTS = fastnn.kernels.names()

DTYPES = [np.float32, np.float64]

# Unit roundoff of each dtype.
UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}

# (m, n, h, k): the all-ones case, primes, sizes that are not multiples of any block size (the
# naive kernels' 16-row weight blocks, SIMD widths of 8/16), k == 1, and m > 384 so that BLAS
# splits the x.T @ dz1 reduction into several blocks.
SHAPES = [
    (1, 1, 1, 1),
    (2, 3, 5, 1),
    (3, 1, 7, 2),
    (13, 31, 17, 11),
    (17, 33, 1, 3),
    (7, 97, 129, 5),
    (64, 1000, 100, 10),
    (521, 37, 23, 2),
]

LAYOUTS = ["C", "F", "strided"]

# Variants whose results are bitwise reproducible: the same numbers for the same inputs whatever
# the arrays' memory alignment, the run or the thread count (their ``bitwise`` fact).  The
# BLAS-backed variants inherit BLAS's summation order, which may depend on alignment and threads
# (MKL's does, unless MKL_CBWR is set), so they promise agreement to rounding only.
BITWISE = {v.name for v in fastnn.kernels.variants(reference=True) if v.bitwise}
# Variants with compiled training loops (whole_loop), each checked bitwise against its Python loop.
WHOLE_LOOP = [v.name for v in fastnn.kernels.variants() if v.whole_loop]

# --- How results are compared: the rule every test follows ----------------------------------------
#
# 1. Bitwise (np.testing.assert_array_equal) where the arithmetic is the same: the same variant
#    on the same inputs, repeated, in the same process and thread count; a compiled training
#    loop against its Python loop; a resumed run against an uninterrupted one; the ranks of one
#    MPI job with each other; and for the ``BITWISE`` variants also across layouts, alignment
#    and thread counts.
# 2. To rounding, one step (``tolerance``): any two summation orders of the same step -- two
#    variants, a variant and the float64 reference, two BLAS kernels (OpenBLAS's AVX2 and AVX-512
#    ones, MKL's), one BLAS at two alignments or thread counts -- agree within the worst-case
#    bound 2 (n + h + k + m) u relative to the largest entry.  The bound holds for every order,
#    so it does not depend on which BLAS or which CPU the suite runs on.
# 3. To rounding, a run of T steps (``run_tolerance``, ``assert_runs_close``): T times the step
#    bound.  Each step adds at most one step's rounding, and what earlier steps left behind is
#    carried along, not amplified, *provided the run does not amplify differences*.  A run
#    that diverges does (issue 24: a last-bit difference between two BLAS kernels grew past
#    the bound in four epochs of a run whose loss went 7.8 -> 1.9e28), so ``assert_runs_close``
#    first checks that the run it compares against converges (``assert_non_expanding``) and
#    fails, saying so, when it does not: compare a converging run, or only its converging part.
# 4. To rounding, a run that amplifies by construction (``response_tolerance``): L-BFGS builds its
#    curvature pairs from differences of gradients and its line search branches, so a difference
#    of a few units in the last place can grow by orders of magnitude although its loss falls
#    (measured on scikit-learn's own digits runs: a 1e-13 relative change of the data moved the
#    parameters 1e-13 in one, 3.7e-11 in a Poisson run, 340x; fastnn against scikit-learn
#    differed 3.1e-12 there, past rule 3's 4.3e-12 on another CPU's kernels).  The bound is the
#    run's own measured response: the run compared against, repeated with its data scaled entry
#    by entry by 1 +- rule 2's bound (random signs, a few draws), moves its parameters by as much
#    as every evaluation's rounding difference can, to first order; never less than rule 3's.
#
# No comparison uses a tolerance picked because it passed on one machine: where a test needs
# one that is not derived here, the reason is written beside it.  The suite runs on AVX-512 and
# AVX2 kernels both (.ci/run: the tests marked ``rounding`` again with the AVX2 kernels forced).


# The kernels' own exp, tanh and logistic (kernels/common/activations.py) are within this many
# units in the last place of the exact values (measured: 4.5 in float64, 3.2 in float32; asserted
# by test_activations_and_losses): a quantity that goes through an activation and its derivative
# carries up to twice that on top of rule 2's bound.
ACTIVATION_ULPS = 8


def tolerance(dtype, m, n, h, k) -> float:
    """Allowed max|got - ref| / max|ref| for any quantity of one step (rule 2).

    Every quantity is a chain of dot products whose lengths add up to at most ``n + h + k + m``
    (z1: n, z2: h, dz1: k, the batch sums for dw/db: m).  The first-order worst-case rounding
    bound of a length-K dot product is K*u*sum|a_i*b_i| (Higham, Accuracy and Stability of
    Numerical Algorithms, Thm 3.5), and the reference (float64 from the same inputs) contributes
    its own share, so 2*(n + h + k + m)*u, relative to the largest entry, bounds what any summation
    order may give; errors in practice are about sqrt of that.
    """
    return 2 * (n + h + k + m) * UNIT_ROUNDOFF[np.dtype(dtype)]


def run_tolerance(dtype, steps, *lengths) -> float:
    """Allowed relative difference after ``steps`` steps of a non-expanding run (rule 3):
    ``steps`` times the one-step bound for dot products whose lengths sum to ``sum(lengths)``
    (``m, n, h, k`` of a step, plus any further length such as the dual form's ``M``)."""
    return steps * 2 * sum(lengths) * UNIT_ROUNDOFF[np.dtype(dtype)]


# The run a comparison leans on must not grow: its loss ends no higher than it starts (the
# means of the first and last quarter of the steps) and no step's loss is over GROWTH times the
# start's (minibatches of a few rows scatter a few-fold around the mean; a diverging run
# passes any factor within a few steps).
GROWTH = 10.0


def assert_non_expanding(losses, what="the run"):
    """The premise of rule 3: ``losses`` (a run's, in step order) are finite and do not grow."""
    losses = np.asarray(losses, np.float64)
    assert losses.size and np.isfinite(losses).all(), f"{what}: a loss is not finite"
    q = max(1, losses.size // 4)
    start, end = float(losses[:q].mean()), float(losses[-q:].mean())
    assert end <= start and losses.max() <= GROWTH * start, (
        f"{what}: its loss goes from {start:.4g} to {end:.4g} (max {losses.max():.4g}): the run "
        f"amplifies differences, so no per-step rounding bound holds along it (tests/conftest.py, "
        f"rule 3); compare a run that converges")


def assert_runs_close(got, want, tol, *, what="run", val=True):
    """Two runs equal to rounding (rule 3): ``got`` and ``want`` are ``TrainResult``s or
    ``(losses, params)`` pairs; ``want`` (the run compared against) must be non-expanding.
    Losses within ``tol`` relative to each loss; params within ``tol`` relative to each
    array's largest entry; validation losses too where both runs have them."""
    def parts(r):
        if isinstance(r, tuple):
            return np.asarray(r[0], np.float64), r[1], np.empty(0)
        return r.losses, r.params, r.val_losses

    (gl, gp, gv), (wl, wp, wv) = parts(got), parts(want)
    assert_non_expanding(wl, f"the {what} compared against")
    assert gl.shape == wl.shape, f"{what}: {gl.size} steps, against {wl.size}"
    np.testing.assert_allclose(gl, wl, rtol=tol, err_msg=f"{what}: losses")
    if val and gv.size and wv.size:
        np.testing.assert_allclose(gv, wv, rtol=tol, err_msg=f"{what}: validation losses")
    for name, p, r in zip(fastnn.Params._fields, gp, wp):
        assert_close(p, r, tol, f"{what}: {name}")


def perturbed(x, eps, rng):
    """``x`` (dense or scipy.sparse) with every stored entry scaled by ``1 + eps`` or ``1 - eps``
    (random signs): a new array, ``x`` untouched."""
    if hasattr(x, "tocsr") and not isinstance(x, np.ndarray):
        out = x.copy()
        out.data = out.data * (1.0 + eps * rng.choice([-1.0, 1.0], out.data.shape))
        return out
    x = np.asarray(x)
    return x * (1.0 + eps * rng.choice([-1.0, 1.0], x.shape))


def response_tolerance(fit, x, eps, want, floor, draws=3, seed=0):
    """Rule 4's bound for a run that amplifies: the largest change, relative to each array's
    largest entry, of the arrays ``fit(x')`` returns against ``want`` (``fit(x)``'s) over
    ``draws`` perturbations ``x'`` of ``x`` by ``eps`` (``perturbed``), and at least ``floor``
    (rule 3's bound for the run)."""
    rng = np.random.default_rng(seed)
    worst = float(floor)
    for _ in range(draws):
        for got, ref in zip(fit(perturbed(x, eps, rng)), want):
            ref = np.asarray(ref, np.float64)
            scale = max(float(np.abs(ref).max()), np.finfo(np.float64).tiny)
            worst = max(worst, float(np.abs(np.asarray(got, np.float64) - ref).max()) / scale)
    return worst


def assert_same_numbers(got, want, kernel, tol):
    """Bitwise equal for the BITWISE variants (rule 1), else within ``tol`` (rule 2 or 3: the
    caller's derived bound for the shape and the steps) relative to the largest entry."""
    got, want = np.asarray(got), np.asarray(want)
    if kernel in BITWISE:
        np.testing.assert_array_equal(got, want)
        return
    scale = max(float(np.abs(want).max()), np.finfo(np.float64).tiny) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


def relayout(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``a`` in C order, Fortran order, or as a strided (non-contiguous) view."""
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        assert not view.flags.c_contiguous or a.size <= 1
        return view
    raise ValueError(layout)


def make_problem(m, n, h, k, dtype, seed=0, init="normal"):
    """``fastnn.profiling.problems.problem`` with N(0, 1) params (larger values than He's, so
    rounding shows) drawn from their own seed."""
    return problem((m, n, h, k), dtype, seed, init=init, params_seed=seed + 1)


def assert_close(got, ref, tol, what):
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    scale = max(float(np.abs(ref).max()), np.finfo(np.float64).tiny)
    err = float(np.abs(got - ref).max()) / scale
    assert err <= tol, f"{what}: relative error {err:.3g} > tolerance {tol:.3g}"


def params_as(params, dtype):
    """A float64 (or other dtype) copy of params, never sharing memory with them."""
    return fastnn.Params(*(np.array(p, dtype, copy=True) for p in params))


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture(autouse=True)
def _no_look_at_the_load_carried_over(monkeypatch):
    """Each test's auto runs look at the load themselves (a look is remembered for half a
    second: fastnn/auto/thread_watch.py), so that one test's patched free_cores never leaks."""
    from fastnn.auto import thread_watch

    monkeypatch.setattr(thread_watch, "_seen", (-1e9, 0))


@pytest.fixture(autouse=True)
def _thread_count_restored():
    """A test that sets the process's thread count (``fastnn train --threads 1`` through
    ``cli.main``) must not change it for the tests after it (``auto``'s choices are per
    thread count)."""
    before = fastnn.get_num_threads()
    yield
    if fastnn.get_num_threads() != before:
        fastnn.set_num_threads(before)
