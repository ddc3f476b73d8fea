"""Rung 9, `bf16`: the two big matmuls in bfloat16 on ``vdpbf16ps``, everything else in float32.

The mixed-precision recipe: float32 master parameters and optimiser state, float32 data
converted once to bfloat16; each step

1. ``z1 = b1 + bf16(x) @ bf16(w1)``: products of bfloat16 pairs accumulated in float32
   (``forward``), the bias as the accumulators' start;
2. the float32 row pass of the other rungs (``common/rowpass.py``): the activation, the output
   layer (its three matmuls are ``6 m h k`` of the step's ``4 m n h + 6 m h k`` flops and stay
   float32: bfloat16 would buy no time there and cost precision), the loss, ``dz1`` and the
   small gradients;
3. ``dw1 = bf16(x).T @ bf16(dz1)`` (``weight_grad``), fused with the SGD update ``w1 -= lr *
   dw1`` in float32 and with the bfloat16 copy of the new ``w1`` that the next step's
   ``forward`` reads: ``dw1`` is never stored, and ``w1`` is read and written once.

The arithmetic of both matmuls is ``common/bf16.py``'s: pairs along the sum's index, each pair
as ``vdpbf16ps`` defines it, the pairs in order from the first.  One lane's sum never depends on
the thread count or the tiling, so the rung is bitwise reproducible, and its emulated twin (the
same code with ``vdp`` emulated: ``bf16-emulated``, any x86 CPU) gives the very same bits.

Layouts (a *word* holds two bfloat16, ``common/bf16.py``):

``xw (m, ceil(n/2))``          rows of x, pairs along the features: ``forward``'s A, as it is
``wp (panels * ceil(n/2), 32)`` w1 in panels of 32 columns, pairs along its rows
                                (``pack_pairs``): ``forward``'s B, one contiguous
                                ``ceil(n/2) x 32`` block a panel
``xt (n, ceil(m/2))``          x transposed, pairs along the batch (``transpose_pairs``):
                                ``weight_grad``'s A
``gp (panels * ceil(m/2), 32)`` dz1 in panels, pairs along the batch: ``weight_grad``'s B

Micro-kernel (``_tile``): ``MR = 8`` rows of C by two vectors (32 columns) in 16 accumulator
registers for the whole sum; each pair step loads the two vectors of B's panel row, broadcasts
one word of A per row and issues 16 ``vdpbf16ps`` (64 flops each): 10 loads per 16 instructions.
Tiles run in a ``prange`` with the column panel outermost, so a panel of B (``ceil(n/2) x 32``
words, 50 KB for n = 784) stays in cache while the row groups pass it.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .common import bf16 as bf
from .common.activations import RELU
from .common.loops import optim_loop_with, sgd_loop
from .common.losses import batch_scale
from .common.rowpass import (ROWS, apply_small_updates, output_layer, row_pass_rows, transpose,
                             zero_sums)
from .common.simd import vfma, vload2, vload2_part, vsplat, vsplat_as, vstore2, vstore2_part, vzero
from .common.losses import SQUARED
from .common.updates import (l2_term, record_and_update_with, update, update_after_w1,
                             update_all)
from .jit import JIT_OPTIONS, PARALLEL_OPTIONS
from .variant import (Direct, Variant, applied_grads, batches, count_updates, new_grads,
                      parallel_guard, parallel_section, scratch, sizes)

MR = 8  # rows of C per micro-tile (even: weight_grad writes w1's bfloat16 copy a pair of rows at a time)
LANES = bf.LANES  # float32 lanes of a vector
NR = 2 * LANES  # columns of C per micro-tile: a panel


def panels(h: int) -> int:
    return -(-h // NR)


def half(n: int) -> int:
    """Words of ``n`` bfloat16 in pairs."""
    return -(-n // 2)


# --- packing --------------------------------------------------------------------------------------

@njit(**PARALLEL_OPTIONS)
def pack_pairs(a, out):
    """``a (R, h)`` float32 rounded to bfloat16 in panels of pairs of rows: word ``l`` of row
    ``P * ceil(R/2) + q`` of ``out`` holds ``a[2q, 32P + l]`` (low half) and ``a[2q + 1, 32P + l]``
    (high half), zero past ``a``'s last row and column.  ``w1`` for ``forward``, ``dz1`` for
    ``weight_grad``."""
    R, h = a.shape
    H = (R + 1) // 2
    for t in prange(((h + NR - 1) // NR) * H):
        panel, q = t // H, t % H
        r0, r1 = 2 * q, 2 * q + 1
        for v in range(2):
            j = panel * NR + v * LANES
            count = max(0, min(LANES, h - j))
            lo = vload2_part(a, r0, j, count)
            hi = vload2_part(a, r1, j, count) if r1 < R else vzero(a)
            vstore2(out, t, v * LANES, bf.vpair_words(lo, hi))


@njit(**PARALLEL_OPTIONS)
def transpose_pairs(xw, n, xt):
    """``xt (n, ceil(m/2))``: the bfloat16 of ``x (m, n)`` (given as its words ``xw``)
    transposed, in pairs along the batch: ``xt[c, q]`` holds ``x[2q, c]`` (low half) and
    ``x[2q + 1, c]`` (high half; zero past the last row)."""
    m = xw.shape[0]
    H = xt.shape[1]
    for p in prange(xw.shape[1]):
        c = 2 * p
        for q in range(H):
            w0 = xw[2 * q, p]
            w1 = xw[2 * q + 1, p] if 2 * q + 1 < m else np.uint32(0)
            xt[c, q] = (w1 << np.uint32(16)) | (w0 & np.uint32(0xFFFF))
            if c + 1 < n:
                xt[c + 1, q] = (w1 & np.uint32(0xFFFF0000)) | (w0 >> np.uint32(16))


# --- the micro-kernel -----------------------------------------------------------------------------

@njit(**JIT_OPTIONS, inline="always")
def _tile(mode, A, i0, M, Bp, b_row0, K2, c):
    """``c`` (16 accumulators: rows ``i0 .. i0+7`` of C by two vectors) plus, pair by pair in
    order, ``A[rows, q] . Bp[b_row0 + q]`` for ``q < K2``.  Rows of A past ``M`` repeat its last
    (computed, never stored)."""
    r1 = min(i0 + 1, M - 1)
    r2 = min(i0 + 2, M - 1)
    r3 = min(i0 + 3, M - 1)
    r4 = min(i0 + 4, M - 1)
    r5 = min(i0 + 5, M - 1)
    r6 = min(i0 + 6, M - 1)
    r7 = min(i0 + 7, M - 1)
    c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71 = c
    for q in range(K2):
        b0 = vload2(Bp, b_row0 + q, 0)
        b1 = vload2(Bp, b_row0 + q, LANES)
        a = vsplat(A[i0, q])
        c00 = bf.vdp(mode, c00, a, b0)
        c01 = bf.vdp(mode, c01, a, b1)
        a = vsplat(A[r1, q])
        c10 = bf.vdp(mode, c10, a, b0)
        c11 = bf.vdp(mode, c11, a, b1)
        a = vsplat(A[r2, q])
        c20 = bf.vdp(mode, c20, a, b0)
        c21 = bf.vdp(mode, c21, a, b1)
        a = vsplat(A[r3, q])
        c30 = bf.vdp(mode, c30, a, b0)
        c31 = bf.vdp(mode, c31, a, b1)
        a = vsplat(A[r4, q])
        c40 = bf.vdp(mode, c40, a, b0)
        c41 = bf.vdp(mode, c41, a, b1)
        a = vsplat(A[r5, q])
        c50 = bf.vdp(mode, c50, a, b0)
        c51 = bf.vdp(mode, c51, a, b1)
        a = vsplat(A[r6, q])
        c60 = bf.vdp(mode, c60, a, b0)
        c61 = bf.vdp(mode, c61, a, b1)
        a = vsplat(A[r7, q])
        c70 = bf.vdp(mode, c70, a, b0)
        c71 = bf.vdp(mode, c71, a, b1)
    return (c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71)


# --- the two matmuls ------------------------------------------------------------------------------

@njit(**JIT_OPTIONS, inline="always")
def _store_row(C, i, j, n0, n1, lo, hi):
    vstore2_part(C, i, j, lo, n0)
    vstore2_part(C, i, j + LANES, hi, n1)


@njit(**PARALLEL_OPTIONS)
def forward(xw, wp, b1, z1, mode):
    """``z1 = b1 + bf16(x) @ bf16(w1)``: ``xw (m, K2)`` the batch's words, ``wp`` ``w1``'s
    panels (``pack_pairs``, ``K2`` rows each), ``b1 (h,)``, ``z1 (m, h)`` float32."""
    M, K2 = xw.shape
    h = z1.shape[1]
    P = (h + NR - 1) // NR
    G = (M + MR - 1) // MR
    for t in prange(P * G):
        panel, g = t // G, t % G
        i0, j = g * MR, panel * NR
        n0 = max(0, min(LANES, h - j))
        n1 = max(0, min(LANES, h - j - LANES))
        s0 = vload2_part(b1.reshape((1, h)), 0, j, n0)
        s1 = vload2_part(b1.reshape((1, h)), 0, j + LANES, n1)
        c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71 = _tile(
            mode, xw, i0, M, wp, panel * K2, K2,
            (s0, s1, s0, s1, s0, s1, s0, s1, s0, s1, s0, s1, s0, s1, s0, s1))
        _store_row(z1, i0, j, n0, n1, c00, c01)
        if i0 + 7 < M:  # a whole group
            _store_row(z1, i0 + 1, j, n0, n1, c10, c11)
            _store_row(z1, i0 + 2, j, n0, n1, c20, c21)
            _store_row(z1, i0 + 3, j, n0, n1, c30, c31)
            _store_row(z1, i0 + 4, j, n0, n1, c40, c41)
            _store_row(z1, i0 + 5, j, n0, n1, c50, c51)
            _store_row(z1, i0 + 6, j, n0, n1, c60, c61)
            _store_row(z1, i0 + 7, j, n0, n1, c70, c71)
        else:  # the last rows: rows past M were computed from repeats, not stored
            for r, lo, hi in ((1, c10, c11), (2, c20, c21), (3, c30, c31), (4, c40, c41),
                              (5, c50, c51), (6, c60, c61), (7, c70, c71)):
                if i0 + r < M:
                    _store_row(z1, i0 + r, j, n0, n1, lo, hi)


@njit(**JIT_OPTIONS, inline="always")
def _update_pair(w, wp, c, j, n0, n1, lo0, lo1, hi0, hi1, alpha, wp_row):
    """Rows ``c`` and ``c + 1`` of ``w`` += ``alpha`` times their accumulators (``lo*``, ``hi*``:
    two vectors each), and their bfloat16 pair words into ``wp``'s row ``wp_row``."""
    n = w.shape[0]
    a = vsplat_as(alpha, w)
    e0 = vfma(a, lo0, vload2_part(w, c, j, n0))
    e1 = vfma(a, lo1, vload2_part(w, c, j + LANES, n1))
    _store_row(w, c, j, n0, n1, e0, e1)
    o0 = vzero(w)
    o1 = vzero(w)
    if c + 1 < n:
        o0 = vfma(a, hi0, vload2_part(w, c + 1, j, n0))
        o1 = vfma(a, hi1, vload2_part(w, c + 1, j + LANES, n1))
        _store_row(w, c + 1, j, n0, n1, o0, o1)
    vstore2(wp, wp_row, 0, bf.vpair_words(e0, o0))
    vstore2(wp, wp_row, LANES, bf.vpair_words(e1, o1))


