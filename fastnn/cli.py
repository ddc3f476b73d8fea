"""The ``fastnn`` command: ``fastnn train``, ``bench``, ``bench-train``, ``tune`` and ``info``."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from . import kernels

SEED_EXPERIMENT = dict(m=64, n=1000, hidden=100, out=10, iters=100, lr=1e-5)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _threads_option(parser) -> None:
    parser.add_argument("--threads", type=_positive, default=None,
                        help="threads for Numba and BLAS together (default: all cores)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _bench_parser(sub)
    _bench_train_parser(sub)
    _tune_parser(sub)
    sub.add_parser("info", help="versions, CPU, threads, threading layer and BLAS")
    return parser


def _train_parser(sub) -> None:
    t = sub.add_parser(
        "train", help="train the two-layer network (default: the seed's experiment)",
        description="Train on random standard-normal data (the seed's experiment: m=64, n=1000, "
                    "hidden=100, out=10, standard-normal init, full-batch SGD, lr=1e-5, 100 "
                    "iterations), on your own data (--data FILE.npz or FILE.csv) or on "
                    "scikit-learn's digits (--dataset digits).")
    e = SEED_EXPERIMENT
    g = t.add_argument_group("problem (the random data of the seed's experiment)")
    g.add_argument("--m", type=_positive, default=e["m"], help="samples (default %(default)s)")
    g.add_argument("--n", type=_positive, default=e["n"],
                   help="input features (default %(default)s)")
    g.add_argument("--hidden", type=_positive, default=e["hidden"],
                   help="hidden units (default %(default)s)")
    g.add_argument("--out", type=_positive, default=e["out"],
                   help="outputs (default %(default)s)")
    g = t.add_argument_group("data")
    g.add_argument("--data", metavar="FILE",
                   help="train on your data: .npz with arrays 'x' (m, n) and 'y', or .csv with a "
                        "header row and the label column named by --target")
    g.add_argument("--target", default="y", help="the label column of a .csv (default %(default)s)")
    g.add_argument("--task", choices=["regress", "classify"], default=None,
                   help="regress: squared error; classify: softmax cross-entropy over the labels "
                        "in y, reports accuracy (default: regress, classify for --dataset)")
    g.add_argument("--dataset", choices=["digits"],
                   help="scikit-learn's bundled digits (needs scikit-learn): 80/20 split, "
                        "reports test accuracy")
    g.add_argument("--validation-fraction", type=float, default=None,
                   help="hold out this fraction of the rows; its loss is shown per epoch")
    g = t.add_argument_group("training")
    g.add_argument("--iters", type=_positive, default=None,
                   help=f"steps (default {e['iters']} full-batch steps unless --epochs is given)")
    g.add_argument("--epochs", type=_positive, default=None, help="passes over the data")
    g.add_argument("--batch-size", type=_positive, default=None,
                   help="minibatch rows (default: the whole set)")
    g.add_argument("--early-stopping", action="store_true",
                   help="stop when the validation loss stops improving (--patience epochs)")
    g.add_argument("--patience", type=_positive, default=10, help="(default %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="random seed for data, init, shuffling "
                   "and splits (default %(default)s)")
    g.add_argument("--init", choices=["normal", "he"], default=None,
                   help="parameter init; 'normal' is the seed's N(0, 1) (default: normal for the "
                        "seed's experiment, he on data)")
    g.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="compute dtype (default %(default)s)")
    g.add_argument("--kernel", choices=kernels.available() + list(kernels.ALIASES),
                   default=kernels.DEFAULT, help="kernel variant (default %(default)s)")
    _threads_option(g)
    g.add_argument("--python-loop", action="store_true",
                   help="call the step from Python each iteration instead of running the "
                        "iterations inside one compiled call (the whole-loop mode, default where "
                        "the kernel has one)")
    g = t.add_argument_group("optimiser")
    g.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default {e['lr']} for the seed's experiment, 0.01 for "
                        f"sgd and 0.001 for adam on data)")
    g.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd",
                   help="(default %(default)s)")
    g.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0)")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    g.add_argument("--alpha", type=float, default=0.0, help="L2 weight decay (default 0)")
    g = t.add_argument_group("checkpoints")
    g.add_argument("--checkpoint", metavar="FILE.npz",
                   help="save params, optimiser state and position here (atomically)")
    g.add_argument("--checkpoint-every", type=_positive, default=None, metavar="N",
                   help="... every N steps (and at the end)")
    g.add_argument("--resume", metavar="FILE.npz",
                   help="continue from this checkpoint (same data and settings)")
    g = t.add_argument_group("output")
    g.add_argument("--plot", metavar="FILE.png",
                   help="save the training (and validation) curves (needs matplotlib)")
    g.add_argument("--quiet", action="store_true", help="no progress bar; print only the summary")


def _shape_options(parser, dtype: str) -> None:
    """--shapes, --dtype and --threads, shared by bench and tune."""
    parser.add_argument("--shapes", default="seed",
                        help="comma-separated presets (seed, mnist, medium, large) or MxNxHxK "
                             "(default %(default)s)")
    parser.add_argument("--dtype", default=dtype,
                        help="float64, float32 or both, comma-separated (default %(default)s)")
    _threads_option(parser)


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="time kernel variants against a careful numpy step",
                       description="Paired timing of each kernel's SGD step against a careful "
                                   "numpy step, with GFLOP/s and % of the BLAS peak measured on "
                                   "the spot.")
    _shape_options(b, dtype="float64")
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


def _bench_train_parser(sub) -> None:
    bt = sub.add_parser("bench-train", help="time whole training runs against numpy and "
                        "scikit-learn", description=(
                            "Paired timings of (epoch) one epoch of minibatch training against "
                            "the same loop in careful numpy, and (digits) MLPClassifier.fit "
                            "against scikit-learn's on its digits data, with both accuracies."))
    bt.add_argument("--benches", default="epoch,digits", help="(default %(default)s)")
    bt.add_argument("--shape", default="8192x784x512x10",
                    help="rows x features x hidden x classes of the epoch bench "
                         "(default %(default)s)")
    bt.add_argument("--batch-size", type=_positive, default=128, help="(default %(default)s)")
    bt.add_argument("--dtype", default="float32", help="(default %(default)s)")
    bt.add_argument("--kernels", default=kernels.DEFAULT, help="comma-separated "
                    "(default %(default)s)")
    _threads_option(bt)
    bt.add_argument("--rounds", type=_positive, default=7, help="(default %(default)s)")
    bt.add_argument("--digits-epochs", type=_positive, default=100, help="(default %(default)s)")
    bt.add_argument("--settle", type=float, default=0.15, help="(as for bench)")
    bt.add_argument("--json", metavar="FILE", help="write the rows as JSON")


def _tune_parser(sub) -> None:
    u = sub.add_parser("tune", help="measure which kernel `auto` should run, and remember it",
                       description="For each shape and dtype, time the candidate kernels "
                                   "(the variants whose candidate fact is set) and store the "
                                   "fastest in the tune file that kernel='auto' reads.")
    _shape_options(u, dtype="float64,float32")
    u.add_argument("--show", action="store_true", help="print the remembered choices and exit")
    u.add_argument("--clear", action="store_true", help="forget every remembered choice and exit")


def _load_data(path: str, target: str):
    """``(x, y)`` from an .npz (arrays x, y) or a .csv (header row; ``target`` is the label
    column, every other column a numeric feature)."""
    if path.lower().endswith(".csv"):
        return _load_csv(path, target)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [name for name in ("x", "y") if name not in f.files]
            if missing:
                raise SystemExit(f"fastnn train: --data {path}: missing array(s) "
                                 f"{', '.join(missing)}; found {', '.join(f.files) or 'none'}")
            return f["x"], f["y"]
    except (OSError, ValueError) as exc:
        raise SystemExit(f"fastnn train: --data {path}: cannot read it as .npz ({exc})") from None


def _load_csv(path: str, target: str):
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"fastnn train: --data {path}: cannot read it ({exc})") from None
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise SystemExit(f"fastnn train: --data {path}: expected a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise SystemExit(f"fastnn train: --data {path}: no column {target!r} (--target); "
                         f"columns: {', '.join(header)}")
    col = header.index(target)
    body = rows[1:]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise SystemExit(f"fastnn train: --data {path}: line {bad[0]} has a different number of "
                         f"fields than the header")
    labels = np.array([r[col].strip() for r in body])
    try:
        x = np.array([[float(v) for i, v in enumerate(r) if i != col] for r in body])
    except ValueError as exc:
        raise SystemExit(f"fastnn train: --data {path}: feature columns must be numbers ({exc})"
                         ) from None
    if x.shape[1] == 0:
        raise SystemExit(f"fastnn train: --data {path}: no feature columns besides {target!r}")
    try:
        y = labels.astype(np.float64)
    except ValueError:
        y = labels  # text labels: only a classification target
    return x, y


def _digits(seed):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("fastnn train: --dataset digits needs scikit-learn: "
                         "pip install 'fastnn[sklearn]' (or pip install scikit-learn)") from None
    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.2, random_state=seed, stratify=y)


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
    x, y, x_test, y_test, source = _problem(args)
    task = args.task or ("classify" if args.dataset else "regress")
    classes = None
    if task == "classify":
        classes, y, y_test = _encode_labels(y, y_test)
    elif np.asarray(y).dtype.kind not in "biuf":
        raise SystemExit("fastnn train: the labels are text; use --task classify")
    try:
        result = fastnn.train(x, y, **_train_arguments(args, task))
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"fastnn train: {exc}") from None
    _summary(args, result, source, x, y, x_test, y_test, classes)
    return 1 if result.diverged else 0


def _problem(args):
    """``(x, y, x_test, y_test, description)`` of the data ``args`` name: a data set, a file, or
    the seed's experiment (``profiling.problems.problem``, the data every benchmark uses)."""
    if args.dataset == "digits":
        x, x_test, y, y_test = _digits(args.seed)
        return x, y, x_test, y_test, "scikit-learn digits, 80/20 split"
    if args.data is not None:
        x, y = _load_data(args.data, args.target)
        return x, y, None, None, args.data
    from .profiling.problems import problem

    x, y, _ = problem((args.m, args.n, args.hidden, args.out), np.dtype(args.dtype),
                      seed=args.seed, init="normal")
    return x, y, None, None, "random N(0, 1) (the seed's experiment)"


