"""Numba settings for every kernel, in one place.

Every kernel is compiled with ``JIT_OPTIONS`` (serial kernels) or ``PARALLEL_OPTIONS`` (``prange``
kernels).  Environment variables, read once at import:

``FASTNN_CACHE``     ``0`` turns Numba's on-disk cache off (default on).
``NUMBA_CACHE_DIR``  where the cache goes (default ``~/.cache/fastnn/numba``), in a subfolder
                     named after a hash of the kernels' sources (see ``cache_dir``).
``FASTNN_FASTMATH``  ``0`` compiles strict IEEE code (default on, see below).

Fastmath: we allow reassociation and contraction (so reductions vectorise and multiply-adds become
FMAs), reciprocals and approximate functions, but NOT ``nnan``/``ninf``: with those LLVM may assume
there are no NaNs and delete the checks that let training detect a diverging loss; and NOT ``nsz``
(no signed zeros): with it, the softmax path of a kernel loaded from Numba's on-disk cache differed
in the last bits from the same kernel freshly compiled in the process that wrote the cache, so a
run resumed in a new process was not bitwise equal to the uninterrupted one (found by the SIGKILL
test; ``tests/test_cache_and_registry.py`` now checks fresh against cached bits).  The result of a given
binary is deterministic: reassociation is decided at compile time, not at run time.
"""
from __future__ import annotations

import contextlib
import hashlib
import os

import numba

CACHE = os.environ.get("FASTNN_CACHE", "1") != "0"
FASTMATH = (
    {"arcp", "contract", "afn", "reassoc"}
    if os.environ.get("FASTNN_FASTMATH", "1") != "0"
    else False
)
JIT_OPTIONS = dict(cache=CACHE, fastmath=FASTMATH, nogil=True, error_model="numpy")
PARALLEL_OPTIONS = dict(JIT_OPTIONS, parallel=True)
# For ``@overload`` implementations (``inline="always"``: compiled into the kernels that use
# them, which are cached): no cache of their own, which Numba would place when they are first
# compiled, outside ``cache_location()``, next to the sources.
OVERLOAD_OPTIONS = dict(fastmath=FASTMATH, nogil=True, error_model="numpy")

KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))


def kernel_sources() -> list[str]:
    """Every ``.py`` file under ``fastnn/kernels/``, subfolders included, in a fixed order."""
    found = []
    for folder, dirs, files in os.walk(KERNELS_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.join(folder, f) for f in sorted(files) if f.endswith(".py")]
    return found


def source_hash() -> str:
    """A hash of every kernel source file: its path below ``fastnn/kernels`` and its bytes."""
    digest = hashlib.sha1()
    for path in kernel_sources():
        digest.update(os.path.relpath(path, KERNELS_DIR).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


def cache_dir() -> str:
    """The folder of fastnn's compiled kernels: ``<base>/fastnn-<hash of the kernel sources>``.

    Numba's cache checks the timestamp of the file that defines a function, not of the files of
    the functions it calls and inlines: after an edit to ``common/gemm.py`` a cached
    ``fused.step`` would still run the old ``gemm``, and the generic training loops of
    ``common/loops.py`` are inlined into every variant's loop.  Naming the folder after all
    kernel sources, the subfolder's included, makes any edit start from an empty cache.
    """
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "fastnn", "numba")
    return os.path.join(base, "fastnn-" + source_hash())


@contextlib.contextmanager
def cache_location():
    """Point Numba's cache at ``cache_dir()`` while the kernel modules are defined (the cache
    locator is fixed when a function is decorated), then restore the user's setting."""
    old = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = cache_dir()
    try:
        yield
    finally:
        numba.config.CACHE_DIR = old


def compiled_for(dispatcher, dtype) -> bool:
    """Whether ``dispatcher`` has machine code for arrays of ``dtype``: compiled in this process,
    or in the on-disk cache (its index read without loading anything).  The index is Numba's
    internal format: if that ever changes, this answers False (``auto`` then measures fewer
    candidates, and training starts on numpy while a compile that is not needed runs)."""
    import numpy as np

    want = numba.from_dtype(np.dtype(dtype))
    other = numba.from_dtype(np.dtype(np.float32 if want == numba.float64 else np.float64))

    def dtypes(types):  # the element types of every array, inside tuples too
        for t in types:
            if isinstance(t, numba.types.Array):
                yield t.dtype
            elif isinstance(t, numba.types.BaseTuple):
                yield from dtypes(t.types)

    def for_dtype(sig):
        # float32 code also takes float64 arrays (the losses); float64 code takes no float32
        seen = set(dtypes(sig))
        return want in seen and (want == numba.float32 or other not in seen)

    if any(for_dtype(sig) for sig in dispatcher.signatures):
        return True
    try:
        index = dispatcher._cache._cache_file._load_index()
        magic = dispatcher.targetctx.codegen().magic_tuple()
        return any(key[1] == magic and for_dtype(key[0]) for key in index)
    except Exception:
        return False
