"""The `tiled` variant's matmul: Numba-native (no BLAS), register-blocked, with the bias, the ReLU
and the SGD update fused into the tile's prologue and epilogue.

``C = epilogue(A @ B)`` with ``A (M, K)`` of any layout, ``B (K, N)`` with contiguous rows and
``C (M, N)`` with contiguous rows.  The forward pass is ``a1 = relu(x @ w1 + b1)``; the weight
update is ``w1 += -lr * (x.T @ dz1)`` with ``A = x.T`` (a transposed view, no copy).

Micro-kernel: a tile of ``MR = 4`` rows by 2 vectors (16 float64 or 32 float32 columns) of C is
held in 8 vector registers for the whole k loop.  Each step of the loop loads two vectors of a row
of B, broadcasts 4 scalars of a column of A, and issues 8 packed FMAs: 8 FMAs per 6 loads, where
an i-k-j loop over a C row in memory pays a load and a store for every FMA.  The accumulators
start at the bias (forward) or at zero, and leave through the epilogue: ReLU and store, plain
store, or ``C += alpha * acc`` (the update: ``dw1`` is never stored).

Edges: columns past the last full 2-vector panel go to 1-vector panels, the last one with masked
loads and stores (lanes past the edge are neither read nor written).  Rows past the last full
group of 4 are computed by a tile whose extra rows re-read the last row and are not stored.  So
every column runs in packed FMAs, whatever the shape.

Blocking: tiles are independent and run in a ``prange`` over (column panel, row group).  When B is
large (``w1`` in the forward pass), panels are the outer order: a panel of B (``K x 16`` float64,
128 KB at K = 1000) stays in L2 while the row groups of A stream past it.  When B fits in L2
(``dz1`` in the update), row groups are the outer order, so A (``x.T``) is read only once.
"""
from __future__ import annotations

from numba import njit, prange

from .._config import JIT_OPTIONS, PARALLEL_OPTIONS
from .backward import relu_backward, weight_grad
from .forward import output_loss_grad
from .simd import (VECTOR_BYTES, vfma, vload, vload2, vload2_part, vload_part, vrelu, vsplat,
                   vsplat_as, vstore2, vstore2_part, vzero)

MR = 4  # rows of C per micro-tile
L2_BYTES = 256 * 1024  # what we count on one core's L2 keeping, of at least 1 MB here

# epilogues
BIAS_RELU = 0  # C = relu(acc + bias)     (accumulators start at the bias)
STORE = 1  # C = acc
ACCUMULATE = 2  # C = C + alpha * acc


@njit(**JIT_OPTIONS, inline="always")
def _start(bias, j, mode, zero):
    return vload(bias, j) if mode == BIAS_RELU else zero


@njit(**JIT_OPTIONS, inline="always")
def _finish(C, i, j, acc, alpha, mode):
    if mode == BIAS_RELU:
        vstore2(C, i, j, vrelu(acc))
    elif mode == STORE:
        vstore2(C, i, j, acc)
    else:
        vstore2(C, i, j, vfma(vsplat_as(alpha, C), acc, vload2(C, i, j)))


@njit(**JIT_OPTIONS)
def _tile_4x2(A, B, C, bias, alpha, mode, i0, j0, lanes):
    """Rows ``i0 .. i0+3`` (clamped to the last row of C), columns ``j0 .. j0 + 2*lanes``."""
    M, K = A.shape
    r0 = i0
    r1 = min(i0 + 1, M - 1)
    r2 = min(i0 + 2, M - 1)
    r3 = min(i0 + 3, M - 1)
    j1 = j0 + lanes
    zero = vzero(C)
    c00 = _start(bias, j0, mode, zero)
    c01 = _start(bias, j1, mode, zero)
    c10, c11, c20, c21, c30, c31 = c00, c01, c00, c01, c00, c01
    for p in range(K):
        b0 = vload2(B, p, j0)
        b1 = vload2(B, p, j1)
        a = vsplat(A[r0, p])
        c00 = vfma(a, b0, c00)
        c01 = vfma(a, b1, c01)
        a = vsplat(A[r1, p])
        c10 = vfma(a, b0, c10)
        c11 = vfma(a, b1, c11)
        a = vsplat(A[r2, p])
        c20 = vfma(a, b0, c20)
        c21 = vfma(a, b1, c21)
        a = vsplat(A[r3, p])
        c30 = vfma(a, b0, c30)
        c31 = vfma(a, b1, c31)
    _finish(C, r0, j0, c00, alpha, mode)
    _finish(C, r0, j1, c01, alpha, mode)
    if i0 + 1 < M:
        _finish(C, r1, j0, c10, alpha, mode)
        _finish(C, r1, j1, c11, alpha, mode)
    if i0 + 2 < M:
        _finish(C, r2, j0, c20, alpha, mode)
        _finish(C, r2, j1, c21, alpha, mode)
    if i0 + 3 < M:
        _finish(C, r3, j0, c30, alpha, mode)
        _finish(C, r3, j1, c31, alpha, mode)


