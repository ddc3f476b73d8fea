"""Every rung of the ladder checked against the reference, then timed (the way llm.c's dev/ files
validate each kernel before they benchmark it).

    python dev/ladder.py                                  # the seed's shape, float64
    python dev/ladder.py --shape mnist --dtype float32    # a preset or MxNxHxK

For each rung of ``fastnn.kernels.LADDER``, in order: ``predict``, ``loss_and_grads`` and one SGD
step, compared with ``fastnn.reference`` in float64 on the same inputs, within the rounding bound
the tests use (``2 (n + h + k + m) u`` of the largest entry).  When every rung passes, each is
timed against the careful numpy step (paired, as ``fastnn bench`` times), with its GFLOP/s and
the fraction of the BLAS peak measured on the spot.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastnn  # noqa: E402
from fastnn import reference  # noqa: E402
from fastnn.profiling.problems import parse_shape, problem  # noqa: E402
from fastnn.profiling.step_bench import bench_stages  # noqa: E402
from fastnn.profiling.timing import blas_peak  # noqa: E402

UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}


def worst_error(variant, x, y, params, lr, bound) -> float:
    """The largest error of the rung's z2, loss, gradients and SGD step (as ``(p - p_new) / lr``)
    relative to the largest entry of each reference quantity, divided by what rounding allows
    there: ``bound``, plus for the step the rounding of ``p`` itself, ``4 u max|p| / lr``
    (``tests/test_kernels.py`` justifies both).  At most 1 passes."""
    u = UNIT_ROUNDOFF[params.dtype]
    p64 = fastnn.Params(*(p.astype(np.float64) for p in params))
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    want_loss, want_grads = reference.loss_and_grads(p64, x64, y64)
    loss, grads = fastnn.loss_and_grads(params, x, y, kernel=variant)
    checks = [(fastnn.predict(params, x, kernel=variant), reference.predict(p64, x64), 0.0),
              (loss, want_loss, 0.0)] + [(g, w, 0.0) for g, w in zip(grads, want_grads)]
    stepped = params.copy()
    fastnn.sgd_step(stepped, x, y, lr, kernel=variant)
    checks += [((q.astype(np.float64) - s.astype(np.float64)) / lr, g,
                4 * u * np.abs(q).max() / lr) for q, s, g in zip(params, stepped, want_grads)]
    worst = 0.0
    for got, want, extra in checks:
        scale = max(np.abs(want).max(), 1e-300)
        err = float(np.max(np.abs(np.asarray(got, np.float64) - want))) / scale
        worst = max(worst, err / (bound + extra / scale))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="seed", help="a preset or MxNxHxK (default seed)")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--rounds", type=int, default=9, help="paired rounds per rung")
    args = parser.parse_args()
    name, shape = parse_shape(args.shape)
    dtype = np.dtype(args.dtype)
    m, n, h, k = shape
    x, y, params = problem(shape, dtype, init="normal", params_seed=1)
    bound = 2 * (n + h + k + m) * UNIT_ROUNDOFF[dtype]
    # lr makes the largest update 10% of the largest weight: the step's error is then not hidden
    # by the rounding of p itself
    grads = reference.loss_and_grads(fastnn.Params(*(p.astype(np.float64) for p in params)),
                                     x.astype(np.float64), y.astype(np.float64))[1]
    lr = 0.1 * max(np.abs(p).max() for p in params) / max(np.abs(g).max() for g in grads)
    names = fastnn.kernels.names()
    print(f"shape {name} {shape}, {dtype.name}; error bound {bound:.2e} of the largest entry "
          f"(the step: plus its own rounding of p)")
    failed = False
    for variant in names:
        ratio = worst_error(variant, x, y, params, lr, bound)
        failed |= ratio > 1
        print(f"  {variant:<20} worst error {ratio:.3f} of the rounding bound  "
              f"{'ok' if ratio <= 1 else 'FAILED'}")
    if failed:
        print("some rung does not match the reference: not timing")
        return 1
    print("All rungs match the reference.  Timing against the careful numpy step ...")
    peak = blas_peak(dtype)
    rows = bench_stages(shape, dtype, names, ("step",), rounds=args.rounds)
    print(f"  {'rung':<20} {'us/step':>9} {'GFLOP/s':>8} {'% peak':>7} {'x numpy':>8}")
    for r in rows:
        print(f"  {r['kernel']:<20} {r['us']:>9.1f} {r['gflops']:>8.1f} "
              f"{100 * r['gflops'] / peak:>6.0f}% {r['x_vs_numpy']:>7.2f}x")
    print(f"  (BLAS peak {peak:.0f} GFLOP/s: a 2048^3 numpy matmul, "
          f"{fastnn.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
