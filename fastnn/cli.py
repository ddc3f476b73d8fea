"""The ``fastnn`` command: ``fastnn train``, ``bench``, ``tune`` and ``info``."""
from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

from . import kernels

SEED_EXPERIMENT = dict(m=64, n=1000, hidden=100, out=10, iters=100, lr=1e-5)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _problem_options(parser, dtype: str) -> None:
    """--shapes, --dtype and --threads, shared by bench and tune."""
    parser.add_argument("--shapes", default="seed",
                        help="comma-separated presets (seed, mnist, medium, large) or MxNxHxK "
                             "(default %(default)s)")
    parser.add_argument("--dtype", default=dtype,
                        help="float64, float32 or both, comma-separated (default %(default)s)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="threads for Numba and BLAS together (default: all cores)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train", help="train the two-layer network (default: the seed's experiment)",
        description="Full-batch SGD on random standard-normal data (the seed's experiment: "
                    "m=64, n=1000, hidden=100, out=10, standard-normal init, lr=1e-5, 100 "
                    "iterations) or on the arrays x and y of an .npz file (--data).")
    e = SEED_EXPERIMENT
    t.add_argument("--m", type=_positive, default=e["m"], help="samples (default %(default)s)")
    t.add_argument("--n", type=_positive, default=e["n"], help="input features (default %(default)s)")
    t.add_argument("--hidden", type=_positive, default=e["hidden"],
                   help="hidden units (default %(default)s)")
    t.add_argument("--out", type=_positive, default=e["out"], help="outputs (default %(default)s)")
    t.add_argument("--iters", type=_positive, default=e["iters"],
                   help="SGD steps (default %(default)s)")
    t.add_argument("--lr", type=float, default=e["lr"], help="learning rate (default %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="random seed for data and init "
                   "(default %(default)s)")
    t.add_argument("--init", choices=["normal", "he"], default="normal",
                   help="parameter init; 'normal' is the seed's N(0, 1) (default %(default)s)")
    t.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="compute dtype (default %(default)s)")
    t.add_argument("--kernel", choices=kernels.available(), default=kernels.DEFAULT,
                   help="kernel variant (default %(default)s)")
    t.add_argument("--threads", type=_positive, default=None,
                   help="threads for Numba and BLAS together (default: all cores)")
    t.add_argument("--data", metavar="FILE.npz",
                   help="train on arrays 'x' (m, n) and 'y' (m, k) or (m,) from this file; "
                        "--m, --n and --out are then taken from it")
    t.add_argument("--plot", metavar="FILE.png", help="save the learning curve (needs matplotlib)")
    t.add_argument("--python-loop", action="store_true",
                   help="call the step from Python each iteration instead of running the "
                        "iterations inside one compiled call (the whole-loop mode, default where "
                        "the kernel has one)")
    t.add_argument("--quiet", action="store_true", help="print only the summary")

    b = sub.add_parser("bench", help="time kernel variants against a careful numpy step",
                       description="Paired timing of each kernel's SGD step against a careful "
                                   "numpy step, with GFLOP/s and % of the BLAS peak measured on "
                                   "the spot.")
    _problem_options(b, dtype="float64")
    b.add_argument("--kernels", default=None,
                   help=f"comma-separated, from {', '.join(kernels.available())} "
                        "(default: all but reference and auto)")
    b.add_argument("--stages", default="step",
                   help="comma-separated, from forward, backward (forward + loss + all "
                        "gradients), step, train (a 100-iteration run, per iteration) "
                        "(default %(default)s)")
    b.add_argument("--rounds", type=_positive, default=15,
                   help="paired rounds per kernel (default %(default)s)")
    b.add_argument("--budget", type=float, default=0.02,
                   help="seconds of calls per side per round (default %(default)s)")
    b.add_argument("--settle", type=float, default=0.15,
                   help="seconds of idle before each timed block, so that neither side runs "
                        "beside the other's still-spinning BLAS/OpenMP threads; 0 = off "
                        "(default %(default)s)")
    b.add_argument("--compile", action="store_true",
                   help="also time the first step in new processes, cold and warm cache")
    b.add_argument("--vs", default="", help="also time the same step in these frameworks, when "
                   "installed: torch, jax (comma-separated)")
    b.add_argument("--plot", metavar="FILE.png", help="bar chart of the speed-ups (matplotlib)")
    b.add_argument("--json", metavar="FILE", help="write the full report as JSON")

    u = sub.add_parser("tune", help="measure which kernel `auto` should run, and remember it",
                       description="For each shape and dtype, time the candidate kernels "
                                   "(fastnn.autotune.CANDIDATES) and store the fastest in the "
                                   "tune file that kernel='auto' reads.")
    _problem_options(u, dtype="float64,float32")
    u.add_argument("--show", action="store_true", help="print the remembered choices and exit")
    u.add_argument("--clear", action="store_true", help="forget every remembered choice and exit")

    sub.add_parser("info", help="versions, CPU, threads, threading layer and BLAS")
    return parser


def _load_data(path: str):
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [name for name in ("x", "y") if name not in f.files]
            if missing:
                raise SystemExit(f"fastnn train: --data {path}: missing array(s) "
                                 f"{', '.join(missing)}; found {', '.join(f.files) or 'none'}")
            return f["x"], f["y"]
    except (OSError, ValueError) as exc:
        raise SystemExit(f"fastnn train: --data {path}: cannot read it as .npz ({exc})") from None