@njit(**PARALLEL_OPTIONS)
def weight_grad(xt, gp, out, wp, alpha, update, mode):
    """``dw1 = bf16(x).T @ bf16(dz1)`` from ``xt (n, K2)`` (``transpose_pairs``) and ``gp``
    (``pack_pairs`` of ``dz1``, ``K2`` rows a panel).  ``update`` false: ``out = dw1``
    (``out (n, h)``).  ``update`` true: ``out += alpha * dw1`` in float32 (``out`` is ``w1``,
    ``alpha = -lr``) and ``wp`` receives the new ``w1``'s panels, as ``pack_pairs`` would write
    them, for the next ``forward``."""
    n, K2 = xt.shape
    h = out.shape[1]
    P = (h + NR - 1) // NR
    G = (n + MR - 1) // MR
    Kw = (n + 1) // 2  # rows of a panel of wp
    zero = vzero(out)
    for t in prange(P * G):
        g, panel = t // P, t % P  # row groups outermost: (the docstring)
        i0, j = g * MR, panel * NR
        n0 = max(0, min(LANES, h - j))
        n1 = max(0, min(LANES, h - j - LANES))
        c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71 = _tile(
            mode, xt, i0, n, gp, panel * K2, K2,
            (zero, zero, zero, zero, zero, zero, zero, zero,
             zero, zero, zero, zero, zero, zero, zero, zero))
        row = panel * Kw + i0 // 2  # wp's row of w1's rows i0, i0 + 1
        if update:
            _update_pair(out, wp, i0, j, n0, n1, c00, c01, c10, c11, alpha, row)
            if i0 + 2 < n:
                _update_pair(out, wp, i0 + 2, j, n0, n1, c20, c21, c30, c31, alpha, row + 1)
            if i0 + 4 < n:
                _update_pair(out, wp, i0 + 4, j, n0, n1, c40, c41, c50, c51, alpha, row + 2)
            if i0 + 6 < n:
                _update_pair(out, wp, i0 + 6, j, n0, n1, c60, c61, c70, c71, alpha, row + 3)
        else:
            for r, lo, hi in ((0, c00, c01), (1, c10, c11), (2, c20, c21), (3, c30, c31),
                              (4, c40, c41), (5, c50, c51), (6, c60, c61), (7, c70, c71)):
                if i0 + r < n:
                    _store_row(out, i0 + r, j, n0, n1, lo, hi)


