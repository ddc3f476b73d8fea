"""The codebase's own promises: the kernel cache follows every kernel source, a warm process
compiles nothing, the registry's facts are consistent, and the trainer's schedule."""
import os
import shutil
import subprocess
import sys

import pytest

import fastnn
from fastnn.auto import choice
from fastnn.kernels import jit
from fastnn.training.loop import next_stop


def test_cache_folder_follows_every_kernel_source_subfolders_included(tmp_path, monkeypatch):
    """An edit to any kernel file, one in kernels/common/ included, names a new cache folder: Numba
    checks only the timestamp of the file defining a function, not of what it inlines."""
    copy = tmp_path / "kernels"
    shutil.copytree(jit.KERNELS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(jit, "KERNELS_DIR", str(copy))
    before = jit.source_hash()
    assert before == jit.source_hash()
    for relative in ("common/loops.py", "common/gemm.py", "fused.py"):
        with open(copy / relative, "a") as f:
            f.write("\n# edited\n")
        after = jit.source_hash()
        assert after != before, relative
        before = after
    assert any(p.endswith(os.path.join("common", "simd.py")) for p in jit.kernel_sources())


WARM = """
import numpy as np, fastnn
from fastnn import kernels
from fastnn.optim import Optimizer
rng = np.random.default_rng(0)
x = rng.standard_normal((9, 5)); labels = rng.integers(0, 3, 9)
for v in kernels.variants():
    if v.compiled is None:
        continue
    for dt in (np.float32, np.float64):
        p = fastnn.init_params(5, 4, 3, dtype=dt, seed=0)
        xs = x.astype(dt)
        fastnn.predict(p, xs, kernel=v.name)
        fastnn.loss_and_grads(p, xs, labels, kernel=v.name, loss="softmax")
        fastnn.sgd_step(p, xs, labels, 0.1, kernel=v.name, loss="softmax")
        for opt in ("sgd", "adam"):
            fastnn.train(xs, labels, hidden=4, epochs=2, batch_size=4, lr=0.01, optimizer=opt,
                         loss="softmax", kernel=v.name, seed=0)
misses = {}
for module in kernels.LADDER:
    for name in dir(module):
        f = getattr(module, name)
        if hasattr(f, "stats") and f.stats.cache_misses:
            misses[f"{module.__name__}.{name}"] = dict(f.stats.cache_misses)
print("MISSES", misses)
"""


def test_a_warm_process_compiles_nothing():
    """Every compiled variant's predict, loss_and_grads, sgd_step and both training loops, in both
    dtypes, load from Numba's on-disk cache in a second process: no cache misses (a loop that
    took a function argument, or a literal flag that made a new specialisation, would miss)."""
    if not jit.CACHE:
        pytest.skip("Numba's on-disk cache is off (FASTNN_CACHE=0)")
    first = subprocess.run([sys.executable, "-c", WARM], capture_output=True, text=True,
                           timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run([sys.executable, "-c", WARM], capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "MISSES {}" in second.stdout, second.stdout


def _cache_files_under(folder):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files
                  if f.endswith((".nbi", ".nbc")))


def test_every_kernel_is_cached_in_the_cache_folder_never_in_the_package():
    """Numba fixes a function's cache folder when it is decorated: a shared block imported before
    the kernels entered jit.cache_location() was cached next to its source (issue 22: gemm,
    affine and _leading_dim in fastnn/kernels/common/__pycache__), outside the hashed folder and
    failing on a read-only install.  After every compiled variant has run, the package holds no
    cache file and the cache folder holds gemm's."""
    if not jit.CACHE:
        pytest.skip("Numba's on-disk cache is off (FASTNN_CACHE=0)")
    package = os.path.dirname(fastnn.__file__)
    stale = _cache_files_under(package)
    assert not stale, f"cache files under the package: {stale[:5]}"
    res = subprocess.run([sys.executable, "-c", WARM], capture_output=True, text=True,
                         timeout=900)  # (the warm test's run: compiled once for both)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _cache_files_under(package) == []
    cached = _cache_files_under(jit.cache_dir())
    assert any("gemm.gemm-" in os.path.basename(f) for f in cached)


FRESH_OR_CACHED = """
import hashlib, numpy as np, fastnn
rng = np.random.default_rng(0)
x = rng.standard_normal((45, 30)); labels = rng.integers(0, 5, 45)
r = fastnn.train(x, labels, hidden=20, epochs=2, batch_size=8, lr=1e-2, loss="softmax",
                 optimizer="adam", kernel="fused-wide", seed=1)
l, g = fastnn.loss_and_grads(r.params, x, labels, kernel="fused-wide", loss="softmax")
h = hashlib.sha256(r.losses.tobytes() + b"".join(a.tobytes() for a in (*r.params, *g)))
print(h.hexdigest())
"""


def test_compiled_and_cached_code_give_the_same_bits(tmp_path):
    """The same kernels compiled in this process and loaded from Numba's cache by the next give
    the same bits (they did not with fastmath's ``nsz``: a resumed run was then not bitwise)."""
    if not jit.CACHE:
        pytest.skip("Numba's on-disk cache is off (FASTNN_CACHE=0)")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", FRESH_OR_CACHED], capture_output=True,
                           text=True, env=env, timeout=600) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    assert runs[0].stdout == runs[1].stdout


def test_registry_facts_are_consistent():
    names = fastnn.kernels.names(reference=True)
    assert len(names) == len(set(names))
    for v in fastnn.kernels.variants(reference=True):
        assert v.whole_loop == (v.compiled is not None), v.name
        assert set(v.blas_update) <= {"w1", "w2"}, v.name
        assert v.pool in ("numpy", "mkl", "scipy", "numba") or v.pool.startswith("numba+"), v.name
        if v.bitwise:
            assert not v.blas_update and "+" not in v.pool, v.name
    assert "numpy" in choice.candidates()  # so auto is never slower than numpy
    assert fastnn.kernels.get("reference").candidate is False


@pytest.mark.parametrize("kw, starts", [
    # full-batch, nothing at epoch ends: the first step alone, then bursts
    (dict(total=10, per_epoch=1, bulk=True, burst=4), [0, 1, 5, 9]),
    # epochs of 3 steps: a block never crosses an epoch's end
    (dict(total=8, per_epoch=3, bulk=False, burst=8), [0, 1, 3, 6]),
    # a callback every 2 steps, counted from step 1
    (dict(total=7, per_epoch=7, bulk=False, burst=7, callback_every=2), [0, 1, 3, 5]),
    # checkpoints every 4 steps end blocks at multiples of 4
    (dict(total=10, per_epoch=1, bulk=True, burst=10, checkpoint_every=4), [0, 1, 4, 8]),
])
def test_next_stop_schedule(kw, starts):
    total = kw.pop("total")
    per_epoch = kw.pop("per_epoch")
    got, step = [], 0
    while step < total:
        got.append(step)
        stop = next_stop(step, total, per_epoch, **kw)
        assert step < stop <= total
        step = stop
    assert got == starts


def import_graph() -> dict:
    """``{module: {modules it imports}}`` for every fastnn module, from its source: every import
    statement, at module level or inside a function (a cycle through a lazy import is still a
    cycle of design), plus the parent packages a submodule import runs (except the root's and
    the importing module's own, which are loaded before it)."""
    import ast

    root = os.path.dirname(fastnn.__file__)
    modules = {}
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(root))
                name = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
                modules[name] = os.path.join(folder, f)

    def parents(name):
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(2, len(parts))}

    graph = {}
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                # ``from pkg import x``: the submodule pkg.x where there is one, else pkg itself
                targets = [s for s in subs if s in modules]
                if node.module or len(targets) < len(subs):
                    targets.append(base)
            else:
                continue
            for t in targets:
                if t in modules and t != name:
                    deps.add(t)
                    # parents of t other than this module's own (those are loaded already)
                    deps |= parents(t) - parents(name) - {name}
        graph[name] = deps
    return graph


def test_no_import_cycles():
    """The layout's import rule: no module reaches itself through its imports (the registry
    never reaches up into autotune, thread control never into a module that imports it, ...)."""
    graph = import_graph()
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycle = path[path.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    kernels = {d for n, deps in graph.items() if n.startswith("fastnn.kernels") for d in deps}
    assert {d for d in kernels if not d.startswith("fastnn.kernels")} <= {
        "fastnn.params", "fastnn.reference"}
