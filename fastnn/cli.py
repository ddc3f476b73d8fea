"""The fastnn command: train the two-layer network, predict with a trained one, time the kernels.

Commands: train, predict, bench, bench-train, tune, build, info.  'fastnn COMMAND --help' describes each.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from . import kernels

SEED_EXPERIMENT = dict(m=64, n=1000, hidden=100, out=10, iters=100, lr=1e-5)
EXIT_INTERRUPTED = 130  # the shell's status for a process stopped by Ctrl-C (128 + SIGINT)

# The settings of `fastnn train` a checkpoint records and `--resume` takes back where the command
# line leaves them out, with their defaults otherwise.  (--m .. --out, --hidden: the problem.)
TRAIN_SETTINGS = dict(
    m=SEED_EXPERIMENT["m"], n=SEED_EXPERIMENT["n"], hidden=SEED_EXPERIMENT["hidden"],
    out=SEED_EXPERIMENT["out"], data=None, target="y", task=None, dataset=None, data_dir=None,
    drop_missing=False, test_fraction=None, validation_fraction=None, iters=None, epochs=None,
    batch_size=None, early_stopping=False, patience=10, seed=0, init=None, dtype="float64",
    kernel=kernels.DEFAULT, lr=None, optimizer="sgd", momentum=0.0, nesterov=False, alpha=0.0,
    checkpoint_every=None, activation="relu", lazy=False)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _threads_option(parser) -> None:
    parser.add_argument("--threads", type=_positive, default=None,
                        help="threads for Numba and BLAS together (default: all cores)")


def _build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _predict_parser(sub)
    _bench_parser(sub)
    _bench_train_parser(sub)
    _tune_parser(sub)
    bd = sub.add_parser(
        "build", help="compile the kernels auto runs into the disk cache now (once, e.g. after "
        "installing): processes that end before the background build finishes then start "
        "compiled")
    bd.add_argument("--dtype", default="float32,float64",
                    help="comma-separated dtypes to build, from float32, float64, bfloat16 (the "
                         "bf16 rung, ~15 s) (default float32,float64)")
    sub.add_parser("info", help="versions, CPU, threads, threading layer and BLAS")
    return parser


def _train_parser(sub) -> None:
    t = sub.add_parser(
        "train", help="train the two-layer network (default: the seed's experiment)",
        description="Train on random standard-normal data (the seed's experiment: m=64, n=1000, "
                    "hidden=100, out=10, standard-normal init, full-batch SGD, lr=1e-5, 100 "
                    "iterations), on your own data (--data FILE.npz or FILE.csv) or on a data "
                    "set (--dataset digits, mnist, fashion-mnist).  With --resume, every setting "
                    "left out is the checkpoint's.  Ctrl-C stops at the next step, writes the "
                    "checkpoint (--checkpoint) and says how to resume.")
    e = SEED_EXPERIMENT
    g = t.add_argument_group("problem (the random data of the seed's experiment)")
    g.add_argument("--m", type=_positive, help=f"samples (default {e['m']})")
    g.add_argument("--n", type=_positive, help=f"input features (default {e['n']})")
    g.add_argument("--hidden", type=_positive, help=f"hidden units (default {e['hidden']})")
    g.add_argument("--out", type=_positive, help=f"outputs (default {e['out']})")
    g = t.add_argument_group("data")
    g.add_argument("--data", metavar="FILE",
                   help="train on your data: .npz with arrays 'x' (m, n) and 'y', .csv with a "
                        "header row and the label column named by --target, or .npy of x "
                        "(memory-mapped) with --target naming the .npy of y; sparse rows: an "
                        ".npz of scipy.sparse.save_npz with --labels naming the .npy of y, or "
                        "an svmlight/libsvm file (.svm, .svmlight, .libsvm)")
    g.add_argument("--target", "--labels", dest="target",
                   help="the label column of a .csv (default y); the .npy of the labels of an "
                        ".npy or sparse .npz")
    g.add_argument("--task", choices=["regress", "classify"],
                   help="regress: squared error; classify: softmax cross-entropy over the labels "
                        "in y, reports accuracy (default: regress, classify for --dataset)")
    g.add_argument("--dataset", choices=["digits", "mnist", "fashion-mnist"],
                   help="a data set with its own test split: scikit-learn's digits (needs "
                        "scikit-learn), MNIST or Fashion-MNIST (downloaded once into "
                        "~/.cache/fastnn/datasets, sha256-checked); reports test accuracy")
    g.add_argument("--data-dir", metavar="FOLDER",
                   help="where the IDX files of --dataset mnist/fashion-mnist already are")
    g.add_argument("--drop-missing", action="store_true", default=None,
                   help="leave out the .csv rows with a missing (blank, NA) value instead of "
                        "stopping with an error")
    g.add_argument("--test-fraction", type=float, metavar="F",
                   help="hold out this fraction of --data's rows (per class for classify) and "
                        "report the model on them")
    g.add_argument("--validation-fraction", type=float, metavar="F",
                   help="hold out this fraction of the training rows; its loss is shown per epoch")
    g = t.add_argument_group("training")
    g.add_argument("--iters", type=_positive,
                   help=f"steps (default {e['iters']} full-batch steps unless --epochs is given)")
    g.add_argument("--epochs", type=_positive, help="passes over the data")
    g.add_argument("--batch-size", type=_positive, help="minibatch rows (default: the whole set)")
    g.add_argument("--early-stopping", action="store_true", default=None,
                   help="stop when the validation loss stops improving (--patience epochs)")
    g.add_argument("--patience", type=_positive, help="(default 10)")
    g.add_argument("--seed", type=int, help="random seed for data, init, shuffling and splits "
                   "(default 0)")
    g.add_argument("--init", choices=["normal", "he"],
                   help="parameter init; 'normal' is the seed's N(0, 1) (default: normal for the "
                        "seed's experiment, he on data)")
    g.add_argument("--dtype", choices=["float64", "float32", "bfloat16"],
                   help="compute dtype (default float64); bfloat16: the two big matmuls on "
                        "bfloat16 operands (vdpbf16ps where the CPU has AVX512_BF16, else its "
                        "slower exact emulation), float32 master weights")
    g.add_argument("--activation", choices=["relu", "tanh", "logistic", "identity"],
                   help="the hidden layer's activation (default relu)")
    g.add_argument("--kernel", choices=kernels.available() + list(kernels.ALIASES),
                   help=f"kernel variant (default {kernels.DEFAULT})")
    _threads_option(g)
    g.add_argument("--python-loop", action="store_true",
                   help="call the step from Python each iteration instead of running the "
                        "iterations inside one compiled call (the whole-loop mode, default where "
                        "the kernel has one)")
    g = t.add_argument_group("optimiser")
    g.add_argument("--lr", type=float, help=f"learning rate (default {e['lr']} for the seed's "
                   f"experiment, 0.01 for sgd and 0.001 for adam on data)")
    g.add_argument("--optimizer", choices=["sgd", "adam", "lbfgs"],
                   help="(default sgd); lbfgs: full-batch L-BFGS-B, --iters its iterations at "
                        "most, no --lr or --batch-size")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0)")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    g.add_argument("--alpha", type=float, help="L2 weight decay (default 0)")
    g.add_argument("--lazy", action="store_true", default=None,
                   help="sparse data only: momentum, adam and --alpha update only the rows of "
                        "the first layer each batch names (another method, opt-in: "
                        "docs/usage.md)")
    g = t.add_argument_group("across processes and machines (MPI; pip install 'fastnn[mpi]')")
    g.add_argument("--workers", type=_positive, metavar="N",
                   help="train on N local processes: runs this command under mpiexec -n N")
    g.add_argument("--distributed", action="store_true",
                   help="this process is one rank of an MPI job (mpiexec -n N [-hosts a,b] "
                        "fastnn train --distributed ...): each rank takes its share of every "
                        "batch; rank 0 prints and writes the checkpoints")
    g = t.add_argument_group("checkpoints")
    g.add_argument("--checkpoint", metavar="FILE.npz",
                   help="save params, optimiser state, position and the model's labels and "
                        "feature names here (atomically; never over a file that is not a "
                        "fastnn checkpoint)")
    g.add_argument("--checkpoint-every", type=_positive, metavar="N",
                   help="... every N steps (and at the end)")
    g.add_argument("--resume", metavar="FILE.npz",
                   help="continue from this checkpoint (its data and settings, unless given "
                        "here); checkpoints go on into the same file unless --checkpoint says")
    g = t.add_argument_group("output")
    g.add_argument("--plot", metavar="FILE.png",
                   help="save the training (and validation) curves (needs matplotlib)")
    g.add_argument("--quiet", action="store_true", help="no progress bar; print only the summary")


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict with a trained model (a checkpoint or a saved "
                       "estimator)", description="Read a model written by `fastnn train "
                       "--checkpoint` or an estimator's save(), predict for the rows of --data "
                       "(a .csv with the model's feature columns, by name, or an .npz with x) "
                       "and write them to --out as .csv: the class label (classification) or "
                       "the outputs (regression), with --proba the class probabilities too.")
    p.add_argument("--model", required=True, metavar="FILE", help="the checkpoint or saved model")
    p.add_argument("--data", required=True, metavar="FILE", help="the rows to predict for")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="where to write them")
    p.add_argument("--proba", action="store_true", help="also the class probabilities")
    p.add_argument("--target", default=None, help="a label column of --data to leave out "
                   "(default: the model's, if it has one)")
    p.add_argument("--kernel", choices=kernels.available(), default=kernels.DEFAULT,
                   help=f"kernel variant (default {kernels.DEFAULT})")


def _shape_options(parser, dtype: str) -> None:
    """--shapes, --dtype and --threads, shared by bench and tune."""
    parser.add_argument("--shapes", default="seed",
                        help="comma-separated presets (seed, mnist, medium, large) or MxNxHxK "
                             "(default %(default)s)")
    parser.add_argument("--dtype", default=dtype,
                        help="float64, float32 or both, comma-separated; bench also takes "
                             "bfloat16 (the bf16 rung against the float32 numpy step, %% of "
                             "vdpbf16ps's peak) (default %(default)s)")
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
    b.add_argument("--activation", default="relu",
                   help="hidden activations, comma-separated, from relu, tanh, logistic, "
                        "identity; each other than relu is also paired against the kernel's "
                        "relu step (column 'x relu') (default %(default)s)")
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
                            "the same loop in careful numpy, (digits) MLPClassifier.fit "
                            "against scikit-learn's on its digits data, with both accuracies, "
                            "and (seed, wide) whole full-batch runs against the same steps in "
                            "careful numpy: the seed's experiment (64x1000x100x10 float64, 100 "
                            "steps) and a wide regression (512x20000x256x1 float32, 50 steps), "
                            "where auto trains in the dual form."))
    bt.add_argument("--benches", default="epoch,digits",
                    help="comma-separated, from epoch, digits, digits-lbfgs, mnist "
                         "(MLPClassifier, hidden 800, 3 epochs of Adam, in bfloat16 and "
                         "float32, against scikit-learn's float32 fit), seed, wide, and "
                         "the sparse rung's sparse-scaling (20k against 200k features), "
                         "sparse-sklearn (its sgd fit against scikit-learn's), sparse-lazy "
                         "(lazy against exact Adam at 200k features), sparse-text "
                         "(TF-IDF rows, Adam; peak memory) (default %(default)s)")
    bt.add_argument("--activation", default="relu",
                    help="the epoch bench's hidden activations, comma-separated, from relu, "
                         "tanh, logistic, identity; each other than relu is also paired "
                         "against the relu epoch (default %(default)s)")
    bt.add_argument("--shape", default="8192x784x512x10",
                    help="rows x features x hidden x classes of the epoch bench "
                         "(default %(default)s)")
    bt.add_argument("--batch-size", type=_positive, default=128, help="(default %(default)s)")
    bt.add_argument("--dtype", default="float32",
                    help="float32, float64, or bfloat16 (the epoch bench on the bf16 rung, "
                         "also against PyTorch's autocast where it is installed) "
                         "(default %(default)s)")
    bt.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"],
                    help="the mnist bench's data (default %(default)s)")
    bt.add_argument("--data-dir", default=None,
                    help="a folder holding its IDX files (else fastnn's cache, else a download)")
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


def _train(args) -> int:
    if args.workers is not None:
        return _launch_workers(args.workers)
    rank = _rank(args)
    if not args.distributed:
        return _train_here(args, rank)
    try:
        return _train_here(args, rank)
    except SystemExit as exc:  # a message for the user, on one rank: every rank must end now
        if exc.code not in (0, None):
            from mpi4py import MPI

            print(f"rank {rank}: {exc.code}", file=sys.stderr, flush=True)
            MPI.COMM_WORLD.Abort(1)
        raise


def _train_here(args, rank) -> int:
    """``fastnn train`` in this process (one rank of a job with ``--distributed``)."""
    import fastnn

    from .checkpoint import CheckpointError
    from .data import DataError

    try:
        s = _settings(args, rank)
        checkpoint = (_check_outputs(args, s) if rank == 0 else  # only rank 0 writes
                      args.checkpoint if args.checkpoint is not None else args.resume)
        _set_threads(args.threads)
        problem = _problem(s)
        task, classes, y, y_test = _task(s, problem)
        options = _train_arguments(s, task, checkpoint, args,
                                   _model_info(s, task, classes, problem))
    except (DataError, CheckpointError, ValueError, TypeError) as exc:
        raise SystemExit(f"fastnn train: {exc}") from None
    for note in problem.notes if rank == 0 else ():
        print(f"note        {note}", file=sys.stderr)
    if args.distributed:
        from .distributed import run
    else:
        from .training import run
    try:
        result = run(problem.x, y, options)
    except fastnn.TrainingInterrupted as stop:
        return _interrupted(stop) if rank == 0 else EXIT_INTERRUPTED
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"fastnn train: {exc}") from None
    if rank == 0:
        _summary(args, s, result, problem, y, y_test, classes)
    return 1 if result.diverged else 0


def _rank(args) -> int:
    """This process's rank in the MPI job of ``--distributed`` (0 otherwise)."""
    if not args.distributed:
        return 0
    from .distributed import mpi_available

    if not mpi_available():
        raise SystemExit("fastnn train: --distributed needs MPI: pip install 'fastnn[mpi]' "
                         "(mpi4py and the mpich wheel)")
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


