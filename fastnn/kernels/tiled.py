"""Rung 3, `tiled`: Numba-native matmuls (no BLAS), register-blocked, with the bias, the ReLU
and the SGD update fused into the tile's prologue and epilogue; ``rowpass`` in between.

``C = epilogue(A @ B)`` with ``A (M, K)`` of any layout, ``B (K, N)`` with contiguous rows and
``C (M, N)`` with contiguous rows.  The forward pass is ``a1 = relu(x @ w1 + b1)``; the weight
update is ``w1 += -lr * (x.T @ dz1)`` with ``A = x.T`` (a transposed view, no copy).

Micro-kernel: a tile of ``MR = 4`` rows by 2 vectors (16 float64 or 32 float32 columns) of C is
held in 8 vector registers for the whole k loop (measured alone, with its data in L1: ~70
GFLOP/s float64 on one core here).  Each step of the loop loads two vectors of a row
of B, broadcasts 4 scalars of a column of A, and issues 8 packed FMAs: 8 FMAs per 6 loads, where
an i-k-j loop over a C row in memory pays a load and a store for every FMA.  The accumulators
start at the bias (forward) or at zero, and leave through the epilogue: ReLU and store, plain
store, or ``C += alpha * acc`` (the update: ``dw1`` is never stored).

Packing: each k-block of B is copied panel by panel into a contiguous buffer (rows of 2 vectors,
zero-padded past the last column), and of A group by group (the 4 values broadcast at each k step
side by side), so the k loop reads both sequentially, and the micro-kernel is compiled once per
dtype whatever A's layout (``x`` forward, ``x.T`` in the update).  Edges: the last panel's
padding makes its loads whole; its stores into C are masked (lanes past the edge are neither read
nor written).  Rows past the last full group of 4 are packed as copies of the last row, computed
and not stored.  So every column runs in packed FMAs, whatever the shape.

Blocking: tiles are independent and run in a ``prange`` over (column panel, row group).  When B
fits in L2 (``dz1`` in the update at moderate batch sizes), row groups are the outer order, so A
(``x.T``) is read only once.  When it does not (``w1`` in the forward pass), k is cut into blocks
of ``KC``: a ``KC x 16`` panel of B stays in L1/L2 while the row groups of A's k-block pass it,
and the partial sums wait in C between k-blocks (the bias enters with the first block, the ReLU
with the last).  In ``ACCUMULATE`` mode each k-block adds its ``alpha * partial`` to C, as BLAS
does with ``beta = 1``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numba.extending import overload

from .common.activations import RELU, Relu
from .common.loops import optim_loop, sgd_loop
from .common.rowpass import ROWS, apply_small_updates, output_layer, row_pass, transpose
from .common.simd import (VECTOR_BYTES, lanes, vfma, vload, vload2, vload2_part, vload_part,
                          vrelu, vsplat, vsplat_as, vstore2, vstore2_part, vzero)
from .jit import JIT_OPTIONS, OVERLOAD_OPTIONS, PARALLEL_OPTIONS
from .variant import compiled_variant, scratch, sizes

MR = 4  # rows of C per micro-tile
L2_BYTES = 512 * 1024  # what we count on one core's L2 holding for us (it has 1-2 MB)
KC = 256  # k-block length when B does not fit in L2: a KC x 16 panel of B is 32 KB (float64)

# epilogues
BIAS_RELU = 0  # C = relu(bias + A @ B)
STORE = 1  # C = A @ B
ACCUMULATE = 2  # C = C + alpha * (A @ B)
BIAS = 3  # C = bias + A @ B (the other activations: the row pass applies them)


def _forward_mode(act):
    """The forward matmul's mode for the activation ``act``: ReLU rides in the tile epilogue
    (idempotent, so the row pass applying it again changes nothing); the others do not."""
    raise NotImplementedError


@overload(_forward_mode, inline="always", jit_options=OVERLOAD_OPTIONS)
def _forward_mode_impl(act):
    relu = getattr(act, "instance_class", None) is Relu
    return (lambda act: BIAS_RELU) if relu else (lambda act: BIAS)


@njit(**JIT_OPTIONS)
def _start(C, i, j, count, bias, mode, first):
    """Initial accumulator for ``C[i, j : j + count]``: the bias or zero for the first k-block,
    else the partial sum waiting in C.  ``count < lanes`` only at C's right edge (masked)."""
    lanes = VECTOR_BYTES // C.itemsize
    if mode == ACCUMULATE or (first and mode == STORE) or count <= 0:
        return vzero(C)
    if count >= lanes:
        return vload(bias, j) if first else vload2(C, i, j)
    return vload_part(bias, j, count) if first else vload2_part(C, i, j, count)


