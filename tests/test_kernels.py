"""Every kernel variant against the numpy reference: many shapes, both dtypes, C/F/strided inputs.

The reference runs in float64 on the very values the kernel got (float32 inputs upcast), so the
difference measures the kernel's own rounding; ``conftest.tolerance`` gives the bound.
"""
import numpy as np
import pytest

import fastnn
from fastnn import reference
from conftest import LAYOUTS, SHAPES, UNIT_ROUNDOFF, VARIANTS, assert_close, \
    assert_same_numbers, make_problem, params_as, relayout, tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_predict(kernel, shape, dtype):
    x, _, params = make_problem(*shape, dtype)
    got = fastnn.predict(params, x, kernel=kernel)
    ref = reference.predict(params_as(params, np.float64), x.astype(np.float64))
    assert got.dtype == dtype
    assert_close(got, ref, tolerance(dtype, *shape), "z2")


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_loss_and_grads(kernel, shape, dtype):
    x, y, params = make_problem(*shape, dtype)
    before = params.copy()
    loss, grads = fastnn.loss_and_grads(params, x, y, kernel=kernel)
    ref_loss, ref_grads = reference.loss_and_grads(params_as(params, np.float64),
                                                   x.astype(np.float64), y.astype(np.float64))
    tol = tolerance(dtype, *shape)
    assert isinstance(loss, float)
    assert_close(loss, ref_loss, tol, "loss")
    for name, g, r in zip(fastnn.Params._fields, grads, ref_grads):
        assert g.dtype == dtype
        assert_close(g, r, tol, f"d{name}")
    for p, b in zip(params, before):  # loss_and_grads must not touch the params
        np.testing.assert_array_equal(p, b)


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_sgd_step(kernel, shape, dtype):
    x, y, params = make_problem(*shape, dtype)
    p0 = params_as(params, np.float64)
    ref_loss, ref_grads = reference.loss_and_grads(p0, x.astype(np.float64), y.astype(np.float64))
    # lr makes the largest update 10% of the largest weight: large enough that an error in the
    # update is not hidden by the rounding of w itself.
    lr = 0.1 * max(np.abs(p).max() for p in p0) / max(np.abs(g).max() for g in ref_grads)
    loss = fastnn.sgd_step(params, x, y, lr, kernel=kernel)
    tol = tolerance(dtype, *shape)
    assert_close(loss, ref_loss, tol, "loss")
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    for name, p, q, g in zip(fastnn.Params._fields, params, p0, ref_grads):
        assert p.dtype == dtype
        # what the step did, compared with lr * grad: gradient error plus the rounding of p itself
        err = np.abs((q - p.astype(np.float64)) - lr * g).max()
        bound = lr * tol * np.abs(g).max() + 4 * u * np.abs(q).max()
        assert err <= bound, f"{name}: {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_give_the_same_results(kernel, layout, dtype):
    """F-ordered and strided x, y and params: same numbers as C order, params updated in place."""
    shape = (13, 31, 17, 11)
    x, y, params = make_problem(*shape, dtype)
    lr = 1e-3
    want_z2 = fastnn.predict(params, x, kernel=kernel)
    want_loss, want_grads = fastnn.loss_and_grads(params, x, y, kernel=kernel)
    want_params = params.copy()
    fastnn.sgd_step(want_params, x, y, lr, kernel=kernel)

    xl, yl = relayout(x, layout), relayout(y, layout)
    pl = fastnn.Params(*(relayout(p, layout) for p in params))
    tol = tolerance(dtype, *shape)  # one BLAS at two alignments: two summation orders
    assert_same_numbers(fastnn.predict(pl, xl, kernel=kernel), want_z2, kernel, tol)
    loss, grads = fastnn.loss_and_grads(pl, xl, yl, kernel=kernel)
    assert_same_numbers(loss, want_loss, kernel, tol)
    for g, w in zip(grads, want_grads):
        assert_same_numbers(g, w, kernel, tol)
    loss = fastnn.sgd_step(pl, xl, yl, lr, kernel=kernel)
    assert_same_numbers(loss, want_loss, kernel, tol)
    for p, w in zip(pl, want_params):
        assert_same_numbers(p, w, kernel, tol)