def _launch_workers(n) -> int:
    """``fastnn train --workers N ...``: this same command on N local ranks, under mpiexec (the
    one beside this Python, as the mpich wheel installs it, else the one on PATH)."""
    import shutil
    import subprocess

    from .distributed import mpi_available

    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = here if os.path.exists(here) else shutil.which("mpiexec")
    if not mpi_available() or mpiexec is None:
        raise SystemExit("fastnn train: --workers needs MPI: pip install 'fastnn[mpi]' "
                         "(mpi4py and the mpich wheel, which brings mpiexec)")
    argv, skip = [], False
    for a in sys.argv[1:]:  # this command without --workers N
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            argv.append(a)
    cmd = [mpiexec, "-n", str(n), sys.executable, "-m", "fastnn"] + argv + ["--distributed"]
    try:
        return subprocess.run(cmd).returncode
    except KeyboardInterrupt:  # mpiexec passes Ctrl-C on to the ranks, which stop together
        return EXIT_INTERRUPTED


def _settings(args, rank=0) -> argparse.Namespace:
    """The run's settings: the command line's, else (with --resume) the checkpoint's, else the
    defaults (``TRAIN_SETTINGS``).  In an MPI job rank 0 reads the checkpoint for all."""
    stored = {}
    if args.resume is not None and rank == 0:
        from .checkpoint import load

        stored = dict((load(args.resume).meta.get("info") or {}).get("cli") or {})
    if args.distributed:
        from mpi4py import MPI

        stored = MPI.COMM_WORLD.bcast(stored, root=0)
    if args.resume is not None:
        if args.iters is not None or args.epochs is not None:  # a new length replaces the old
            stored.pop("iters", None)
            stored.pop("epochs", None)
    return argparse.Namespace(**{key: getattr(args, key) if getattr(args, key) is not None
                                 else stored.get(key, default)
                                 for key, default in TRAIN_SETTINGS.items()})


