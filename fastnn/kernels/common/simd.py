"""Explicit SIMD vectors for Numba: a 512-bit vector type and the handful of operations a matmul
micro-kernel needs (load, store, broadcast, add, multiply, fused multiply-add, ReLU).

Why: a register-blocked micro-kernel keeps a small tile of C in registers across the whole k loop.
Written as scalar accumulators, LLVM's SLP vectoriser did not pack them (it emitted scalar FMAs);
written as loops over a small array, the tile lives in memory and every FMA pays a load and a
store.  With an explicit vector type the accumulators are SSA values of type ``<8 x double>``
(``<16 x float>``) and LLVM keeps them in registers and emits packed ``vfmadd`` on zmm/ymm.

A vector always holds 64 bytes: ``lanes(dtype)`` is 8 for float64 and 16 for float32.  Indices
are element offsets; nothing is bounds-checked (the callers' loops guarantee the range).
"""
from __future__ import annotations

import llvmlite
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

VECTOR_BYTES = 64


def lanes(dtype) -> int:
    """Elements per vector for a numpy dtype."""
    import numpy as np

    return VECTOR_BYTES // np.dtype(dtype).itemsize


class Vector(types.Type):
    """A SIMD vector of ``count`` elements of the float type ``dtype``."""

    def __init__(self, dtype, count):
        self.dtype = dtype
        self.count = count
        super().__init__(name=f"Vector({dtype}, {count})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, fe_type.count))


def _vector_of(dtype) -> Vector:
    return Vector(dtype, VECTOR_BYTES // (dtype.bitwidth // 8))


_TYPED_POINTERS = getattr(llvmlite, "ir_layer_typed_pointers_enabled", True)


def _element_pointer(context, builder, arr_type, arr, i, j=None):
    """Pointer to ``arr[i]`` (1-D) or ``arr[i, j]`` (2-D, unit stride along axis 1)."""
    ary = context.make_array(arr_type)(context, builder, arr)
    if j is None:
        return builder.gep(ary.data, [i])
    stride0 = cgutils.unpack_tuple(builder, ary.strides, arr_type.ndim)[0]
    row = builder.gep(builder.bitcast(ary.data, ir.IntType(8).as_pointer()),
                      [builder.mul(i, stride0)])
    return builder.gep(builder.bitcast(row, ary.data.type), [j])


def _load(builder, ptr, vty, align):
    if _TYPED_POINTERS:
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=align)
    return builder.load(ptr, typ=vty, align=align)


def _store(builder, value, ptr, vty, align):
    if _TYPED_POINTERS:
        ptr = builder.bitcast(ptr, vty.as_pointer())
    builder.store(value, ptr, align=align)


def _splat(builder, value, vty):
    """The LLVM vector of type ``vty`` with ``value`` in every lane (insert, then shuffle)."""
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), value,
                                 ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count)
    return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined), zeros)


@intrinsic
def vload(typingctx, arr, i):
    """The vector ``arr[i : i + lanes]`` of a 1-D contiguous array."""
    vt = _vector_of(arr.dtype)

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return _load(builder, ptr, vty, arr.dtype.bitwidth // 8)

    return vt(arr, types.intp), codegen


@intrinsic
def vload2(typingctx, arr, i, j):
    """The vector ``arr[i, j : j + lanes]`` of a 2-D array with contiguous rows."""
    vt = _vector_of(arr.dtype)

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], args[2])
        return _load(builder, ptr, vty, arr.dtype.bitwidth // 8)

    return vt(arr, types.intp, types.intp), codegen


@intrinsic
def vstore2(typingctx, arr, i, j, v):
    """``arr[i, j : j + lanes] = v`` for a 2-D array with contiguous rows."""

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.args[3])
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], args[2])
        _store(builder, args[3], ptr, vty, arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, types.intp, types.intp, v), codegen


@intrinsic
def prefetch2(typingctx, arr, i, j):
    """A hint to bring ``arr[i, j]``'s cache line in for reading (``llvm.prefetch``, kept in
    all cache levels): for rows read in an order the hardware prefetcher cannot guess (the
    sparse rung's rows of ``w1``).  Never faults, so an index may be anything in range."""

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], args[2])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0i8" if _TYPED_POINTERS else "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, types.intp, types.intp), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector with every lane equal to the float ``x``."""
    vt = _vector_of(x)

    def codegen(context, builder, sig, args):
        return _splat(builder, args[0], context.get_value_type(vt))

    return vt(x), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """``a * b + c``, lane by lane, as one fused multiply-add (one rounding)."""

    def codegen(context, builder, sig, args):
        vty = args[2].type
        bits = c.dtype.bitwidth
        fnty = ir.FunctionType(vty, [vty, vty, vty])
        fma = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.v{c.count}f{bits}")
        return builder.call(fma, args)

    return c(a, b, c), codegen


@intrinsic
def vrelu(typingctx, v):
    """``max(v, 0)`` lane by lane, keeping NaN (``v < 0 ? 0 : v``, as ``np.maximum`` would)."""

    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered("<", args[0], zero), zero, args[0])

    return v(v), codegen


@intrinsic
def vzero(typingctx, arr):
    """The all-zero vector of ``arr``'s dtype."""
    vt = _vector_of(arr.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr), codegen


