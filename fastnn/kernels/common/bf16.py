"""bfloat16 arithmetic: AVX512_BF16's ``vdpbf16ps``, its exact emulation, and the roundings.

A bfloat16 is the high half of a float32 (1 sign, 8 exponent, 7 fraction bits: float32's range,
2**-8 relative precision).  The bf16 rung keeps them in pairs, two to a 32-bit *word*:
``word = (bits(hi) << 16) | bits(lo)``, the ``lo`` element first in memory, as the instruction
reads them.

**Rounding** float32 -> bfloat16 is to nearest, ties to even (``round_bits``, the reference's
``bfloat16_bits``: add ``0x7FFF + bit 16`` and cut the low half), overflow to infinity as the
rounding defines it, and a NaN stays a NaN (quieted: plain rounding could carry a NaN's fraction
into the sign bit).

**The instruction** (Intel SDM, ``VDPBF16PS``): for each of the 16 float32 lanes ``l`` of the
accumulator, with ``a``, ``b`` vectors of 16 words (32 bfloat16)::

    acc[l] = ftz(fma(daz(a.hi[l]), daz(b.hi[l]), daz(acc[l])))     # the odd element first
    acc[l] = ftz(fma(daz(a.lo[l]), daz(b.lo[l]), acc[l]))          # then the even one

two fused multiply-adds in float32, each rounded once to nearest even, with denormal inputs read
as zero (``daz``) and denormal results flushed to zero (``ftz``), whatever MXCSR says.  (A
product of two bfloat16 is exact in float32's precision, so the only roundings are the two
additions.)  ``vdp`` is that, on a ``Native`` marker the instruction itself (inline assembly:
llvmlite's IR builder has no bfloat type for LLVM's intrinsic), on an ``Emulated`` marker the
same arithmetic in float32 vector operations that any x86 CPU runs; ``reference_matmul`` is the
plain numpy statement of a matmul made of it, which the tests hold both to, bit for bit.  Which
of the two the CPU runs by default is ``NATIVE``.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils, config
from numba.extending import intrinsic, overload

from ..jit import JIT_OPTIONS, OVERLOAD_OPTIONS, PARALLEL_OPTIONS
from ...reference import bfloat16_bits
from .simd import Vector, vadd, vstore2

LANES = 16  # float32 lanes (and words) of a 512-bit vector


class Native(NamedTuple):
    """``vdp`` runs ``vdpbf16ps`` (needs AVX512_BF16)."""


class Emulated(NamedTuple):
    """``vdp`` runs the instruction's arithmetic in float32 vector operations (any CPU)."""


NATIVE_MODE, EMULATED_MODE = Native(), Emulated()