def _same_file(a, b) -> bool:
    return a is not None and b is not None and os.path.realpath(a) == os.path.realpath(b)


def _check_outputs(args, s):
    """Every path the run will write, checked before it starts: the checkpoint (new, or a fastnn
    checkpoint, in a folder that exists) and the plot (a folder that exists, not one of the
    inputs, nothing but a PNG replaced).  Returns the checkpoint path (with --resume and no
    --checkpoint: the resumed file, so that a second interruption can resume again)."""
    from .checkpoint import check_target

    checkpoint = args.checkpoint if args.checkpoint is not None else args.resume
    if checkpoint is not None:
        check_target(checkpoint, "--checkpoint" if args.checkpoint else "--resume")
    if args.plot is not None:
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise ValueError(f"--plot {args.plot}: the folder {folder!r} does not exist")
        if any(_same_file(args.plot, other) for other in (s.data, args.resume, checkpoint)):
            raise ValueError(f"--plot {args.plot}: is one of the run's other files")
        if os.path.exists(args.plot) and not _is_png(args.plot):
            raise ValueError(f"--plot {args.plot}: a file that is not a PNG image is there "
                             f"already; refusing to replace it")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install 'fastnn[plot]' (or pip "
                             "install matplotlib)") from None
    return checkpoint


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _set_threads(n) -> None:
    if n is None:
        return
    import fastnn

    most = fastnn.threads.max_threads()
    if n > most:
        print(f"note        --threads {n}: this machine runs at most {most} (its cores, or "
              f"NUMBA_NUM_THREADS); using {most}", file=sys.stderr)
        n = most
    fastnn.set_num_threads(n)


