"""Data from files and named data sets, for the command line: read carefully, errors that say where.

``load_file(path, target)``  an ``.npz`` (arrays ``x``, ``y``) or a ``.csv`` (a header row, the
                             label column named ``target``, every other column a number); sparse
                             rows: an ``.npz`` of ``scipy.sparse.save_npz`` (the labels in the
                             ``.npy`` that ``target`` names) or an svmlight/libsvm text file
                             (``.svm``, ``.svmlight``, ``.libsvm``: ``label idx:value ...``)
``load_dataset(name)``       ``digits`` (scikit-learn's), ``mnist``, ``fashion-mnist`` (the IDX
                             files, downloaded once, sha256-checked, cached)
``test_split(...)``          hold out a fraction of the rows, stratified for class labels

Every problem is a ``DataError`` (a ValueError) naming the file, the row (as the file counts its
lines) and the column: a blank or ``NA`` value, text where a number belongs, NaN or infinity.
Missing labels are an error unless ``drop_missing`` asks to drop their rows.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

MISSING = {"", "na", "nan", "n/a", "null", "none", "?", "-"}


class DataError(ValueError):
    """Data that cannot be used as it is, with where and why."""


@dataclass
class Table:
    """Features ``x`` (m, n) float64, labels ``y`` (m,), the feature columns' names, and notes
    for the user (rows dropped, ...)."""

    x: np.ndarray
    y: np.ndarray
    feature_names: Optional[list] = None
    notes: list = field(default_factory=list)


def load_file(path: str, target: str = "y", *, drop_missing: bool = False) -> Table:
    """The data of an ``.npz`` or ``.csv`` file (see the module docstring)."""
    if not os.path.isfile(path):
        raise DataError(f"--data {path}: no such file")
    if path.lower().endswith(".csv"):
        return load_csv(path, target, drop_missing=drop_missing)
    if path.lower().endswith(".npy"):
        return load_npy(path, target)
    if path.lower().endswith(SVMLIGHT):
        return load_svmlight(path)
    if is_sparse_npz(path):
        return load_sparse_npz(path, target)
    return load_npz(path)


SVMLIGHT = (".svm", ".svmlight", ".libsvm")


def is_sparse_npz(path: str) -> bool:
    """Whether ``path`` is an ``.npz`` written by ``scipy.sparse.save_npz``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return "format" in f.files and "shape" in f.files
    except (OSError, ValueError, EOFError):
        return False


def read_sparse_npz(path: str):
    """The sparse matrix of a ``scipy.sparse.save_npz`` file (its structure checked by
    ``fastnn.validation`` before any kernel reads it)."""
    import scipy.sparse

    try:
        return scipy.sparse.load_npz(path)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DataError(f"--data {path}: cannot read it as a scipy.sparse .npz ({exc})") from None


def load_sparse_npz(path: str, target: str) -> Table:
    """Sparse features from ``scipy.sparse.save_npz`` and their labels from the ``.npy`` that
    ``target`` (``--target``/``--labels``) names, one per row."""
    if not str(target).lower().endswith(".npy") or not os.path.isfile(target):
        raise DataError(f"--data {path}: a scipy.sparse .npz holds no labels; --labels (or "
                        f"--target) names the .npy of the labels (one per row), got {target!r}")
    x = read_sparse_npz(path)
    try:
        y = np.load(target, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"--labels {target}: cannot read it as .npy ({exc})") from None
    if x.ndim != 2 or y.shape[:1] != (x.shape[0],):
        raise DataError(f"--labels {target}: {y.shape[0] if y.ndim else 0} labels for "
                        f"{x.shape[0]} rows")
    _check_sparse_values(path, x)
    return Table(x.tocsr(), y)


def _check_sparse_values(path, x) -> None:
    if x.dtype.kind in "fc":
        data = x.data
        bad = ~np.isfinite(data)
        if bad.any():
            raise DataError(f"--data {path}: {int(bad.sum())} stored value(s) are NaN or "
                            f"infinite (the first: {data[np.flatnonzero(bad)[0]]})")


