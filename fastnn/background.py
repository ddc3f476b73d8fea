"""No wait for the compiler: training starts at once on the ``numpy`` variant while another
process builds the compiled kernels into Numba's on-disk cache.

Numba compiles a kernel the first time it is called with new argument types: ~2-10 s for
fastnn's (LLVM at work, holding the GIL for most of it, so a thread would stall the training it
is meant to hide behind).  So when ``kernel="auto"`` would run compiled code that is not built yet
for a dtype, fastnn instead

1. starts ``python -m fastnn._build DTYPE TARGETS`` (``start``): a child process, at a lower
   priority (``nice``), that calls the kernels ``auto`` runs -- the primary route
   (``kernels.PRIMARY``) and the dual form -- once on a tiny problem, which builds them and
   writes them to the cache, then exits;
2. runs the steps with the ``numpy`` variant meanwhile (no compile, the careful numpy step);
3. between blocks of steps asks ``kernels.ready`` (which reads the cache's index) and switches
   to the compiled route at that step boundary once it is there (the child builds what the
   run waits for first); ``result.schedule`` records what ran from which step, on how many
   threads: one while the child compiles beside it.  The switch loads the machine code from
   the cache (~0.1-0.3 s).

The child never outlives its parent: it asks Linux to kill it when the parent dies
(``PR_SET_PDEATHSIG``), and an ``atexit`` hook stops it when the interpreter exits normally,
so exit never waits for a compile.  Numba writes each cache file to a temporary name and renames
it, so a compile stopped half-way leaves the cache valid (what was finished stays).  Two fastnn
processes starting at once do not compile the same thing twice: each child takes an exclusive
lock on a file in the cache folder (``flock``) before compiling, and a second child waits for
the first one's lock, finds the kernels ready, and exits.

``FASTNN_BACKGROUND_COMPILE=0`` turns this off (the first call then compiles in the foreground,
as ``kernel=NAME`` for a compiled variant always does); so does ``FASTNN_CACHE=0`` (without the
disk cache another process cannot hand over machine code).
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading

_lock = threading.Lock()
_children: dict[str, subprocess.Popen] = {}  # dtype name -> the compiling child


def enabled() -> bool:
    from .kernels import jit

    return jit.CACHE and os.environ.get("FASTNN_BACKGROUND_COMPILE", "1") != "0"


def targets() -> list[str]:
    """What ``auto`` may run compiled, so what the child builds: the primary route and the dual
    form."""
    from . import kernels

    return [kernels.PRIMARY, *kernels.TRAINING_FORMS]


def start(dtype, first=None) -> bool:
    """Build ``targets()`` for ``dtype`` in a child process (``first`` of them first: what the
    caller waits for), unless it runs already or the kernels are ready; returns whether a build
    is under way."""
    import numpy as np

    from . import kernels

    name = np.dtype(dtype).name
    with _lock:
        child = _children.get(name)
        if child is not None and child.poll() is None:
            return True
        todo = [t for t in targets() if not kernels.ready(t, name)]
        if not todo:
            return False
        if first in todo:
            todo.remove(first)
            todo.insert(0, first)
        # one thread for everything in the child: its tiny calls gain nothing from more, and
        # its BLAS and OpenMP workers spinning beside the training's made numpy steps 3-50x
        # slower (measured: 0.9 ms -> 2.9 ms on one thread, 45 ms on two)
        env = dict(os.environ, FASTNN_BACKGROUND_COMPILE="0", NUMBA_NUM_THREADS="1",
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        _children[name] = subprocess.Popen(
            [sys.executable, "-m", "fastnn._build", name, ",".join(todo)], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # Ctrl-C in the terminal is for the parent, not the child
        return True


_ready: set = set()  # (name, dtype): ready, for good
_asked: dict = {}  # (name, dtype) -> when the cache was last read for it
RECHECK_SECONDS = 0.2  # reading the cache's index costs ~0.1-1 ms: not on every step


def usable(name, dtype) -> bool:
    """Whether ``auto`` may run ``name`` for ``dtype`` now without waiting for a compile: it is
    ready (``kernels.ready``), or background compiles are off (then the call compiles in the
    foreground, as before).  When it is not, the background build starts (``start``)."""
    import time

    import numpy as np

    key = (name, np.dtype(dtype).name)
    if key in _ready or not enabled():
        return True
    now = time.monotonic()
    if now - _asked.get(key, -1e9) < RECHECK_SECONDS:
        return False
    _asked[key] = now
    if ready_now(name, key[1]):
        return True
    start(key[1], first=name if name in targets() else None)
    return False


def ready_now(name, dtype, optimizers=True) -> bool:
    """``kernels.ready``, asked now (not throttled), and remembered when true."""
    import numpy as np

    from . import kernels

    key = (name, np.dtype(dtype).name)
    if key in _ready:
        return True
    if kernels.ready(name, key[1], optimizers):
        if optimizers:
            _ready.add(key)
        return True
    return False


def building(dtype) -> bool:
    """Whether this process's child for ``dtype`` is still compiling."""
    import numpy as np

    child = _children.get(np.dtype(dtype).name)
    return child is not None and child.poll() is None


def wait(dtype, timeout=None) -> None:
    """Wait for this process's child for ``dtype`` (tests, ``fastnn tune``)."""
    import numpy as np

    child = _children.get(np.dtype(dtype).name)
    if child is not None:
        child.wait(timeout)


@atexit.register
def _stop_children() -> None:
    for child in list(_children.values()):
        if child.poll() is None:
            child.kill()
            child.wait()
