"""``fastnn bench-train``: whole training runs against the same loop in numpy and against
scikit-learn's MLPClassifier, paired as in ``fastnn bench`` (``timing.paired_ratio``).

Two comparisons (the targets of the training issue):

``epoch``   one epoch of minibatch training (default: an (8192, 784) float32 set, 512 hidden
            units, 10 classes, softmax loss, batches of 128, plain SGD) by ``fastnn.train``
            against ``NumpyEpoch``, the same epoch written carefully in numpy, and against
            ``PlainNumpyEpoch``, the same epoch as numpy code usually writes it.
``digits``  ``fastnn.MLPClassifier.fit`` against ``sklearn.neural_network.MLPClassifier.fit`` on
            scikit-learn's digits (80/20 split, stratified), same hidden size, batch size,
            epochs, solver (Adam, lr 1e-3), no L2 and no early stopping on either side; both
            test accuracies are reported.
``digits-lbfgs``  the same with ``solver="lbfgs"`` (hidden 100, 200 iterations, float64).

``--activation`` runs the epoch with other hidden activations too, each also paired against the
ReLU epoch.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from ..kernels.bf16 import BFLOAT16
from ..kernels.variant import step_flops
from .timing import SETTLE, blas_peak, paired_ratio, quiet_fit

EPOCH_SHAPE = (8192, 784, 512, 10)


class NumpyEpoch:
    """One epoch of minibatch SGD with softmax cross-entropy, written as a careful numpy user
    would: the epoch's rows gathered once in shuffled order (so batches are contiguous slices),
    preallocated buffers, ``np.matmul(..., out=)``, in-place updates."""

    def __init__(self, x, labels, params, lr, batch, seed=0):
        self.x, self.labels = x, labels
        self.w1, self.b1, self.w2, self.b2 = [np.array(p, copy=True) for p in params]
        self.lr, self.batch = x.dtype.type(lr), batch
        self.rng = np.random.default_rng(seed)
        m, n = x.shape
        h, k = self.w1.shape[1], self.w2.shape[1]
        dt = x.dtype
        self.xs = np.empty_like(x)
        self.ys = np.empty(m, labels.dtype)
        self.z1 = np.empty((batch, h), dt)
        self.z2 = np.empty((batch, k), dt)
        self.da1 = np.empty((batch, h), dt)
        self.dw1 = np.empty((n, h), dt)
        self.dw2 = np.empty((h, k), dt)

    def epoch(self):
        m = self.x.shape[0]
        order = self.rng.permutation(m)
        np.take(self.x, order, axis=0, out=self.xs)
        np.take(self.labels, order, out=self.ys)
        total = 0.0
        for s in range(0, m, self.batch):
            total += self.step(self.xs[s:s + self.batch], self.ys[s:s + self.batch])
        return total

    def step(self, x, labels):
        r = x.shape[0]
        w1, b1, w2, b2, lr = self.w1, self.b1, self.w2, self.b2, self.lr
        z1 = np.matmul(x, w1, out=self.z1[:r])
        z1 += b1
        a1 = np.maximum(z1, 0, out=z1)
        z2 = np.matmul(a1, w2, out=self.z2[:r])
        z2 += b2
        z2 -= z2.max(axis=1, keepdims=True)
        p = np.exp(z2, out=z2)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(r)
        loss = -float(np.log(p[rows, labels]).sum()) / r
        p[rows, labels] -= 1
        d = p
        d *= d.dtype.type(1.0 / r)
        dw2 = np.matmul(a1.T, d, out=self.dw2)
        db2 = d.sum(0)
        da1 = np.matmul(d, w2.T, out=self.da1[:r])
        da1 *= a1 > 0
        dw1 = np.matmul(x.T, da1, out=self.dw1)
        db1 = da1.sum(0)
        dw1 *= lr
        w1 -= dw1
        dw2 *= lr
        w2 -= dw2
        b1 -= lr * db1
        b2 -= lr * db2
        return loss


class PlainNumpyEpoch:
    """The same epoch as most numpy code writes it (the seed's style): a fancy-indexed copy of
    each batch, new temporaries for every intermediate, ``p -= lr * g``."""

    def __init__(self, x, labels, params, lr, batch, seed=0):
        self.x, self.labels = x, labels
        self.w1, self.b1, self.w2, self.b2 = [np.array(p, copy=True) for p in params]
        self.lr, self.batch = x.dtype.type(lr), batch
        self.rng = np.random.default_rng(seed)

    def epoch(self):
        m = self.x.shape[0]
        order = self.rng.permutation(m)
        total = 0.0
        for s in range(0, m, self.batch):
            idx = order[s:s + self.batch]
            x, labels = self.x[idx], self.labels[idx]
            r = x.shape[0]
            z1 = x @ self.w1 + self.b1
            a1 = np.maximum(z1, 0)
            z2 = a1 @ self.w2 + self.b2
            e = np.exp(z2 - z2.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            total += -np.log(p[np.arange(r), labels]).mean()
            p[np.arange(r), labels] -= 1
            dz2 = p / r
            dw2 = a1.T @ dz2
            db2 = dz2.sum(axis=0)
            dz1 = (dz2 @ self.w2.T) * (z1 > 0)
            dw1 = x.T @ dz1
            db1 = dz1.sum(axis=0)
            self.w1 -= self.lr * dw1
            self.b1 -= self.lr * db1
            self.w2 -= self.lr * dw2
            self.b2 -= self.lr * db2
        return total


class TorchEpoch:
    """The same epoch as a PyTorch user writes it (``nn.Linear``, ReLU, ``F.cross_entropy``,
    ``torch.optim.SGD``, autograd), in float32 or under ``torch.autocast("cpu",
    dtype=torch.bfloat16)`` (the bfloat16 rung's comparison: its matmuls in bfloat16 through
    oneDNN), on fastnn's thread count; each epoch's rows gathered once in shuffled order."""

    def __init__(self, x, labels, params, lr, batch, seed=0, autocast=True):
        import torch

        from ..threads import get_num_threads

        torch.set_num_threads(get_num_threads())
        self.torch, self.autocast, self.batch = torch, autocast, batch
        n, h = params.w1.shape
        k = params.w2.shape[1]
        self.model = torch.nn.Sequential(torch.nn.Linear(n, h), torch.nn.ReLU(),
                                         torch.nn.Linear(h, k))
        with torch.no_grad():
            for layer, w, b in ((self.model[0], params.w1, params.b1),
                                (self.model[2], params.w2, params.b2)):
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T, np.float32)))
                layer.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        self.labels = torch.from_numpy(np.asarray(labels, np.int64))
        self.rng = np.random.default_rng(seed)

    def epoch(self):
        torch = self.torch
        m = self.x.shape[0]
        order = torch.from_numpy(self.rng.permutation(m))
        xs, ys = self.x[order], self.labels[order]
        total = 0.0
        for s in range(0, m, self.batch):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                loss = torch.nn.functional.cross_entropy(self.model(xs[s:s + self.batch]),
                                                         ys[s:s + self.batch])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += float(loss.detach())
        return total


def bench_epoch(shape=EPOCH_SHAPE, dtype=np.float32, batch=128, kernels=("auto",), *,
                rounds=7, settle=SETTLE, lr=0.01, out=print, activations=("relu",)):
    """Paired rows: one epoch of ``fastnn.train`` per kernel and hidden activation against
    ``NumpyEpoch`` (ReLU), and an activation other than ReLU also against the same kernel's ReLU
    epoch (``x_relu``: its time over ReLU's)."""
    import fastnn

    m, n, h, k = shape
    bf16 = dtype == BFLOAT16  # float32 data and master weights; bfloat16 matmuls
    dt = np.dtype(np.float32 if bf16 else dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, n)).astype(dt)
    labels = rng.integers(0, k, m)
    params = fastnn.init_params(n, h, k, dtype=dt, seed=0)
    base = NumpyEpoch(x, labels, params, lr, batch)
    plain = PlainNumpyEpoch(x, labels, params, lr, batch)
    steps = -(-m // batch)
    flops = sum(step_flops(min(batch, m - s), n, h, k) for s in range(0, m, batch))
    rows = []
    for name in kernels:
        for act in activations:
            def ours(name=name, act=act):
                fastnn.train(x, labels, params=params, epochs=1, batch_size=batch, lr=lr,
                             loss="softmax", kernel=name, seed=1, activation=act,
                             dtype="bfloat16" if bf16 else None)

            ours()
            base.epoch()
            ratio, ta, tb = paired_ratio(ours, base.epoch, rounds=rounds, budget=0.0,
                                         settle=settle)
            plain_ratio, _, tc = paired_ratio(ours, plain.epoch, rounds=rounds, budget=0.0,
                                              settle=settle)
            med = float(np.median(ta))
            row = dict(bench="epoch", kernel=name, activation=act, shape=list(shape),
                       dtype="bfloat16" if bf16 else dt.name, batch=batch, steps=steps,
                       ms=med * 1e3,
                       ms_min=min(ta) * 1e3, ms_max=max(ta) * 1e3,
                       numpy_ms=float(np.median(tb)) * 1e3, gflops=flops / med / 1e9,
                       x_vs_numpy=ratio, plain_numpy_ms=float(np.median(tc)) * 1e3,
                       x_vs_plain_numpy=plain_ratio)
            vs_relu = ""
            if act != "relu":
                def relu(name=name):
                    fastnn.train(x, labels, params=params, epochs=1, batch_size=batch, lr=lr,
                                 loss="softmax", kernel=name, seed=1)

                row["x_relu"] = 1.0 / paired_ratio(ours, relu, rounds=rounds, budget=0.0,
                                                   settle=settle)[0]
                vs_relu = f"; {row['x_relu']:.3f}x ReLU's epoch"
            vs_torch = ""
            if bf16 and act == "relu" and _has_torch():
                for autocast, key in ((True, "torch_autocast"), (False, "torch_float32")):
                    torch_epoch = TorchEpoch(x, labels, params, lr, batch, autocast=autocast)
                    torch_epoch.epoch()
                    r, _, tt = paired_ratio(ours, torch_epoch.epoch, rounds=rounds, budget=0.0,
                                            settle=settle)
                    row[f"{key}_ms"], row[f"x_vs_{key}"] = float(np.median(tt)) * 1e3, r
                row["torch_version"] = torch_epoch.torch.__version__
                vs_torch = (f"; PyTorch autocast bfloat16 {row['torch_autocast_ms']:.1f} ms: "
                            f"{row['x_vs_torch_autocast']:.2f}x, its float32 "
                            f"{row['torch_float32_ms']:.1f} ms: {row['x_vs_torch_float32']:.2f}x")
            rows.append(row)
            what = name if act == "relu" else f"{name}+{act}"
            out(f"epoch   {what:<8} {'x'.join(map(str, shape))} {row['dtype']} B={batch}: "
                f"{row['ms']:.1f} ms ({row['ms_min']:.1f}-{row['ms_max']:.1f}), "
                f"{row['gflops']:.1f} GFLOP/s; careful numpy {row['numpy_ms']:.1f} ms: "
                f"{ratio:.2f}x, plain numpy {row['plain_numpy_ms']:.1f} ms: {plain_ratio:.2f}x"
                f"{vs_relu}{vs_torch}")
    return rows


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def bench_mnist(dataset="mnist", data_dir=None, hidden=800, epochs=3, batch=200,
                dtypes=("bfloat16", "float32"), *, rounds=3, settle=SETTLE, out=print):
    """Paired: ``fastnn.MLPClassifier.fit`` (Adam, ``hidden`` units, ``epochs`` epochs, no L2,
    no early stopping) in each of ``dtypes`` against scikit-learn's float32 fit with the same
    settings, on MNIST's (or Fashion-MNIST's: ``dataset``) training set; the test accuracies of
    all of them.  The data: ``fastnn.data.load_dataset`` (``data_dir``, else the cache, else a
    download)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkMLP

    import fastnn
    from ..data import load_dataset

    xtr, ytr, xte, yte, source = load_dataset(dataset, data_dir)
    xtr, xte = xtr.astype(np.float32), xte.astype(np.float32)
    kw = dict(solver="adam", learning_rate_init=1e-3, batch_size=batch, max_iter=epochs,
              alpha=0.0, tol=0.0, n_iter_no_change=epochs + 1, early_stopping=False,
              random_state=0)
    theirs = SkMLP((hidden,), **kw)
    fitted = {}

    def fit_theirs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitted["theirs"] = theirs.fit(xtr, ytr)

    fit_theirs()
    acc_theirs = float(fitted["theirs"].score(xte, yte))
    rows = []
    for dt in dtypes:
        ours = fastnn.MLPClassifier((hidden,), dtype=dt, **kw)

        def fit_ours(ours=ours, dt=dt):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                fitted[dt] = ours.fit(xtr, ytr)

        fit_ours()
        ratio, ta, tb = paired_ratio(fit_ours, fit_theirs, rounds=rounds, budget=0.0,
                                     settle=settle)
        acc = float(fitted[dt].score(xte, yte))
        row = dict(bench="mnist", dataset=dataset, source=source, kernel=fitted[dt].kernel_,
                   dtype=dt, hidden=hidden, batch=batch, epochs=epochs,
                   fit_s=float(np.median(ta)), sklearn_fit_s=float(np.median(tb)),
                   x_vs_sklearn=ratio, accuracy=acc, sklearn_accuracy=acc_theirs,
                   sklearn_dtype="float32")
        rows.append(row)
        out(f"{dataset:<7} {fitted[dt].kernel_:<8} hidden {hidden}, batch {batch}, {epochs} "
            f"epochs of Adam, {dt}: fastnn {row['fit_s']:.2f} s (test error "
            f"{100 * (1 - acc):.2f}%), scikit-learn float32 {row['sklearn_fit_s']:.2f} s (test "
            f"error {100 * (1 - acc_theirs):.2f}%): {ratio:.2f}x faster")
    return rows


# Full-batch runs of plain SGD (squared loss), ``fastnn.train``'s defaults, against the same
# steps of the careful numpy step (``step_bench.NumpyStep``): the dual form's targets.
RUNS = {
    "seed": dict(shape=(64, 1000, 100, 10), dtype="float64", iters=100, lr=1e-5),
    "wide": dict(shape=(512, 20000, 256, 1), dtype="float32", iters=50, lr=1e-6),
}


def run_problem(which):
    """``(x, y, params, iters, lr)`` of ``RUNS[which]``: N(0, 1) data, He-initialised params."""
    import fastnn

    spec = RUNS[which]
    m, n, h, k = spec["shape"]
    dt = np.dtype(spec["dtype"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, n)).astype(dt)
    y = rng.standard_normal((m, k)).astype(dt)
    return x, y, fastnn.init_params(n, h, k, dtype=dt, seed=0), spec["iters"], spec["lr"]


def bench_run(which="seed", kernels=("auto",), *, rounds=15, settle=0.0, budget=0.02,
              out=print):
    """Paired rows: a whole full-batch run (``RUNS[which]``) of ``fastnn.train`` per kernel
    against ``NumpyStep`` taking the same steps.  GFLOP/s count the primal form's flops (what
    numpy does) and, for a dual run, also the ones it does (``kernels.dual.flops``).

    Timed as ``../shared/bench/numpy_step.py``'s ``paired_ratio`` (the method the speed targets
    are defined by): each side called back to back for ``budget`` seconds, rounds alternating,
    no idle in between (``settle = 0``).  With ``settle`` (idle before each call, one call per
    timing) a run starts with its caches and BLAS threads cold: the seed's dual run measured
    7.7-8.0x that way where back to back gave 10-10.4x."""
    import fastnn
    from ..kernels import dual
    from .step_bench import NumpyStep

    x, y, params, iters, lr = run_problem(which)
    (m, n), (h, k), dt = x.shape, params.w2.shape, x.dtype
    primal = iters * step_flops(m, n, h, k)

    def base():
        step = NumpyStep(x, y, params, lr)
        for _ in range(iters):
            step.step()

    rows = []
    for name in kernels:
        ran = {}

        def ours(name=name):
            res = fastnn.train(x, y, params=params, iters=iters, lr=lr, kernel=name, seed=1)
            if res.n_steps != iters:
                raise RuntimeError(f"bench {which}: {name} stopped after {res.n_steps} steps")
            ran["name"] = res.ran

        ours()
        base()
        ratio, ta, tb = paired_ratio(ours, base, rounds=rounds, budget=budget, settle=settle)
        med = float(np.median(ta))
        done = (dual.flops(m, n, h, k, m, iters, 0.0, 1)[1] if ran["name"] == "dual"
                else primal)
        row = dict(bench=which, kernel=name, ran=ran["name"], shape=[m, n, h, k],
                   dtype=dt.name, iters=iters, ms=med * 1e3, ms_min=min(ta) * 1e3,
                   ms_max=max(ta) * 1e3, numpy_ms=float(np.median(tb)) * 1e3,
                   gflops=primal / med / 1e9, gflops_done=done / med / 1e9, x_vs_numpy=ratio)
        rows.append(row)
        out(f"{which:<7} {name:<8} ({ran['name']}) {'x'.join(map(str, (m, n, h, k)))} "
            f"{dt.name}, {iters} steps: {row['ms']:.1f} ms ({row['ms_min']:.1f}-"
            f"{row['ms_max']:.1f}); careful numpy {row['numpy_ms']:.1f} ms: {ratio:.2f}x; "
            f"{row['gflops']:.1f} GFLOP/s counted as the primal form's, "
            f"{row['gflops_done']:.1f} done")
    return rows


def bench_digits(epochs=100, hidden=100, batch=200, dtype=np.float32, kernel="auto", *,
                 rounds=5, settle=SETTLE, out=print):
    """Paired: ``fastnn.MLPClassifier.fit`` against scikit-learn's, on digits."""
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkMLP

    import fastnn

    dt = np.dtype(dtype)
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split((x / 16.0).astype(dt), y, test_size=0.2,
                                          random_state=0, stratify=y)
    ours = fastnn.MLPClassifier(hidden, learning_rate=1e-3, batch_size=batch, epochs=epochs,
                                optimizer="adam", alpha=0.0, dtype=dt.name, kernel=kernel,
                                random_state=0)
    theirs = SkMLP((hidden,), solver="adam", learning_rate_init=1e-3, batch_size=batch,
                   max_iter=epochs, alpha=0.0, tol=0.0, n_iter_no_change=epochs + 1,
                   early_stopping=False, random_state=0)
    fitted = {}

    def fit_ours():
        fitted["ours"] = ours.fit(xtr, ytr)

    def fit_theirs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitted["theirs"] = theirs.fit(xtr, ytr)

    fit_ours()
    fit_theirs()
    ratio, ta, tb = paired_ratio(fit_ours, fit_theirs, rounds=rounds, budget=0.0, settle=settle)
    acc_ours = float(fitted["ours"].score(xte, yte))
    acc_theirs = float(fitted["theirs"].score(xte, yte))
    row = dict(bench="digits", kernel=kernel, dtype=dt.name, hidden=hidden, batch=batch,
               epochs=epochs, fit_s=float(np.median(ta)), sklearn_fit_s=float(np.median(tb)),
               x_vs_sklearn=ratio, accuracy=acc_ours, sklearn_accuracy=acc_theirs,
               sklearn_epochs=int(fitted["theirs"].n_iter_))
    out(f"digits  {kernel:<8} hidden {hidden}, batch {batch}, {epochs} epochs, {dt.name}: fastnn "
        f"{row['fit_s']:.3f} s (accuracy {acc_ours:.4f}), scikit-learn {row['sklearn_fit_s']:.3f}"
        f" s (accuracy {acc_theirs:.4f}): {ratio:.2f}x faster")
    return [row]