def _encode_labels(y, y_test):
    """``(classes, indices of y, indices of y_test)``: class labels as indices into ``classes``."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise SystemExit(f"fastnn train: --task classify needs one label per row, got y of "
                         f"shape {y.shape}")
    classes, y = np.unique(y, return_inverse=True)
    if y_test is not None:
        y_test = np.searchsorted(classes, y_test)
    return classes, y, y_test


def _train_arguments(args, task) -> dict:
    """``fastnn.train``'s keyword arguments from the command line."""
    on_data = args.data is not None or args.dataset is not None
    lr = args.lr
    if lr is None:
        lr = (1e-3 if args.optimizer == "adam" else 0.01) if on_data else SEED_EXPERIMENT["lr"]
    iters, epochs = args.iters, args.epochs
    if iters is None and epochs is None:
        iters = SEED_EXPERIMENT["iters"]
    opt = dict(optimizer=args.optimizer, alpha=args.alpha)
    if args.optimizer == "sgd":
        opt.update(momentum=args.momentum, nesterov=args.nesterov)
    return dict(
        hidden=args.hidden, iters=iters, epochs=epochs, batch_size=args.batch_size, lr=lr,
        loss="softmax" if task == "classify" else "squared",
        init=args.init or ("he" if on_data else "normal"), seed=args.seed, kernel=args.kernel,
        dtype=np.dtype(args.dtype), validation_fraction=args.validation_fraction,
        early_stopping=args.early_stopping, patience=args.patience, checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every, resume=args.resume, progress=not args.quiet,
        whole_loop=False if args.python_loop else None, **opt)


