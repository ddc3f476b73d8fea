"""``fastnn bench``: time kernel variants against a careful numpy step, in one interleaved run.

Every figure is a paired ratio against ``NumpyStep`` (``timing.paired_ratio``); GFLOP/s count the
flops of ``problems.stage_flops``; the BLAS peak is measured on the spot, a large square numpy
matmul in the benchmark's dtype.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..kernels import numpy_step
from ..kernels.bf16 import BFLOAT16
from ..kernels.variant import step_flops
from ..params import Params
from .problems import SHAPES, STAGES, parse_shape, problem, stage_flops  # noqa: F401
from .timing import BUSY_SPREAD, SETTLE, blas_peak, paired_ratio


TRAIN_ITERS = 100  # iterations of the ``train`` stage's run


class NumpyStep:
    """The careful numpy SGD step every speed figure is compared with (``kernels.numpy_step``:
    preallocated buffers, ``np.matmul(..., out=)``, in-place updates; the same method as
    ``shared/bench/numpy_step.py``), on its own copies of the params."""

    def __init__(self, x, y, params, lr):
        self.x, self.y = x, y
        self.params = Params(*(np.array(p, copy=True) for p in params))
        self.work = numpy_step.Workspace(x.shape[0], *self.params.w1.shape,
                                         self.params.w2.shape[1], x.dtype)
        self.lr = x.dtype.type(lr)

    def train(self, iters):
        """``iters`` steps from Python, the loop a numpy user writes."""
        for _ in range(iters):
            self.step()

    def forward(self):
        """``z2`` (the ``predict`` stage)."""
        return numpy_step.forward(self.work, self.params, self.x)

    def grads(self):
        """Loss and all four gradients, no update (the ``loss_and_grads`` stage)."""
        return numpy_step.grads(self.work, self.params, self.x, self.y)

    def step(self):
        return numpy_step.step(self.work, self.params, self.x, self.y, self.lr)


def bench_stages(shape, dtype, kernels, stages=STAGES, *, rounds=15, budget=0.02, lr=1e-5,
                 settle=SETTLE, activations=("relu",)):
    """One row per (kernel, activation, stage), each paired against the same stage of
    ``NumpyStep`` (a ReLU network), and a hidden activation other than ReLU also against the same
    kernel's ReLU step (``x_relu``: its time over ReLU's, paired).

    Stages: ``forward`` is ``predict``; ``backward`` is ``loss_and_grads`` (the forward pass, the
    loss and every gradient, stored; the fused kernels have no backward without a forward);
    ``step`` is ``sgd_step``; ``train`` is a ``TRAIN_ITERS``-iteration ``train`` run (the
    whole-loop mode where the kernel has one) against the numpy loop, timed per iteration.
    """
    import fastnn

    bf16 = dtype == BFLOAT16  # float32 data and master weights, x rounded once
    x, y, params = problem(shape, np.float32 if bf16 else dtype)
    base = NumpyStep(x, y, params, lr)
    base_calls = dict(forward=base.forward, backward=base.grads, step=base.step,
                      train=lambda: base.train(TRAIN_ITERS))
    xk = fastnn.to_bfloat16(x) if bf16 else x

    def calls(name, act):
        p = params.copy()
        return dict(
            forward=lambda: fastnn.predict(p, xk, kernel=name, activation=act),
            backward=lambda: fastnn.loss_and_grads(p, xk, y, kernel=name, activation=act),
            step=lambda: fastnn.sgd_step(p, xk, y, lr, kernel=name, activation=act),
            train=lambda: fastnn.train(xk, y, iters=TRAIN_ITERS, lr=lr, params=p, kernel=name,
                                       activation=act))

    rows = []
    for stage in stages:
        for name in kernels:
            relu = calls(name, "relu")[stage] if set(activations) - {"relu"} else None
            for act in activations:
                f = calls(name, act)[stage]
                f()  # compile or load from cache outside the timing
                base_calls[stage]()
                ratio, ta, tb = paired_ratio(f, base_calls[stage], rounds=rounds, budget=budget,
                                             settle=settle)
                per = TRAIN_ITERS if stage == "train" else 1
                ta = [t / per for t in ta]
                med = float(np.median(ta))
                row = dict(kernel=name, activation=act, stage=stage, us=med * 1e6,
                           us_min=min(ta) * 1e6, us_max=max(ta) * 1e6,
                           numpy_us=float(np.median(tb)) / per * 1e6,
                           gflops=stage_flops(stage, *shape) / med / 1e9, x_vs_numpy=ratio,
                           spread=max(max(ta) / min(ta), max(tb) / min(tb)))
                if act != "relu":
                    relu()
                    row["x_relu"] = 1.0 / paired_ratio(f, relu, rounds=rounds, budget=budget,
                                                       settle=settle)[0]
                if name == "auto":  # what auto ran: its remembered choice for this shape
                    from ..auto.choice import resolve

                    row["ran"] = resolve(name, params, x, y, measure=False).name
                rows.append(row)
    return rows


def label(row) -> str:
    """A row's kernel, with its hidden activation when that is not ReLU."""
    act = row.get("activation", "relu")
    return row["kernel"] if act == "relu" else f"{row['kernel']}+{act}"