def load_svmlight(path: str, n_features=None) -> Table:
    """An svmlight/libsvm file: one row a line, ``label idx:value idx:value ...`` (indices from 1,
    as the format has them; ``#`` starts a comment; ``qid:`` is skipped), as a CSR matrix and
    its labels.  scikit-learn's compiled reader where it is installed; the line of a bad file is
    found by ``_parse_svmlight`` (also the reader without scikit-learn)."""
    try:
        from sklearn.datasets import load_svmlight_file
    except ImportError:
        load_svmlight_file = None
    if load_svmlight_file is not None:
        try:
            x, y = load_svmlight_file(path, n_features=n_features, zero_based=False)
        except (ValueError, OSError, UnicodeDecodeError):
            x = None  # the reader below names the line
        if x is not None:
            _check_sparse_values(path, x)
            return Table(x, y)
    x, y = _parse_svmlight(path, n_features)
    return Table(x, y)


def _parse_svmlight(path: str, n_features=None):
    """The svmlight reader in Python: slower than scikit-learn's, but every problem is a
    ``DataError`` naming the line and the item."""
    import scipy.sparse

    labels, indptr, indices, values = [], [0], [], []
    try:
        f = open(path, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"--data {path}: cannot read it ({exc})") from None
    with f:
        for line_no, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            items = text.split()
            try:
                label = float(items[0])
            except ValueError:
                raise DataError(f"--data {path}: line {line_no}: the label {items[0]!r} is not "
                                f"a number") from None
            if not math.isfinite(label):
                raise DataError(f"--data {path}: line {line_no}: the label is not finite")
            last = 0
            for item in items[1:]:
                idx, sep, val = item.partition(":")
                if idx == "qid":
                    continue
                try:
                    col, v = int(idx), float(val)
                except ValueError:
                    col, v = -1, math.nan
                if not sep or col < 1:
                    raise DataError(f"--data {path}: line {line_no}: {item!r} is not "
                                    f"index:value with an index from 1")
                if not math.isfinite(v):
                    raise DataError(f"--data {path}: line {line_no}: {item!r}: the value is not "
                                    f"finite")
                if col <= last:
                    raise DataError(f"--data {path}: line {line_no}: index {col} after {last}: "
                                    f"the format has them in increasing order")
                last = col
                indices.append(col - 1)
                values.append(v)
            labels.append(label)
            indptr.append(len(indices))
    if not labels:
        raise DataError(f"--data {path}: no rows")
    cols = max(indices, default=-1) + 1
    if n_features is not None:
        if cols > n_features:
            raise DataError(f"--data {path}: a feature index {cols} beyond the model's "
                            f"{n_features} features")
        cols = n_features
    x = scipy.sparse.csr_matrix((np.array(values, np.float64), np.array(indices, np.int64),
                                 np.array(indptr, np.int64)), shape=(len(labels), max(cols, 1)))
    return x, np.array(labels)


def load_npy(path: str, target: str) -> Table:
    """Features in one ``.npy`` (memory-mapped: nothing is read until rows are used, so a rank of
    a distributed run reads only its own) and the targets in another, named by ``target``."""
    if not str(target).lower().endswith(".npy") or not os.path.isfile(target):
        raise DataError(f"--data {path}: with features in an .npy, --target names the .npy of "
                        f"the targets (one per row), got {target!r}")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        y = np.load(target, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"--data {path} / --target {target}: cannot read them as .npy "
                        f"({exc})") from None
    if x.ndim != 2 or x.dtype.kind not in "biuf":
        raise DataError(f"--data {path}: expected a 2-D numeric array, got {x.dtype} {x.shape}")
    if y.shape[0] != x.shape[0]:
        raise DataError(f"--target {target}: {y.shape[0]} targets for {x.shape[0]} rows")
    return Table(x, y)


