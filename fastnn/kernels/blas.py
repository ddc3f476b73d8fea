"""BLAS ``gemm`` callable from inside Numba-compiled code.

Two ways in, tried in this order (``FASTNN_BLAS=numpy|scipy`` forces one):

``numpy``  the CBLAS ``cblas_dgemm``/``cblas_sgemm`` of the OpenBLAS that numpy itself loaded (the
           ``scipy_cblas_?gemm64_`` symbols of numpy's wheels).  Sharing numpy's library means sharing
           its thread pool: OpenBLAS threads busy-wait after each call, and a second pool (scipy's
           own OpenBLAS) spinning next to numpy's made every step several times slower whenever a
           program also used numpy's matmul.
``scipy``  the Fortran ``dgemm``/``sgemm`` from scipy's ``cython_blas``, always available.

We take the functions' addresses and register them with LLVM under our own symbol names; compiled
code calls the symbols by name, which each new process resolves again.  That keeps ``cache=True``
working, where a ctypes function pointer would be baked into the machine code as an address.  Both
symbols are always registered and the backend is a run-time argument (``BACKEND``), so a cached
kernel stays valid whichever backend a later process picks.

Row-major arrays: CBLAS takes them as they are.  Fortran BLAS is column-major, and a row-major
``C (m, n)`` is the column-major ``C.T (n, m)``; ``C = op(A) @ op(B)`` is ``C.T = op(B).T @ op(A).T``,
so the Fortran call swaps the operands and the m/n sizes (the transpose flags keep their meaning).
"""
from __future__ import annotations

import ctypes
import os

import llvmlite.binding as llvm
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (loads the library whose symbols we take)
from numba import njit, types
from numba.extending import get_cython_function_address

from .._config import JIT_OPTIONS

NUMPY_CBLAS = 0
SCIPY_F77 = 1


def _numpy_cblas():
    """``(library path, {'d': addr, 's': addr})`` of numpy's ILP64 CBLAS gemm, or None."""
    try:
        from threadpoolctl import threadpool_info

        np.ones((2, 2)) @ np.ones((2, 2))  # make sure numpy's BLAS is loaded
        for pool in threadpool_info():
            if pool.get("user_api") != "blas" or pool.get("internal_api") != "openblas":
                continue
            if "numpy" not in pool["filepath"]:
                continue
            lib = ctypes.CDLL(pool["filepath"])
            # the 64_ suffix marks the ILP64 (64-bit integer) interface
            for fmt in ("scipy_cblas_{t}gemm64_", "cblas_{t}gemm64_"):
                try:
                    return pool["filepath"], {
                        t: ctypes.cast(getattr(lib, fmt.format(t=t)), ctypes.c_void_p).value
                        for t in "ds"}
                except AttributeError:
                    continue
    except Exception:  # any surprise here just means: use scipy's BLAS
        return None
    return None


_scipy = {t: get_cython_function_address("scipy.linalg.cython_blas", f"{t}gemm") for t in "ds"}
_numpy = None if os.environ.get("FASTNN_BLAS", "") == "scipy" else _numpy_cblas()
if os.environ.get("FASTNN_BLAS", "") == "numpy" and _numpy is None:
    raise ImportError("FASTNN_BLAS=numpy, but numpy's BLAS has no ILP64 CBLAS gemm to call")

BACKEND = NUMPY_CBLAS if _numpy is not None else SCIPY_F77
BACKEND_NAME = "numpy" if BACKEND == NUMPY_CBLAS else "scipy"
LIBRARY = _numpy[0] if _numpy is not None else scipy.linalg.cython_blas.__file__

for _t in "ds":
    llvm.add_symbol(f"fastnn_f77_{_t}gemm", _scipy[_t])
    # When numpy's CBLAS is missing the symbol still needs an address to link; BACKEND never
    # selects it then.
    llvm.add_symbol(f"fastnn_cblas_{_t}gemm", (_numpy[1] if _numpy else _scipy)[_t])

_vp = types.voidptr
_f77_signature = types.void(*([_vp] * 13))
_f77_dgemm = types.ExternalFunction("fastnn_f77_dgemm", _f77_signature)
_f77_sgemm = types.ExternalFunction("fastnn_f77_sgemm", _f77_signature)
# cblas_?gemm(order, transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), ILP64 ints.
_i = types.int32
_I = types.int64
_cblas_dgemm = types.ExternalFunction("fastnn_cblas_dgemm", types.void(
    _i, _i, _i, _I, _I, _I, types.float64, _vp, _I, _vp, _I, types.float64, _vp, _I))
_cblas_sgemm = types.ExternalFunction("fastnn_cblas_sgemm", types.void(
    _i, _i, _i, _I, _I, _I, types.float32, _vp, _I, _vp, _I, types.float32, _vp, _I))

_CBLAS_ROW_MAJOR = 101
_CBLAS_NO_TRANS = 111
_CBLAS_TRANS = 112
_N = ord("N")
_T = ord("T")


@njit(**JIT_OPTIONS)
def gemm(backend, trans_a, trans_b, alpha, a, b, beta, c):
    """``c = alpha * op(a) @ op(b) + beta * c`` on C-contiguous 2-D arrays of one float dtype.

    ``op(a)`` is ``a.T`` when ``trans_a`` is true.  Shapes: ``op(a) (m, k)``, ``op(b) (k, n)``,
    ``c (m, n)``; the caller guarantees them (no checks here: this is inside the kernels).
    With ``beta == 0`` BLAS does not read ``c``, so it may hold garbage.  ``backend`` is
    ``BACKEND`` (passed in at run time, see the module docstring).
    """
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    lda = a.shape[1]  # row lengths: the leading dimensions of row-major arrays
    ldb = b.shape[1]
    if backend == NUMPY_CBLAS:
        ta = _CBLAS_TRANS if trans_a else _CBLAS_NO_TRANS
        tb = _CBLAS_TRANS if trans_b else _CBLAS_NO_TRANS
        if c.itemsize == 8:
            _cblas_dgemm(_CBLAS_ROW_MAJOR, ta, tb, m, n, k, np.float64(alpha), a.ctypes, lda,
                         b.ctypes, ldb, np.float64(beta), c.ctypes, n)
        else:
            _cblas_sgemm(_CBLAS_ROW_MAJOR, ta, tb, m, n, k, np.float32(alpha), a.ctypes, lda,
                         b.ctypes, ldb, np.float32(beta), c.ctypes, n)
        return
    # Fortran passes every argument by reference: scalars live in small arrays.
    ints = np.empty(6, np.int32)
    ints[0] = n
    ints[1] = m
    ints[2] = k
    ints[3] = ldb
    ints[4] = lda
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
        _f77_dgemm(*args)
    else:
        _f77_sgemm(*args)
