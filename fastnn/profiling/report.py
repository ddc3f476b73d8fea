"""The results table of the docs, generated from a ``fastnn bench --json`` report.

README.md and docs/optimisation.md carry the same measurements between markers::

    <!-- results:table -->            the table: x the careful numpy step, per shape and kernel
    ...
    <!-- /results -->
    <!-- results:rung=tiled -->       one line per rung of the ladder: its range over the table
    ...
    <!-- /results -->

``dev/update_results.py`` rewrites everything between the markers from the committed JSON
(``docs/results.json``), and a test checks that the docs hold exactly what this module makes of
it, so the README, the ladder and the measurements cannot disagree or go stale.
"""
from __future__ import annotations

import re

import numpy as np

from .timing import BUSY_SPREAD

MARKER = re.compile(r"(<!-- results:(?P<what>[\w=\-]+) -->\n)(?P<body>.*?)(<!-- /results -->)",
                    re.S)


def _blas(report) -> str:
    for line in report["machine"]:
        if line.startswith("fused BLAS"):
            name = line.split()[2].rstrip(":")
            return {"numpy": "numpy's OpenBLAS", "mkl": "Intel MKL", "scipy": "scipy's BLAS"}.get(
                name, name)
    return "?"


def _cpu(report) -> str:
    for line in report["machine"]:
        if line.startswith("cpu "):
            return line[4:].strip()
    return "?"


def _simd(report) -> str:
    """The vector instructions of the CPU the report was made on (``fastnn info``'s simd line;
    reports older than that line say so)."""
    for line in report["machine"]:
        if line.startswith("simd "):
            return line[4:].strip()
    return "SIMD flags not recorded"


def _blas_kernels(report) -> str:
    """The kernel set each OpenBLAS chose at run time (Haswell = AVX2, SkylakeX/Cooperlake =
    AVX-512): the same CPU can run either, and their sums round differently."""
    cores = sorted({line.split("(")[1].split(")")[0] for line in report["machine"]
                    if line.startswith("blas ") and "openblas" in line and "(" in line})
    return "/".join(cores) or "?"


def _rows(report, stage="step"):
    return [r for r in report["rows"] if r["stage"] == stage]


def kernels_of(report, stage="step") -> list[str]:
    return list(dict.fromkeys(r["kernel"] for r in _rows(report, stage)))


def table(report, stage="step") -> str:
    """One row per (shape, dtype), one column per kernel: x the careful numpy step (paired
    median), with ``auto``'s choice; then the GFLOP/s and % of the BLAS peak of the fastest."""
    rows = _rows(report, stage)
    names = kernels_of(report, stage)
    head = ["shape (m x n x h x k)", "dtype"] + [f"`{n}`" for n in names] + \
        ["`auto` ran", "fastest: GFLOP/s (% of peak)"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * len(names) + ["---", "---:"]) + "|"]
    for shape, dtype in dict.fromkeys((r["shape_name"], r["dtype"]) for r in rows):
        sel = {r["kernel"]: r for r in rows if r["shape_name"] == shape and r["dtype"] == dtype}
        cells = [f"{sel[n]['x_vs_numpy']:.2f}x" if n in sel else "" for n in names]
        best = max((r for n, r in sel.items() if n != "auto"), key=lambda r: r["x_vs_numpy"])
        ran = sel.get("auto", {}).get("ran", "")
        label = "x".join(map(str, sel[names[0]]["shape"]))
        if shape != label:
            label = f"{shape} ({label})"
        lines.append("| " + " | ".join(
            [label, dtype] + cells + [f"`{ran}`" if ran else "",
                                      f"`{best['kernel']}` {best['gflops']:.3g} "
                                      f"({best['pct_peak']:.2g}%)"]) + " |")
    return "\n".join(lines)