class _Problem(argparse.Namespace):
    """x, y, x_test, y_test (None without a test split), source (a description), feature_names,
    notes."""


def _problem(s) -> _Problem:
    """The data ``s`` names: a data set, a file (with an optional test split), or the seed's
    experiment (``profiling.problems.problem``, the data every benchmark uses)."""
    from . import data

    if s.dataset is not None:
        x, y, x_test, y_test, source = data.load_dataset(s.dataset, s.data_dir, s.seed)
        return _Problem(x=x, y=y, x_test=x_test, y_test=y_test, source=source,
                        feature_names=None, notes=[])
    if s.data is not None:
        table = data.load_file(s.data, s.target, drop_missing=s.drop_missing)
        x, y, x_test, y_test = table.x, table.y, None, None
        source = s.data
        if s.test_fraction is not None:
            x, y, x_test, y_test = data.test_split(x, y, s.test_fraction, s.seed,
                                                   stratify=s.task == "classify")
            source += f", {x_test.shape[0]} rows held out for testing"
        return _Problem(x=x, y=y, x_test=x_test, y_test=y_test, source=source,
                        feature_names=table.feature_names, notes=table.notes)
    from .profiling.problems import problem

    x, y, _ = problem((s.m, s.n, s.hidden, s.out), _data_dtype(s.dtype), seed=s.seed,
                      init="normal")
    return _Problem(x=x, y=y, x_test=None, y_test=None, feature_names=None, notes=[],
                    source="random N(0, 1) (the seed's experiment)")