def _lane_mask(builder, count, n_lanes):
    """``<n_lanes x i1>``: lane ``l`` is on when ``l < count``."""
    idx = ir.Constant(ir.VectorType(ir.IntType(64), n_lanes), list(range(n_lanes)))
    n = builder.sext(count, ir.IntType(64)) if count.type.width < 64 else count
    return builder.icmp_unsigned("<", idx, _splat(builder, n, idx.type))


def _masked_name(op, vt):
    return f"llvm.masked.{op}.v{vt.count}f{vt.dtype.bitwidth}.p0"


def _masked_load(context, builder, vt, ptr, count, align):
    vty = context.get_value_type(vt)
    vptr = builder.bitcast(ptr, vty.as_pointer()) if _TYPED_POINTERS else ptr
    mask = _lane_mask(builder, count, vt.count)
    fnty = ir.FunctionType(vty, [vptr.type, ir.IntType(32), mask.type, vty])
    fn = cgutils.get_or_insert_function(builder.module, fnty, _masked_name("load", vt))
    return builder.call(fn, [vptr, ir.Constant(ir.IntType(32), align), mask,
                             ir.Constant(vty, None)])


@intrinsic
def vload_part(typingctx, arr, i, count):
    """Lanes ``arr[i : i + count]`` of a 1-D contiguous array, zero in the other lanes."""
    vt = _vector_of(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return _masked_load(context, builder, vt, ptr, args[2], arr.dtype.bitwidth // 8)

    return vt(arr, types.intp, types.intp), codegen


@intrinsic
def vload2_part(typingctx, arr, i, j, count):
    """Lanes ``arr[i, j : j + count]`` (``count <= lanes``), zero in the other lanes; nothing
    past ``count`` is read, so this is safe at the end of a row."""
    vt = _vector_of(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], args[2])
        return _masked_load(context, builder, vt, ptr, args[3], arr.dtype.bitwidth // 8)

    return vt(arr, types.intp, types.intp, types.intp), codegen


@intrinsic
def vstore2_part(typingctx, arr, i, j, v, count):
    """``arr[i, j : j + count] = v[:count]``; nothing past ``count`` is written.

    A whole vector (``count == lanes``, every vector but a row's last) takes a plain store: on
    CPUs without AVX-512 a masked store is ``vmaskmovpd``, microcoded on AMD Zen (about ten
    cycles each, where a plain store takes one), and it made the row pass 2-3x slower."""

    def codegen(context, builder, sig, args):
        vt = sig.args[3]
        vty = context.get_value_type(vt)
        align = arr.dtype.bitwidth // 8
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], args[2])
        count = args[4]
        whole = builder.icmp_signed(">=", count, ir.Constant(count.type, vt.count))
        with builder.if_else(whole, likely=True) as (plain, masked):
            with plain:
                _store(builder, args[3], ptr, vty, align)
            with masked:
                vptr = builder.bitcast(ptr, vty.as_pointer()) if _TYPED_POINTERS else ptr
                mask = _lane_mask(builder, count, vt.count)
                fnty = ir.FunctionType(ir.VoidType(), [vty, vptr.type, ir.IntType(32),
                                                       mask.type])
                fn = cgutils.get_or_insert_function(builder.module, fnty,
                                                    _masked_name("store", vt))
                builder.call(fn, [args[3], vptr, ir.Constant(ir.IntType(32), align), mask])
        return context.get_dummy_value()

    return types.none(arr, types.intp, types.intp, v, types.intp), codegen


@intrinsic
def vsplat_as(typingctx, x, arr):
    """``x`` converted to ``arr``'s dtype, in every lane (so a float64 scalar such as a learning
    rate can scale float32 vectors)."""
    vt = _vector_of(arr.dtype)

    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[0], sig.args[0], arr.dtype)
        return _splat(builder, val, context.get_value_type(vt))

    return vt(x, arr), codegen


@intrinsic
def vadd(typingctx, a, b):
    """``a + b``, lane by lane."""

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vmul(typingctx, a, b):
    """``a * b``, lane by lane."""

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vsub(typingctx, a, b):
    """``a - b``, lane by lane."""

    def codegen(context, builder, sig, args):
        return builder.fsub(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vsum(typingctx, v):
    """The sum of the lanes, as a scalar: a fixed tree (halves added pairwise), so the same
    inputs always give the same bits."""

    def codegen(context, builder, sig, args):
        x = args[0]
        n = v.count
        while n > 1:
            n //= 2
            lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                          list(range(n))))
            hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                          list(range(n, 2 * n))))
            x = builder.fadd(lo, hi)
        return builder.extract_element(x, ir.Constant(ir.IntType(32), 0))

    return v.dtype(v), codegen


@intrinsic
def vkeep_where_positive(typingctx, g, a):
    """``a > 0 ? g : 0`` lane by lane (the ReLU mask applied to a gradient)."""

    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered(">", args[1], zero), args[0], zero)

    return g(g, a), codegen