def footnote(report) -> str:
    peaks = ", ".join(f"{dt} {v:.0f} GFLOP/s" for dt, v in report["peak_gflops"].items())
    text = (f"x the careful numpy step (> 1: faster), median of {report['rounds']} paired rounds; "
            f"{report['threads']} threads; BLAS for the compiled variants: {_blas(report)} (the "
            f"default install: no MKL); BLAS peak in the run (a 2048^3 numpy matmul): {peaks}; "
            f"CPU: {_cpu(report)}, {_simd(report)}; OpenBLAS kernels: {_blas_kernels(report)}.  "
            f"Measured {report.get('date', '?')} with `{report.get('command', 'fastnn bench')}`; "
            f"all figures in `docs/results.json`.")
    busy = [r for r in report["rows"] if r.get("spread", 1.0) > BUSY_SPREAD]
    if busy:
        text += (f"  {len(busy)} of {len(report['rows'])} rows spread more than {BUSY_SPREAD}x "
                 f"between rounds (slowest / fastest): a busy phase of this shared machine, "
                 f"which the pairing puts on both sides of each ratio, but not evenly: ratios "
                 f"within ~10% of each other are ties.")
    compile_rows = report.get("compile") or []
    if compile_rows:
        parts = [f"`{c['kernel']}` {c['cold_first_step_s']:.1f} s" for c in compile_rows
                 if c["dtype"] == "float64"]
        warm = [c["warm_first_step_s"] for c in compile_rows]
        text += (f"  First step in a new process at the seed's shape, float64, empty Numba cache: "
                 f"{', '.join(parts)}; with the cache filled {min(warm):.2f}-{max(warm):.2f} s "
                 f"(`fastnn bench --compile`, which compiles in the foreground: by default `auto` "
                 f"starts on `numpy` at once while the compile runs in another process, see "
                 f"docs/runtime.md, Busy machines and the first run).")
    return text


def rung(report, name, stage="step") -> str:
    """One line for a rung of the ladder: its range over the table, where it is best and worst,
    and its cold compile time."""
    rows = [r for r in _rows(report, stage) if r["kernel"] == name]
    if not rows:
        return f"*(no `{name}` rows in docs/results.json)*"
    ratios = np.array([r["x_vs_numpy"] for r in rows])
    lo, hi = rows[int(np.argmin(ratios))], rows[int(np.argmax(ratios))]

    def where(r):
        return f"{r['shape_name']} {r['dtype']}"

    pct = [r["pct_peak"] for r in rows]
    text = (f"**Measured** (`docs/results.json`, {len(rows)} shape/dtype pairs): "
            f"{ratios.min():.2f}-{ratios.max():.2f}x the careful numpy step (median "
            f"{np.median(ratios):.2f}x), up to {max(pct):.0f}% of the BLAS peak; best at "
            f"{where(hi)}, worst at {where(lo)}.")
    cold = [c for c in report.get("compile") or [] if c["kernel"] == name
            and c["dtype"] == "float64"]
    if cold:
        text += f"  Cold first step (compile) {cold[0]['cold_first_step_s']:.1f} s."
    return text


def runs(report) -> str:
    """The whole runs of ``fastnn bench-train --benches seed,wide`` (``report["runs"]``): one
    row per run, its time against the careful numpy loop's and its GFLOP/s counted both ways
    (the primal form's flops, and the ones done)."""
    rows = (report.get("runs") or {}).get("rows") or []
    if not rows:
        return "*(no whole-run rows in docs/results.json)*"
    lines = ["| run | shape (m x n x h x k), dtype, steps | kernel (ran) | fastnn | careful numpy "
             "| x numpy | GFLOP/s, primal count | GFLOP/s done (% of peak) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['bench']} | {'x'.join(map(str, r['shape']))}, {r['dtype']}, {r['iters']} | "
            f"`{r['kernel']}`{'' if r['ran'] == r['kernel'] else ' (`' + r['ran'] + '`)'} | "
            f"{r['ms']:.1f} ms | {r['numpy_ms']:.0f} ms | "
            f"{r['x_vs_numpy']:.1f}x | {r['gflops']:.0f} | {r['gflops_done']:.1f} "
            f"({r['pct_peak']:.0f}%) |")
    meta = report["runs"]
    lines.append("")
    lines.append(f"Paired medians of {meta.get('rounds', '?')} rounds, whole `fastnn.train` calls "
                 f"(set-up, every step, `w1` formed at the end) against the same steps of the "
                 f"careful numpy step; {_measured(meta)}.  "
                 f"The primal count is the flops numpy does (so it can pass the peak); \"done\" "
                 f"counts the dual form's own (`kernels.dual.flops`), against the BLAS peak of "
                 f"the dtype.")
    return "\n".join(lines)