def _data_dtype(name):
    """The float dtype of the data and the parameters for ``--dtype name`` (bfloat16 runs keep
    float32 data and master weights; the kernels round them)."""
    return np.dtype(np.float32 if name == "bfloat16" else name)


def _task(s, problem):
    """``(task, classes, y, y_test)``: for classification the labels as indices into
    ``classes``; for regression a note when the targets look like class labels."""
    task = s.task or ("classify" if s.dataset else "regress")
    y, y_test = problem.y, problem.y_test
    if task == "classify":
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"--task classify needs one label per row, got y of shape {y.shape}")
        classes, y = np.unique(y, return_inverse=True)
        if y_test is not None:
            unseen = np.setdiff1d(y_test, classes)
            if unseen.size:
                raise ValueError(f"the test rows hold labels the training rows do not: "
                                 f"{unseen[:5].tolist()}")
            y_test = np.searchsorted(classes, y_test)
        return task, classes, y, y_test
    if np.asarray(y).dtype.kind not in "biuf":
        raise ValueError("the labels are text; use --task classify")
    from .data import integer_labels

    if s.task is None and integer_labels(y):
        problem.notes.append(f"y holds whole numbers ({len(np.unique(y))} distinct values): "
                             f"training a regression (squared error) on them; for classes, "
                             f"pass --task classify")
    return task, None, y, y_test


