"""Rung 9, `bf16`: the instruction against its specification, the kernels bit for bit against
``bf16.reference_matmul``, the step against ``reference.loss_and_grads_bf16``, and the native
kernel (where the CPU has AVX512_BF16) bit for bit against its emulated twin (everywhere).

Comparison rules (``conftest``): the matmuls are defined to the bit (``common/bf16.py``: pairs in
order, each as ``vdpbf16ps``), so the kernels, native and emulated, equal the numpy
specification bitwise (rule 1), and so do the two twins' whole steps and runs.  The step against
the float64 recipe reference is rule 2 with one addition, for ``dw1`` only: its operand ``dz1`` is
rounded to bfloat16 from the kernel's float32 value, and a float32 difference can move that
rounding by one bfloat16 unit in the last place (``2**-7`` relative), so ``dw1`` is allowed
``2 * 2**-8`` relative to its largest entry beyond rule 2's bound.
"""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import reference
from fastnn.kernels import bf16 as K
from fastnn.kernels.common import bf16 as bf
from conftest import SHAPES, assert_close, params_as, relayout, tolerance

pytestmark = pytest.mark.rounding

NATIVE = bf.NATIVE
needs_native = pytest.mark.skipif(
    not NATIVE, reason="this CPU (or Numba's target) has no AVX512_BF16: the native kernel "
                       "cannot run here; its emulated twin is tested against the same numbers")
MODES = [bf.EMULATED_MODE] + ([bf.NATIVE_MODE] if NATIVE else [])
MODE_IDS = [bf.mode_name(m) for m in MODES]
VARIANTS = ["bf16-emulated"] + (["bf16"] if NATIVE else [])
U_BF16 = 2.0**-8  # bfloat16's unit roundoff (8 significant bits)


def same_bits(a, b, what=""):
    """Bitwise equal, NaNs of any payload counted equal (the instruction and numpy may quiet a
    NaN differently; its value is no number either way)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, what
    both_nan = np.isnan(a) & np.isnan(b)
    bad = ~((a.view(np.uint32) == b.view(np.uint32)) | both_nan)
    assert not bad.any(), f"{what}: {int(bad.sum())} of {a.size} differ, first at " \
                          f"{np.argwhere(bad)[0]}: {a[bad].ravel()[0]!r} against " \
                          f"{np.broadcast_to(b, a.shape)[bad].ravel()[0]!r}"


# --- the rounding and the instruction --------------------------------------------------------------

def _nearest_even(v: float) -> int:
    """The bfloat16 bits nearest to the float32 ``v`` by exact rational comparison (ties to the
    even significand): an independent statement of the rounding."""
    import fractions

    u = int(np.float32(v).view(np.uint32))
    lo = u & 0xFFFF0000
    hi = lo + 0x10000
    f = fractions.Fraction(float(np.float32(v)))
    flo = fractions.Fraction(float(np.uint32(lo).view(np.float32)))
    # past the largest bfloat16 the next value is 2**128 (the exponent continued), which
    # rounds to infinity
    fhi = (fractions.Fraction(float(np.uint32(hi).view(np.float32)))
           if (hi & 0x7F800000) != 0x7F800000 else fractions.Fraction(2**128) * (1 if f > 0 else -1))
    if abs(f - flo) < abs(fhi - f) or (abs(f - flo) == abs(fhi - f) and (lo >> 16) % 2 == 0):
        return lo
    return hi


def test_rounding_is_to_nearest_even_with_inf_and_nan_kept():
    rng = np.random.default_rng(0)
    ties = np.array([0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0x7F7FFFFF, 0x7F7F8000,
                     0x7F7F7FFF, 0x00008000, 0x00018000, 0x80008000], np.uint32).view(np.float32)
    vals = np.concatenate([ties, rng.standard_normal(500).astype(np.float32),
                           rng.integers(0, 2**32, 500, dtype=np.uint64).astype(np.uint32)
                           .view(np.float32)])
    finite = vals[np.isfinite(vals)]
    got = reference.bfloat16_bits(finite)
    want = np.array([_nearest_even(v) for v in finite], np.uint64) & 0xFFFFFFFF
    np.testing.assert_array_equal(got, want.astype(np.uint32))
    special = np.array([np.inf, -np.inf, np.nan, -np.nan], np.float32)
    out = reference.bfloat16(special)
    assert np.isposinf(out[0]) and np.isneginf(out[1]) and np.isnan(out[2:]).all()
    nan_like = np.array([0x7F800001, 0xFF80FFFF, 0x7FFFFFFF], np.uint32).view(np.float32)
    assert np.isnan(reference.bfloat16(nan_like)).all()  # not rounded into inf or the sign


def test_rounding_is_torchs():
    """PyTorch's float32 -> bfloat16 conversion, an outside oracle where it is installed."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    vals = np.concatenate([rng.standard_normal(2000).astype(np.float32),
                           rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32)
                           .view(np.float32)])
    finite = vals[np.isfinite(vals)]
    theirs = torch.from_numpy(finite.copy()).to(torch.bfloat16).to(torch.float32).numpy()
    same_bits(reference.bfloat16(finite), theirs, "torch's rounding")