@njit(**JIT_OPTIONS)
def _finish(C, i, j, count, acc, alpha, mode, last):
    """Write the accumulator back: ``C += alpha * acc``, ReLU (last k-block), or plain store."""
    if count <= 0:
        return
    lanes = VECTOR_BYTES // C.itemsize
    if mode == ACCUMULATE:
        old = vload2(C, i, j) if count >= lanes else vload2_part(C, i, j, count)
        acc = vfma(vsplat_as(alpha, C), acc, old)
    elif mode == BIAS_RELU and last:
        acc = vrelu(acc)
    if count >= lanes:
        vstore2(C, i, j, acc)
    else:
        vstore2_part(C, i, j, acc, count)


@njit(**JIT_OPTIONS)
def _tile(Ap, a_row0, Bp, b_row0, kb, C, bias, alpha, mode, i0, j0, n_cols, first, last):
    """The micro-kernel: rows ``i0 .. i0+3`` of C by two vectors of columns from ``j0`` (``n_cols``
    of them real), over one k-block of length ``kb``.

    Both operands come packed: ``Ap[a_row0 + q]`` holds the 4 values of A's rows ``i0 .. i0+3`` at
    step ``q`` of the block, ``Bp[b_row0 + q]`` the 2 vectors of B's row.  The 8 vector
    accumulators stay in registers for the whole k loop; rows past C's last are computed (from
    the last row, repeated by the packing) but not stored."""
    M = C.shape[0]
    lanes = VECTOR_BYTES // C.itemsize
    r1 = min(i0 + 1, M - 1)
    r2 = min(i0 + 2, M - 1)
    r3 = min(i0 + 3, M - 1)
    j1 = j0 + lanes
    n0 = min(lanes, n_cols)
    n1 = n_cols - lanes
    c00 = _start(C, i0, j0, n0, bias, mode, first)
    c01 = _start(C, i0, j1, n1, bias, mode, first)
    c10 = _start(C, r1, j0, n0, bias, mode, first)
    c11 = _start(C, r1, j1, n1, bias, mode, first)
    c20 = _start(C, r2, j0, n0, bias, mode, first)
    c21 = _start(C, r2, j1, n1, bias, mode, first)
    c30 = _start(C, r3, j0, n0, bias, mode, first)
    c31 = _start(C, r3, j1, n1, bias, mode, first)
    for q in range(kb):
        b0 = vload2(Bp, b_row0 + q, 0)
        b1 = vload2(Bp, b_row0 + q, lanes)
        a = Ap[a_row0 + q]
        a0 = vsplat(a[0])
        c00 = vfma(a0, b0, c00)
        c01 = vfma(a0, b1, c01)
        a0 = vsplat(a[1])
        c10 = vfma(a0, b0, c10)
        c11 = vfma(a0, b1, c11)
        a0 = vsplat(a[2])
        c20 = vfma(a0, b0, c20)
        c21 = vfma(a0, b1, c21)
        a0 = vsplat(a[3])
        c30 = vfma(a0, b0, c30)
        c31 = vfma(a0, b1, c31)
    _finish(C, i0, j0, n0, c00, alpha, mode, last)
    _finish(C, i0, j1, n1, c01, alpha, mode, last)
    if i0 + 1 < M:
        _finish(C, r1, j0, n0, c10, alpha, mode, last)
        _finish(C, r1, j1, n1, c11, alpha, mode, last)
    if i0 + 2 < M:
        _finish(C, r2, j0, n0, c20, alpha, mode, last)
        _finish(C, r2, j1, n1, c21, alpha, mode, last)
    if i0 + 3 < M:
        _finish(C, r3, j0, n0, c30, alpha, mode, last)
        _finish(C, r3, j1, n1, c31, alpha, mode, last)