def _train_arguments(s, task, checkpoint, args, info):
    """The run's ``fastnn.training.Options`` from the settings (checked: a bad one is an error
    before any training)."""
    from .training import Options

    on_data = s.data is not None or s.dataset is not None
    lr = s.lr
    if lr is None and s.optimizer != "lbfgs":
        lr = (1e-3 if s.optimizer == "adam" else 0.01) if on_data else SEED_EXPERIMENT["lr"]
    iters, epochs = s.iters, s.epochs
    if iters is None and epochs is None:
        iters = SEED_EXPERIMENT["iters"]
    opt = dict(optimizer=s.optimizer, alpha=s.alpha)
    if s.lazy:
        opt.update(lazy=True)
    if s.optimizer == "sgd":
        opt.update(momentum=s.momentum, nesterov=s.nesterov)
    return Options.of(
        hidden=s.hidden, iters=iters, epochs=epochs, batch_size=s.batch_size, lr=lr,
        loss="softmax" if task == "classify" else "squared",
        init=s.init or ("he" if on_data else "normal"), seed=s.seed, kernel=s.kernel,
        dtype=s.dtype if s.dtype == "bfloat16" else np.dtype(s.dtype),
        validation_fraction=s.validation_fraction,
        early_stopping=s.early_stopping, patience=s.patience, checkpoint=checkpoint,
        checkpoint_every=s.checkpoint_every, resume=args.resume, progress=not args.quiet,
        whole_loop=False if args.python_loop else None, info=info, activation=s.activation,
        **opt)


def _model_info(s, task, classes, problem) -> dict:
    """What a checkpoint carries besides the training state: the model's task, class labels
    and feature names (so that it predicts: ``fastnn predict``, ``MLPClassifier.load``) and
    this command's settings (so that --resume needs none of them again)."""
    info = dict(task=task, feature_names=problem.feature_names,
                target=s.target if s.data is not None else None, cli=vars(s))
    if classes is not None:
        if classes.dtype.kind not in "iufbU":
            raise ValueError(f"class labels of dtype {classes.dtype} cannot be stored in a "
                             f"checkpoint")
        info.update(classes=classes.tolist(), classes_dtype=classes.dtype.str)
    return info


def _interrupted(stop) -> int:
    result = stop.result
    print(f"\ninterrupted after step {result.n_steps} (Ctrl-C)", file=sys.stderr)
    if stop.checkpoint is not None:
        print(f"checkpoint  {stop.checkpoint} (step {result.n_steps}); to continue:\n"
              f"            fastnn train --resume {stop.checkpoint}", file=sys.stderr)
    else:
        print("nothing saved: with --checkpoint FILE an interrupted run can be resumed",
              file=sys.stderr)
    return EXIT_INTERRUPTED


