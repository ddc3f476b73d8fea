"""``kernel="auto"``, the default: everything fastnn decides by itself, in one place.

``policy``        every threshold below, each with the measurement behind it
``choice``        which variant a step runs: measured once per (shape, dtype, threads), among the
                  candidates that are ready, remembered; ``resolve`` turns any ``kernel=`` name
                  into a variant (``fastnn tune`` measures them all)
``build``         no wait for the compiler: the compiled kernels built in a child process on idle
                  CPU time while training starts on the ``numpy`` variant (``_child`` is that
                  process; ``fastnn build`` does the same in the foreground)
``thread_watch``  how many threads a run uses: probed from its own blocks of steps, remembered
                  per (shape, dtype, variant), watched for load
``store``         ``tune.json``: what the choices and the thread decisions leave for later
                  processes

Whether a run trains in the dual form (rung 7) is decided per run too, by its flop count
(``policy.DUAL_FLOPS_RATIO``), in the trainer's plan.  What ran is in every result:
``result.ran`` and ``result.schedule`` (``(step, kernel, threads)`` for every change).

The modules are imported on use (``fastnn.auto.choice``, ...): ``policy`` sits below everything
else, so that the timing code can read its numbers without loading the rest.
"""
