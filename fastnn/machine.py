"""What this machine and this install are: CPU, versions, thread pools, the BLAS fastnn calls.

One description for ``fastnn info``, the benchmarks' reports and ``auto``'s fingerprint (a choice
measured on another machine or software is never reused).
"""
from __future__ import annotations

import os
import platform
import sys

import numpy as np


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags (``/proc/cpuinfo``; empty where it is not readable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def simd_description() -> str:
    """The vector instructions fastnn's kernels can use here, whether the CPU has AVX512_BF16
    (``vdpbf16ps``), and what ``dtype="bfloat16"`` runs: the instruction or its emulation
    (``kernels/common/bf16.py``: the CPU must have it and Numba must compile for it)."""
    from .kernels.common import bf16 as bf

    flags = cpu_flags()
    if not flags:
        return "unknown (no /proc/cpuinfo)"
    have = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni") if f in flags]
    bf16 = "yes" if "avx512_bf16" in flags else "no"
    runs = "vdpbf16ps" if bf.NATIVE else "its exact emulation"
    return (f"{' '.join(have) or 'none of avx2/fma/avx512'}; AVX512_BF16: {bf16} "
            f"(dtype='bfloat16' runs {runs})")


def fingerprint() -> str:
    """CPU, cores, architecture and the versions that decide which kernel is fastest."""
    import numba

    from ._version import __version__
    from .kernels.common import gemm

    return "|".join([cpu_name(), str(os.cpu_count()), platform.machine(), __version__,
                     np.__version__, numba.__version__, gemm.BACKEND_NAME])


def info_lines() -> list[str]:
    """The lines of ``fastnn info``: versions, CPU, threads, Numba's threading layer and cache,
    the kernels, and every BLAS/OpenMP pool loaded."""
    import numba
    import scipy
    from threadpoolctl import threadpool_info

    from . import kernels, threads
    from ._version import __version__
    from .kernels import jit, variant
    from .kernels.common import gemm  # (also loads scipy's BLAS, so that threadpoolctl lists it)

    layer = variant.threading_layer()
    concurrency = ("calls from several Python threads run at once"
                   if variant.concurrent_calls_allowed() else
                   "not thread-safe: fastnn serialises its parallel kernels across Python threads")
    lines = [
        f"fastnn      {__version__}",
        f"python      {platform.python_version()} ({sys.executable})",
        f"numpy       {np.__version__}",
        f"numba       {numba.__version__}",
        f"scipy       {scipy.__version__}",
        f"cpu         {cpu_name()} ({os.cpu_count()} logical cores)",
        f"simd        {simd_description()}",
        f"threads     fastnn {threads.get_num_threads()}, numba max {threads.max_threads()}",
        f"numba layer {layer} ({concurrency})",
        f"cache       {jit.cache_dir() if jit.CACHE else 'off'}",
        f"fastmath    {'on (no nnan/ninf/nsz)' if jit.FASTMATH else 'off'}",
        f"kernels     {', '.join(kernels.available())} (default {kernels.DEFAULT})",
        f"fused BLAS  {gemm.BACKEND_NAME}: {gemm.LIBRARY} (FASTNN_BLAS=mkl|numpy|scipy)",
        f"mpi         {mpi_description()}",
    ]
    for pool in threadpool_info():
        lines.append(f"{pool['user_api']:<11} {pool['internal_api']} {pool.get('version')} "
                     f"({pool.get('architecture', '?')}), {pool['num_threads']} threads: "
                     f"{os.path.basename(pool['filepath'])}")
    return lines


def mpi_available() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def mpi_description() -> str:
    """The MPI library mpi4py runs on (first line of ``MPI.Get_library_version``), or why none."""
    if not mpi_available():
        return "not installed (pip install 'fastnn[mpi]')"
    import mpi4py

    if "mpi4py.MPI" not in sys.modules:  # asking costs no MPI_Init (no job, no network probe)
        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = False
    from mpi4py import MPI

    first = MPI.Get_library_version().strip().splitlines()[0]
    return f"{' '.join(first.split())} (mpi4py {mpi4py.__version__})"
