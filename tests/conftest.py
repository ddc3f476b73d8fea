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
# (fastnn/background.py): what ran would depend on timing.  Off here; tests/test_background.py
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
# (MKL's does, unless MKL_CBWR is set), so they promise agreement to a few rounding errors only.
BITWISE = {v.name for v in fastnn.kernels.variants(reference=True) if v.bitwise}
# Variants with compiled training loops (whole_loop), each checked bitwise against its Python loop.
WHOLE_LOOP = [v.name for v in fastnn.kernels.variants() if v.whole_loop]


def assert_same_numbers(got, want, kernel):
    """Bitwise equal for the BITWISE variants, else equal to 64 units of roundoff of the largest
    entry (a few last-bit differences, amplified at most modestly by one step)."""
    got, want = np.asarray(got), np.asarray(want)
    if kernel in BITWISE:
        np.testing.assert_array_equal(got, want)
        return
    u = UNIT_ROUNDOFF[np.result_type(got.dtype, np.float32)]
    scale = max(float(np.abs(want).max()), np.finfo(np.float64).tiny) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=64 * u * scale)


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


def tolerance(dtype, m, n, h, k) -> float:
    """Allowed max|got - ref| / max|ref| for any quantity of the step.

    Every quantity is a chain of dot products whose lengths add up to at most ``n + h + k + m``
    (z1: n, z2: h, dz1: k, the batch sums for dw/db: m).  The first-order worst-case rounding
    bound of a length-K dot product is K*u*sum|a_i*b_i| (Higham, Accuracy and Stability of
    Numerical Algorithms, Thm 3.5), and the reference (float64 from the same inputs) contributes
    its own share, so 2*(n + h + k + m)*u, relative to the largest entry, bounds what any summation
    order may give; errors in practice are about sqrt of that.
    """
    return 2 * (n + h + k + m) * UNIT_ROUNDOFF[np.dtype(dtype)]


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
def _thread_count_restored():
    """A test that sets the process's thread count (``fastnn train --threads 1`` through
    ``cli.main``) must not change it for the tests after it (``auto``'s choices are per
    thread count)."""
    before = fastnn.get_num_threads()
    yield
    if fastnn.get_num_threads() != before:
        fastnn.set_num_threads(before)