@njit(**JIT_OPTIONS)
def _tile_4x1(A, B, C, bias, alpha, mode, i0, j0, count):
    """As ``_tile_4x2`` with one vector of columns, of which the first ``count`` are real: the
    right edge of C.  Masked loads and stores never touch memory past column ``j0 + count``."""
    M, K = A.shape
    r0 = i0
    r1 = min(i0 + 1, M - 1)
    r2 = min(i0 + 2, M - 1)
    r3 = min(i0 + 3, M - 1)
    if mode == BIAS_RELU:
        c0 = vload_part(bias, j0, count)
    else:
        c0 = vzero(C)
    c1, c2, c3 = c0, c0, c0
    for p in range(K):
        b0 = vload2_part(B, p, j0, count)
        c0 = vfma(vsplat(A[r0, p]), b0, c0)
        c1 = vfma(vsplat(A[r1, p]), b0, c1)
        c2 = vfma(vsplat(A[r2, p]), b0, c2)
        c3 = vfma(vsplat(A[r3, p]), b0, c3)
    _finish_part(C, r0, j0, c0, alpha, mode, count)
    if i0 + 1 < M:
        _finish_part(C, r1, j0, c1, alpha, mode, count)
    if i0 + 2 < M:
        _finish_part(C, r2, j0, c2, alpha, mode, count)
    if i0 + 3 < M:
        _finish_part(C, r3, j0, c3, alpha, mode, count)


@njit(**JIT_OPTIONS, inline="always")
def _finish_part(C, i, j, acc, alpha, mode, count):
    if mode == BIAS_RELU:
        vstore2_part(C, i, j, vrelu(acc), count)
    elif mode == STORE:
        vstore2_part(C, i, j, acc, count)
    else:
        vstore2_part(C, i, j, vfma(vsplat_as(alpha, C), acc, vload2_part(C, i, j, count)),
                     count)


@njit(**PARALLEL_OPTIONS)
def matmul(A, B, C, bias, alpha, mode):
    """``C = epilogue(A @ B)``; see the module docstring.  ``alpha``: a float (``ACCUMULATE``).

    Shapes: ``A (M, K)``, ``B (K, N)``, ``C (M, N)``, ``bias (N,)`` (read only with ``BIAS_RELU``).
    Work is split into independent tiles (column panel x group of 4 rows), each written by one
    ``prange`` iteration: race-free, and the same sums in the same order for any thread count.
    """
    M = A.shape[0]
    N = B.shape[1]
    lanes = VECTOR_BYTES // C.itemsize
    wide = 2 * lanes
    n_wide = N // wide  # full 2-vector panels, then 1-vector panels for the rest
    j_narrow = n_wide * wide
    n_narrow = (N - j_narrow + lanes - 1) // lanes
    groups = (M + MR - 1) // MR
    panels = n_wide + n_narrow
    # Tile order: when all of B fits in L2, walk row groups in the outer order, so each group of
    # A is read from memory once and B is re-read from cache; otherwise walk column panels
    # outer, so one panel of B stays in L2 while all of A streams past it.
    b_in_cache = B.shape[0] * N * C.itemsize <= L2_BYTES
    for t in prange(panels * groups):
        if b_in_cache:
            panel = t % panels
            i0 = (t // panels) * MR
        else:
            panel = t // groups
            i0 = (t % groups) * MR
        if panel < n_wide:
            _tile_4x2(A, B, C, bias, alpha, mode, i0, panel * wide, lanes)
        else:
            j0 = j_narrow + (panel - n_wide) * lanes
            _tile_4x1(A, B, C, bias, alpha, mode, i0, j0, min(lanes, N - j0))


@njit(**JIT_OPTIONS)
def step(x, y, w1, b1, w2, b2, lr, update, dw1, db1, dw2, db2, a1, dz1, dz2):
    """The `tiled` variant's loss, gradients and (with ``update``) SGD step; returns ``L``.

    Arguments as ``fused.step`` (with ``update``, pass ``w1`` as ``dw1``, and ``w2``/``b2`` as
    ``dw2``/``db2`` so that their update is fused into the gradient kernel); scratch
    ``a1, dz1 (m, h)``, ``dz2 (m, k)``.  The two big matmuls are ``matmul`` (bias + ReLU fused
    into the first, the SGD update into the second); the small ``k``-sized work uses the `naive`
    kernels, which already fuse the loss with ``dz2``, the mask with ``db1`` and ``db2`` with
    ``dw2``.  No BLAS anywhere.
    """
    matmul(x, w1, a1, b1, 0.0, BIAS_RELU)
    loss = output_loss_grad(a1, w2, b2, y, dz2)
    relu_backward(dz2, w2, a1, dz1, db1)  # needs the old w2: before w2's update below
    weight_grad(a1, dz2, dw2, db2, lr, update, True)
    if update:
        matmul(x.T, dz1, w1, b1, -lr, ACCUMULATE)
        for j in range(b1.shape[0]):
            b1[j] -= lr * db1[j]
    else:
        matmul(x.T, dz1, dw1, b1, 1.0, STORE)
    return loss


@njit(**JIT_OPTIONS)
def train_loop(x, y, w1, b1, w2, b2, lr, losses, db1, a1, dz1, dz2):
    """``len(losses)`` SGD steps in one compiled call (the whole-loop mode)."""
    for t in range(losses.shape[0]):
        losses[t] = step(x, y, w1, b1, w2, b2, lr, True, w1, db1, w2, b2, a1, dz1, dz2)