def cpu_has_bf16() -> bool:
    """Whether this CPU has AVX512_BF16 (``/proc/cpuinfo``'s ``avx512_bf16``; LLVM's view of the
    host where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512_bf16" in line.split()
    except OSError:
        pass
    return llvm.get_host_cpu_features().get("avx512bf16", False)


def compiler_has_bf16() -> bool:
    """Whether Numba compiles for a target with AVX512_BF16 (``NUMBA_CPU_NAME`` /
    ``NUMBA_CPU_FEATURES`` may say otherwise than the host): the assembler takes the
    instruction only then."""
    features = config.CPU_FEATURES
    if features is None:
        if config.CPU_NAME not in (None, "host", llvm.get_host_cpu_name()):
            return False  # a named CPU (NUMBA_CPU_NAME=haswell: the AVX2 kernels forced)
        return llvm.get_host_cpu_features().get("avx512bf16", False)
    return "+avx512bf16" in features.split(",")


# The instruction runs where the CPU has it and Numba compiles for it, unless FASTNN_BF16=emulate.
NATIVE = (os.environ.get("FASTNN_BF16", "") != "emulate" and cpu_has_bf16()
          and compiler_has_bf16())
DEFAULT_MODE = NATIVE_MODE if NATIVE else EMULATED_MODE


def mode_name(mode) -> str:
    return "native" if isinstance(mode, Native) else "emulated"


# --- roundings, in numpy ---------------------------------------------------------------------------

round_bits = bfloat16_bits  # (the reference's: the specification of the rounding)


def words_of(x) -> np.ndarray:
    """``x (m, n)`` as bfloat16 pairs along its rows: ``(m, ceil(n / 2))`` uint32 words, element
    ``2q`` in the low half of word ``q``, a zero past the last column when ``n`` is odd."""
    x = np.asarray(x, np.float32)
    m, n = x.shape
    bits = np.zeros((m, n + n % 2), np.uint32)
    bits[:, :n] = round_bits(x).reshape(m, n)
    return (bits[:, 1::2] | (bits[:, 0::2] >> np.uint32(16))).astype(np.uint32)


def words_to_float(words, n) -> np.ndarray:
    """The ``(m, n)`` float32 values of bfloat16 pairs ``words (m, ceil(n / 2))``."""
    w = np.asarray(words, np.uint32)
    lo = (w << np.uint32(16)).view(np.float32)
    hi = (w & np.uint32(0xFFFF0000)).view(np.float32)
    out = np.empty((w.shape[0], 2 * w.shape[1]), np.float32)
    out[:, 0::2], out[:, 1::2] = lo, hi
    return out[:, :n]


# --- the instruction's arithmetic, in numpy (the specification) ------------------------------------

_TINY = np.float32(2.0**-126)  # the smallest normal float32


def _flush(v):
    """float32 ``v`` with denormals replaced by zeros of their sign (``daz`` and ``ftz``)."""
    return np.where(np.abs(v) < _TINY, np.copysign(np.float32(0.0), v), v).astype(np.float32)


def _fma32(a, b, c):
    """``a * b + c`` rounded once to float32, for float32 ``a, b, c`` whose product ``a * b`` has
    at most 16 significant bits (two bfloat16): exact in float64, and the sum's rounding to
    float64 and then to float32 equals one rounding to float32 (53 >= 2 * 24 + 2: Figueroa's
    condition for innocuous double rounding)."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN as float32 makes them
        return (a.astype(np.float64) * b.astype(np.float64)
                + c.astype(np.float64)).astype(np.float32)


def reference_dp(acc, a_words, b_words):
    """``vdpbf16ps`` lane by lane in numpy: ``acc`` float32, ``a_words``, ``b_words`` uint32, all
    of one shape (or broadcasting).  A new float32 array."""
    a, b = np.asarray(a_words, np.uint32), np.asarray(b_words, np.uint32)
    a_lo, a_hi = (a << np.uint32(16)).view(np.float32), (a & np.uint32(0xFFFF0000)).view(np.float32)
    b_lo, b_hi = (b << np.uint32(16)).view(np.float32), (b & np.uint32(0xFFFF0000)).view(np.float32)
    t = _flush(_fma32(_flush(a_hi), _flush(b_hi), _flush(np.asarray(acc, np.float32))))
    return _flush(_fma32(_flush(a_lo), _flush(b_lo), t))


def reference_matmul(a_words, b_words, c0):
    """``C = c0 + A @ B`` as the bf16 kernels compute it: ``a_words (M, K2)`` (rows of A in
    pairs along k), ``b_words (K2, N)`` (columns of B in pairs along k), ``c0 (M, N)`` float32;
    each lane of C starts at ``c0`` and takes the pairs ``q = 0, 1, ... K2 - 1`` in order, each
    as ``vdpbf16ps`` does."""
    acc = np.array(c0, np.float32, copy=True)
    for q in range(a_words.shape[1]):
        acc = reference_dp(acc, a_words[:, q:q + 1], b_words[q:q + 1, :])
    return acc


# --- the same in compiled code -----------------------------------------------------------------------

_F32X16 = ir.VectorType(ir.FloatType(), LANES)
_I32X16 = ir.VectorType(ir.IntType(32), LANES)
_F32V = Vector(types.float32, LANES)
_U32V = Vector(types.uint32, LANES)
# Numba's JIT has no assembly parser until one is initialised, and inline asm needs it when any
# module holding ``_vdp_native`` is emitted: also a new kernel linking one loaded from the disk
# cache, where nothing of this module's typing runs.  So at import.
llvm.initialize_native_asmparser()