class TorchStep:
    """The same SGD step in PyTorch eager mode (``torch.matmul`` with ``out=``, in-place updates),
    for ``--vs torch``.  Same math as ``NumpyStep``; ``torch.set_num_threads`` follows fastnn's."""

    def __init__(self, x, y, params, lr):
        import torch

        from ..threads import get_num_threads

        torch.set_num_threads(get_num_threads())
        t = torch.from_numpy
        self.torch = torch
        self.x, self.y = t(np.ascontiguousarray(x)), t(np.ascontiguousarray(y))
        self.w1, self.b1, self.w2, self.b2 = (t(np.array(p, copy=True)) for p in params)
        m, h, k = x.shape[0], self.w1.shape[1], self.w2.shape[1]
        dt = self.w1.dtype
        self.z1 = torch.empty((m, h), dtype=dt)
        self.z2 = torch.empty((m, k), dtype=dt)
        self.da1 = torch.empty((m, h), dtype=dt)
        self.dw1 = torch.empty(tuple(self.w1.shape), dtype=dt)
        self.dw2 = torch.empty((h, k), dtype=dt)
        self.lr, self.m = float(lr), m

    def step(self):
        torch = self.torch
        with torch.no_grad():
            z1 = torch.matmul(self.x, self.w1, out=self.z1).add_(self.b1).clamp_(min=0)
            d = torch.matmul(z1, self.w2, out=self.z2).add_(self.b2).sub_(self.y)
            loss = float(torch.dot(d.view(-1), d.view(-1))) / self.m
            d.mul_(2.0 / self.m)
            torch.matmul(z1.T, d, out=self.dw2)
            db2 = d.sum(0)
            da1 = torch.matmul(d, self.w2.T, out=self.da1).mul_(z1 > 0)
            torch.matmul(self.x.T, da1, out=self.dw1)
            db1 = da1.sum(0)
            self.w1.sub_(self.dw1, alpha=self.lr)
            self.w2.sub_(self.dw2, alpha=self.lr)
            self.b1.sub_(db1, alpha=self.lr)
            self.b2.sub_(db2, alpha=self.lr)
        return loss


class JaxStep:
    """The same SGD step as one ``jax.jit``-compiled function, for ``--vs jax``."""

    def __init__(self, x, y, params, lr):
        import jax
        import jax.numpy as jnp

        if np.dtype(x.dtype) == np.float64:
            jax.config.update("jax_enable_x64", True)

        def step(params, x, y):
            w1, b1, w2, b2 = params
            m = x.shape[0]
            z1 = x @ w1 + b1
            a1 = jnp.maximum(z1, 0)
            d = a1 @ w2 + b2 - y
            loss = jnp.vdot(d, d) / m
            d = d * (2.0 / m)
            da1 = (d @ w2.T) * (z1 > 0)
            grads = (x.T @ da1, da1.sum(0), a1.T @ d, d.sum(0))
            return tuple(p - lr * g for p, g in zip(params, grads)), loss

        self._step = jax.jit(step)
        self.params = tuple(jnp.asarray(p) for p in params)
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)

    def step(self):
        self.params, loss = self._step(self.params, self.x, self.y)
        return float(loss)


