"""BLAS ``gemm`` callable from inside Numba-compiled code.

Three ways in, tried in this order (``FASTNN_BLAS=mkl|numpy|scipy`` forces one):

``mkl``    Intel MKL's CBLAS (``libmkl_rt``), when installed (``pip install 'fastnn[mkl]'``):
           about twice OpenBLAS's speed on the seed's small matmuls on this machine.
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

from ..jit import JIT_OPTIONS

NUMPY_CBLAS = 0
SCIPY_F77 = 1
MKL_CBLAS = 2


def _blas_libraries() -> dict:
    """``{"numpy": path, "scipy": path}`` of the OpenBLAS libraries loaded by numpy and scipy."""
    from threadpoolctl import threadpool_info

    np.ones((2, 2)) @ np.ones((2, 2))  # make sure numpy's BLAS is loaded
    found = {}
    for pool in threadpool_info():
        if pool.get("user_api") == "blas" and pool.get("internal_api") == "openblas":
            owner = "numpy" if "numpy" in pool["filepath"] else "scipy"
            found.setdefault(owner, pool["filepath"])
    return found


def _symbol(lib, names):
    """Address of the first of ``names`` that ``lib`` exports, else None."""
    for name in names:
        try:
            return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
        except AttributeError:
            continue
    return None


def _numpy_cblas(path):
    """``{'d': addr, 's': addr}`` of the ILP64 CBLAS gemm in numpy's OpenBLAS, or None."""
    lib = ctypes.CDLL(path)
    # the 64_ suffix marks the ILP64 (64-bit integer) interface
    for fmt in ("scipy_cblas_{t}gemm64_", "cblas_{t}gemm64_"):
        addrs = {t: _symbol(lib, [fmt.format(t=t)]) for t in "ds"}
        if all(addrs.values()):
            return addrs
    return None


def _mkl():
    """``(path, {'d': addr, 's': addr})`` of Intel MKL's LP64 CBLAS gemm, when the ``mkl`` package
    (``pip install 'fastnn[mkl]'``) or a system MKL is installed; else None."""
    import ctypes.util
    import glob
    import sys

    paths = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    found = ctypes.util.find_library("mkl_rt")
    paths += [found] if found else []
    # MKL's Intel OpenMP workers busy-wait 200 ms after each call by default (KMP_BLOCKTIME):
    # beside numpy's OpenBLAS workers, which do the same, each library's calls then ran on cores
    # the other's idle workers held (the users' trial measured a seed step 1.9x slower and
    # numpy's matmul 1.7x when the two alternated).  0: MKL's workers sleep at once; unless the
    # user set it.  Read when Intel OpenMP starts, so before MKL is loaded.
    os.environ.setdefault("KMP_BLOCKTIME", "0")
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        layer = _symbol(lib, ["MKL_Set_Interface_Layer"])
        if layer:  # 32-bit integers (LP64), whatever MKL_INTERFACE_LAYER says
            ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(layer)(0)
        # Not set here: MKL's conditional numerical reproducibility.  Without it MKL's sums may
        # depend on the arrays' alignment and thread count (last-bit differences between runs
        # on copies of the same data); MKL_CBWR=AUTO,STRICT in the environment makes them
        # reproducible, at about 30% of the fused step's speed on the seed's shape here.
        addrs = {t: _symbol(lib, [f"cblas_{t}gemm"]) for t in "ds"}
        if all(addrs.values()):
            return path, addrs
    return None


try:
    _libs = _blas_libraries()
except Exception:  # threadpoolctl could not look: use scipy's BLAS, found through cython_blas
    _libs = {}
_choice = os.environ.get("FASTNN_BLAS", "")
_scipy = {t: get_cython_function_address("scipy.linalg.cython_blas", f"{t}gemm") for t in "ds"}
if _choice not in ("", "mkl", "numpy", "scipy"):
    raise ImportError(f"FASTNN_BLAS: expected mkl, numpy or scipy, got {_choice!r}")
_numpy = _numpy_cblas(_libs["numpy"]) if "numpy" in _libs and _choice in ("", "numpy") else None
_mkl_lib = _mkl() if _choice in ("", "mkl") else None
if _choice == "numpy" and _numpy is None:
    raise ImportError("FASTNN_BLAS=numpy, but numpy's BLAS has no ILP64 CBLAS gemm to call")
if _choice == "mkl" and _mkl_lib is None:
    raise ImportError("FASTNN_BLAS=mkl, but no MKL was found (pip install 'fastnn[mkl]')")

# MKL when installed (about twice OpenBLAS's speed at the seed's shapes here), else numpy's own
# OpenBLAS, else scipy's.
if _mkl_lib is not None:
    BACKEND, BACKEND_NAME, LIBRARY = MKL_CBLAS, "mkl", _mkl_lib[0]
elif _numpy is not None:
    BACKEND, BACKEND_NAME, LIBRARY = NUMPY_CBLAS, "numpy", _libs["numpy"]
else:
    BACKEND, BACKEND_NAME = SCIPY_F77, "scipy"
    LIBRARY = _libs.get("scipy", scipy.linalg.cython_blas.__file__)
AVAILABLE_BACKENDS = [b for b, ok in ((SCIPY_F77, True), (NUMPY_CBLAS, _numpy is not None),
                                      (MKL_CBLAS, _mkl_lib is not None)) if ok]

for _t in "ds":
    llvm.add_symbol(f"fastnn_f77_{_t}gemm", _scipy[_t])
    # A missing library's symbol still needs an address to link; BACKEND never selects it then.
    llvm.add_symbol(f"fastnn_cblas_{_t}gemm", (_numpy or _scipy)[_t])
    llvm.add_symbol(f"fastnn_mkl_{_t}gemm", (_mkl_lib[1] if _mkl_lib else _scipy)[_t])