def load_npz(path: str) -> Table:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [name for name in ("x", "y") if name not in f.files]
            if missing:
                raise DataError(f"--data {path}: missing array(s) {', '.join(missing)}; found "
                                f"{', '.join(f.files) or 'none'}")
            x, y = f["x"], f["y"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        reason = "not an .npz archive" if "pickle" in str(exc) else str(exc)
        raise DataError(f"--data {path}: cannot read it as .npz ({reason})") from None
    for name, a in (("x", x), ("y", y)):
        if a.dtype.kind in "fc":
            bad = ~np.isfinite(a)
            if bad.any():
                where = np.argwhere(bad)[0]
                place = f"row {where[0] + 1}" + (f", column {where[1] + 1}" if a.ndim > 1 else "")
                raise DataError(f"--data {path}: array {name} has {a[tuple(where)]} at {place} "
                                f"(counting from 1); {int(bad.sum())} such value(s) in all")
    return Table(x, y)


def _missing(text: str) -> bool:
    return text.strip().lower() in MISSING


def load_csv(path: str, target: str, *, drop_missing: bool = False) -> Table:
    """A .csv with a header row; ``target`` names the label column, the others must be
    numbers.  Rows with a missing label (blank, ``NA``, ...) are an error naming their lines,
    unless ``drop_missing`` (then rows with any missing value are dropped and counted)."""
    header, rows, lines = _read_csv(path)
    if target not in header:
        raise DataError(f"--data {path}: no column {target!r} (--target); columns: "
                        f"{', '.join(header)}")
    col = header.index(target)
    names = [h for i, h in enumerate(header) if i != col]
    if not names:
        raise DataError(f"--data {path}: no feature columns besides {target!r}")
    notes = []
    gaps = [(line, i) for r, line in zip(rows, lines) for i, v in enumerate(r) if _missing(v)]
    if gaps:
        if not drop_missing:
            label_lines = [line for line, i in gaps if i == col]
            if label_lines:
                raise DataError(f"--data {path}: missing label (column {target!r}) on "
                                f"{_lines(label_lines)}; fix those rows or pass --drop-missing "
                                f"to leave them out")
            line, i = gaps[0]
            raise DataError(f"--data {path}: line {line}, column {header[i]!r}: missing value "
                            f"({len(gaps)} missing in all, first on {_lines([g[0] for g in gaps])})"
                            f"; fill them in or pass --drop-missing to leave those rows out")
        bad = {line for line, _ in gaps}
        kept = [(r, line) for r, line in zip(rows, lines) if line not in bad]
        notes.append(f"dropped {len(rows) - len(kept)} row(s) with a missing value "
                     f"({_lines(sorted(bad))})")
        if not kept:
            raise DataError(f"--data {path}: every row has a missing value")
        rows, lines = [r for r, _ in kept], [line for _, line in kept]
    x = np.empty((len(rows), len(names)))
    for r, (row, line) in enumerate(zip(rows, lines)):
        j = 0
        for i, value in enumerate(row):
            if i == col:
                continue
            try:
                x[r, j] = float(value)
            except ValueError:
                raise DataError(f"--data {path}: line {line}, column {header[i]!r}: "
                                f"{value.strip()!r} is not a number (feature columns must be "
                                f"numbers; text labels belong in --target)") from None
            if not math.isfinite(x[r, j]):
                raise DataError(f"--data {path}: line {line}, column {header[i]!r}: "
                                f"{value.strip()!r} is not a finite number")
            j += 1
    labels = np.array([row[col].strip() for row in rows])
    try:
        y = labels.astype(np.float64)
    except ValueError:
        y = labels  # text labels: a classification target
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        line = lines[int(np.argmin(np.isfinite(y)))]
        raise DataError(f"--data {path}: line {line}, column {target!r}: the label is not a "
                        f"finite number")
    return Table(x, y, names, notes)


def load_features(path: str, n: int, names=None, target=None) -> np.ndarray:
    """The feature rows of a file, for a model of ``n`` inputs: from a .csv the columns
    ``names`` (by name, in the model's order; other columns ignored) or, without names, every
    column but ``target``; from an .npz its array ``x``.  Errors name what is missing."""
    if not os.path.isfile(path):
        raise DataError(f"--data {path}: no such file")
    if path.lower().endswith(SVMLIGHT) or is_sparse_npz(path):  # sparse rows
        if path.lower().endswith(SVMLIGHT):
            x = load_svmlight(path, n_features=n).x
        else:
            x = read_sparse_npz(path)
            _check_sparse_values(path, x)
        if x.ndim != 2 or x.shape[1] != n:
            raise DataError(f"--data {path}: shape {x.shape}; the model takes {n} features per "
                            f"row")
        return x.tocsr()
    if path.lower().endswith(".npy"):
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        if x.ndim != 2 or x.shape[1] != n:
            raise DataError(f"--data {path}: shape {x.shape}; the model takes {n} features per "
                            f"row")
        return x
    if not path.lower().endswith(".csv"):
        try:
            with np.load(path, allow_pickle=False) as f:
                if "x" not in f.files:
                    raise DataError(f"--data {path}: no array x; found {', '.join(f.files)}")
                x = np.asarray(f["x"], np.float64)
        except (OSError, ValueError, EOFError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"--data {path}: cannot read it as .npz ({exc})") from None
        if x.ndim != 2 or x.shape[1] != n:
            raise DataError(f"--data {path}: x has shape {x.shape}; the model takes {n} "
                            f"features per row")
        return x
    header, rows, lines = _read_csv(path)
    if names is None:
        names = [h for h in header if h != target]
        if len(names) != n:
            raise DataError(f"--data {path}: {len(names)} feature columns, the model takes {n}")
    absent = [c for c in names if c not in header]
    if absent:
        raise DataError(f"--data {path}: no column(s) {', '.join(map(repr, absent))}, which the "
                        f"model was trained on; columns: {', '.join(header)}")
    cols = [header.index(c) for c in names]
    x = np.empty((len(rows), len(cols)))
    for r, (row, line) in enumerate(zip(rows, lines)):
        for j, i in enumerate(cols):
            try:
                x[r, j] = float(row[i])
            except ValueError:
                what = "missing value" if _missing(row[i]) else f"{row[i].strip()!r} is not a number"
                raise DataError(f"--data {path}: line {line}, column {header[i]!r}: "
                                f"{what}") from None
            if not math.isfinite(x[r, j]):
                raise DataError(f"--data {path}: line {line}, column {header[i]!r}: "
                                f"{row[i].strip()!r} is not a finite number")
    return x


def _read_csv(path):
    """``(header, rows, line numbers)``, blank lines skipped, every row as long as the header.
    A byte-order mark (spreadsheet exports) is dropped; the delimiter may be a comma, a
    semicolon or a tab (whichever the header uses)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            f.seek(0)
            counts = {d: first.count(d) for d in ",;\t"}
            reader = csv.reader(f, delimiter=max(counts, key=counts.get) if any(
                counts.values()) else ",")
            found = []
            for row in reader:
                if any(v.strip() for v in row):
                    found.append((row, reader.line_num))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"--data {path}: cannot read it ({exc})") from None
    if len(found) < 2:
        raise DataError(f"--data {path}: expected a header row and data rows")
    header = [h.strip() for h in found[0][0]]
    for row, line in found[1:]:
        if len(row) != len(header):
            raise DataError(f"--data {path}: line {line} has {len(row)} fields, the header "
                            f"{len(header)}")
    return header, [r for r, _ in found[1:]], [line for _, line in found[1:]]


def _lines(lines, most=5) -> str:
    shown = ", ".join(map(str, lines[:most]))
    more = f" and {len(lines) - most} more" if len(lines) > most else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def integer_labels(y) -> bool:
    """Whether regression targets look like class labels: whole numbers, few distinct values."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iuf" or y.size == 0:
        return False
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        return False
    return len(np.unique(y)) <= max(2, min(50, y.size // 5))


def test_split(x, y, fraction, seed, stratify=True, name="--test-fraction"):
    """``(x_train, y_train, x_test, y_test)``: ``fraction`` of the rows held out, drawn from
    ``seed`` (per class, in proportion, when ``stratify``).  ``name``: the setting, for errors."""
    if isinstance(fraction, bool) or not 0.0 < fraction < 1.0:
        raise DataError(f"{name}: expected a number in (0, 1), got {fraction!r}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    m = len(y)
    n_test = int(math.ceil(fraction * m))  # scikit-learn's count
    if stratify:
        classes, counts = np.unique(y, return_counts=True)
        share = n_test * counts / m  # each class in proportion, the remainder to the largest
        take = np.floor(share).astype(int)  # fractional parts
        take[np.argsort(take - share)[:n_test - take.sum()]] += 1
        test = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:t]
                                       for c, t in zip(classes, take)]))
    else:
        test = np.sort(rng.permutation(m)[:n_test])
    if test.size == 0 or test.size == m:
        raise DataError(f"{name} {fraction} of {m} rows leaves no training or no held-out rows")
    train = np.setdiff1d(np.arange(m), test)
    return x[train], y[train], x[test], y[test]


