"""Run every asv benchmark once (on the seed shape), so the suite cannot rot between asv runs."""
import importlib
import inspect
import itertools
import os
import subprocess
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "asv_bench")
sys.path.insert(0, os.path.abspath(BENCH_DIR))

MODULES = ["benchmarks.bench_step", "benchmarks.bench_train", "benchmarks.bench_compile",
           "benchmarks.bench_distributed"]


def _cases():
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__ or not hasattr(cls, "params"):
                continue
            names = list(cls.param_names)
            for combo in itertools.product(*cls.params):
                args = dict(zip(names, combo))
                if args.get("shape", "seed") != "seed":
                    continue  # the other shapes run the same code, only slower
                yield pytest.param(cls, combo, id=f"{cls.__name__}-{'-'.join(map(str, combo))}")


@pytest.mark.parametrize("cls, combo", list(_cases()))
def test_benchmark_runs(cls, combo):
    bench = cls()
    if hasattr(bench, "setup"):
        try:
            bench.setup(*combo)
        except NotImplementedError:  # asv's way of skipping a combination
            pytest.skip("combination skipped by the benchmark's setup")
    methods = [m for m in dir(bench) if m.split("_")[0] in ("time", "track", "peakmem",
                                                              "timeraw")]
    assert methods
    for name in methods:
        result = getattr(bench, name)(*combo)
        if name.startswith("track"):
            assert result > 0
        if name.startswith("timeraw"):
            compile(result, name, "exec")
            if name.endswith("warm"):  # the cold one compiles everything: too slow for a test
                subprocess.run([sys.executable, "-c", result], check=True, timeout=300)