def fma32(a, b, c):
    """``a * b + c`` for float32 arrays with one rounding to float32, exactly: the product is
    exact in float64, the sum's rounding error is recovered (TwoSum) and the float64 sum rounded
    to odd, which then rounds correctly to float32 (53 >= 24 + 2)."""
    p = np.asarray(a, np.float64) * np.asarray(b, np.float64)
    c = np.asarray(c, np.float64)
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    even = (s.view(np.uint64) & 1) == 0
    toward = np.where(err > 0, np.inf, -np.inf)
    odd = np.where((err != 0) & even, np.nextafter(s, toward), s)
    return odd.astype(np.float32)


def _words(rng, shape, spread=None):
    """Random bfloat16 pairs: every exponent (zeros, denormals, infinities, NaNs included) when
    ``spread`` is None, else exponents within ``spread`` of 1."""
    e = (rng.integers(0, 256, (2,) + shape) if spread is None
         else np.clip(127 + rng.integers(-spread, spread + 1, (2,) + shape), 0, 254))
    halves = (rng.integers(0, 2, (2,) + shape) << 15) | (e << 7) | rng.integers(0, 128, (2,) + shape)
    return ((halves[1] << 16) | halves[0]).astype(np.uint32)


def _accumulators(rng, shape):
    return (rng.standard_normal(shape) * 2.0 ** rng.integers(-140, 30, shape)).astype(np.float32)


@pytest.fixture(scope="module")
def dp_many():
    from numba import njit
    from fastnn.kernels.common.simd import vload2, vstore2

    @njit
    def run(mode, acc, a, b, out):
        for i in range(acc.shape[0]):
            vstore2(out, i, 0, bf.vdp(mode, vload2(acc, i, 0), vload2(a, i, 0), vload2(b, i, 0)))
    return run


# Cases where the definition decides: (accumulator, a's (lo, hi), b's (lo, hi)).
CRAFTED = {
    # the odd (high) product first: 1 + 2**-24 ties back to 1, then - 1 gives 0; the even one
    # first would give 2**-24
    "odd-first": (1.0, (1.0, 2.0**-12), (-1.0, 2.0**-12)),
    "denormal-input-read-as-zero": (1.0, (2.0**-130, 1.0), (2.0**20, 0.0)),
    "denormal-accumulator-read-as-zero": (2.0**-140, (0.0, 0.0), (0.0, 0.0)),
    "denormal-result-flushed": (2.0**-126, (-2.0**-63, 0.0), (2.0**-64, 0.0)),
    "negative-denormal-flushed-to-minus-zero": (-2.0**-126, (2.0**-63, 0.0), (2.0**-64, 0.0)),
    "overflow-to-inf": (3.0e38, (2.0**64, 0.0), (2.0**64, 0.0)),
    "inf-minus-inf-is-nan": (np.inf, (-1.0, 0.0), (np.inf, 0.0)),
}


def _crafted():
    acc = np.zeros((len(CRAFTED), 16), np.float32)
    a = np.zeros((len(CRAFTED), 16), np.uint32)
    b = np.zeros((len(CRAFTED), 16), np.uint32)
    for i, (c, (alo, ahi), (blo, bhi)) in enumerate(CRAFTED.values()):
        acc[i] = c
        a[i] = reference.bfloat16_bits(np.float32(ahi)) | (reference.bfloat16_bits(
            np.float32(alo)) >> 16)
        b[i] = reference.bfloat16_bits(np.float32(bhi)) | (reference.bfloat16_bits(
            np.float32(blo)) >> 16)
    return acc, a, b