# --- the row pass, in two halves ---------------------------------------------------------------

HALVES = 2  # a fixed split (not one part a thread): the same sums in the same order on any count


@njit(**PARALLEL_OPTIONS)
def _row_halves(y, b2, a1, dz1, w2t, parts, ds, loss_kind, act, inv, losses):
    """The rows of the batch in two halves (a multiple of ``rowpass.ROWS`` rows each), each
    half's sums for ``dw2t``, ``db1``, ``db2`` into its own ``parts[t]`` (``(k + 2, h)``: the
    ``k`` rows of ``dw2t``, then ``db1``, then ``db2`` padded), its loss into ``losses[t]``."""
    m, h = a1.shape
    k = w2t.shape[0]
    half = ((m + 1) // 2 + ROWS - 1) // ROWS * ROWS
    for t in prange(HALVES):
        part = parts[t]
        dw2t, db1, db2 = part[:k, :h], part[k, :h], part[k + 1, :k]
        zero_sums(dw2t, db1, db2)
        losses[t] = row_pass_rows(y, b2, a1, dz1, w2t, dw2t, db1, db2, ds[t], loss_kind, act,
                                  min(m, t * half), min(m, (t + 1) * half), inv)


@njit(**JIT_OPTIONS)
def row_pass_halves(y, b2, a1, dz1, w2t, dw2t, db1, db2, w, loss_kind):
    """``rowpass.row_pass`` over the two halves of the batch at once (``_row_halves``), their
    sums added in order: the serial pass was a sixth of the step, one core idle."""
    k, h = dw2t.shape
    losses = np.empty(HALVES)
    _row_halves(y, b2, a1, dz1, w2t, w.parts, w.d, loss_kind, w.act,
                batch_scale(y, k), losses)
    p0, p1 = w.parts[0], w.parts[1]
    for c in range(k + 1):
        dst = dw2t[c] if c < k else db1
        for j in range(h):
            dst[j] = p0[c, j] + p1[c, j]
    for c in range(k):
        db2[c] = p0[k + 1, c] + p1[k + 1, c]
    return losses[0] + losses[1]


# --- the step -------------------------------------------------------------------------------------

class Bf16Work(NamedTuple):
    """The step's scratch: ``a1, dz1 (m, h)``, ``w2t, dw2t (k, h)`` as in `fused` (float32),
    ``d (HALVES, rowpass.ROWS, k)`` and ``parts (HALVES, k + 2, h)``: each half's row pass
    scratch and sums (``row_pass_halves``); ``wp`` ``w1``'s bfloat16 panels, ``gp`` ``dz1``'s, ``xt`` the batch
    transposed in pairs (uint32 words); ``fresh[0]``: 1 while ``wp`` holds the current ``w1``
    (an SGD step's ``weight_grad`` wrote it), else 0 (the next step packs ``w1`` first);
    ``mode``: ``bf16.Native`` or ``bf16.Emulated``; ``act``: the hidden activation."""

    a1: np.ndarray
    dz1: np.ndarray
    w2t: np.ndarray
    dw2t: np.ndarray
    d: np.ndarray
    parts: np.ndarray
    wp: np.ndarray
    gp: np.ndarray
    xt: np.ndarray
    fresh: np.ndarray
    mode: object
    act: object


@njit(**JIT_OPTIONS)
def predict(xw, p, w, z2):
    """``z2 = act(b1 + bf16(x) @ bf16(w1)) @ w2 + b2`` (the output layer in float32)."""
    a1 = w.a1[:xw.shape[0]]
    pack_pairs(p.w1, w.wp)
    w.fresh[0] = 1
    forward(xw, w.wp, p.b1, a1, w.mode)
    transpose(p.w2, w.w2t)
    output_layer(a1, w.w2t, p.b2, z2, w.act)


@njit(**JIT_OPTIONS)
def step(xw, y, p, g, w, lr, update, loss_kind):
    """Loss, gradients and (with ``update``) the SGD step on the batch ``xw`` (its bfloat16
    words): the contract of ``fused.step``.  ``w1``'s bfloat16 copy is packed at the start
    unless the previous SGD step left it current."""
    m = xw.shape[0]
    n = p.w1.shape[0]
    a1, dz1 = w.a1[:m], w.dz1[:m]
    if w.fresh[0] == 0:
        pack_pairs(p.w1, w.wp)
        w.fresh[0] = 1
    forward(xw, w.wp, p.b1, a1, w.mode)
    transpose(p.w2, w.w2t)
    loss = row_pass_halves(y, p.b2, a1, dz1, w.w2t, w.dw2t, g.b1, g.b2, w, loss_kind)
    if update and not np.isfinite(loss):
        return loss  # no update (the contract); wp still holds w1
    K2 = (m + 1) // 2
    gp = w.gp[:(p.w1.shape[1] + NR - 1) // NR * K2]
    xt = w.xt[:, :K2]
    pack_pairs(dz1, gp)
    transpose_pairs(xw, n, xt)
    if not update:
        weight_grad(xt, gp, g.w1, w.wp, 1.0, False, w.mode)
        transpose(w.dw2t, g.w2)
        w.fresh[0] = 0  # the optimiser will change w1
    else:
        weight_grad(xt, gp, p.w1, w.wp, -np.float64(lr), True, w.mode)
        apply_small_updates(p.w2, p.b1, p.b2, w.dw2t, g.b1, g.b2, lr)
    return loss


@njit(**JIT_OPTIONS)
def train_loop(x, y, p, g, w, lr, loss_kind, b, losses):
    """Up to ``len(losses)`` SGD steps in one compiled call (``common/loops.py``)."""
    return sgd_loop(step, x, y, p, g, w, lr, loss_kind, b, losses)


# w1's optimiser update in two halves at once when it is this large (elements); the split falls
# on a multiple of SPLIT_ALIGN, so that each element takes the same path through the compiled
# ``updates.update`` loop (its vector body or its remainder) as in one serial pass: the same bits.
SPLIT_MIN = 65536
SPLIT_ALIGN = 4096


@njit(**PARALLEL_OPTIONS)
def _update_halves(w, dw, s1, s2, kind, form, lr, decay, mu, nesterov, beta1, beta2, eps, t,
                   cut, sq):
    """``updates.update`` of ``w[:cut]`` and ``w[cut:]`` (flat, with their state) at once;
    each half's ``sum(w**2)`` into ``sq``.  (Scalars, not the optimiser's NamedTuples: a
    ``prange`` body captures scalars and arrays only.)"""
    n = w.shape[0]
    for half in prange(2):
        lo = 0 if half == 0 else cut
        hi = cut if half == 0 else n
        a = s1[lo:hi] if s1.shape[0] else s1
        b = s2[lo:hi] if s2.shape[0] else s2
        sq[half] = update(kind, form, w[lo:hi], dw[lo:hi], a, b, lr, decay, mu, nesterov, beta1,
                          beta2, eps, t)


@njit(**JIT_OPTIONS)
def update_all_halves(p, g, o, t, decay):
    """``updates.update_all`` with ``w1``'s update (most of the update's memory traffic: the
    weights, their gradient and the optimiser's state) on two threads: the serial pass was a
    fifth of an Adam step at 200x784x800.  Every parameter gets the same bits as from the serial
    pass; the L2 term's float64 sum of ``w1**2`` is taken in two halves."""
    size = p.w1.size
    if size < SPLIT_MIN:
        return update_all(p, g, o, t, decay)
    hp = o.hyper
    sq = np.zeros(2)
    _update_halves(p.w1.reshape(size), g.w1.reshape(size),
                   o.s1[:size] if o.s1.shape[0] else o.s1, o.s2[:size] if o.s2.shape[0] else o.s2,
                   o.kind, o.form, hp.lr, decay, hp.momentum, o.nesterov, hp.beta1, hp.beta2,
                   hp.eps, t, (size // 2) // SPLIT_ALIGN * SPLIT_ALIGN, sq)
    return l2_term(o, decay, sq[0] + sq[1] + update_after_w1(p, g, o, t, decay))


@njit(**JIT_OPTIONS)
def record_and_update_halves(losses, t, loss, p, g, o, y):
    """``updates.record_and_update`` with ``update_all_halves``."""
    return record_and_update_with(update_all_halves, losses, t, loss, p, g, o, y)


@njit(**JIT_OPTIONS)
def train_loop_optim(x, y, p, g, w, o, loss_kind, b, losses):
    """Up to ``len(losses)`` steps of the optimiser ``o`` in one compiled call, ``w1``'s
    update on two threads (``record_and_update_halves``)."""
    return optim_loop_with(step, record_and_update_halves, x, y, p, g, w, o, loss_kind, b,
                           losses)


# --- the Python side: bfloat16 data, the step contract, the two variants ------------------------

BFLOAT16 = "bfloat16"  # the dtype name train, the estimators and the command line take


def is_bfloat16(dtype) -> bool:
    """Whether ``dtype`` names bfloat16 (``"bfloat16"`` or ``"bf16"``; numpy has no such dtype)."""
    return isinstance(dtype, str) and dtype.lower() in ("bfloat16", "bf16")


class Bf16Data:
    """Rows of ``x`` rounded to bfloat16 once (to nearest even), kept as pairs: ``words (N,
    ceil(n/2))`` uint32, element ``2q`` of a row in the low half of its word ``q``; ``n``
    columns.  Indexing with a slice or an integer array selects rows (a copy of their words, a
    quarter of the float64 rows' size).  Made by ``of`` from checked float data: the kernels
    trust it."""

    __slots__ = ("words", "n")
    format = "fastnn-bf16-rows"
    dtype = BFLOAT16
    ndim = 2

    def __init__(self, words, n):
        self.words, self.n = words, int(n)

    @classmethod
    def of(cls, x) -> "Bf16Data":
        """``x (N, n)`` (float, any layout, already checked) rounded to bfloat16, in parallel."""
        if isinstance(x, Bf16Data):
            return x
        words = np.empty((x.shape[0], half(x.shape[1])), np.uint32)
        with parallel_section():
            bf.to_words(x, words)
        return cls(words, x.shape[1])

    @property
    def shape(self):
        return (self.words.shape[0], self.n)

    def __len__(self):
        return self.words.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            return Bf16Data(np.ascontiguousarray(self.words[key]), self.n)
        key = np.asarray(key)
        if key.dtype.kind not in "iu" or key.ndim != 1:
            raise TypeError(f"Bf16Data: rows are selected by a slice or a 1-d integer array, "
                            f"got {key.dtype} with {key.ndim} dimensions")
        return Bf16Data(np.take(self.words, key, axis=0), self.n)

    def toarray(self) -> np.ndarray:
        """The rows' values as float32 (what the kernels compute with)."""
        return bf.words_to_float(self.words, self.n)


def words(x) -> np.ndarray:
    """The bfloat16 words of ``x``: a ``Bf16Data``'s own, or a checked float array's, rounded
    now (the one-batch calls: ``predict``, ``loss_and_grads``, ``sgd_step``)."""
    return (x if isinstance(x, Bf16Data) else Bf16Data.of(x)).words


def work(params, m, mode, full=True, act=RELU) -> Bf16Work:
    """Scratch for a step on ``m`` rows (``full`` false: for ``predict``), ``fresh`` reset:
    every call from Python packs ``w1`` (scratch is shared by every call of this thread, and
    its ``w1`` may be another)."""
    _, n, h, k, dt = sizes(params, m)
    P = panels(h)
    u32 = np.uint32
    wp = scratch("bf16/wp", (P * half(n), NR), u32)
    fresh = scratch("bf16/fresh", (1,), np.int64)
    fresh[0] = 0
    a1 = scratch("a1", (m, h), dt)
    if not full:
        none = np.empty((0, h), dt)
        return Bf16Work(a1, none, scratch("w2t", (k, h), dt), none, np.empty((0, 0, k), dt),
                        np.empty((0, 0, h), dt), wp, np.empty((0, NR), u32),
                        np.empty((0, 0), u32), fresh, mode, act)
    return Bf16Work(a1, scratch("dz1", (m, h), dt), scratch("w2t", (k, h), dt),
                    scratch("dw2t", (k, h), dt), scratch("bf16/d", (HALVES, ROWS, k), dt),
                    scratch("bf16/parts", (HALVES, k + 2, max(h, k)), dt), wp,
                    scratch("bf16/gp", (P * half(m), NR), u32),
                    scratch("bf16/xt", (n, half(m)), u32), fresh, mode, act)


def _variant(name, mode, description) -> Variant:
    step_, predict_ = Direct(step), Direct(predict)
    sgd_loop_, optim_loop_ = Direct(train_loop), Direct(train_loop_optim)

    def key(act):
        return (type(mode), type(act))

    def _predict(params, x, act=RELU):
        xw = words(x)
        m, n, h, k, dt = sizes(params, xw.shape[0])
        z2 = np.empty((m, k), dt)
        with parallel_guard(params, m):
            predict_(key(act), xw, params, work(params, m, mode, False, act), z2)
        return z2

    def _loss_and_grads(params, x, y, loss_kind=SQUARED, grads=None, act=RELU):
        xw = words(x)
        grads = new_grads(params) if grads is None else grads
        with parallel_guard(params, xw.shape[0]):
            loss = step_(key(act), xw, y, params, grads,
                         work(params, xw.shape[0], mode, True, act), params.dtype.type(0.0),
                         False, loss_kind)
        return loss, grads

    def _sgd_step(params, x, y, lr, loss_kind=SQUARED, act=RELU):
        xw = words(x)
        with parallel_guard(params, xw.shape[0]):
            return step_(key(act), xw, y, params, applied_grads(params),
                         work(params, xw.shape[0], mode, True, act), params.dtype.type(lr),
                         True, loss_kind)

    def _train_loop(params, x, y, lr, losses, loss_kind=SQUARED, batch=None, start=0,
                    order=None, act=RELU):
        xw = words(x)
        b = batches(params, xw, y, batch, start, order)
        with parallel_guard(params, b.size):
            return sgd_loop_(key(act), xw, y, params, applied_grads(params),
                             work(params, b.size, mode, True, act), params.dtype.type(lr),
                             loss_kind, b, losses)

    def _train_loop_optim(params, x, y, optimizer, grads, losses, loss_kind=SQUARED,
                          batch=None, start=0, order=None, act=RELU):
        xw = words(x)
        b = batches(params, xw, y, batch, start, order)
        state = optimizer.kernel_state(params)
        with parallel_guard(params, b.size):
            done = optim_loop_(key(act), xw, y, params, grads,
                               work(params, b.size, mode, True, act), state, loss_kind, b,
                               losses)
        return count_updates(optimizer, losses, done)

    return Variant(name, description, _predict, _loss_and_grads, _sgd_step, _train_loop,
                   _train_loop_optim, bitwise=True, pool="numba", compiled=step,
                   dispatchers=(step, predict, train_loop, train_loop_optim), candidate=False)


BF16 = _variant(
    "bf16", bf.NATIVE_MODE,
    "bfloat16 matmuls on AVX512_BF16 (vdpbf16ps, float32 sums): x @ w1 with the bias, x.T @ "
    "dz1 with the SGD update and w1's next bfloat16 copy; float32 master weights, row pass "
    "and output layer")
BF16_EMULATED = _variant(
    "bf16-emulated", bf.EMULATED_MODE,
    "bf16 with vdpbf16ps's arithmetic emulated in float32 vector operations: the same bits on "
    "any x86 CPU, several times slower")

def this_cpus() -> Variant:
    """The bfloat16 rung this CPU runs: the instruction where it has it (``bf.NATIVE``, read
    now), else the emulation."""
    return BF16 if bf.NATIVE else BF16_EMULATED


# Not in the dense list (``variants()``): their ``x`` is bfloat16 (``Bf16Data``), their params
# float32.  ``kernels.get("bf16")`` and ``kernels.BF16`` name them.
VARIANTS = ()
BF16_VARIANTS = (BF16, BF16_EMULATED)
