"""BLAS ``gemm`` callable from inside Numba-compiled code.

We take the addresses of ``dgemm``/``sgemm`` from scipy's ``cython_blas`` (the Fortran interface of
the BLAS scipy ships) and register them with LLVM under our own symbol names.  Compiled code then
calls the symbol by name, which is resolved in each new process; that keeps ``cache=True`` working,
where a ctypes function pointer would be baked into the machine code as an address and make the
function uncacheable.

Fortran BLAS is column-major and our arrays are row-major (C-contiguous).  A row-major ``C (m, n)``
is the column-major ``C.T (n, m)``, and ``C = op(A) @ op(B)`` is ``C.T = op(B).T @ op(A).T``, so
``gemm`` below swaps the operands and the m/n sizes; the transpose flags keep their meaning.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (loads the library whose symbols we take)
from numba import njit, types
from numba.extending import get_cython_function_address

from .._config import JIT_OPTIONS

for _name in ("dgemm", "sgemm"):
    llvm.add_symbol(f"fastnn_{_name}",
                    get_cython_function_address("scipy.linalg.cython_blas", _name))

_vp = types.voidptr
_gemm_signature = types.void(*([_vp] * 13))
_dgemm = types.ExternalFunction("fastnn_dgemm", _gemm_signature)
_sgemm = types.ExternalFunction("fastnn_sgemm", _gemm_signature)

_N = ord("N")
_T = ord("T")


@njit(**JIT_OPTIONS)
def gemm(trans_a, trans_b, alpha, a, b, beta, c):
    """``c = alpha * op(a) @ op(b) + beta * c`` on C-contiguous 2-D arrays of one float dtype.

    ``op(a)`` is ``a.T`` when ``trans_a`` is true.  Shapes: ``op(a) (m, k)``, ``op(b) (k, n)``,
    ``c (m, n)``; the caller guarantees them (no checks here: this is inside the kernels).
    With ``beta == 0`` BLAS does not read ``c``, so it may hold garbage.
    """
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    # Fortran passes every argument by reference: scalars live in small arrays.
    ints = np.empty(6, np.int32)
    ints[0] = n
    ints[1] = m
    ints[2] = k
    ints[3] = b.shape[1]  # leading dimension (row length) of b, a, c
    ints[4] = a.shape[1]
    ints[5] = n
    scal = np.empty(2, c.dtype)
    scal[0] = alpha
    scal[1] = beta
    flags = np.empty(2, np.uint8)
    flags[0] = _T if trans_b else _N
    flags[1] = _T if trans_a else _N
    args = (flags[0:].ctypes, flags[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes, ints[2:].ctypes,
            scal[0:].ctypes, b.ctypes, ints[3:].ctypes, a.ctypes, ints[4:].ctypes,
            scal[1:].ctypes, c.ctypes, ints[5:].ctypes)
    if c.itemsize == 8:
        _dgemm(*args)
    else:
        _sgemm(*args)