def _summary(args, result, source, x, y, x_test, y_test, classes) -> None:
    import fastnn
    from .reference import output_loss

    n, h, k = result.params.shape
    print(f"data        {source}: m={np.shape(x)[0]}, n={n}, hidden={h}, out={k}")
    print(f"loss        first {result.losses[0]:.6g}, last {result.losses[-1]:.6g} "
          f"({result.n_steps} steps, {result.n_epochs} epochs)")
    if len(result.val_losses):
        print(f"validation  loss {result.val_losses[-1]:.6g} (best {result.val_losses.min():.6g}"
              f"{', stopped early' if result.stopped_early else ''})")
    if classes is not None:
        acc = np.mean(np.argmax(fastnn.predict(result.params, x, kernel=result.ran), 1) == y)
        print(f"accuracy    train {acc:.4f}")
        if x_test is not None:
            z = fastnn.predict(result.params, x_test, kernel=result.ran)
            print(f"accuracy    test {np.mean(np.argmax(z, 1) == y_test):.4f} "
                  f"({len(y_test)} held-out samples)")
    elif x_test is not None:
        z = fastnn.predict(result.params, x_test, kernel=result.ran)
        print(f"test loss   {output_loss(z, np.asarray(y_test, z.dtype).reshape(z.shape))[0]:.6g}")
    print(f"time/iter   {result.seconds_per_iter * 1e6:.1f} us (first step, with compile or "
          f"cache load: {result.first_step_seconds:.3f} s)")
    ran = ""
    if result.kernel == kernels.AUTO:
        ran = f" (ran {result.ran}; `fastnn tune --show` for the timings)"
    print(f"kernel      {result.kernel}{ran}, dtype {result.dtype}, "
          f"threads {fastnn.get_num_threads()}")
    if result.diverged:
        print(f"diverged    at step {result.diverged_at}; kept the last finite parameters")
    if args.checkpoint:
        print(f"checkpoint  {args.checkpoint}")
    if args.plot is not None:
        _plot(result, args.plot, f"fastnn: kernel={result.kernel}, {result.dtype}")
        print(f"plot        {args.plot}")