def _k_block(K: int, N: int, itemsize: int) -> int:
    return K if K * N * itemsize <= L2_BYTES else min(K, KC)


def packed_sizes(M: int, K: int, N: int, itemsize: int) -> tuple[int, int]:
    """Rows of the two packing buffers ``matmul`` needs for ``A (M, K) @ B (K, N)``:
    ``Ap (rows_a, MR)`` and ``Bp (rows_b, 2 * lanes)``."""
    wide = 2 * VECTOR_BYTES // itemsize
    kc = _k_block(K, N, itemsize)
    return (M + MR - 1) // MR * kc, (N + wide - 1) // wide * kc


@njit(**PARALLEL_OPTIONS)
def matmul(A, B, C, bias, alpha, mode, Ap, Bp):
    """``C = epilogue(A @ B)``; see the module docstring.  ``alpha``: a float (``ACCUMULATE``).

    Shapes: ``A (M, K)`` (any layout: ``x`` or ``x.T``), ``B (K, N)`` and ``C (M, N)`` with
    contiguous rows, ``bias (N,)`` (read only with ``BIAS_RELU`` and ``BIAS``), scratch ``Ap``, ``Bp`` of at
    least ``packed_sizes(M, K, N)`` rows.  Work is split into independent tiles (column panel x
    group of 4 rows), each written by one ``prange`` iteration: race-free, and the same sums in
    the same order for any thread count.
    """
    M, K = A.shape
    N = B.shape[1]
    wide = 2 * VECTOR_BYTES // C.itemsize
    panels = (N + wide - 1) // wide
    groups = (M + MR - 1) // MR
    # Cache blocking.  If all of B fits in L2, take k whole and walk row groups in the outer
    # order: each group of A is read once, B is re-read from cache.  Otherwise cut k into blocks
    # of KC and walk column panels in the outer order: a KC x 16 panel of B stays in L1/L2 while
    # the row groups of A's k-block (M x KC, kept in L2 across panels) pass it.
    b_in_cache = K * N * C.itemsize <= L2_BYTES
    kc = K if b_in_cache else KC
    for k0 in range(0, K, kc):
        k1 = min(K, k0 + kc)
        kb = k1 - k0
        # Pack this k-block.  B panel by panel: each panel's rows become contiguous 2-vector rows
        # (zero past column N); unpacked, they sit a whole row of B apart, a power-of-two stride
        # for h = 512 or 1024 that maps them all to a few cache sets.  A group by group: the 4
        # values the micro-kernel broadcasts at each k step become adjacent (the last row
        # repeated past M), whatever A's layout, so the micro-kernel is compiled once per dtype.
        for panel in prange(panels):
            j0 = panel * wide
            for q in range(kb):
                row = B[k0 + q]
                dst = Bp[panel * kb + q]
                for c in range(wide):
                    dst[c] = row[j0 + c] if j0 + c < N else 0.0
        for g in prange(groups):
            for q in range(kb):  # q outer: for A = x.T the 4 values are adjacent in memory
                dst = Ap[g * kb + q]
                for r in range(MR):
                    dst[r] = A[min(g * MR + r, M - 1), k0 + q]
        first = k0 == 0
        last = k1 == K
        for t in prange(panels * groups):
            if b_in_cache:
                panel = t % panels
                g = t // panels
            else:
                panel = t // groups
                g = t % groups
            j0 = panel * wide
            _tile(Ap, g * kb, Bp, panel * kb, kb, C, bias, alpha, mode, g * MR, j0,
                  min(wide, N - j0), first, last)


class TiledWork(NamedTuple):
    """The step's scratch: ``a1, dz1 (m, h)``, ``w2t, dw2t (k, h)``, ``d (rowpass.ROWS, k)`` as
    in `fused`, and ``apack``, ``bpack``, the packing buffers of ``matmul``, large enough for
    both matmuls of a step (``x @ w1``: M=m, K=n; ``x.T @ dz1``: M=n, K=m; N=h for both);
    ``act`` the hidden activation's marker."""

    a1: np.ndarray
    dz1: np.ndarray
    w2t: np.ndarray
    dw2t: np.ndarray
    d: np.ndarray
    apack: np.ndarray
    bpack: np.ndarray
    act: object