def sparse(report) -> str:
    """The sparse rung's benchmarks (``fastnn bench-train --benches sparse-*``,
    ``report["sparse"]``, ``profiling/sparse_bench.py``): one line each."""
    meta = report.get("sparse") or {}
    rows = {r["bench"]: r for r in meta.get("rows") or []}
    if not rows:
        return "*(no sparse rows in docs/results.json)*"
    lines = []
    r = rows.get("sparse-scaling")
    if r:
        lines.append(f"- **Cost against features** (2048 rows, {r['stored_per_row']} stored a row, "
                     f"hidden {r['hidden']}, {r['classes']} classes, float32 SGD, batch "
                     f"{r['batch']}, {r['epochs']} epochs, from given initial parameters): "
                     f"{r['features'][0]:,} features "
                     f"{r['few_s'] * 1e3:.1f} ms, {r['features'][1]:,} features "
                     f"{r['many_s'] * 1e3:.1f} ms (each side's median): **{r['many_over_few']:.2f}x** "
                     f"the time (the median of the rounds' paired ratios) for "
                     f"{r['features'][1] // r['features'][0]}x the features (a dense first layer: "
                     f"{r['features'][1] // r['features'][0]}x); {r['gflops']:.1f} GFLOP/s of "
                     f"the sparse step's own flops, {r['dense_gflops_equivalent']:.0f} GFLOP/s "
                     f"counted as the dense step would.  The same runs drawing their He "
                     f"parameters in the call (`n x h` normal draws: `O(n h)` whatever is "
                     f"stored): {r['few_with_init_s'] * 1e3:.0f} and "
                     f"{r['many_with_init_s'] * 1e3:.0f} ms, {r['many_over_few_with_init']:.2f}x.")
    r = rows.get("sparse-sklearn")
    if r:
        lines.append(f"- **`MLPClassifier(solver=\"sgd\")`** on that {r['features']:,}-feature "
                     f"matrix ({r['stored']:,} stored), hidden {r['hidden']}, {r['epochs']} "
                     f"epochs: fastnn {r['fit_s']:.3f} s, scikit-learn {r['sklearn_fit_s']:.2f} s: "
                     f"**{r['x_vs_sklearn']:.1f}x** (training accuracy {r['accuracy']:.4f} and "
                     f"{r['sklearn_accuracy']:.4f}).")
    r = rows.get("sparse-lazy")
    if r:
        losses = " / ".join(f"{a:.3f} and {b:.3f}" for a, b in
                            zip(r["lazy_epoch_losses"], r["exact_epoch_losses"]))
        lines.append(f"- **Lazy Adam** (`lazy=True`, opt-in) on that matrix, `fastnn.train`, "
                     f"hidden {r['hidden']}, {r['epochs']} epochs from given parameters: "
                     f"{r['lazy_s']:.3f} s against the exact method's {r['exact_s']:.3f} s: "
                     f"**{r['lazy_speedup']:.2f}x**; epoch losses (lazy and exact) {losses}: "
                     f"another method, with another curve.")
    r = rows.get("sparse-text")
    if r:
        lines.append(f"- **Text** (TF-IDF of synthetic documents, {r['rows']:,} x "
                     f"{r['features']:,}, {100 * r['density']:.2f}% stored), `MLPClassifier()` "
                     f"(Adam, hidden {r['hidden']}, {r['epochs']} epochs): fastnn {r['fit_s']:.2f} "
                     f"s, scikit-learn {r['sklearn_fit_s']:.2f} s: **{r['x_vs_sklearn']:.2f}x**; "
                     f"test accuracy {r['accuracy']:.4f} and {r['sklearn_accuracy']:.4f}; "
                     f"fastnn's peak memory in the fit {r['peak_bytes'] / 2**20:.0f} MiB, the "
                     f"dense matrix {r['dense_bytes'] / 2**20:.0f} MiB.")
    lines.append("")
    lines.append(f"Paired medians of {max(3, meta.get('rounds', 0) // 2)} rounds; "
                 f"{_measured(meta)}.")
    return "\n".join(lines)