FRAMEWORKS = {"torch": TorchStep, "jax": JaxStep}


def available_frameworks() -> list[str]:
    import importlib.util

    return [name for name in FRAMEWORKS if importlib.util.find_spec(name) is not None]


def bench_frameworks(shape, dtype, frameworks, *, rounds=15, budget=0.02, lr=1e-5,
                     settle=SETTLE):
    """One ``step`` row per framework, paired against ``NumpyStep`` like the kernels."""
    x, y, params = problem(shape, dtype)
    base = NumpyStep(x, y, params, lr)
    base.step()
    rows = []
    for name in frameworks:
        other = FRAMEWORKS[name](x, y, params, lr)
        other.step()  # jit compile / warm up
        ratio, ta, tb = paired_ratio(other.step, base.step, rounds=rounds, budget=budget,
                                     settle=settle)
        med = float(np.median(ta))
        rows.append(dict(kernel=name, stage="step", us=med * 1e6, us_min=min(ta) * 1e6,
                         us_max=max(ta) * 1e6, numpy_us=float(np.median(tb)) * 1e6,
                         gflops=step_flops(*shape) / med / 1e9, x_vs_numpy=ratio))
    return rows


def compile_times(kernel: str, dtype, shape=SHAPES["seed"]) -> dict:
    """First-step seconds in a new process: with an empty Numba cache and no remembered ``auto``
    choice (cold), then again with the cache and choice that run left (warm).  Import time is
    reported separately.  At the seed's shape, so that ``auto``'s first call measures (below
    ``auto.policy.MEASURE_FLOPS`` it would not).  The compile runs in the foreground
    (``FASTNN_BACKGROUND_COMPILE=0``): this is what compiling costs, not what ``auto`` makes a
    user wait by default (nothing: it starts on numpy, ``fastnn/auto/build.py``)."""
    code = (
        "import time, sys\n"
        "t0 = time.perf_counter()\n"
        "import numpy as np, fastnn\n"
        "t1 = time.perf_counter()\n"
        f"dt = np.dtype('{'float32' if dtype == BFLOAT16 else np.dtype(dtype).name}'); "
        f"m, n, h, k = {tuple(shape)}\n"
        "x = np.ones((m, n), dt); y = np.ones((m, k), dt)\n"
        "p = fastnn.init_params(n, h, k, dtype=dt, seed=0)\n"
        "t2 = time.perf_counter()\n"
        f"fastnn.sgd_step(p, x, y, 1e-3, kernel='{kernel}')\n"
        "t3 = time.perf_counter()\n"
        "print(t1 - t0, t3 - t2)\n"
    )
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, FASTNN_TUNE_DIR=cache,
                   FASTNN_BACKGROUND_COMPILE="0")
        for label in ("cold", "warm"):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True)
            imp, first = (float(v) for v in res.stdout.split())
            out[f"{label}_first_step_s"] = first
            out[f"{label}_import_s"] = imp
    return out


def format_table(rows) -> str:
    """The rows, a ``!`` after the spread of a busy row, then per (shape, dtype, stage) the
    winner and why: its ratio, its margin over the runner-up, and whether the spreads of the
    two overlap (then the order between them is not measured)."""
    width = max([10] + [len(label(r)) for r in rows])
    relu = any("x_relu" in r for r in rows)
    head = (f"{'shape':<8} {'dtype':<8} {'kernel':<{width}} {'stage':<6} {'us':>10} "
            f"{'min-max us':>19} {'GFLOP/s':>8} {'% peak':>7} {'x numpy':>8} {'spread':>7}"
            + (f" {'x relu':>7}" if relu else ""))
    lines = [head, "-" * len(head)]
    for r in rows:
        spread = r.get("spread", 1.0)
        lines.append(
            f"{r['shape_name']:<8} {r['dtype']:<8} {label(r):<{width}} {r['stage']:<6} "
            f"{r['us']:>10.1f} {r['us_min']:>9.1f}-{r['us_max']:<9.1f} {r['gflops']:>8.1f} "
            f"{r['pct_peak']:>6.0f}% {r['x_vs_numpy']:>7.2f}x {spread:>6.2f}"
            f"{'!' if spread > BUSY_SPREAD else ' '}"
            + (f" {r['x_relu']:>6.2f}x" if "x_relu" in r else ""))
    busy = [r for r in rows if r.get("spread", 1.0) > BUSY_SPREAD]
    if busy:
        lines.append(f"\n! {len(busy)} of {len(rows)} rows spread more than {BUSY_SPREAD}x between "
                     f"rounds (slowest / fastest): the machine was busy while they ran; their "
                     f"ratios are not the quiet machine's.  Run again with nothing else running.")
    lines.append("")
    lines += winners(rows)
    return "\n".join(lines)