def test_the_specification_of_the_instruction_on_the_cases_that_decide():
    acc, a, b = _crafted()
    out = bf.reference_dp(acc, a, b)[:, 0]
    want = {"odd-first": 0.0, "denormal-input-read-as-zero": 1.0,
            "denormal-accumulator-read-as-zero": 0.0, "denormal-result-flushed": 0.0,
            "negative-denormal-flushed-to-minus-zero": -0.0, "overflow-to-inf": np.inf}
    for i, name in enumerate(CRAFTED):
        if name in want:
            assert out[i] == want[name] and np.signbit(out[i]) == np.signbit(want[name]), name
    assert np.isnan(out[list(CRAFTED).index("inf-minus-inf-is-nan")])


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_vdp_is_the_specification_bit_for_bit(mode, dp_many):
    """On random pairs of every exponent (denormals, infinities and NaNs included), on pairs
    near 1, and on the cases that decide the order and the denormal rules: the instruction
    (where this CPU has it) and the emulation equal ``reference_dp``."""
    rng = np.random.default_rng(1)
    for spread in (None, 130, 10, 2):
        a, b = _words(rng, (4000, 16), spread), _words(rng, (4000, 16), spread)
        acc = _accumulators(rng, (4000, 16))
        out = np.empty_like(acc)
        dp_many(mode, acc, a, b, out)
        same_bits(out, bf.reference_dp(acc, a, b), f"spread {spread}")
    acc, a, b = _crafted()
    out = np.empty_like(acc)
    dp_many(mode, acc, a, b, out)
    same_bits(out, bf.reference_dp(acc, a, b), "crafted cases")


# --- the matmuls -----------------------------------------------------------------------------------

MATMUL_SHAPES = [s[:3] for s in SHAPES] + [(9, 16, 33), (128, 784, 512)]


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("shape", MATMUL_SHAPES, ids=["x".join(map(str, s)) for s in MATMUL_SHAPES])
def test_matmuls_are_the_specification_bit_for_bit(shape, mode):
    """``forward`` (with the bias), ``weight_grad`` (stored, and fused with the update and the
    next bfloat16 copy of ``w1``) and the packings, against ``reference_matmul`` on the same
    bfloat16 operands, at shapes that are no multiple of any tile or vector."""
    m, n, h = shape
    rng = np.random.default_rng(2)
    x, dz1 = rng.standard_normal((m, n)), rng.standard_normal((m, h))
    w1, b1 = rng.standard_normal((n, h)).astype(np.float32), rng.standard_normal(h)
    b1 = b1.astype(np.float32)
    xw = bf.words_of(x)
    P, Kn, Km = K.panels(h), K.half(n), K.half(m)
    wp = np.full((P * Kn, K.NR), 0xDEAD, np.uint32)  # every word must be written
    K.pack_pairs(w1, wp)
    z1 = np.empty((m, h), np.float32)
    K.forward(xw, wp, b1, z1, mode)
    w_words = bf.words_of(w1.T).T.copy()  # (ceil(n/2), h): w1's pairs along its rows
    same_bits(z1, bf.reference_matmul(xw, w_words, np.broadcast_to(b1, (m, h))), "forward")
    xt = np.full((n, Km), 0xDEAD, np.uint32)
    K.transpose_pairs(xw, n, xt)
    np.testing.assert_array_equal(xt, bf.words_of(x.T))
    gp = np.full((P * Km, K.NR), 0xDEAD, np.uint32)
    K.pack_pairs(dz1.astype(np.float32), gp)
    dw1 = bf.reference_matmul(bf.words_of(x.T), bf.words_of(dz1.T).T.copy(),
                              np.zeros((n, h), np.float32))
    got = np.full((n, h), np.nan, np.float32)
    K.weight_grad(xt, gp, got, wp, 1.0, False, mode)
    same_bits(got, dw1, "dw1")
    w, wp2 = w1.copy(), wp.copy()
    K.weight_grad(xt, gp, w, wp2, -0.25, True, mode)
    same_bits(w, fma32(np.float32(-0.25), dw1, w1), "w1 - lr * dw1, one rounding")
    repacked = np.empty_like(wp)
    K.pack_pairs(w, repacked)
    np.testing.assert_array_equal(wp2, repacked)


