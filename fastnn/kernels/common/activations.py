"""The hidden layer's activation: a compile-time parameter of every kernel.

    relu      a = max(z, 0)                  da/dz = [a > 0]
    tanh      a = tanh(z)                    da/dz = 1 - a**2
    logistic  a = 1 / (1 + exp(-z))          da/dz = a * (1 - a)
    identity  a = z                          da/dz = 1

The derivative is taken from the activation ``a``, as scikit-learn does, so no kernel keeps ``z1``.
An activation travels as the *type* of an empty NamedTuple (``RELU``, ``TANH``, ...) in each
kernel's work tuple.  Numba compiles a kernel once per activation it is called with, and
``activate`` and ``derivative`` are resolved while compiling: the inner loops hold no branch on
it, and a run that never leaves ReLU compiles ReLU only (its compile time and cache size do not
grow with the others).

``exp``, ``tanh`` and the logistic are computed here, in polynomial arithmetic that vectorises,
not by libm: Numba's ``np.tanh`` and ``np.exp`` are scalar calls without Intel's SVML (14 ns an
element here: 0.9 ms for the 65k activations of a 128x784x512 step, about the step's own time).

``exp(x)``: ``x = n ln2 + r`` with ``|r| <= ln2/2`` (Cody and Waite's two-part ln2), ``exp(r)`` by
its Taylor polynomial (degree 13 in float64, 7 in float32: truncation below 2**-56 and 2**-27
relative), ``2**n`` by writing the exponent bits of two normal powers (so that subnormal results
and the overflow to inf come out right; ``x`` clamped to float64 ``[-746, 710]``, float32
``[-104, 89]``, where exp is 0 or inf); NaN passes through.  Accuracy: a few units in the last
place (``tests/test_kernels.py`` checks it against numpy).

``tanh(z)``: for ``|z| < 0.625`` Cephes' rational (float64) or polynomial (float32) in ``z**2``,
else ``1 - 2 / (exp(2|z|) + 1)`` with its sign, ``|z|`` clamped where tanh is 1 to the dtype's
precision; the two are computed and one selected, so the loop still vectorises.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ..jit import JIT_OPTIONS, OVERLOAD_OPTIONS


class Relu(NamedTuple):
    pass


class Tanh(NamedTuple):
    pass


class Logistic(NamedTuple):
    pass


class Identity(NamedTuple):
    pass


RELU, TANH, LOGISTIC, IDENTITY = Relu(), Tanh(), Logistic(), Identity()
BY_NAME = {"relu": RELU, "tanh": TANH, "logistic": LOGISTIC, "identity": IDENTITY}
NAME_OF = {type(a): name for name, a in BY_NAME.items()}


def of(name):
    """The marker of the activation called ``name`` (ValueError for another name); a marker
    passes through."""
    if type(name) in NAME_OF:
        return name
    try:
        return BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation: expected one of {', '.join(map(repr, BY_NAME))}, got "
                         f"{name!r}") from None


def name_of(act) -> str:
    return NAME_OF[type(act)]


# --- exp, in arithmetic that vectorises -----------------------------------------------------------

@intrinsic
def _bits_to_float(typingctx, bits):
    """The float whose bit pattern is the integer ``bits`` (int64 -> float64, int32 -> float32)."""
    target = types.float64 if bits.bitwidth == 64 else types.float32

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType() if bits.bitwidth == 64
                               else ir.FloatType())

    return target(bits), codegen


def _exp(x):
    raise NotImplementedError


_LOG2E = 1.4426950408889634
_INV_FACT64 = tuple(1.0 / float(np.prod(np.arange(1, i + 1, dtype=np.float64)))
                    for i in range(14))  # 1/0! .. 1/13!
_INV_FACT32 = tuple(np.float32(v) for v in _INV_FACT64[:8])


@overload(_exp, inline="always", jit_options=OVERLOAD_OPTIONS)
def _exp_impl(x):
    if x == types.float64:
        c = _INV_FACT64
        ln2_hi, ln2_lo = 6.93147180369123816490e-01, 1.90821492927058770002e-10

        def impl(x):
            t = 710.0 if x > 710.0 else x
            t = -746.0 if t < -746.0 else t
            n = np.floor(t * _LOG2E + 0.5)
            r = (t - n * ln2_hi) - n * ln2_lo
            p = c[13]
            p = p * r + c[12]
            p = p * r + c[11]
            p = p * r + c[10]
            p = p * r + c[9]
            p = p * r + c[8]
            p = p * r + c[7]
            p = p * r + c[6]
            p = p * r + c[5]
            p = p * r + c[4]
            p = p * r + c[3]
            p = p * r + c[2]
            p = p * r + c[1]
            p = p * r + c[0]
            # 2**n as two normal powers: subnormal results and overflow to inf come out right
            n1 = np.int64(n) >> 1
            e = (p * _bits_to_float((n1 + 1023) << 52)) * _bits_to_float(
                (np.int64(n) - n1 + 1023) << 52)
            return x if x != x else e
        return impl
    if x == types.float32:
        c = _INV_FACT32
        ln2_hi, ln2_lo = np.float32(0.693359375), np.float32(-2.12194440e-4)
        lo, hi, log2e, half = np.float32(-104.0), np.float32(89.0), np.float32(_LOG2E), \
            np.float32(0.5)

        def impl(x):
            t = hi if x > hi else x
            t = lo if t < lo else t
            n = np.floor(t * log2e + half)
            r = (t - n * ln2_hi) - n * ln2_lo
            p = c[7]
            p = p * r + c[6]
            p = p * r + c[5]
            p = p * r + c[4]
            p = p * r + c[3]
            p = p * r + c[2]
            p = p * r + c[1]
            p = p * r + c[0]
            n1 = np.int64(n) >> 1
            e = (p * _bits_to_float(np.int32((n1 + 127) << 23))) * _bits_to_float(
                np.int32((np.int64(n) - n1 + 127) << 23))
            return x if x != x else e
        return impl
    return None


# --- the activations and their derivatives ----------------------------------------------------

def activate(kind, z):
    """The activation ``kind`` (a marker) of the float ``z``."""
    raise NotImplementedError


def derivative(kind, a):
    """``da/dz`` of the activation ``kind``, from its value ``a``."""
    raise NotImplementedError


# Inside a ``prange`` body Numba passes every captured value to the parallel region as a scalar or
# an array, and an empty NamedTuple is neither: the parallel kernels (`naive`, `chunked`) carry the
# activation there as the *type* of a zero integer instead (``for_prange``), which ``activate`` and
# ``derivative`` read the same way.
_SCALAR = {Relu: types.uint8, Tanh: types.int8, Logistic: types.int16, Identity: types.uint16}
_OF_SCALAR = {t: cls for cls, t in _SCALAR.items()}


def _cls(kind):
    if isinstance(kind, types.Integer):
        return _OF_SCALAR.get(kind)
    return getattr(kind, "instance_class", None)


def for_prange(kind):
    """The activation ``kind`` as a value a ``prange`` body can capture (see ``_SCALAR``)."""
    raise NotImplementedError


@overload(for_prange, inline="always", jit_options=OVERLOAD_OPTIONS)
def _for_prange(kind):
    make = {types.uint8: np.uint8, types.int8: np.int8, types.int16: np.int16,
            types.uint16: np.uint16}[_SCALAR[_cls(kind)]]
    return lambda kind: make(0)


# Cephes' tanh: for |x| < 0.625, tanh(x) = x + x * x**2 * P(x**2) / Q(x**2) (float64), and its
# float32 polynomial.
_TP = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_TQ = (1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)
_TF = tuple(np.float32(v) for v in (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                                    1.33314422036e-1, -3.33332819422e-1))


def _typed(z, value):
    """``value`` in the float type ``z`` (a float32 kernel stays in float32 arithmetic)."""
    return np.float32(value) if z == types.float32 else float(value)


@overload(activate, inline="always", jit_options=OVERLOAD_OPTIONS)
def _activate(kind, z):
    cls = _cls(kind)
    zero, one = _typed(z, 0.0), _typed(z, 1.0)
    if cls is Relu:
        return lambda kind, z: zero if z < zero else z  # NaN stays NaN, as np.maximum keeps it
    if cls is Identity:
        return lambda kind, z: z
    if cls is Logistic:
        def impl(kind, z):
            e = _exp(-z if z > zero else z)  # exp(-|z|): never overflows
            inv = one / (one + e)
            return inv if z > zero else e * inv
        return impl
    if cls is Tanh:
        if z == types.float32:
            one, two, big, small = (np.float32(1.0), np.float32(2.0), np.float32(9.0),
                                    np.float32(0.625))
            p0, p1, p2, p3, p4 = _TF

            def impl(kind, z):
                s = z * z
                near = ((((p0 * s + p1) * s + p2) * s + p3) * s + p4) * s * z + z
                a = -z if z < 0 else z
                a = big if a > big else a
                far = one - two / (_exp(two * a) + one)
                far = -far if z < 0 else far
                return near if a < small else far
            return impl
        p0, p1, p2 = _TP
        q0, q1, q2 = _TQ

        def impl(kind, z):
            s = z * z
            near = z + z * s * (((p0 * s + p1) * s + p2) / (((s + q0) * s + q1) * s + q2))
            a = -z if z < 0 else z
            a = 22.0 if a > 22.0 else a
            far = 1.0 - 2.0 / (_exp(2.0 * a) + 1.0)
            far = -far if z < 0 else far
            return near if a < 0.625 else far
        return impl
    return None


@overload(derivative, inline="always", jit_options=OVERLOAD_OPTIONS)
def _derivative(kind, a):
    cls = _cls(kind)
    zero, one = _typed(a, 0.0), _typed(a, 1.0)
    if cls is Relu:
        return lambda kind, a: one if a > zero else zero
    if cls is Identity:
        return lambda kind, a: one
    if cls is Logistic:
        return lambda kind, a: a * (one - a)
    if cls is Tanh:
        return lambda kind, a: one - a * a
    return None


@njit(**JIT_OPTIONS, inline="always")
def activate_all(kind, a):
    """``a = activate(kind, a)`` in place, for a 2-D array ``a`` (rows of ``z1``)."""
    m, h = a.shape
    for i in range(m):
        for j in range(h):
            a[i, j] = activate(kind, a[i, j])


@njit(**JIT_OPTIONS, inline="always")
def apply_derivative(kind, a, d):
    """``d *= derivative(kind, a)`` in place (``a`` the activations, ``d`` their gradients);
    for ReLU ``d = 0`` where ``a <= 0`` (a NaN in ``d`` stays where the mask is on)."""
    m, h = a.shape
    for i in range(m):
        for j in range(h):
            d[i, j] = times_derivative(kind, a[i, j], d[i, j])


def times_derivative(kind, a, g):
    """``g * derivative(kind, a)`` (ReLU: ``g`` where ``a > 0``, else 0: a NaN gradient is not
    multiplied into a masked entry)."""
    raise NotImplementedError


def active(kind, a):
    """Whether the unit with activation ``a`` passes any gradient (ReLU: ``a > 0``; the others:
    always), so a kernel can skip the dot product of a masked entry."""
    raise NotImplementedError


@overload(active, inline="always", jit_options=OVERLOAD_OPTIONS)
def _active(kind, a):
    if _cls(kind) is Relu:
        zero = _typed(a, 0.0)
        return lambda kind, a: a > zero
    return lambda kind, a: True


@overload(times_derivative, inline="always", jit_options=OVERLOAD_OPTIONS)
def _times_derivative_impl(kind, a, g):
    cls = _cls(kind)
    zero, one = _typed(a, 0.0), _typed(a, 1.0)
    if cls is Relu:
        return lambda kind, a, g: g if a > zero else zero
    if cls is Identity:
        return lambda kind, a, g: g
    if cls is Logistic:
        return lambda kind, a, g: g * (a * (one - a))
    if cls is Tanh:
        return lambda kind, a, g: g * (one - a * a)
    return None


def vtimes_derivative(kind, g, a):
    """``g * derivative(kind, a)`` on SIMD vectors (``simd.py``): the backward pass's mask."""
    raise NotImplementedError


@overload(vtimes_derivative, inline="always", jit_options=OVERLOAD_OPTIONS)
def _vtimes_derivative(kind, g, a):
    from .simd import vkeep_where_positive, vmul, vsplat, vsub

    cls = _cls(kind)
    one = _typed(g.dtype, 1.0)
    if cls is Relu:
        return lambda kind, g, a: vkeep_where_positive(g, a)
    if cls is Identity:
        return lambda kind, g, a: g
    if cls is Logistic:
        return lambda kind, g, a: vmul(g, vmul(a, vsub(vsplat(one), a)))
    if cls is Tanh:
        return lambda kind, g, a: vmul(g, vsub(vsplat(one), vmul(a, a)))
    return None