def _train(args) -> int:
    import fastnn

    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("fastnn train: --plot needs matplotlib: "
                             "pip install 'fastnn[plot]' (or pip install matplotlib)") from None
    if args.threads is not None:
        fastnn.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    if args.data is not None:
        x, y = _load_data(args.data)
        source = args.data
    else:
        rng = np.random.default_rng(args.seed)
        x = rng.standard_normal((args.m, args.n)).astype(dtype)
        y = rng.standard_normal((args.m, args.out)).astype(dtype)
        source = "random N(0, 1) (the seed's experiment)"

    every = max(1, args.iters // 10)

    def report(t, loss):
        if t % every == 0 or t == args.iters - 1:
            print(f"iter {t:6d}  loss {loss:.6g}", flush=True)

    try:
        result = fastnn.train(x, y, hidden=args.hidden, iters=args.iters, lr=args.lr,
                              init=args.init, seed=args.seed, kernel=args.kernel, dtype=dtype,
                              callback=None if args.quiet else report, callback_every=every,
                              whole_loop=False if args.python_loop else None)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"fastnn train: {exc}") from None
    n, h, k = result.params.shape
    m = np.shape(x)[0]
    print(f"data        {source}: m={m}, n={n}, hidden={h}, out={k}")
    print(f"loss        first {result.losses[0]:.6g}, last {result.losses[-1]:.6g}")
    print(f"time/iter   {result.seconds_per_iter * 1e6:.1f} us (first step, with compile or "
          f"cache load: {result.first_step_seconds:.3f} s)")
    print(f"kernel      {result.kernel}, dtype {result.dtype}, threads {fastnn.get_num_threads()}")
    if args.plot is not None:
        _plot(result.losses, args.plot, f"fastnn: kernel={result.kernel}, {result.dtype}")
        print(f"plot        {args.plot}")
    return 0


def _tune(args) -> int:
    import fastnn
    from . import autotune, bench
    from .params import as_float_dtype

    if args.clear:
        autotune.forget()
        print(f"forgot every choice ({autotune.tune_file()})")
        return 0
    if args.show:
        for key, choice in sorted(autotune._load().items()):
            print(f"{key:<32} {choice.get('kernel')}")
        print(f"file        {autotune.tune_file()}")
        return 0
    try:
        shapes = [bench.parse_shape(s) for s in args.shapes.split(",")]
        dtypes = [as_float_dtype(d) for d in args.dtype.split(",")]
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"fastnn tune: {exc}") from None
    if args.threads is not None:
        fastnn.set_num_threads(args.threads)
    for name, shape in shapes:
        for dt in dtypes:
            result = autotune.tune(shape, dt)
            times = ", ".join(f"{k} {v:.1f} us" for k, v in sorted(result["us"].items(),
                                                                     key=lambda kv: kv[1]))
            print(f"{name:<8} {dt.name:<8} threads {fastnn.get_num_threads()}: "
                  f"{result['kernel']:<6} ({times})")
    print(f"file        {autotune.tune_file()}")
    return 0


def _plot(losses, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(len(losses)), losses)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss  (1/m) sum (z2 - y)^2")
    ax.set_yscale("log" if np.all(losses > 0) else "linear")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def info_lines() -> list[str]:
    import numba
    import scipy
    from threadpoolctl import threadpool_info

    import fastnn
    from . import _config
    from .kernels import blas  # (also loads scipy's BLAS, so that threadpoolctl lists it)

    _warm_up_threading_layer()
    lines = [
        f"fastnn      {fastnn.__version__}",
        f"python      {platform.python_version()} ({sys.executable})",
        f"numpy       {np.__version__}",
        f"numba       {numba.__version__}",
        f"scipy       {scipy.__version__}",
        f"cpu         {_cpu_name()} ({os.cpu_count()} logical cores)",
        f"threads     fastnn {fastnn.get_num_threads()}, numba max {_config.max_threads()}",
        f"numba layer {numba.threading_layer()}",
        f"cache       {_config.kernel_cache_dir() if _config.CACHE else 'off'}",
        f"fastmath    {'on (no nnan/ninf)' if _config.FASTMATH else 'off'}",
        f"kernels     {', '.join(kernels.available())} (default {kernels.DEFAULT})",
        f"fused BLAS  {blas.BACKEND_NAME}: {blas.LIBRARY} (FASTNN_BLAS=mkl|numpy|scipy)",
    ]
    for pool in threadpool_info():
        lines.append(f"{pool['user_api']:<11} {pool['internal_api']} {pool.get('version')} "
                     f"({pool.get('architecture', '?')}), {pool['num_threads']} threads: "
                     f"{os.path.basename(pool['filepath'])}")
    return lines


def _warm_up_threading_layer() -> None:
    """Numba picks its threading layer at the first parallel launch; run a tiny one."""
    from .kernels import forward

    a = np.ones((1, 1))
    forward.linear_forward(a, a, np.ones(1), np.empty((1, 1)))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "train":
        return _train(args)
    if args.command == "bench":
        from . import bench

        return bench.main(args)
    if args.command == "tune":
        return _tune(args)
    print("\n".join(info_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