def test_update_is_one_fused_rounding():
    """``w1 += alpha * dw1`` rounds once (a fused multiply-add), as the other rungs' tile
    epilogues: checked where ``alpha * dw1`` is not exact in float32."""
    m, n, h = 4, 6, 20
    rng = np.random.default_rng(3)
    x, dz1 = rng.standard_normal((m, n)), rng.standard_normal((m, h)).astype(np.float32)
    w1 = rng.standard_normal((n, h)).astype(np.float32)
    xw = bf.words_of(x)
    xt = np.empty((n, K.half(m)), np.uint32)
    K.transpose_pairs(xw, n, xt)
    gp = np.empty((K.panels(h) * K.half(m), K.NR), np.uint32)
    K.pack_pairs(dz1, gp)
    dw1 = np.empty((n, h), np.float32)
    K.weight_grad(xt, gp, dw1, np.empty((K.panels(h) * K.half(n), K.NR), np.uint32), 1.0,
                  False, bf.EMULATED_MODE)
    w = w1.copy()
    K.weight_grad(xt, gp, w, np.empty((K.panels(h) * K.half(n), K.NR), np.uint32), -0.1, True,
                  bf.EMULATED_MODE)
    np.testing.assert_array_equal(w, fma32(np.float32(-0.1), dw1, w1))
    assert not np.array_equal(w, (np.float32(-0.1) * dw1) + w1)  # where two roundings differ


# --- the step ---------------------------------------------------------------------------------------

STEP_SHAPES = [(1, 1, 1, 1), (2, 3, 5, 1), (13, 31, 17, 11), (7, 97, 129, 5), (64, 1000, 100, 10),
               (129, 37, 33, 2)]


def _problem(shape, loss="squared", seed=0, init="normal"):
    m, n, h, k = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n)).astype(np.float32)
    y = (np.eye(k)[rng.integers(0, k, m)] if loss == "softmax" else
         (rng.random((m, k)) < 0.5).astype(float) if loss == "logistic" else
         rng.poisson(1.0, (m, k)).astype(float) if loss == "poisson" else
         rng.standard_normal((m, k))).astype(np.float32)
    params = fastnn.init_params(n, h, k, dtype=np.float32, seed=seed + 1, init=init)
    params.b1[:] = rng.standard_normal(h)
    return x, y, params


# Every activation on the emulation (it runs everywhere); the instruction, which the emulation
# equals bit for bit (test_native_and_emulated_are_the_same_bits), on two of them: each pair
# of a variant and an activation is a compile of its own.
RECIPE_CASES = ([("bf16-emulated", a) for a in ("relu", "tanh", "logistic", "identity")]
                + [("bf16", a) for a in ("relu", "tanh") if NATIVE])


@pytest.mark.parametrize("variant, activation", RECIPE_CASES)
@pytest.mark.parametrize("shape", STEP_SHAPES, ids=["x".join(map(str, s)) for s in STEP_SHAPES])
def test_step_is_the_bf16_recipe(shape, activation, variant):
    """Loss, gradients, predictions and the SGD step against ``reference.loss_and_grads_bf16``
    (rule 2, plus ``dw1``'s re-rounding: the module docstring)."""
    for loss in (["squared", "softmax"] if activation == "relu" else ["logistic"]):
        x, y, params = _problem(shape, loss)
        tol = tolerance(np.float32, *shape)
        got, grads = fastnn.loss_and_grads(params, x, y, kernel=variant, loss=loss,
                                           activation=activation)
        want, ref = reference.loss_and_grads_bf16(params, x, y, loss, activation)
        assert got == pytest.approx(want, rel=tol, abs=tol * 1e-30), loss
        for name, g, r in zip(fastnn.Params._fields, grads, ref):
            assert g.dtype == np.float32
            assert_close(g, r, tol + (2 * U_BF16 if name == "w1" else 0.0), f"{loss} d{name}")
        z2 = fastnn.predict(params, x, kernel=variant, activation=activation)
        xb = reference.bfloat16(x).astype(np.float64)
        w1b = reference.bfloat16(params.w1).astype(np.float64)
        want_z2 = reference.activate(activation, xb @ w1b + params.b1) @ params.w2 + params.b2
        assert_close(z2, want_z2, tol, "predict")
        p = params.copy()
        lr = 0.01
        fastnn.sgd_step(p, x, y, lr, kernel=variant, loss=loss, activation=activation)
        for name, q, p0, r in zip(fastnn.Params._fields, p, params, ref):
            assert_close(q, p0 - lr * r.astype(np.float64),
                         tol + (2 * U_BF16 * lr * np.abs(r).max() / np.abs(p0).max()
                                if name == "w1" else 0.0), f"{loss} step {name}")