def bf16(report) -> str:
    """The bfloat16 rung's benchmarks (``fastnn bench-train --dtype bfloat16 --benches
    epoch,mnist``, ``report["bf16"]``): the epoch against the careful numpy float32 epoch and
    PyTorch's autocast, and the MNIST-sized fits against scikit-learn's."""
    meta = report.get("bf16") or {}
    rows = meta.get("rows") or []
    if not rows:
        return "*(no bfloat16 rows in docs/results.json)*"
    lines = []
    for r in rows:
        if r["bench"] == "epoch":
            torch = ""
            if "x_vs_torch_autocast" in r:
                torch = (f"; PyTorch {r.get('torch_version', '')} with `torch.autocast(\"cpu\", dtype=torch.bfloat16)` "
                         f"{r['torch_autocast_ms']:.1f} ms: **{r['x_vs_torch_autocast']:.2f}x**, "
                         f"its float32 eager loop {r['torch_float32_ms']:.1f} ms: "
                         f"{r['x_vs_torch_float32']:.2f}x")
            lines.append(f"- **One epoch** ({'x'.join(map(str, r['shape']))}, float32 data, "
                         f"batches of {r['batch']}, softmax, SGD) with `{r['kernel']}`: "
                         f"{r['ms']:.1f} ms, {r['gflops']:.0f} GFLOP/s "
                         f"({r['pct_peak']:.0f}% of the vdpbf16ps peak, "
                         f"{meta.get('peak_gflops', 0):.0f} GFLOP/s); the careful numpy float32 "
                         f"epoch {r['numpy_ms']:.1f} ms: **{r['x_vs_numpy']:.2f}x**{torch}.")
        elif r["bench"] == "mnist":
            lines.append(f"- **{r['source'].split(',')[0]}**, `MLPClassifier` (hidden "
                         f"{r['hidden']}, {r['epochs']} epochs of Adam, batch {r['batch']}) with "
                         f"`dtype=\"{r['dtype']}\"` (ran `{r['kernel']}`): {r['fit_s']:.2f} s, "
                         f"test error {100 * (1 - r['accuracy']):.2f}%; scikit-learn's float32 "
                         f"fit {r['sklearn_fit_s']:.2f} s, test error "
                         f"{100 * (1 - r['sklearn_accuracy']):.2f}%: "
                         f"**{r['x_vs_sklearn']:.2f}x**.")
    lines.append("")
    lines.append(f"Paired medians; {_measured(meta)}; {_machine_line(meta)}.")
    return "\n".join(lines)


def _measured(meta) -> str:
    """The threads, date and command of a ``fastnn bench-train`` report, as its sections say
    them."""
    return (f"{meta.get('threads', '?')} threads; measured {meta.get('date', '?')} with "
            f"`{meta.get('command', 'fastnn bench-train')}`")


def _machine_line(meta) -> str:
    """The CPU and SIMD lines of a report's ``machine`` facts."""
    facts = {}
    for line in meta.get("machine") or []:
        key, _, value = line.partition(" ")
        facts.setdefault(key, value.strip())
    return f"CPU: {facts.get('cpu', '?')}, SIMD: {facts.get('simd', '?')}"


def section(report, what: str) -> str:
    """The text between one pair of markers: ``table``, ``runs``, ``sparse``, ``bf16`` or
    ``rung=NAME``."""
    if what == "sparse":
        return sparse(report)
    if what == "bf16":
        return bf16(report)
    if what == "table":
        return table(report) + "\n\n" + footnote(report)
    if what == "runs":
        return runs(report)
    if what.startswith("rung="):
        return rung(report, what.split("=", 1)[1])
    raise ValueError(f"unknown results marker {what!r}")


def fill(text: str, report) -> str:
    """``text`` with every marked section regenerated from ``report``."""
    return MARKER.sub(lambda m: m.group(1) + section(report, m.group("what")) + "\n" +
                      m.group(4), text)
