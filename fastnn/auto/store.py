"""What auto remembers between processes: one JSON file, ``tune.json``.

It lives in ``$FASTNN_TUNE_DIR``, else ``$XDG_CACHE_HOME/fastnn``, else ``~/.cache/fastnn``, and
holds two sections, each a dict keyed by the problem:

``choices``  the variant measured fastest for a (shape, dtype, threads) (``choice.py``)
``threads``  the thread count decided for a (shape, dtype, variant) (``thread_watch.py``)

The whole file is tied to a fingerprint of the machine and software (``machine.fingerprint``:
CPU, core count, fastnn/numpy/numba versions, BLAS backend): what was measured elsewhere or before
an upgrade is never reused.  Writes are atomic (temporary file, then rename) and read the file
again first, so two processes writing at once lose at most one entry, never the file; a file that
cannot be written (read-only home, full disk) only costs a measurement again.
"""
from __future__ import annotations

import json
import os
import tempfile

from ..machine import fingerprint

SECTIONS = ("choices", "threads")


def tune_dir() -> str:
    env = os.environ.get("FASTNN_TUNE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastnn")


def tune_file() -> str:
    return os.path.join(tune_dir(), "tune.json")


def load(section: str) -> dict:
    """The entries of ``section`` written on this machine and software (empty when none)."""
    data = _read()
    entries = data.get(section, {})
    return entries if isinstance(entries, dict) else {}


def _read() -> dict:
    try:
        with open(tune_file()) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint():
        return {}
    return data


def put(section: str, key: str, entry) -> None:
    """Set ``section[key] = entry`` (None: remove it) on disk."""
    data = _read()
    entries = {s: dict(data.get(s, {})) if isinstance(data.get(s), dict) else {}
               for s in SECTIONS}
    if entry is None:
        if entries[section].pop(key, None) is None:
            return
    else:
        entries[section][key] = entry
    _write(entries)


def clear() -> None:
    try:
        os.remove(tune_file())
    except OSError:
        pass


def _write(entries: dict) -> None:
    path = tune_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tune-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"fingerprint": fingerprint(), **entries}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        pass