def _runs(variant, x, y, params, **kw):
    return fastnn.train(x, y, params=params, kernel=variant, seed=3, **kw)


@needs_native
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("shape", [(13, 31, 17, 11), (130, 97, 70, 3)], ids=["13x31", "130x97"])
def test_native_and_emulated_are_the_same_bits(shape, optimizer):
    """The instruction and its emulation inside the whole step and the compiled loops: every
    loss and parameter bitwise equal."""
    x, y, params = _problem(shape, "softmax", init="he")
    kw = dict(epochs=3, batch_size=32, loss="softmax", lr=0.01, activation="tanh",
              optimizer="adam" if optimizer == "adam" else "sgd",
              momentum=0.9 if optimizer == "momentum" else 0.0)
    a = _runs("bf16", x, y.argmax(1), params, **kw)
    b = _runs("bf16-emulated", x, y.argmax(1), params, **kw)
    np.testing.assert_array_equal(a.losses, b.losses)
    for p, q in zip(a.params, b.params):
        same_bits(p, q)
    la, ga = fastnn.loss_and_grads(params, x, y, kernel="bf16")
    lb, gb = fastnn.loss_and_grads(params, x, y, kernel="bf16-emulated")
    assert la == lb
    for p, q in zip(ga, gb):
        same_bits(p, q)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bitwise_across_threads_layouts_and_loops(variant):
    """Its ``bitwise`` fact: the same bits on 1 and 2 threads, for C, Fortran, strided and
    float64 ``x``; the compiled loops equal the Python loops, step for step."""
    x, y, params = _problem((150, 45, 40, 4), init="he")
    base = fastnn.train(x, y, params=params, kernel=variant, epochs=2, batch_size=37, lr=0.01,
                        seed=1, threads=1)
    for threads in (1, 2):
        for layout in ("C", "F", "strided"):
            for dt in (np.float32, np.float64):
                r = fastnn.train(relayout(x.astype(dt), layout), y, params=params, kernel=variant,
                                 epochs=2, batch_size=37, lr=0.01, seed=1, threads=threads)
                np.testing.assert_array_equal(r.losses, base.losses)
                for p, q in zip(r.params, base.params):
                    same_bits(p, q)
    for opt in ("sgd", "adam"):
        kw = dict(params=params, kernel=variant, epochs=2, batch_size=37, lr=0.01, seed=1,
                  optimizer=opt)
        whole = fastnn.train(x, y, whole_loop=True, **kw)
        python = fastnn.train(x, y, whole_loop=False, **kw)
        np.testing.assert_array_equal(whole.losses, python.losses)
        for p, q in zip(whole.params, python.params):
            same_bits(p, q)


