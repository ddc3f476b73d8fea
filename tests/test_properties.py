"""Run the hypothesis property tests of ``property_cases.py`` in a separate process: a kernel that
crashes (a segfault from an out-of-bounds access) fails this test with the process's output
instead of taking the whole test run down.  ``FASTNN_PROPERTY_EXAMPLES`` sets the number of
generated cases per property (default 40; e.g. 2000 for a long run)."""
import os
import subprocess
import sys

import pytest

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

HERE = os.path.dirname(os.path.abspath(__file__))


def test_properties_in_a_subprocess():
    pytest.importorskip("hypothesis")
    res = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", os.path.join(HERE, "property_cases.py")],
        capture_output=True, text=True, cwd=HERE, timeout=3600)
    out = res.stdout[-6000:] + res.stderr[-3000:]
    if res.returncode < 0:
        pytest.fail(f"the property tests crashed with signal {-res.returncode}:\n{out}")
    assert res.returncode == 0, out