def _summary(args, s, result, problem, y, y_test, classes) -> None:
    import fastnn
    from .reference import output_loss

    n, h, k = result.params.shape
    x = problem.x
    print(f"data        {problem.source}: m={np.shape(x)[0]}, n={n}, hidden={h}, out={k}")
    if result.resumed_from is not None:
        print(f"resumed     from step {result.resumed_from} ({args.resume})")
    print(f"loss        first {result.losses[0]:.6g}, last {result.losses[-1]:.6g} "
          f"({result.n_steps} steps, {result.n_epochs} epochs)")
    if len(result.val_losses):
        print(f"validation  loss {result.val_losses[-1]:.6g} (best {result.val_losses.min():.6g}"
              f"{', stopped early' if result.stopped_early else ''})")

    def outputs(rows):
        return fastnn.predict(result.params, rows, kernel=result.ran)

    if classes is not None:
        print(f"accuracy    train {np.mean(np.argmax(outputs(x), 1) == y):.4f}")
        if problem.x_test is not None:
            acc = np.mean(np.argmax(outputs(problem.x_test), 1) == y_test)
            print(f"accuracy    test {acc:.4f} ({len(y_test)} held-out samples)")
    elif problem.x_test is not None:
        z = outputs(problem.x_test)
        loss = output_loss(z, np.asarray(y_test, z.dtype).reshape(z.shape))[0]
        print(f"test loss   {loss:.6g} ({len(y_test)} held-out samples)")
    print(f"time/iter   {result.seconds_per_iter * 1e6:.1f} us (first step, with compile or "
          f"cache load: {result.first_step_seconds:.3f} s)")
    ran = ""
    if result.kernel == kernels.AUTO and result.ran in kernels.TRAINING_FORMS:
        ran = (f" (ran {result.ran}: the dual form, fewer training rows than features; "
               f"docs/optimisation.md, rung 7)")
    elif (result.kernel == kernels.AUTO and result.ran == "numpy"
          and not kernels.ready(kernels.PRIMARY, result.dtype)):
        ran = (" (ran numpy: a first run here; its compiled kernels were still being built "
               "in the background, on idle CPU time only, when it ended, and that build ends "
               "with the process; `fastnn build` builds them now, ~15-20 s a dtype, for every "
               "later run)")
    elif result.ran in kernels.BF16:
        how = "vdpbf16ps" if result.ran == "bf16" else "an exact emulation of vdpbf16ps"
        ran = f" (ran {result.ran}: the big matmuls on bfloat16 pairs, {how}; rung 9)"
    elif result.kernel == kernels.AUTO:
        ran = f" (ran {result.ran}; `fastnn tune --show` for the timings)"
    threads = f"threads {fastnn.get_num_threads()}"
    if getattr(result, "ranks", None):
        threads = f"{result.ranks} ranks of {result.threads} thread(s)"
    dtype = ("bfloat16 (float32 master weights)" if result.ran in kernels.BF16
             else result.dtype)
    print(f"kernel      {result.kernel}{ran}, dtype {dtype}, {threads}")
    if len(result.schedule) > 1:  # a switch from numpy once compiled, or threads under load
        print("schedule    " + ", ".join(f"step {s}: {k} on {t} thread{'s' * (t > 1)}"
                                         for s, k, t in result.schedule))
    if result.diverged:
        print(f"diverged    at step {result.diverged_at}; kept the last finite parameters")
    if args.checkpoint or args.resume:
        print(f"checkpoint  {args.checkpoint or args.resume}")
    if args.plot is not None:
        _plot(result, args.plot, f"fastnn: kernel={result.kernel}, {result.dtype}")
        print(f"plot        {args.plot}")


def _predict(args) -> int:
    """``fastnn predict``: a model's predictions for new rows, written as .csv."""
    from .checkpoint import CheckpointError
    from .data import DataError, load_features
    from .model import read_model

    try:
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder):
            raise ValueError(f"--out {args.out}: the folder {folder!r} does not exist")
        if _same_file(args.out, args.data) or _same_file(args.out, args.model):
            raise ValueError(f"--out {args.out}: is the input; write the predictions elsewhere")
        model = read_model(args.model)
        if args.proba and model.task != "classify":
            raise ValueError("--proba: the model is a regression, it has no class probabilities")
        x = load_features(args.data, model.n_features, model.feature_names,
                          args.target if args.target is not None else model.target)
        columns, table = _predictions(model, x, args.proba, args.kernel)
    except (DataError, CheckpointError, ValueError, TypeError) as exc:
        raise SystemExit(f"fastnn predict: {exc}") from None
    _write_csv(args.out, columns, table)
    print(f"predicted   {x.shape[0]} rows ({model.task}"
          f"{', ' + str(len(model.classes)) + ' classes' if model.classes is not None else ''})"
          f" -> {args.out}")
    return 0


def _predictions(model, x, proba, kernel):
    """``(column names, rows)`` of the predictions table."""
    if model.task == "classify":
        pred = model.predict(x, kernel)
        if pred.ndim == 2:  # a multilabel model: one 0/1 column per label
            columns, table = [f"label_{c}" for c in model.classes], [pred.astype(object)]
        else:
            columns, table = ["prediction"], [pred[:, None].astype(object)]
        if proba:
            columns += [f"p_{c}" for c in model.classes]
            table.append(model.predict_proba(x, kernel))
        return columns, np.hstack(table)
    z = model.predict(x, kernel)
    columns = ["prediction"] if z.shape[1] == 1 else [f"prediction_{i}" for i in range(z.shape[1])]
    return columns, z