def bench_digits_lbfgs(hidden=100, max_iter=200, kernel="auto", *, rounds=5, settle=SETTLE,
                       out=print):
    """Paired: ``fastnn.MLPClassifier(solver="lbfgs").fit`` against scikit-learn's, on digits
    (float64, the same split as ``digits``; ``tol=0`` so that both run all ``max_iter``
    iterations, scikit-learn's defaults otherwise).  scikit-learn's fit is also timed with one
    BLAS thread, its own fastest here (its L-BFGS-B's short vector operations through a
    threaded BLAS)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkMLP
    from threadpoolctl import threadpool_limits

    import fastnn

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.2, random_state=0,
                                          stratify=y)
    kw = dict(hidden_layer_sizes=(hidden,), solver="lbfgs", max_iter=max_iter, tol=0.0,
              random_state=0)
    ours, theirs = fastnn.MLPClassifier(kernel=kernel, **kw), SkMLP(**kw)
    fitted = {}

    def fit(model, key):
        return quiet_fit(fitted, key, model, xtr, ytr)

    def theirs_one_thread():
        with threadpool_limits(1, user_api="blas"):
            fit(theirs, "theirs-1")()

    fit(ours, "ours")()
    fit(theirs, "theirs")()
    ratio, ta, tb = paired_ratio(fit(ours, "ours"), fit(theirs, "theirs"), rounds=rounds,
                                 budget=0.0, settle=settle)
    ratio1, _, tc = paired_ratio(fit(ours, "ours"), theirs_one_thread, rounds=rounds,
                                 budget=0.0, settle=settle)
    acc_ours = float(fitted["ours"].score(xte, yte))
    acc_theirs = float(fitted["theirs"].score(xte, yte))
    row = dict(bench="digits-lbfgs", kernel=kernel, ran=fitted["ours"].kernel_, dtype="float64",
               hidden=hidden, max_iter=max_iter, n_iter=int(fitted["ours"].n_iter_),
               sklearn_n_iter=int(fitted["theirs"].n_iter_), fit_s=float(np.median(ta)),
               sklearn_fit_s=float(np.median(tb)), x_vs_sklearn=ratio,
               sklearn_one_thread_fit_s=float(np.median(tc)), x_vs_sklearn_one_thread=ratio1,
               accuracy=acc_ours, sklearn_accuracy=acc_theirs)
    out(f"lbfgs   {kernel:<8} digits, hidden {hidden}, max_iter {max_iter}, float64: fastnn "
        f"{row['fit_s']:.3f} s ({row['n_iter']} iterations, accuracy {acc_ours:.4f}), "
        f"scikit-learn {row['sklearn_fit_s']:.3f} s ({row['sklearn_n_iter']}, accuracy "
        f"{acc_theirs:.4f}): {ratio:.2f}x faster; scikit-learn on one BLAS thread "
        f"{row['sklearn_one_thread_fit_s']:.3f} s: {ratio1:.2f}x")
    return [row]


def main(args) -> int:
    import json

    import fastnn
    from .problems import parse_shape
    from .step_bench import parse_dtype

    try:
        _, shape = parse_shape(args.shape)
        dtype = parse_dtype(args.dtype)
        kernels = args.kernels.split(",")
        kernels = [fastnn.kernels.check_name(k) for k in kernels]
        for k in kernels:
            if k in fastnn.kernels.SPARSE:
                raise ValueError(f"kernels: {k!r} takes sparse x; its benchmarks are "
                                 f"fastnn bench-train --benches sparse-scaling,sparse-sklearn,"
                                 f"sparse-lazy,sparse-text")
        which = args.benches.split(",")
        from .sparse_bench import BENCHES as SPARSE_BENCHES

        for w in which:
            if w not in (("epoch", "digits", "digits-lbfgs", "mnist") + tuple(RUNS)
                         + tuple(SPARSE_BENCHES)):
                raise ValueError(f"benches: expected some of epoch, digits, digits-lbfgs, "
                                 f"mnist, {', '.join(RUNS)}, {', '.join(SPARSE_BENCHES)}; got "
                                 f"{w!r}")
        if dtype == BFLOAT16 and set(which) - {"epoch", "mnist"}:
            raise ValueError("--dtype bfloat16: the epoch and mnist benches run it (mnist runs "
                             "bfloat16 and float32 whatever --dtype says)")
        from ..kernels.common import activations as acts

        activations = args.activation.split(",")
        for a in activations:
            acts.of(a)
        if {"digits", "digits-lbfgs", "mnist", "sparse-sklearn", "sparse-text"} & set(which):
            try:
                import sklearn  # noqa: F401
            except ImportError:
                raise ValueError("the digits comparison needs scikit-learn: "
                                 "pip install 'fastnn[sklearn]'") from None
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"fastnn bench-train: {exc}") from None
    if args.threads is not None:
        fastnn.set_num_threads(args.threads)
    if dtype == BFLOAT16:
        from ..kernels.common import bf16

        peak = bf16.peak_gflops(fastnn.get_num_threads())
        print(f"bfloat16 peak (vdpbf16ps, {bf16.mode_name(bf16.DEFAULT_MODE)}, "
              f"{fastnn.get_num_threads()} threads): {peak:.1f} GFLOP/s")
        dtype_name = "bfloat16"
    else:
        peak = blas_peak(dtype)
        print(f"BLAS peak ({dtype.name}, 2048^3 numpy matmul, {fastnn.get_num_threads()} "
              f"threads): {peak:.1f} GFLOP/s")
        dtype_name = dtype.name
    t0 = time.perf_counter()
    rows = []
    if "epoch" in which:
        rows += bench_epoch(shape, dtype, args.batch_size, kernels, rounds=args.rounds,
                            settle=args.settle, activations=activations)
        for r in rows:
            r["pct_peak"] = 100 * r["gflops"] / peak
            print(f"        {r['kernel']:<8} {r['pct_peak']:.0f}% of the {dtype_name} peak")
    for w in RUNS:
        if w in which:
            done = bench_run(w, kernels, rounds=max(args.rounds, 15))
            for r in done:
                top = peak if r["dtype"] == dtype_name else blas_peak(np.dtype(r["dtype"]))
                r["pct_peak"] = 100 * r["gflops_done"] / top
                print(f"        {r['kernel']:<8} {r['pct_peak']:.0f}% of the {r['dtype']} BLAS "
                      f"peak (flops done)")
            rows += done
    if "digits" in which:
        for k in kernels:
            rows += bench_digits(args.digits_epochs, dtype=dtype, kernel=k,
                                 rounds=max(3, args.rounds // 2), settle=args.settle)
    if "mnist" in which:
        rows += bench_mnist(args.dataset, args.data_dir, rounds=max(1, args.rounds // 3),
                            settle=args.settle)
    if "digits-lbfgs" in which:
        for k in kernels:
            rows += bench_digits_lbfgs(kernel=k, rounds=max(3, args.rounds // 2),
                                       settle=args.settle)
    for w, bench in SPARSE_BENCHES.items():
        if w in which:
            rows += bench(rounds=max(3, args.rounds // 2), settle=args.settle)
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            from ..machine import info_lines

            json.dump(dict(machine=info_lines(), peak_gflops=peak,
                           threads=fastnn.get_num_threads(),
                           rounds=args.rounds, date=time.strftime("%Y-%m-%d"),
                           command="fastnn " + " ".join(sys.argv[1:]), rows=rows), f,
                      indent=1)
        print(f"json        {args.json}")
    return 0
