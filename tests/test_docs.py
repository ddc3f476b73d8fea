"""The docs' measured sections are generated: they must equal what ``dev/update_results.py`` makes
of ``docs/results.json``, so the README, the ladder and the measurements cannot disagree."""
import json
import os

import pytest

from fastnn.profiling import report

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
DOCS = ["README.md", os.path.join("docs", "optimisation.md")]


def _results():
    with open(os.path.join(ROOT, "docs", "results.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name", DOCS)
def test_generated_sections_match_the_results(name):
    with open(os.path.join(ROOT, name)) as f:
        text = f.read()
    sections = list(report.MARKER.finditer(text))
    assert sections, f"{name} has no generated results sections"
    assert report.fill(text, _results()) == text, (
        f"{name} disagrees with docs/results.json: run python dev/update_results.py")


def test_every_rung_has_its_measured_line():
    """Each rung of the ladder doc quotes its own line of the results, and the results hold a
    row for every variant the default install registers."""
    import fastnn

    with open(os.path.join(ROOT, "docs", "optimisation.md")) as f:
        text = f.read()
    rungs = {m.group("what").split("=", 1)[1] for m in report.MARKER.finditer(text)
             if m.group("what").startswith("rung=")}
    default = {v.name for v in fastnn.kernels.variants() if not v.name.endswith("-openblas")}
    assert rungs == default
    assert default <= set(report.kernels_of(_results()))


def test_the_readme_python_example_runs():
    """The README's Python block is real code: it runs as written (its asserts included)."""
    import re

    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = re.search(r"<!-- example:python -->\n```python\n(?P<code>.*?)```\n<!-- /example -->",
                      text, re.S)
    assert block, "README.md has no <!-- example:python --> block"
    namespace = {}
    exec(compile(block.group("code"), "README.md example", "exec"), namespace)
    assert namespace["run"].n_epochs == 5 and namespace["clf"].score(
        namespace["features"], namespace["labels"]) > 0.5