def winners(rows) -> list[str]:
    """Per (shape, dtype, stage): the fastest kernel and why it is called the winner."""
    out = []
    groups = {}
    for r in rows:
        if r["kernel"] != "auto" and r.get("activation", "relu") == "relu":
            groups.setdefault((r["shape_name"], r["dtype"], r["stage"]), []).append(r)
    for (shape, dtype, stage), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["us"])
        best = rs[0]
        why = f"{best['x_vs_numpy']:.2f}x numpy"
        if len(rs) > 1:
            second = rs[1]
            margin = second["us"] / best["us"]
            overlap = best["us_max"] >= second["us_min"]
            why += (f", {margin:.2f}x ahead of {second['kernel']}"
                    + (" (their round ranges overlap: a tie within noise)" if overlap else ""))
        out.append(f"winner  {shape} {dtype} {stage}: {best['kernel']} ({why})")
    return out


def run(shapes, dtypes, kernels, stages=STAGES, *, threads=None, rounds=15, budget=0.02,
        settle=SETTLE, compile=False, vs=(), out=print, activations=("relu",)):
    """Benchmark every (shape, dtype) for every kernel; returns the JSON-ready report."""
    import fastnn
    from ..machine import info_lines

    if threads is not None:
        fastnn.set_num_threads(threads)
    report = dict(machine=info_lines(), threads=fastnn.get_num_threads(), peak_gflops={},
                  settle_s=settle, rounds=rounds, budget_s=budget, rows=[], compile=[])
    for dtype in dtypes:
        name = dtype_name(dtype)
        if dtype == BFLOAT16:  # the instruction's own peak, as the prototype measured it
            from ..kernels.common import bf16

            peak = bf16.peak_gflops(report["threads"])
            what = f"vdpbf16ps, {bf16.mode_name(bf16.DEFAULT_MODE)}, 12 accumulators a thread"
        else:
            peak, what = blas_peak(dtype), "2048^3 numpy matmul"
        report["peak_gflops"][name] = peak
        out(f"peak ({name}, {what}, {report['threads']} threads): {peak:.1f} GFLOP/s")
    for shape_name, shape in shapes:
        for dtype in dtypes:
            rows = bench_stages(shape, dtype, kernels_for(kernels, dtype), stages, rounds=rounds,
                                budget=budget, settle=settle, activations=activations)
            if vs and "step" in stages and dtype != BFLOAT16:
                rows += bench_frameworks(shape, dtype, vs, rounds=rounds, budget=budget,
                                         settle=settle)
            for row in rows:
                row.update(shape_name=shape_name, shape=list(shape), dtype=dtype_name(dtype),
                           threads=report["threads"],
                           pct_peak=100 * row["gflops"] / report["peak_gflops"][
                               dtype_name(dtype)])
                report["rows"].append(row)
                out(format_table([row]).splitlines()[2])
    if compile:
        for dtype in dtypes:
            for name in kernels_for(kernels, dtype):
                if name == "reference":
                    continue
                c = dict(kernel=name, dtype=dtype_name(dtype), **compile_times(name, dtype))
                report["compile"].append(c)
                out(f"compile {name:<10} {c['dtype']:<8} first step cold "
                    f"{c['cold_first_step_s']:.2f} s, warm cache {c['warm_first_step_s']:.2f} s "
                    f"(import {c['warm_import_s']:.2f} s)")
    return report


def parse_dtype(text):
    """A ``--dtype`` entry: float32, float64 (numpy dtypes) or ``"bfloat16"``."""
    from ..kernels.bf16 import is_bfloat16
    from ..params import as_float_dtype

    return BFLOAT16 if is_bfloat16(text) else as_float_dtype(text)


