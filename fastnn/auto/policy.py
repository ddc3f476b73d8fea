"""Every threshold ``kernel="auto"`` decides by, in one place, each with the measurement behind it.

The modules of ``fastnn.auto`` read their numbers from here and nowhere else: which variant
(``choice``), whether the dual form (the trainer's ``choose_dual``), how many threads (``thread_watch``),
when to build in the background (``build``).  Measured on the machines of this workplace (AMD EPYC,
2 logical cores, AVX-512 with AVX512_BF16 and AVX2-only ones) unless a line says otherwise.
"""
from __future__ import annotations

# --- which variant (choice.py) ----------------------------------------------------------------------

# The variant auto starts on while the compiled kernels are being built, and where nothing
# compiled wins: the careful numpy step (a candidate, so auto is never slower than it).
BOOTSTRAP = "numpy"

# Below this many flops per step auto runs ``choice.small_choice()`` without measuring: a step is
# then tens of microseconds, where numpy's ~20 calls of per-call overhead lose to one compiled
# call, and a measurement would cost ~0.5 s, thousands of such steps.  Measured
# (docs/optimisation.md, 8 shapes from 1x1x1x1 to 16x64x64x64 and 32x32x32x100, both dtypes):
# fused-wide-openblas 1.45-2.3x the careful numpy step, fused-wide 1.34-2.35x (its tiny gemms are
# cheaper to call in OpenBLAS than in MKL).
MEASURE_FLOPS = 1_000_000

# A measured candidate whose step runs on a thread pool other than numpy's own BLAS (Numba's
# OpenMP workers: tiled, naive, chunked; MKL's) is chosen only when it beats the best candidate on
# numpy's pool by this factor.  Both pools' idle workers spin for a while after a call, so
# alternating such a kernel with the user's own numpy calls makes both slower (measured, the
# seed's step alternating with 200x300x200 numpy matmuls: tiled 1.5-2.2x its time alone, the
# matmuls 1.2-1.5x; fused-wide on numpy's OpenBLAS 1.01-1.08x), and at the seed's shape five
# candidates measured within 4% of each other, where a pick is noise.
OTHER_POOL_MARGIN = 1.10

# Timings of one candidate whose repeats spread more than this (slowest / fastest) were taken on
# a busy machine: on a quiet one the spread here is 1.05-1.3.  ``fastnn bench`` flags such rows,
# auto keeps such a choice in its process but does not reuse it from disk.
BUSY_SPREAD = 1.5

# A training run whose steps took DRIFT times more (or less) than the remembered timing of its
# variant drops the remembered choice: the next run measures again.
DRIFT = 3.0

# OpenBLAS's idle workers spin for up to 2**28 cycles (~0.1 s) after a call, so the warm-up of a
# measured block must outlast that before a candidate on another pool is timed; within one pool a
# short warm-up does (caches, branch predictors).
WARM_UP = 0.12
WARM_UP_SAME_POOL = 0.01

# Measuring: blocks of this many seconds per candidate, repeated this often in alternating order;
# the median block decides.
MEASURE_BLOCK = 0.03
MEASURE_REPEATS = 3

# --- the dual form (trainer.choose_dual) -----------------------------------------------------------

# auto trains in the dual form (kernels/dual.py) where it applies and its flop count, set-up and
# every w1 it must form included, is under this fraction of the primal form's.
DUAL_FLOPS_RATIO = 0.5

# --- threads (thread_watch.py) ----------------------------------------------------------------------

# Steps under this many flops never adapt their threads: their parallel kernels run on one thread
# anyway (kernels/variant.py's SERIAL_FLOPS: a parallel launch costs more than the work).
ADAPT_FLOPS = 2_000_000

# The probe: after a warm-up block, blocks alternate all threads and one, PROBE_PAIRS of each, of
# about PROBE_BLOCK_SECONDS (at least PROBE_MIN_STEPS steps, or the block is not counted); one
# thread is kept only when its median step beats all threads' by ONE_THREAD_MARGIN.  Measured on
# a quiet machine, fused-wide float32 from 2.6 to 210 MFLOP a step: 2 threads 1.03-1.71x faster
# than one; tiled at 128x784x128x10 1 thread 1.1x faster, at 128x784x512x10 2 threads 1.08x.  One
# block against one block decided before (issue 18): the block right after the first step, still
# warming up, made every run measured drop to one thread at step 17, 1.14-1.46x slower.
PROBE_PAIRS = 3
PROBE_BLOCK_SECONDS = 0.02
PROBE_MIN_STEPS = 3
ONE_THREAD_MARGIN = 1.10

# Watching a decided run: a block SLOWER times slower a step than the best seen at its thread count
# is a sign of load; with other programs' threads runnable right now (threads.free_cores) the run
# goes to the free cores at once, else after STRIKES such blocks in a row (a VM's host can take
# the cores without any runnable thread showing).  Blocks on the free cores try the decided count
# again every RETRY seconds, and the run returns to it when that block is no slower than SLOWER
# times its best.  Measured here with four busy processes on the 2 cores: 100 seed steps 982 ms on
# 2 threads against 179 ms on one (spinning BLAS and OpenMP workers wait for a descheduled one).
SLOWER = 1.5
STRIKES = 2
RETRY = 2.0
# A run that starts within this many seconds of the last look at the load (threads.free_cores,
# or a run's own watched blocks) starts from what that saw instead of looking again: a look costs
# 0.05-0.3 ms on a quiet machine and ~1.3 ms on a busy one, against 6 ms and 19 ms for the seed's
# whole run there.
LOOK_MEMORY = 0.5

# --- the background build (build.py) ------------------------------------------------------------

# Reading the cache's index costs ~0.1-1 ms: a run waiting for a build asks at most this often.
RECHECK_SECONDS = 0.2

# The build runs on idle CPU time only, so a run that keeps every core busy on the numpy variant
# would wait for it forever (measured: 22 s of the 8192x784 epoch on 2 threads, no switch).  A
# run still waiting after BUILD_GRACE seconds leaves it one core (all threads but one) until it
# is done: short runs, and the first seconds of any run, keep their speed; a long one gets its
# compiled kernels within BUILD_GRACE plus one build (~15 s on one core here).
BUILD_GRACE = 3.0