# --- named data sets ----------------------------------------------------------------------------

@dataclass(frozen=True)
class IdxSet:
    """A data set of four IDX files (train/test images and labels), their sha256 and mirrors."""

    title: str
    mirrors: tuple
    files: dict  # role -> (file name, sha256 of the .gz)


IDX_SETS = {
    "mnist": IdxSet("MNIST", (
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/"), {
        "train_images": ("train-images-idx3-ubyte.gz",
                         "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train_labels": ("train-labels-idx1-ubyte.gz",
                         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "test_images": ("t10k-images-idx3-ubyte.gz",
                        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz",
                        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")}),
    "fashion-mnist": IdxSet("Fashion-MNIST", (
        "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"), {
        "train_images": ("train-images-idx3-ubyte.gz",
                         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train_labels": ("train-labels-idx1-ubyte.gz",
                         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "test_images": ("t10k-images-idx3-ubyte.gz",
                        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz",
                        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5")}),
}
DATASETS = ("digits",) + tuple(IDX_SETS)


def cache_dir() -> str:
    """Where downloaded data sets are kept: ``$FASTNN_DATA_DIR``, else
    ``$XDG_CACHE_HOME/fastnn/datasets``, else ``~/.cache/fastnn/datasets``."""
    env = os.environ.get("FASTNN_DATA_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastnn", "datasets")


def load_dataset(name: str, data_dir: Optional[str] = None, seed: int = 0):
    """``(x_train, y_train, x_test, y_test, description)`` of a named data set: ``digits``
    (scikit-learn's, scaled to [0, 1], its stratified 80/20 split from ``seed``), or an IDX set
    (its own train/test split, pixels scaled to [0, 1], float32) read from ``data_dir`` when the
    files are there, else from the cache, else downloaded into the cache."""
    if name == "digits":
        return _digits(seed)
    if name not in IDX_SETS:
        raise DataError(f"--dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    spec = IDX_SETS[name]
    arrays = {role: read_idx(locate(spec, role, data_dir)) for role in spec.files}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim < 2 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{spec.title}: {part} images {images.shape} and labels "
                            f"{labels.shape} do not match")

    def features(images):
        return images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)

    return (features(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
            features(arrays["test_images"]), arrays["test_labels"].astype(np.int64),
            f"{spec.title}, its train/test split")


def _digits(seed):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DataError("--dataset digits needs scikit-learn: pip install 'fastnn[sklearn]' (or "
                        "pip install scikit-learn)") from None
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.2,
                                                        random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test, "scikit-learn digits, 80/20 split"


def locate(spec: IdxSet, role: str, data_dir: Optional[str] = None) -> str:
    """The path of one IDX file: in ``data_dir`` (as ``NAME.gz``, checked against its sha256, or
    uncompressed ``NAME``), else in the cache, else downloaded into the cache from the first
    mirror that answers with the right bytes."""
    name, sha = spec.files[role]
    raw = name[:-3]
    if data_dir is not None:
        for candidate in (os.path.join(data_dir, name), os.path.join(data_dir, raw)):
            if os.path.isfile(candidate):
                if candidate.endswith(".gz"):
                    _check_sha256(candidate, sha, spec.title)
                return candidate
        raise DataError(f"--data-dir {data_dir}: no {name} (or {raw}) of {spec.title} there")
    folder = os.path.join(cache_dir(), spec.title.lower())
    path = os.path.join(folder, name)
    if os.path.isfile(path) and _sha256(path) == sha:
        return path
    return download(spec, name, sha, folder)


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path, sha, title):
    got = _sha256(path)
    if got != sha:
        raise DataError(f"{path}: sha256 {got} is not that of {title}'s {os.path.basename(path)} "
                        f"({sha}); the file is damaged or another one")


def download(spec: IdxSet, name: str, sha: str, folder: str, timeout: float = 60.0) -> str:
    """Fetch ``name`` from ``spec.mirrors`` in turn into ``folder`` (a temporary file, renamed
    once its sha256 is right); DataError listing every mirror's failure if none serves it."""
    os.makedirs(folder, exist_ok=True)
    failures = []
    for mirror in spec.mirrors:
        url = mirror + name
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                for block in iter(lambda: r.read(1 << 20), b""):
                    out.write(block)
            got = _sha256(tmp)
            if got != sha:
                failures.append(f"{url}: wrong sha256 {got}")
                continue
            path = os.path.join(folder, name)
            os.replace(tmp, path)
            return path
        except (OSError, urllib.error.URLError, ValueError) as exc:
            failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataError(f"{spec.title}: could not download {name} (" + "; ".join(failures) +
                    "); put the files in a folder and pass --data-dir FOLDER")


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array: big-endian header ``0 0 type ndim`` and
    ``ndim`` 32-bit sizes, then the data."""
    types = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] not in types:
                raise DataError(f"{path}: not an IDX file (bad magic number)")
            ndim = head[3]
            shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            dtype = np.dtype(types[head[2]])
            data = f.read()
    except (OSError, EOFError, struct.error) as exc:
        raise DataError(f"{path}: cannot read it as an IDX file ({exc})") from None
    want = int(np.prod(shape)) * dtype.itemsize
    if len(data) != want:
        raise DataError(f"{path}: IDX header says {shape} ({want} bytes), the file holds "
                        f"{len(data)}")
    return np.frombuffer(data, dtype).reshape(shape)
