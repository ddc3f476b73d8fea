"""The small work between the two big matmuls, in one serial pass over the rows of the batch.

Shared by the `fused` (BLAS matmuls) and `tiled` (Numba SIMD matmuls) variants.  After the first
matmul, ``a1`` holds ``z1 = x @ w1 + b1``; everything else a step needs before the second matmul
is ``O(m*h*k)`` work, small next to the matmuls' ``O(m*n*h)``, but as numpy calls it is a dozen
passes over memory.  Here it is one pass: with a block of rows of ``a1`` hot in L1, the hidden
activation (``activations.py``: ReLU, tanh, logistic or identity, a compile-time parameter), ``z2``,
the loss (``losses.py``), ``dz2``, ``dz1 = (dz2 @ w2.T) * f'(a1)`` and the sums for ``db1``,
``dw2 = a1.T @ dz2`` and ``db2``.  None of ``z1``, ``z2``, ``da1`` or the derivative is stored.

Serial on purpose: at these sizes a parallel launch and its barrier cost about what the pass
does (measured: replacing three small ``prange`` kernels by this pass made the `tiled` step 8-27%
faster), and serial code never wakes a thread pool next to BLAS's.

``w2`` is used transposed (``w2t``) and ``dw2`` is accumulated transposed (``dw2t``), so every
inner loop runs along a contiguous row of length ``h`` (vectorised) rather than along ``k``, which
is often 1 to 10.
"""
from __future__ import annotations

from numba import njit

from numba.extending import overload

from ..jit import JIT_OPTIONS, OVERLOAD_OPTIONS
from .activations import Relu, activate, vtimes_derivative
from .losses import batch_scale, row_loss_grad, row_scale
from .simd import VECTOR_BYTES, vadd, vfma, vload2_part, vrelu, vsplat, vstore2_part, vsum, vzero


@njit(**JIT_OPTIONS)
def transpose(w2, w2t):
    """``w2t = w2.T`` (``w2 (h, k)``, ``w2t (k, h)``)."""
    h, k = w2.shape
    for j in range(h):
        for c in range(k):
            w2t[c, j] = w2[j, c]


# Rows per block of the row pass: each element of w2t and dw2t is loaded once per block and
# used for every row in it.  One row at a time, the inner loops did 2 loads or stores per FMA
# and ran at ~20 GFLOP/s; 4 rows at a time, ~1 per FMA.
ROWS = 4


@njit(**JIT_OPTIONS)
def row_pass(y, b2, a1, dz1, w2t, dw2t, db1, db2, d, loss_kind, act):
    """Everything between the two matmuls, a block of rows at a time (see the module docstring).

    In: ``a1`` holding ``z1`` (before the activation), ``w2t = w2.T``, ``loss_kind`` (a
    ``losses`` code), ``act`` (an ``activations`` marker).  Out: ``a1 = act(z1)``, ``dz1``,
    ``dw2t = dw2.T``, ``db1``, ``db2``; returns ``L`` (float64).  ``d (ROWS, k)`` is scratch for a
    block's rows of ``z2``, then of ``dz2``.  Blocks of ``ROWS`` rows (the last one possibly
    shorter): a fixed order for a given ``m``.
    """
    zero_sums(dw2t, db1, db2)
    return row_pass_rows(y, b2, a1, dz1, w2t, dw2t, db1, db2, d, loss_kind, act, 0,
                         a1.shape[0], batch_scale(y, w2t.shape[0]))


@njit(**JIT_OPTIONS)
def zero_sums(dw2t, db1, db2):
    """``dw2t``, ``db1``, ``db2`` = 0 (explicit loops, not slice assignments: Numba compiles
    ``a[:] = 0.0`` several times slower)."""
    k, h = dw2t.shape
    for c in range(k):
        db2[c] = 0.0
        for j in range(h):
            dw2t[c, j] = 0.0
    for j in range(h):
        db1[j] = 0.0


@njit(**JIT_OPTIONS)
def row_pass_rows(y, b2, a1, dz1, w2t, dw2t, db1, db2, d, loss_kind, act, lo, hi, inv):
    """``row_pass`` on the rows ``lo .. hi-1`` only, adding to ``dw2t``, ``db1``, ``db2`` (not
    zeroed here) with the batch's scale ``inv`` (``losses.batch_scale`` of the whole batch):
    a part of a row pass split over threads (``kernels/bf16.py``).  Blocks of ``ROWS`` from
    ``lo``."""
    loss = 0.0
    for i in range(lo, hi, ROWS):
        loss += _rows(i, min(ROWS, hi - i), y, b2, a1, dz1, w2t, dw2t, db1, db2, d, inv,
                      loss_kind, act)
    return loss


def _activate_block(act, a1, i, nr, h, L):
    """Rows ``i .. i+nr-1`` of ``a1`` through the activation, in place."""
    raise NotImplementedError


@overload(_activate_block, inline="always", jit_options=OVERLOAD_OPTIONS)
def _activate_block_impl(act, a1, i, nr, h, L):
    if getattr(act, "instance_class", None) is Relu:
        def relu(act, a1, i, nr, h, L):  # explicit vectors (masked at the row's end)
            for j in range(0, h, L):  # idempotent: a repeated row is harmless
                n = min(L, h - j)
                for r in range(nr):
                    vstore2_part(a1, i + r, j, vrelu(vload2_part(a1, i + r, j, n)), n)
        return relu

    def other(act, a1, i, nr, h, L):  # arithmetic LLVM vectorises (activations.py)
        for r in range(nr):
            row = a1[i + r]
            for j in range(h):
                row[j] = activate(act, row[j])
    return other