def dtype_name(dtype) -> str:
    return dtype if dtype == BFLOAT16 else np.dtype(dtype).name


def kernels_for(kernels, dtype) -> list[str]:
    """The kernels of ``kernels`` that run ``dtype``: the bfloat16 rungs for bfloat16 (by
    default the one this CPU runs natively, else the emulation), the others for float32 and
    float64."""
    import fastnn

    bf16_names = fastnn.kernels.BF16
    if dtype == BFLOAT16:
        chosen = [k for k in kernels if k in bf16_names]
        return chosen or [fastnn.kernels.bf16.this_cpus().name]
    return [k for k in kernels if k not in bf16_names]


def main(args) -> int:
    try:
        shapes = [parse_shape(s) for s in args.shapes.split(",")]
        import fastnn

        dtypes = [parse_dtype(d) for d in args.dtype.split(",")]
        kernels = args.kernels.split(",") if args.kernels else fastnn.kernels.names()
        kernels = [fastnn.kernels.check_name(k) for k in kernels]
        for k in kernels:
            if k in fastnn.kernels.SPARSE:
                raise ValueError(f"kernels: {k!r} takes sparse x; its benchmarks are "
                                 f"fastnn bench-train --benches sparse-scaling,sparse-sklearn,"
                                 f"sparse-lazy,sparse-text")
        stages = args.stages.split(",")
        for st in stages:
            if st not in STAGES:
                raise ValueError(f"stages: expected some of {', '.join(STAGES)}, got {st!r}")
        from ..kernels.common import activations as acts

        activations = args.activation.split(",")
        for a in activations:
            acts.of(a)
        vs = [v for v in args.vs.split(",") if v] if args.vs else []
        for v in vs:
            if v not in FRAMEWORKS:
                raise ValueError(f"vs: expected some of {', '.join(FRAMEWORKS)}, got {v!r}")
            if v not in available_frameworks():
                raise ValueError(f"vs: {v} is not installed (pip install {v})")
        if args.plot:
            import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("fastnn bench: --plot needs matplotlib: pip install 'fastnn[plot]'") \
            from None
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"fastnn bench: {exc}") from None
    print("fastnn bench: paired against a careful numpy step; median of "
          f"{args.rounds} rounds (min-max over rounds), {args.settle} s idle before each block")
    report = run(shapes, dtypes, kernels, stages, threads=args.threads, rounds=args.rounds,
                 budget=args.budget, settle=args.settle, compile=args.compile, vs=vs,
                 activations=activations)
    report.update(date=time.strftime("%Y-%m-%d"), command="fastnn " + " ".join(sys.argv[1:]))
    print()
    print(format_table(report["rows"]))
    if args.plot:
        plot(report, args.plot)
        print(f"\nplot        {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"\njson        {args.json}")
    return 0


def plot(report, path: str) -> None:
    """A bar chart per (shape, dtype) of each row's speed-up over the numpy step, by stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    panels = list(dict.fromkeys((r["shape_name"], r["dtype"]) for r in rows))  # run order
    cols = min(4, len(panels))  # a grid, so that a sweep of many shapes stays readable
    grid = -(-len(panels) // cols)
    fig, axes = plt.subplots(grid, cols, figsize=(4.2 * cols, 3.6 * grid), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (shape, dtype) in zip(axes.flat, panels):
        sel = [r for r in rows if r["shape_name"] == shape and r["dtype"] == dtype]
        stages = list(dict.fromkeys(r["stage"] for r in sel))
        names = list(dict.fromkeys(label(r) for r in sel))
        width = 0.8 / max(1, len(stages))
        for s_i, stage in enumerate(stages):
            vals = [next((r["x_vs_numpy"] for r in sel if label(r) == n and r["stage"] == stage),
                         0.0) for n in names]
            ax.bar(np.arange(len(names)) + s_i * width, vals, width, label=stage)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(names)) + width * (len(stages) - 1) / 2)
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{shape} {dtype}")
        ax.set_ylabel("x faster than the numpy step")
        ax.legend(fontsize=8)
    fig.suptitle(f"fastnn bench, {report['threads']} threads (paired medians)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (3.6 * grid)))  # room for the title
    fig.savefig(path, dpi=100)
    plt.close(fig)
