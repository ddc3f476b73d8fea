"""No wait for the compiler: training starts at once on the ``numpy`` variant while another
process builds the compiled kernels into Numba's on-disk cache, on CPU time nobody else wants.

Numba compiles a kernel the first time it is called with new argument types: ~2-10 s for
fastnn's (LLVM at work, holding the GIL for most of it, so a thread would stall the training it
is meant to hide behind).  So when ``kernel="auto"`` would run compiled code that is not built yet
for a dtype, fastnn instead

1. starts a child process (``start``), ``fastnn/auto/_child.py``, that calls the kernels ``auto``
   runs -- the primary route (``kernels.PRIMARY``) and the dual form -- once on a tiny problem,
   which builds them and writes them to the cache, then exits;
2. runs the steps with the ``numpy`` variant meanwhile (no compile, the careful numpy step), on
   the thread count the run would use anyway;
3. between blocks of steps asks ``kernels.ready`` (which reads the cache's index) and switches
   to the compiled route at that step boundary once it is there (the child builds what the
   run waits for first); ``result.schedule`` records what ran from which step, on how many
   threads.  The switch loads the machine code from the cache (~0.1-0.3 s).

Nobody feels the child.  Its first act, before it imports anything, is to take Linux's
``SCHED_IDLE`` class (and ``nice`` 19 where that is refused): it runs only on a core that would
otherwise idle, and any of the parent's threads that wakes takes the core at once.  It stays in
the parent's session: with the kernel's autogroup scheduling (the default on desktop and server
distributions) a child in a session of its own (``setsid``) is a group of its own that the
scheduler shares the cores with equally, whatever its priority -- measured (issue 18): the
parent's 256x256 float64 matmuls ran 60-85 per second beside such a child against 1,900-3,000
without it; in the parent's session and ``SCHED_IDLE``, 1,500-1,900.  Ctrl-C in the terminal
reaches the child too, which ignores it (the parent's training is what stops).

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
import time

from . import policy

_lock = threading.Lock()
_children: dict[str, subprocess.Popen] = {}  # dtype name -> the compiling child

# The child's first lines, run before it imports anything: Ctrl-C ignored, killed when the
# parent dies (Linux's PR_SET_PDEATHSIG), the idle scheduling class; then the builder.
CHILD = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):  # the parent died before the line above
    sys.exit(0)
try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    try:
        os.nice(19)
    except OSError:
        pass
from fastnn.auto import _child
sys.exit(_child.main(sys.argv[2:]))
"""


def enabled() -> bool:
    from ..kernels import jit

    return jit.CACHE and os.environ.get("FASTNN_BACKGROUND_COMPILE", "1") != "0"


def targets() -> list[str]:
    """What ``auto`` may run compiled, so what the child builds: the primary route and the dual
    form."""
    from .. import kernels

    return [kernels.PRIMARY, *kernels.TRAINING_FORMS]


def start(dtype, first=None) -> bool:
    """Build ``targets()`` for ``dtype`` in a child process (``first`` of them first: what the
    caller waits for), unless it runs already or the kernels are ready; returns whether a build
    is under way."""
    import numpy as np

    from .. import kernels

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
        # one thread for everything in the child: its tiny calls gain nothing from more
        env = dict(os.environ, FASTNN_BACKGROUND_COMPILE="0", NUMBA_NUM_THREADS="1",
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        _children[name] = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(os.getpid()), name, ",".join(todo)], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return True


_ready: set = set()  # (name, dtype): ready, for good
_asked: dict = {}  # (name, dtype) -> when the cache was last read for it


def usable(name, dtype) -> bool:
    """Whether ``auto`` may run ``name`` for ``dtype`` now without waiting for a compile: it is
    ready (``kernels.ready``), or background compiles are off (then the call compiles in the
    foreground, as before).  When it is not, the background build starts (``start``)."""
    import numpy as np

    key = (name, np.dtype(dtype).name)
    if key in _ready or not enabled():
        return True
    now = time.monotonic()
    if now - _asked.get(key, -1e9) < policy.RECHECK_SECONDS:
        return False
    _asked[key] = now
    if ready_now(name, key[1]):
        return True
    start(key[1], first=name if name in targets() else None)
    return False


def ready_now(name, dtype, optimizers=True) -> bool:
    """``kernels.ready``, asked now (not throttled), and remembered when true."""
    import numpy as np

    from .. import kernels

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


def running() -> int:
    """How many of this process's children are compiling now (any dtype)."""
    return sum(child.poll() is None for child in list(_children.values()))


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