def test_dtype_bfloat16_trains_with_float32_master_weights(tmp_path):
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 600)
    x = (rng.standard_normal((600, 20)) + labels[:, None]).astype(np.float32)
    kw = dict(hidden=16, epochs=6, batch_size=50, lr=0.05, loss="softmax", seed=0,
              validation_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the emulation's, on CPUs without
        r = fastnn.train(x, labels, dtype="bfloat16", **kw)
        f = fastnn.train(x, labels, dtype="float32", **kw)
    assert r.ran == ("bf16" if NATIVE else "bf16-emulated")
    assert r.params.dtype == np.float32 and r.val_losses.size == 6
    assert r.epoch_losses[-1] < 0.5 * r.epoch_losses[0]
    # bfloat16 operands: the same curve to the precision of a few bfloat16 roundings
    np.testing.assert_allclose(r.epoch_losses, f.epoch_losses, rtol=0.05)
    # a checkpointed run resumed in the middle ends bitwise equal
    ck = tmp_path / "run.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        full = fastnn.train(x, labels, dtype="bfloat16", optimizer="adam", **dict(kw, lr=0.01))
        part = fastnn.train(x, labels, dtype="bfloat16", optimizer="adam", checkpoint=ck,
                            **dict(kw, lr=0.01, epochs=3))
        with pytest.raises(ValueError, match="bfloat16"):  # not on a float32 run
            fastnn.train(x, labels, optimizer="adam", resume=ck, **dict(kw, lr=0.01))
        resumed = fastnn.train(x, labels, dtype="bfloat16", optimizer="adam", resume=ck,
                               **dict(kw, lr=0.01))
    assert part.n_steps < full.n_steps
    np.testing.assert_array_equal(resumed.losses, full.losses)
    for p, q in zip(resumed.params, full.params):
        same_bits(p, q)


def test_bfloat16_refuses_what_it_cannot_do():
    x, y, params = _problem((20, 6, 5, 2))
    with pytest.raises(TypeError, match="float32 master weights"):
        fastnn.train(x, y, params=params_as(params, np.float64), dtype="bfloat16", iters=1,
                     lr=0.1)
    with pytest.raises(TypeError, match="float32 master weights"):
        fastnn.loss_and_grads(params_as(params, np.float64), x.astype(np.float64), y,
                              kernel="bf16-emulated")
    with pytest.raises(ValueError, match="bf16"):
        fastnn.train(x, y, params=params, dtype="bfloat16", kernel="fused", iters=1, lr=0.1)
    with pytest.raises(ValueError, match="dual"):
        fastnn.train(x, y, params=params, dtype="bfloat16", kernel="dual", iters=1, lr=0.1)
    sp = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="sparse"):
        fastnn.train(sp.csr_matrix(x), y, params=params, dtype="bfloat16", iters=1, lr=0.1)
    with pytest.raises(TypeError, match="dtype"):
        fastnn.train(x, y, hidden=3, dtype="float16", iters=1, lr=0.1)
    with pytest.raises(ValueError, match="lbfgs"):  # as the estimators refuse it
        fastnn.train(x, y, params=params, dtype="bfloat16", iters=3, optimizer="lbfgs")


def test_without_the_instruction_auto_warns_once_and_bf16_is_refused(monkeypatch):
    from fastnn.auto import choice

    monkeypatch.setattr(bf, "NATIVE", False)
    monkeypatch.setattr(choice, "_warned_emulation", False)
    x, y, params = _problem((20, 6, 5, 2))
    with pytest.warns(RuntimeWarning, match="emulation"):
        r = fastnn.train(x, y, params=params, dtype="bfloat16", iters=2, lr=0.1)
    assert r.ran == "bf16-emulated"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        fastnn.train(x, y, params=params, dtype="bfloat16", iters=2, lr=0.1)
    with pytest.raises(ValueError, match="AVX512_BF16"):
        fastnn.train(x, y, params=params, kernel="bf16", iters=2, lr=0.1)


# --- the native kernel's machine code, checked on any x86 machine --------------------------------

def test_the_native_matmul_compiles_to_vdpbf16ps_for_a_bf16_cpu():
    """The native ``forward``'s LLVM IR compiled for Zen 4 (``znver4``: AVX-512 with
    AVX512_BF16) by llvmlite, whatever this machine is: its inner loop is ``vdpbf16ps`` on zmm
    registers, with no scalar float arithmetic anywhere in it."""
    import re

    code = """
import sys
import numpy as np
from numba import typeof
from fastnn.kernels import bf16 as K
from fastnn.kernels.common import bf16 as bf
args = (np.zeros((8, 4), np.uint32), np.zeros((32, 32), np.uint32), np.zeros(32, np.float32),
        np.zeros((8, 32), np.float32), bf.NATIVE_MODE)
sig = tuple(typeof(a) for a in args)
K.forward.compile(sig)  # compiled only, never run (this CPU may lack the instruction)
sys.stdout.write(K.forward.inspect_asm(sig))
"""
    import os

    env = dict(os.environ, NUMBA_CPU_NAME="znver4", FASTNN_CACHE="0",
               NUMBA_CPU_FEATURES="+avx512f,+avx512bw,+avx512vl,+avx512dq,+avx512bf16,+fma,"
                                  "+avx2,+avx,+sse4.2,+popcnt,+bmi2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    asm = out.stdout
    lines = asm.splitlines()
    dp = [i for i, line in enumerate(lines) if "vdpbf16ps" in line]
    assert dp, "no vdpbf16ps in the compiled forward"
    assert all("zmm" in lines[i] for i in dp), "vdpbf16ps on narrower registers than zmm"
    # the loop holding them: from the last label before the first to the branch back after
    # the last; 16 of them a pair step (8 rows x 2 vectors), nothing scalar in between
    start = max(i for i in range(dp[0]) if re.match(r"^\.?L\w+:", lines[i]))
    end = next(i for i in range(dp[-1], len(lines)) if re.match(r"^\s+j\w+\s", lines[i]))
    body = "\n".join(lines[start:end + 1])
    assert body.count("vdpbf16ps") >= 16
    assert not re.search(r"\bv?(fmadd|mul|add|sub)\w*s[sd]\b", body), body


# --- the command line and the benchmarks -------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fastnn", *args], capture_output=True,
                          text=True, timeout=900)