def _tune(args) -> int:
    import fastnn
    from . import autotune
    from .params import as_float_dtype
    from .profiling.problems import parse_shape

    if args.clear:
        autotune.forget()
        print(f"forgot every choice ({autotune.tune_file()})")
        return 0
    if args.show:
        for key, choice in sorted(autotune.remembered().items()):
            print(f"{key:<32} {choice.get('kernel')}")
        print(f"file        {autotune.tune_file()}")
        return 0
    try:
        shapes = [parse_shape(s) for s in args.shapes.split(",")]
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


def _plot(result, path: str, title: str) -> None:
    """Training loss per step, per epoch (when epochs hold several steps) and validation loss
    per epoch, against the step count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    losses = result.losses[np.isfinite(result.losses)]
    per = result.steps_per_epoch
    ax.plot(np.arange(len(losses)), losses, lw=0.8, alpha=0.5 if per > 1 else 1.0,
            label="training (per step)")
    ends = per * np.arange(1, result.n_epochs + 1) - 1
    if per > 1 and result.n_epochs:
        ax.plot(ends, result.epoch_losses, "o-", ms=3, label="training (epoch mean)")
    if len(result.val_losses):
        ax.plot(ends[:len(result.val_losses)], result.val_losses, "s-", ms=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if losses.size and np.all(losses > 0):
        ax.set_yscale("log")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "train":
        return _train(args)
    if args.command == "bench":
        from .profiling import step_bench

        return step_bench.main(args)
    if args.command == "bench-train":
        from .profiling import train_bench

        return train_bench.main(args)
    if args.command == "tune":
        return _tune(args)
    from .machine import info_lines

    print("\n".join(info_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