@intrinsic
def _vdp_native(typingctx, acc, a, b):
    """``vdpbf16ps acc, a, b`` (operands in AT&T order: ``b``, ``a``, the accumulator)."""

    def codegen(context, builder, sig, args):
        asm = ir.InlineAsm(ir.FunctionType(_F32X16, [_I32X16, _I32X16, _F32X16]),
                           "vdpbf16ps $2, $1, $0", "=v,v,v,0")
        return builder.call(asm, [args[2], args[1], args[0]])

    return _F32V(_F32V, _U32V, _U32V), codegen


def _flush_ir(builder, v):
    """Denormal lanes of the float vector ``v`` replaced by zeros of their sign."""
    bits = builder.bitcast(v, _I32X16)
    exponent = builder.and_(bits, ir.Constant(_I32X16, [0x7F800000] * LANES))
    denormal = builder.icmp_unsigned("==", exponent, ir.Constant(_I32X16, [0] * LANES))
    signed_zero = builder.and_(bits, ir.Constant(_I32X16, [-0x80000000] * LANES))
    return builder.bitcast(builder.select(denormal, signed_zero, bits), _F32X16)


@intrinsic
def _vdp_emulated(typingctx, acc, a, b):
    """The instruction's arithmetic (module docstring) in float32 vector operations: the halves
    of each word widened to float32, two ``llvm.fma`` calls (one rounding each; no fast-math
    flags: Numba's fast-math pass rewrites scalar calls and binary operators, not these), and
    the denormal flushes as bit tests."""

    def codegen(context, builder, sig, args):
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_F32X16, [_F32X16] * 3), "llvm.fma.v16f32")
        high = ir.Constant(_I32X16, [-0x10000] * LANES)  # 0xFFFF0000
        sixteen = ir.Constant(_I32X16, [16] * LANES)

        def halves(w):
            return (_flush_ir(builder, builder.bitcast(builder.shl(w, sixteen), _F32X16)),
                    _flush_ir(builder, builder.bitcast(builder.and_(w, high), _F32X16)))

        a_lo, a_hi = halves(args[1])
        b_lo, b_hi = halves(args[2])
        t = _flush_ir(builder, builder.call(fma, [a_hi, b_hi, _flush_ir(builder, args[0])]))
        return _flush_ir(builder, builder.call(fma, [a_lo, b_lo, t]))

    return _F32V(_F32V, _U32V, _U32V), codegen


def vdp(mode, acc, a, b):
    """``acc`` after ``vdpbf16ps acc, a, b``: the instruction (``Native``) or its emulation
    (``Emulated``), chosen while compiling."""
    raise NotImplementedError


@overload(vdp, inline="always", jit_options=OVERLOAD_OPTIONS)
def _vdp_impl(mode, acc, a, b):
    if getattr(mode, "instance_class", None) is Native:
        return lambda mode, acc, a, b: _vdp_native(acc, a, b)
    return lambda mode, acc, a, b: _vdp_emulated(acc, a, b)


@intrinsic
def vsplat_word(typingctx, w):
    """A vector of 16 copies of the uint32 word ``w``."""

    def codegen(context, builder, sig, args):
        one = builder.insert_element(ir.Constant(_I32X16, ir.Undefined), args[0],
                                     ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, ir.Constant(_I32X16, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))

    return _U32V(types.uint32), codegen


@intrinsic
def vzero_f32(typingctx, arr):
    """The float32 zero vector (``arr``: any array, for the signature)."""

    def codegen(context, builder, sig, args):
        return ir.Constant(_F32X16, None)

    return _F32V(arr), codegen


@intrinsic
def vpair_words(typingctx, lo, hi):
    """The words of float32 vectors ``lo`` and ``hi`` rounded to bfloat16 (to nearest even, NaN
    kept): lane ``l`` holds ``lo[l]`` in its low half and ``hi[l]`` in its high half."""

    def codegen(context, builder, sig, args):
        def rounded(v):  # the bfloat16 in the high half, the low half zero
            u = builder.bitcast(v, _I32X16)
            odd = builder.and_(builder.lshr(u, ir.Constant(_I32X16, [16] * LANES)),
                               ir.Constant(_I32X16, [1] * LANES))
            r = builder.add(builder.add(u, ir.Constant(_I32X16, [0x7FFF] * LANES)), odd)
            magnitude = builder.and_(u, ir.Constant(_I32X16, [0x7FFFFFFF] * LANES))
            nan = builder.icmp_unsigned(">", magnitude, ir.Constant(_I32X16, [0x7F800000] * LANES))
            quiet = builder.or_(u, ir.Constant(_I32X16, [0x00400000] * LANES))
            return builder.and_(builder.select(nan, quiet, r),
                                ir.Constant(_I32X16, [-0x10000] * LANES))

        low = builder.lshr(rounded(args[0]), ir.Constant(_I32X16, [16] * LANES))
        return builder.or_(rounded(args[1]), low)

    return _U32V(_F32V, _F32V), codegen