@pytest.mark.parametrize("kernel", VARIANTS)
def test_relu_ties_at_zero(kernel, dtype):
    """Exact zeros in z1 (zero inputs, zero biases): the mask is z1 > 0, so they pass no gradient."""
    x, y, params = make_problem(6, 4, 5, 2, dtype, init="he")
    x[::2] = 0.0  # rows of zeros give z1 == b1 == 0 exactly
    ref_loss, ref_grads = reference.loss_and_grads(params_as(params, np.float64),
                                                   x.astype(np.float64), y.astype(np.float64))
    loss, grads = fastnn.loss_and_grads(params, x, y, kernel=kernel)
    tol = tolerance(dtype, 6, 4, 5, 2)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r, tol, "grad")


@pytest.mark.parametrize("kernel", VARIANTS)
def test_y_may_be_1d_when_k_is_1(kernel, dtype):
    x, y, params = make_problem(9, 4, 3, 1, dtype)
    a = fastnn.loss_and_grads(params, x, y, kernel=kernel)
    b = fastnn.loss_and_grads(params, x, y[:, 0], kernel=kernel)
    assert_same_numbers(a[0], b[0], kernel, tolerance(dtype, 9, 4, 3, 1))


@pytest.mark.parametrize("kernel", VARIANTS)
def test_inputs_are_converted_to_the_params_dtype(kernel, dtype):
    """ints, lists and the other float dtype are computed in the params' dtype."""
    _, _, params = make_problem(3, 2, 4, 1, dtype)
    x_int = np.array([[1, 2], [3, -4], [0, 5]])
    y_list = [0.5, -1.0, 2.0]
    loss, grads = fastnn.loss_and_grads(params, x_int.tolist(), y_list, kernel=kernel)
    other = np.float64 if dtype == np.float32 else np.float32
    loss2, _ = fastnn.loss_and_grads(params, x_int.astype(other), np.array(y_list, other),
                                     kernel=kernel)
    assert grads.w1.dtype == dtype
    assert_same_numbers(loss, loss2, kernel, tolerance(dtype, 3, 2, 4, 1))


# The modules whose compiled code calls BLAS (a "blas" in their pool): each is built with every
# BLAS backend found here.
BLAS_MODULES = [module for module in fastnn.kernels.LADDER
                if "blas" in getattr(module, "SPEC", {}).get("pool", "")]


@pytest.mark.parametrize("module", BLAS_MODULES, ids=lambda module: module.SPEC["name"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_each_blas_backend(module, shape, dtype):
    """Every way into BLAS found here (MKL's or numpy's CBLAS, scipy's Fortran BLAS) gives the
    reference's numbers, in every variant that calls BLAS.  All are linked in; the backend is a
    run-time argument, so the same compiled code runs with each."""
    from fastnn.kernels.common import gemm
    from fastnn.kernels.variant import compiled_variant

    x, y, params = make_problem(*shape, dtype)
    ref_loss, ref_grads = reference.loss_and_grads(params_as(params, np.float64),
                                                   x.astype(np.float64), y.astype(np.float64))
    ref_z2 = reference.predict(params_as(params, np.float64), x.astype(np.float64))
    tol = tolerance(dtype, *shape)
    assert gemm.SCIPY_F77 in gemm.AVAILABLE_BACKENDS and gemm.BACKEND in gemm.AVAILABLE_BACKENDS
    for backend in gemm.AVAILABLE_BACKENDS:
        variant = compiled_variant(**dict(module.SPEC, backend=backend))
        loss, grads = variant.loss_and_grads(params, x, y)
        assert_close(loss, ref_loss, tol, f"loss, backend {backend}")
        for name, g, r in zip(fastnn.Params._fields, grads, ref_grads):
            assert_close(g, r, tol, f"d{name}, backend {backend}")
        assert_close(variant.predict(params, x), ref_z2, tol, f"z2, backend {backend}")