def _write_csv(path, columns, table) -> None:
    """The table as .csv, written to a temporary file and renamed (never half a file)."""
    import csv
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".predict-")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            w.writerows(table.tolist())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _tune(args) -> int:
    import fastnn
    from .auto import choice as autotune
    from .auto import policy, store
    from .params import as_float_dtype
    from .profiling.problems import parse_shape

    if args.clear:
        autotune.forget()
        print(f"forgot every choice and thread decision ({autotune.tune_file()})")
        return 0
    if args.show:
        for key, choice in sorted(autotune.remembered().items()):
            print(f"{key:<32} {choice.get('kernel')}"
                  f"{'  (measured on a busy machine: not reused)' if choice.get('busy') else ''}")
            print(_timings(choice))
        for key, decided in sorted(store.load("threads").items()):
            us = ", ".join(f"{c} thread{'s' if c != '1' else ''} {t:.0f} us"
                           for c, t in sorted(decided.get("us", {}).items()))
            print(f"{key:<32} threads {decided.get('threads')}  (median step: {us})")
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
            print(f"{name:<8} {dt.name:<8} threads {fastnn.get_num_threads()}: "
                  f"{result['kernel']}")
            print(_timings(result))
            if result.get("busy"):
                print(f"    ! the blocks of one candidate spread more than "
                      f"{policy.BUSY_SPREAD}x: the machine was busy; this choice is kept for "
                      f"this process only.  Run fastnn tune again with nothing else running.")
    print(f"file        {autotune.tune_file()}")
    return 0


def _timings(entry) -> str:
    """A remembered choice's timings, fastest first, with the spread of each (slowest block /
    fastest) and the winner's margin over the runner-up: why it won."""
    us = entry.get("us", {})
    spread = entry.get("spread", {})
    order = sorted(us, key=us.get)
    lines = [f"    {name:<22} {us[name]:>10.1f} us"
             + (f"  spread {spread[name]:.2f}x" if name in spread else "") for name in order]
    if len(order) > 1:
        lines.append(f"    {order[0]} wins by {us[order[1]] / us[order[0]]:.2f}x over {order[1]}")
    return "\n".join(lines)


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


def _build_cache(args) -> int:
    """``fastnn build``: what the background build does (``fastnn/auto/build.py``), in the
    foreground, with the time each dtype took."""
    import time

    from .auto import _child
    from .auto import build as background
    from .kernels import jit

    if not jit.CACHE:
        print("fastnn build: the disk cache is off (FASTNN_CACHE=0): nothing to build into",
              file=sys.stderr)
        return 2
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    for d in dtypes:
        if d not in ("float32", "float64", "bfloat16"):
            print(f"fastnn build: --dtype: expected float32, float64 and/or bfloat16, got {d!r}",
                  file=sys.stderr)
            return 2
    print(f"cache       {jit.cache_dir()}")
    for d in dtypes:
        label = d
        if d == "bfloat16":  # the bf16 rung this CPU runs, for its float32 master weights
            d, targets = "float32", [kernels.bf16.this_cpus().name]
        else:  # the background build's targets, and the sparse rung (which the background
            # build leaves out: ~5 s a dtype that only users of sparse data would ever run)
            targets = background.targets() + list(kernels.SPARSE)
        todo = [t for t in targets if not kernels.ready(t, d)]
        began = time.perf_counter()
        if todo:
            _child.build(d, todo)
        took = time.perf_counter() - began
        what = f"built {', '.join(todo)} in {took:.1f} s" if todo else "ready already"
        print(f"{label:<11} {what}")
    return 0


def main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return _command(args)
    except KeyboardInterrupt:  # outside training (which stops at a step): loading, compiling
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the output piped into a command that stopped reading (| head)
        sys.stderr.close()
        return 0


def _command(args) -> int:
    if args.command == "train":
        return _train(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "bench":
        from .profiling import step_bench

        return step_bench.main(args)
    if args.command == "bench-train":
        from .profiling import train_bench

        return train_bench.main(args)
    if args.command == "tune":
        return _tune(args)
    if args.command == "build":
        return _build_cache(args)
    from .machine import info_lines

    print("\n".join(info_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