class _ThreadControl:
    """The ``set_num_threads``/``get_num_threads`` of the library ``BACKEND`` uses.

    A direct C call costs about a microsecond, where threadpoolctl's context manager costs tens
    of microseconds, too much to pay on every step.  ``available`` is false when the library
    exports neither (then the ``blas`` variant is not offered).
    """

    def __init__(self, path):
        self.set = self.get = None
        if path is not None:
            lib = ctypes.CDLL(path)
            setter = _symbol(lib, ["scipy_openblas_set_num_threads64_",
                                   "scipy_openblas_set_num_threads", "openblas_set_num_threads",
                                   "MKL_Set_Num_Threads"])
            getter = _symbol(lib, ["scipy_openblas_get_num_threads64_",
                                   "scipy_openblas_get_num_threads", "openblas_get_num_threads",
                                   "MKL_Get_Max_Threads"])
            if setter and getter:
                self.set = ctypes.CFUNCTYPE(None, ctypes.c_int)(setter)
                self.get = ctypes.CFUNCTYPE(ctypes.c_int)(getter)

    @property
    def available(self) -> bool:
        return self.set is not None


threads = _ThreadControl(LIBRARY if BACKEND != SCIPY_F77 else _libs.get("scipy"))

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

_mkl_dgemm = types.ExternalFunction("fastnn_mkl_dgemm", types.void(
    _i, _i, _i, _i, _i, _i, types.float64, _vp, _i, _vp, _i, types.float64, _vp, _i))
_mkl_sgemm = types.ExternalFunction("fastnn_mkl_sgemm", types.void(
    _i, _i, _i, _i, _i, _i, types.float32, _vp, _i, _vp, _i, types.float32, _vp, _i))

# Transpose flags for ``gemm``, as run-time booleans: with literal True/False Numba compiles gemm
# once per flag combination and argument types (~0.25 s each; the fused-wide step had four), while
# np.bool_ values are typed as plain bool.  Callers pass alpha and beta as float64 for the same
# reason: then one compiled gemm per dtype serves every call.
TRANS = np.bool_(True)
NO_TRANS = np.bool_(False)

_CBLAS_ROW_MAJOR = 101
_CBLAS_NO_TRANS = 111
_CBLAS_TRANS = 112
_N = ord("N")
_T = ord("T")


@njit(**JIT_OPTIONS)
def _leading_dim(a):
    """The row stride of ``a`` in elements.  A one-row array may carry any stride for its single
    row (numpy's relaxed strides); BLAS wants at least the row length there."""
    if a.shape[0] == 1:
        return a.shape[1]
    return a.strides[0] // a.itemsize


@njit(**JIT_OPTIONS)
def gemm(backend, trans_a, trans_b, alpha, a, b, beta, c):
    """``c = alpha * op(a) @ op(b) + beta * c`` on 2-D arrays of one float dtype.

    Each array must have contiguous rows (unit stride along axis 1): C-contiguous arrays and column
    slices of them (``w1[:, h0:h1]``) both qualify; the row stride is passed as the leading dimension.

    ``op(a)`` is ``a.T`` when ``trans_a`` is true.  Shapes: ``op(a) (m, k)``, ``op(b) (k, n)``,
    ``c (m, n)``; the caller guarantees them (no checks here: this is inside the kernels).
    With ``beta == 0`` BLAS does not read ``c``, so it may hold garbage.  ``backend`` is
    ``BACKEND`` (passed in at run time, see the module docstring).
    """
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    lda = _leading_dim(a)
    ldb = _leading_dim(b)
    ldc = _leading_dim(c)
    ta = _CBLAS_TRANS if trans_a else _CBLAS_NO_TRANS
    tb = _CBLAS_TRANS if trans_b else _CBLAS_NO_TRANS
    if backend == MKL_CBLAS:  # 32-bit ints: the caller keeps sizes below 2**31
        if c.itemsize == 8:
            _mkl_dgemm(_CBLAS_ROW_MAJOR, ta, tb, m, n, k, np.float64(alpha), a.ctypes, lda,
                       b.ctypes, ldb, np.float64(beta), c.ctypes, ldc)
        else:
            _mkl_sgemm(_CBLAS_ROW_MAJOR, ta, tb, m, n, k, np.float32(alpha), a.ctypes, lda,
                       b.ctypes, ldb, np.float32(beta), c.ctypes, ldc)
        return
    if backend == NUMPY_CBLAS:  # ILP64: 64-bit ints
        if c.itemsize == 8:
            _cblas_dgemm(_CBLAS_ROW_MAJOR, ta, tb, m, n, k, np.float64(alpha), a.ctypes, lda,
                         b.ctypes, ldb, np.float64(beta), c.ctypes, ldc)
        else:
            _cblas_sgemm(_CBLAS_ROW_MAJOR, ta, tb, m, n, k, np.float32(alpha), a.ctypes, lda,
                         b.ctypes, ldb, np.float32(beta), c.ctypes, ldc)
        return
    # Fortran passes every argument by reference: scalars live in small arrays.
    ints = np.empty(6, np.int32)
    ints[0] = n
    ints[1] = m
    ints[2] = k
    ints[3] = ldb
    ints[4] = lda
    ints[5] = ldc
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


@njit(**JIT_OPTIONS)
def affine(backend, a, w, bias, out):
    """``out = a @ w + bias`` (``bias`` broadcast over the rows): ``out`` is filled with the bias
    and ``gemm`` adds the product with ``beta = 1``, so the bias costs one write, no extra pass."""
    m, k = out.shape
    for i in range(m):
        for c in range(k):
            out[i, c] = bias[c]
    gemm(backend, NO_TRANS, NO_TRANS, 1.0, a, w, 1.0, out)
