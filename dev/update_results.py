"""Rewrite the measured sections of README.md and docs/optimisation.md from a ``fastnn bench
--json`` report (default: docs/results.json), between their ``<!-- results:... -->`` markers.

    fastnn bench --shapes 1x1x1x1,seed,200x64x100x10,mnist,medium,256x100x50x100 \\
        --dtype float64,float32 --rounds 9 --compile --json docs/results.json
    python dev/update_results.py            # then commit the JSON and the two files

The whole runs (the dual form's table) come from ``fastnn bench-train``; merge them in with::

    fastnn bench-train --benches seed,wide --rounds 9 --json runs.json
    python dev/update_results.py --runs runs.json

The sparse rung's figures (its section of the ladder) likewise::

    fastnn bench-train --benches sparse-scaling,sparse-sklearn,sparse-lazy,sparse-text --json sparse.json
    python dev/update_results.py --sparse sparse.json

The bfloat16 rung's (its epoch against numpy and PyTorch's autocast, and the MNIST fits)::

    fastnn bench-train --dtype bfloat16 --benches epoch,mnist --kernels bf16 --json bf16.json
    python dev/update_results.py --bf16 bf16.json

``tests/test_docs.py`` fails when the files and the JSON disagree.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from fastnn.profiling.report import fill  # noqa: E402

DOCS = ["README.md", os.path.join("docs", "optimisation.md")]


def main(*args) -> int:
    path = os.path.join(ROOT, "docs", "results.json")
    with open(path) as f:
        report = json.load(f)
    if args[:1] in (("--runs",), ("--sparse",), ("--bf16",)):
        with open(args[1]) as f:
            report[args[0][2:]] = json.load(f)
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
        print(f"merged {args[1]} into {path}")
    for name in DOCS:
        target = os.path.join(ROOT, name)
        with open(target) as f:
            text = f.read()
        new = fill(text, report)
        if new != text:
            with open(target, "w") as f:
                f.write(new)
            print(f"updated {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