@njit(**JIT_OPTIONS, inline="always")
def _rows(i, nr, y, b2, a1, dz1, w2t, dw2t, db1, db2, d, inv, loss_kind, act):
    """Rows ``i .. i+nr-1`` (``nr <= 4``) of the row pass, in explicit SIMD vectors
    (``simd.py``), with every ``w2t``/``dw2t`` vector loaded once for the four rows.  Returns
    their loss terms' sum.  ``d (4, k)`` scratch.

    A block at the end of the batch with fewer than four rows repeats its last row in the
    missing slots (reading only) and gives the repeats a zero gradient row, so they add nothing
    and nothing of theirs is stored: one code path for every block.

    Plain loops over ``h`` left much of the work scalar: LLVM vectorises them 64 lanes at a time
    (16-lane vectors, interleaved 4 times), so the last ``h % 64`` entries of every row and
    every ``c`` (36 of 100 for ``h = 100``) ran one by one.  Here the last partial vector is a
    masked load/store instead.
    """
    h = a1.shape[1]
    k = w2t.shape[0]
    L = VECTOR_BYTES // a1.itemsize
    last = i + nr - 1
    i0, i1, i2, i3 = i, min(i + 1, last), min(i + 2, last), min(i + 3, last)
    _activate_block(act, a1, i, nr, h, L)
    for c in range(k):  # output layer: four dot products sharing each w2t vector
        s0 = s1 = s2 = s3 = vzero(a1)
        for j in range(0, h, L):
            n = min(L, h - j)
            w = vload2_part(w2t, c, j, n)
            s0 = vfma(vload2_part(a1, i0, j, n), w, s0)
            s1 = vfma(vload2_part(a1, i1, j, n), w, s1)
            s2 = vfma(vload2_part(a1, i2, j, n), w, s2)
            s3 = vfma(vload2_part(a1, i3, j, n), w, s3)
        d[0, c] = b2[c] + vsum(s0)
        d[1, c] = b2[c] + vsum(s1)
        d[2, c] = b2[c] + vsum(s2)
        d[3, c] = b2[c] + vsum(s3)
    loss = 0.0
    for r in range(4):
        if r < nr:
            loss += row_loss_grad(d[r], y[i + r], d[r], row_scale(y, i + r, k, inv),
                                  loss_kind)
        else:
            for c in range(k):
                d[r, c] = 0.0
    for c in range(k):
        db2[c] += (d[0, c] + d[1, c]) + (d[2, c] + d[3, c])
    db = db1.reshape((1, h))
    for j in range(0, h, L):  # da1 rows, the dw2 sums, the masks and db1, a vector at a time
        n = min(L, h - j)
        x0 = vload2_part(a1, i0, j, n)
        x1 = vload2_part(a1, i1, j, n)
        x2 = vload2_part(a1, i2, j, n)
        x3 = vload2_part(a1, i3, j, n)
        g0 = g1 = g2 = g3 = vzero(a1)
        for c in range(k):
            e0, e1, e2, e3 = vsplat(d[0, c]), vsplat(d[1, c]), vsplat(d[2, c]), vsplat(d[3, c])
            w = vload2_part(w2t, c, j, n)
            g0 = vfma(e0, w, g0)
            g1 = vfma(e1, w, g1)
            g2 = vfma(e2, w, g2)
            g3 = vfma(e3, w, g3)
            dw = vload2_part(dw2t, c, j, n)
            dw = vfma(e3, x3, vfma(e2, x2, vfma(e1, x1, vfma(e0, x0, dw))))
            vstore2_part(dw2t, c, j, dw, n)
        g0 = vtimes_derivative(act, g0, x0)  # ReLU: a1 > 0 exactly when z1 > 0
        g1 = vtimes_derivative(act, g1, x1)
        g2 = vtimes_derivative(act, g2, x2)
        g3 = vtimes_derivative(act, g3, x3)
        vstore2_part(dz1, i0, j, g0, n)
        if nr > 1:
            vstore2_part(dz1, i1, j, g1, n)
        if nr > 2:
            vstore2_part(dz1, i2, j, g2, n)
        if nr > 3:
            vstore2_part(dz1, i3, j, g3, n)
        total = vadd(vadd(g0, g1), vadd(g2, g3))
        vstore2_part(db, 0, j, vadd(vload2_part(db, 0, j, n), total), n)
    return loss


@njit(**JIT_OPTIONS)
def apply_small_updates(w2, b1, b2, dw2t, db1, db2, lr):
    """The SGD step for ``w2``, ``b1``, ``b2`` from the row pass's sums (``w1``'s is fused into
    the second matmul)."""
    h, k = w2.shape
    for j in range(h):
        b1[j] -= lr * db1[j]
        for c in range(k):
            w2[j, c] -= lr * dw2t[c, j]
    for c in range(k):
        b2[c] -= lr * db2[c]


@njit(**JIT_OPTIONS)
def output_layer(a1, w2t, b2, z2, act):
    """``z2 = act(a1) @ w2 + b2``, the activation applied in place to ``a1`` (which holds
    ``z1``)."""
    m, h = a1.shape
    k = w2t.shape[0]
    for i in range(m):
        a = a1[i]
        for j in range(h):
            a[j] = activate(act, a[j])
        for c in range(k):
            z = b2[c]
            for j in range(h):
                z += a[j] * w2t[c, j]
            z2[i, c] = z