def test_cli_trains_and_benchmarks_in_bfloat16(tmp_path):
    import json

    res = _cli("train", "--dtype", "bfloat16", "--quiet", "--iters", "20")
    assert res.returncode == 0, res.stderr
    assert "dtype bfloat16 (float32 master weights)" in res.stdout
    assert ("ran bf16" if NATIVE else "ran bf16-emulated") in res.stdout
    out = tmp_path / "b.json"
    res = _cli("bench", "--shapes", "5x7x3x2", "--dtype", "float32,bfloat16", "--kernels",
               "fused,bf16-emulated", "--rounds", "1", "--budget", "0.001", "--settle", "0",
               "--stages", "forward,step,train", "--json", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert {(r["dtype"], r["kernel"]) for r in report["rows"]} == {
        ("float32", "fused"), ("bfloat16", "bf16-emulated")}
    assert set(report["peak_gflops"]) == {"float32", "bfloat16"}
    assert all(r["pct_peak"] > 0 and r["x_vs_numpy"] > 0 for r in report["rows"])
    out = tmp_path / "t.json"
    res = _cli("bench-train", "--benches", "epoch", "--dtype", "bfloat16", "--kernels",
               "bf16-emulated", "--shape", "300x40x24x3", "--batch-size", "64", "--rounds", "1",
               "--settle", "0", "--json", str(out))
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["dtype"] == "bfloat16" and row["x_vs_numpy"] > 0 and row["pct_peak"] > 0
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert row["x_vs_torch_autocast"] > 0 and row["x_vs_torch_float32"] > 0


def test_estimators_fit_in_bfloat16():
    sk = pytest.importorskip("sklearn.datasets")
    x, y = sk.load_digits(return_X_y=True)
    x = x / 16.0
    kw = dict(hidden_layer_sizes=(64,), max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = fastnn.MLPClassifier(dtype="float32", **kw).fit(x[:1400], y[:1400])
        b = fastnn.MLPClassifier(dtype="bfloat16", **kw).fit(x[:1400], y[:1400])
    assert b.kernel_ == ("bf16" if NATIVE else "bf16-emulated")
    assert b.coefs_[0].dtype == np.float32
    # bfloat16 operands: the accuracy of float32 within a point (the target on digits)
    assert abs(b.score(x[1400:], y[1400:]) - f.score(x[1400:], y[1400:])) <= 0.01
    with pytest.raises(ValueError, match="lbfgs"):
        fastnn.MLPClassifier(dtype="bfloat16", solver="lbfgs", **kw).fit(x[:200], y[:200])


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_the_split_optimiser_update_gives_the_serial_bits(optimizer):
    """A ``w1`` of 76,800 entries (past ``SPLIT_MIN``): the compiled loop updates it in two halves
    at once, the Python loop in one serial pass: the same parameters, bit for bit, and the same
    losses (to the rounding of the L2 term's sum, taken in two halves, where ``alpha > 0``)."""
    x, y, params = _problem((70, 300, 256, 3), init="he")
    assert params.w1.size >= K.SPLIT_MIN
    for alpha in (0.0, 1e-3):
        kw = dict(params=params, kernel="bf16-emulated", epochs=2, batch_size=32, lr=1e-3,
                  seed=1, alpha=alpha, optimizer="adam" if optimizer == "adam" else "sgd",
                  momentum=0.9 if optimizer == "momentum" else 0.0)
        whole = fastnn.train(x, y, whole_loop=True, **kw)
        python = fastnn.train(x, y, whole_loop=False, **kw)
        for p, q in zip(whole.params, python.params):
            same_bits(p, q)
        if alpha == 0.0:
            np.testing.assert_array_equal(whole.losses, python.losses)
        else:  # float64 sums of 76,800 squares in two orders
            np.testing.assert_allclose(whole.losses, python.losses, rtol=2 * 76800 * 2.0**-53)