def work(params, m, backend, full=True, act=RELU) -> TiledWork:
    """Scratch for a step on ``m`` rows (``full`` false: for ``predict``).  ``backend`` is
    unused: no BLAS here."""
    _, n, h, k, dt = sizes(params, m)
    fwd = packed_sizes(m, n, h, dt.itemsize)
    upd = packed_sizes(n, m, h, dt.itemsize) if full else fwd
    apack = scratch("apack", (max(fwd[0], upd[0]), MR), dt)
    bpack = scratch("bpack", (max(fwd[1], upd[1]), 2 * lanes(dt)), dt)
    if not full:
        none = np.empty((0, h), dt)
        return TiledWork(scratch("a1", (m, h), dt), none, scratch("w2t", (k, h), dt), none,
                         np.empty((0, k), dt), apack, bpack, act)
    return TiledWork(scratch("a1", (m, h), dt), scratch("dz1", (m, h), dt),
                     scratch("w2t", (k, h), dt), scratch("dw2t", (k, h), dt),
                     scratch("d", (ROWS, k), dt), apack, bpack, act)


@njit(**JIT_OPTIONS)
def predict(x, p, w, z2):
    """``z2 = act(x @ w1 + b1) @ w2 + b2``; ``w`` a ``TiledWork``."""
    a1 = w.a1[:x.shape[0]]
    matmul(x, p.w1, a1, p.b1, 0.0, _forward_mode(w.act), w.apack, w.bpack)
    transpose(p.w2, w.w2t)
    output_layer(a1, w.w2t, p.b2, z2, w.act)


@njit(**JIT_OPTIONS)
def step(x, y, p, g, w, lr, update, loss_kind):
    """The `tiled` variant's loss, gradients and (with ``update``) SGD step; returns ``L``.

    Arguments as ``fused.step``, with ``w`` a ``TiledWork``: ``matmul`` in place of BLAS, with
    the bias (and a ReLU, idempotent for the row pass) fused into the first and the SGD update
    into the second; the same serial ``rowpass.row_pass`` in between.  No BLAS anywhere.  A
    non-finite loss skips the update, as in ``fused.step``.
    """
    m = x.shape[0]
    a1, dz1 = w.a1[:m], w.dz1[:m]
    matmul(x, p.w1, a1, p.b1, 0.0, _forward_mode(w.act), w.apack, w.bpack)
    transpose(p.w2, w.w2t)
    loss = row_pass(y, p.b2, a1, dz1, w.w2t, w.dw2t, g.b1, g.b2, w.d, loss_kind, w.act)
    if not update:
        matmul(x.T, dz1, g.w1, p.b1, 1.0, STORE, w.apack, w.bpack)
        transpose(w.dw2t, g.w2)
    elif np.isfinite(loss):
        matmul(x.T, dz1, p.w1, p.b1, -lr, ACCUMULATE, w.apack, w.bpack)
        apply_small_updates(p.w2, p.b1, p.b2, w.dw2t, g.b1, g.b2, lr)
    return loss


@njit(**JIT_OPTIONS)
def train_loop(x, y, p, g, w, lr, loss_kind, b, losses):
    """Up to ``len(losses)`` SGD steps in one compiled call (``common/loops.py``)."""
    return sgd_loop(step, x, y, p, g, w, lr, loss_kind, b, losses)


@njit(**JIT_OPTIONS)
def train_loop_optim(x, y, p, g, w, o, loss_kind, b, losses):
    """Up to ``len(losses)`` steps of the optimiser ``o`` in one compiled call."""
    return optim_loop(step, x, y, p, g, w, o, loss_kind, b, losses)


SPEC = dict(
    name="tiled", step=step, predict=predict, work=work, train_loop=train_loop,
    train_loop_optim=train_loop_optim, pool="numba", bitwise=True, candidate=True,
    description="Numba-native, no BLAS: register-blocked SIMD matmuls (4 x 2-vector tiles of "
                "packed FMAs) with the bias and the SGD update in the tile prologue/epilogue, "
                "and the fused variant's row pass in between")
VARIANTS = [compiled_variant(**SPEC)]
