"""Profiling tools: how fastnn measures itself.

``timing``       paired timing against a baseline, idle before timed blocks, the BLAS peak
``problems``     the benchmark shapes and the one problem generator (tests use it too)
``step_bench``   ``fastnn bench``: each kernel's stages against the careful numpy step
``train_bench``  ``fastnn bench-train``: an epoch against numpy, digits against scikit-learn

``fastnn.autotune`` and the asv suite time with ``timing``, so every figure fastnn reports comes
from the same code.
"""