@intrinsic
def _bits(typingctx, v):
    """The uint32 bit pattern of the float32 ``v``."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@njit(**JIT_OPTIONS, inline="always")
def round_bits_scalar(v):
    """The bits of float32 ``v`` rounded to bfloat16, in the high half (compiled ``round_bits``)."""
    u = _bits(np.float32(v))
    if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return (u | np.uint32(0x00400000)) & np.uint32(0xFFFF0000)
    return (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)


@njit(**PARALLEL_OPTIONS)
def to_words(x, out):
    """``out = words_of(x)`` for ``x (m, n)`` of any float dtype and layout (converted to float32
    first), ``out (m, ceil(n / 2))`` uint32; parallel over rows."""
    m, n = x.shape
    half = out.shape[1]
    for i in prange(m):
        for q in range(half):
            lo = round_bits_scalar(np.float32(x[i, 2 * q])) >> np.uint32(16)
            hi = np.uint32(0)
            if 2 * q + 1 < n:
                hi = round_bits_scalar(np.float32(x[i, 2 * q + 1]))
            out[i, q] = hi | lo


@njit(**PARALLEL_OPTIONS)
def dp_peak(mode, parts, iters, out):
    """The instruction's throughput: ``parts`` threads, each ``iters`` times 12 independent
    ``vdp`` on registers (enough to cover its latency), 64 flops each; ``out (parts, 16)``
    receives a sum so that nothing is optimised away.  ``fastnn bench`` reports the bfloat16
    rows against it, as the prototype measured it (``shared/prototypes/bf16_dpbf16ps.py``)."""
    for t in prange(parts):
        a = vsplat_word(np.uint32(0x3F803F80) + np.uint32(t))
        b = vsplat_word(np.uint32(0x3A803A80))
        z = vzero_f32(out)
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = c10 = c11 = z
        for _ in range(iters):
            c0 = vdp(mode, c0, a, b)
            c1 = vdp(mode, c1, a, b)
            c2 = vdp(mode, c2, a, b)
            c3 = vdp(mode, c3, a, b)
            c4 = vdp(mode, c4, a, b)
            c5 = vdp(mode, c5, a, b)
            c6 = vdp(mode, c6, a, b)
            c7 = vdp(mode, c7, a, b)
            c8 = vdp(mode, c8, a, b)
            c9 = vdp(mode, c9, a, b)
            c10 = vdp(mode, c10, a, b)
            c11 = vdp(mode, c11, a, b)
        total = vadd(vadd(vadd(c0, c1), vadd(c2, c3)), vadd(vadd(c4, c5), vadd(c6, c7)))
        vstore2(out, t, 0, vadd(total, vadd(vadd(c8, c9), vadd(c10, c11))))


def peak_gflops(threads: int, mode=None, seconds: float = 0.2) -> float:
    """GFLOP/s of ``vdpbf16ps`` on ``threads`` threads (``dp_peak``; the native instruction
    unless ``mode`` says otherwise)."""
    import time

    mode = DEFAULT_MODE if mode is None else mode
    out = np.zeros((threads, LANES), np.float32)
    dp_peak(mode, threads, 10, out)
    iters = 1000
    while True:
        t0 = time.perf_counter()
        dp_peak(mode, threads, iters, out)
        dt = time.perf_counter() - t0
        if dt > seconds / 4 or iters > 10**9:
            break
        iters *= 4
    best = dt
    for _ in range(3):
        t0 = time.perf_counter()
        dp_peak(mode, threads, iters, out)
        best = min(best, time.perf_counter() - t0)
    return threads * iters * 12 * 64 / best / 1e9
