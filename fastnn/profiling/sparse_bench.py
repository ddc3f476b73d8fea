"""Benchmarks of the sparse rung (``kernels/sparse.py``), for ``fastnn bench-train --benches``:

``sparse-scaling``  2 epochs of ``fastnn.train`` (float32, SGD, batch 256, hidden 256, 10 classes)
                    on 2048 rows with 200 stored entries a row, at 20,000 and at 200,000 features,
                    paired: the cost grows with the stored entries, not the features
``sparse-sklearn``  ``MLPClassifier(solver="sgd")`` on the 200,000-feature matrix against
                    scikit-learn's, paired, with both training accuracies
``sparse-lazy``     Adam on the 200,000-feature matrix (``fastnn.train``, 2 epochs, from given
                    parameters): ``lazy=True`` (the batch's rows of ``w1`` only) against the
                    exact method (every row, every step), paired, with both epochs' losses
``sparse-text``     ``MLPClassifier`` (Adam, scikit-learn's defaults otherwise) against
                    scikit-learn's on TF-IDF rows of synthetic documents (5,000 documents of
                    450 words drawn from 20 topics over a Zipfian vocabulary of 28,000 words:
                    ~1% stored), test accuracies on a held-out fifth, and the peak memory of
                    fastnn's fit (tracemalloc) against the size of the dense matrix

The data are made here from fixed seeds (``problem``, ``text_problem``): no download.
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np

from .timing import SETTLE, paired_ratio, quiet_fit


def problem(m=2048, n=20_000, per_row=200, k=10, dtype=np.float32, seed=0):
    """``(x, labels)``: CSR rows with ``per_row`` stored entries each at distinct random columns
    (values in (0, 1]), labels of ``k`` classes from a random linear model of the rows (so the
    task is learnable and the training accuracy means something)."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    cols = np.empty((m, per_row), np.int64)
    for i in range(m):
        cols[i] = np.sort(rng.choice(n, per_row, replace=False))
    data = (1.0 - rng.random(m * per_row)).astype(dtype)
    x = scipy.sparse.csr_matrix((data, cols.ravel(), np.arange(0, m * per_row + 1, per_row)),
                                shape=(m, n))
    w = rng.standard_normal((n, k)).astype(dtype)
    labels = np.argmax(x @ w, axis=1)
    return x, labels


def text_problem(docs=5000, vocab=28_000, words=450, topics=20, topical=0.02, seed=0):
    """``(x_train, y_train, x_test, y_test)``: TF-IDF rows (float64, l2-normalised, as
    scikit-learn's ``TfidfTransformer`` makes them) of synthetic documents: each document's
    topic is its label, its ``words`` draws come from a Zipfian distribution over the
    vocabulary, a fraction ``topical`` of them from its topic's own permutation of it and the
    rest from the shared order (few enough that the classes overlap: accuracy is not 1)."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, vocab + 1) ** 1.1
    zipf /= zipf.sum()
    perms = [rng.permutation(vocab) for _ in range(topics)]
    labels = rng.integers(0, topics, docs)
    rows, cols = [], []
    for d, t in enumerate(labels):
        n_own = int(round(topical * words))
        shared = rng.choice(vocab, words - n_own, p=zipf)
        own = perms[t][rng.choice(vocab, n_own, p=zipf)]
        w = np.concatenate([shared, own])
        rows.append(np.full(w.size, d))
        cols.append(w)
    counts = scipy.sparse.csr_matrix((np.ones(docs * words), (np.concatenate(rows),
                                                               np.concatenate(cols))),
                                     shape=(docs, vocab))
    counts.sum_duplicates()
    df = np.bincount(counts.indices, minlength=vocab)
    idf = np.log((1 + docs) / (1 + df)) + 1.0  # scikit-learn's smooth idf
    tfidf = counts.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1)).ravel())
    tfidf = scipy.sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ tfidf
    tfidf = tfidf.tocsr()
    test = rng.permutation(docs)[:docs // 5]
    train = np.setdiff1d(np.arange(docs), test)
    return tfidf[train], labels[train], tfidf[test], labels[test]


def bench_scaling(features=(20_000, 200_000), *, rounds=7, settle=SETTLE, out=print):
    """Paired: 2 epochs at the fewer features against 2 at the more (the ratio: time at the more
    over time at the fewer; a dense first layer would cost ``200000 / 20000 = 10x``).  Timed
    twice: the training (``fastnn.train`` from given initial parameters, which it copies), and
    the whole call with new He parameters from the seed (their ``n x h`` normal draws are
    ``O(n h)`` work that no sparsity removes: the figure says what they cost)."""
    import fastnn

    kw = dict(epochs=2, batch_size=256, loss="softmax", lr=0.1, seed=0)
    cases = {}
    for n in features:
        x, y = problem(n=n)
        cases[n] = (x, y, fastnn.init_params(n, 256, 10, init="he", dtype=np.float32, seed=0))
    runs = {}

    def fit(n, given=True):
        x, y, p0 = cases[n]

        def run():
            if given:
                runs[n] = fastnn.train(x, y, params=p0, **kw)
            else:
                fastnn.train(x, y, hidden=256, dtype="float32", **kw)
        return run

    few, many = features
    fit(few)()
    fit(many)()
    ratio, t_many, t_few = paired_ratio(fit(many), fit(few), rounds=rounds, budget=0.0,
                                        settle=settle)
    ratio_init, t_many_init, t_few_init = paired_ratio(fit(many, False), fit(few, False),
                                                       rounds=max(3, rounds // 2), budget=0.0,
                                                       settle=settle)
    nnz = cases[few][0].nnz
    flops = 2 * (4 * nnz * 256 + 6 * 2048 * 256 * 10)  # 2 epochs of the sparse step
    many_s = float(np.median(t_many))
    row = dict(bench="sparse-scaling", ran=runs[many].ran, rows=2048, stored_per_row=200,
               features=list(features), hidden=256, classes=10, batch=256, epochs=2,
               dtype="float32", steps=runs[many].n_steps, few_s=float(np.median(t_few)),
               many_s=many_s, many_over_few=1.0 / ratio,
               few_with_init_s=float(np.median(t_few_init)),
               many_with_init_s=float(np.median(t_many_init)),
               many_over_few_with_init=1.0 / ratio_init, gflops=flops / many_s / 1e9,
               dense_gflops_equivalent=2 * 2048 * (4 * many * 256 + 6 * 256 * 10) / many_s / 1e9)
    out(f"sparse  2 epochs of 2048 rows x 200 stored, hidden 256, float32 SGD: {few} features "
        f"{row['few_s'] * 1e3:.1f} ms, {many} features {many_s * 1e3:.1f} ms: "
        f"{row['many_over_few']:.2f}x the time for {many // few}x the features "
        f"({row['gflops']:.1f} GFLOP/s done); with new parameters drawn in the call "
        f"{row['few_with_init_s'] * 1e3:.0f} and {row['many_with_init_s'] * 1e3:.0f} ms: "
        f"{row['many_over_few_with_init']:.2f}x")
    return [row]


def bench_lazy(n=200_000, *, rounds=5, settle=SETTLE, out=print):
    """Paired: 2 epochs of Adam (lr 1e-3, batch 256, hidden 256) lazily against exactly, from the
    same given parameters."""
    import fastnn

    x, y = problem(n=n)
    p0 = fastnn.init_params(n, 256, 10, init="he", dtype=np.float32, seed=0)
    kw = dict(epochs=2, batch_size=256, loss="softmax", lr=1e-3, seed=0, optimizer="adam",
              params=p0)
    runs = {}

    def fit(lazy):
        def run():
            runs[lazy] = fastnn.train(x, y, lazy=lazy, **kw)
        return run

    fit(True)()
    fit(False)()
    ratio, t_lazy, t_exact = paired_ratio(fit(True), fit(False), rounds=rounds, budget=0.0,
                                          settle=settle)
    row = dict(bench="sparse-lazy", ran=runs[True].ran, rows=x.shape[0], features=n,
               stored=int(x.nnz), hidden=256, batch=256, epochs=2, dtype="float32",
               lazy_s=float(np.median(t_lazy)), exact_s=float(np.median(t_exact)),
               lazy_speedup=ratio, lazy_epoch_losses=[float(v) for v in runs[True].epoch_losses],
               exact_epoch_losses=[float(v) for v in runs[False].epoch_losses])
    out(f"sparse  Adam on 2048 x {n} ({x.nnz} stored), hidden 256, 2 epochs: lazy "
        f"{row['lazy_s']:.3f} s, exact {row['exact_s']:.3f} s: {ratio:.2f}x; epoch losses "
        f"lazy {row['lazy_epoch_losses']}, exact {row['exact_epoch_losses']}")
    return [row]


def bench_sklearn(n=200_000, *, rounds=3, settle=SETTLE, out=print):
    """Paired: ``MLPClassifier(solver="sgd")`` fits (hidden 256, batch 256, 2 epochs, float32,
    no L2 so that plain SGD touches only the batch's rows) against scikit-learn's."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    import fastnn

    x, labels = problem(n=n)
    kw = dict(hidden_layer_sizes=(256,), solver="sgd", momentum=0.0, alpha=0.0,
              learning_rate_init=0.1, batch_size=256, max_iter=2, tol=0.0, shuffle=True,
              random_state=0)
    ours, theirs = fastnn.MLPClassifier(**kw), SkMLP(**kw)
    fitted = {}

    def fit(model, key):
        return quiet_fit(fitted, key, model, x, labels)

    fit(ours, "ours")()
    ratio, ta, tb = paired_ratio(fit(ours, "ours"), fit(theirs, "theirs"), rounds=rounds,
                                 budget=0.0, settle=settle)
    row = dict(bench="sparse-sklearn", ran=fitted["ours"].kernel_, rows=x.shape[0],
               features=n, stored=int(x.nnz), hidden=256, batch=256, epochs=2, dtype="float32",
               fit_s=float(np.median(ta)), sklearn_fit_s=float(np.median(tb)),
               x_vs_sklearn=ratio, accuracy=float(fitted["ours"].score(x, labels)),
               sklearn_accuracy=float(fitted["theirs"].score(x, labels)))
    out(f"sparse  MLPClassifier(solver='sgd') on {x.shape[0]} x {n} ({x.nnz} stored), hidden "
        f"256, 2 epochs: fastnn {row['fit_s']:.3f} s (training accuracy {row['accuracy']:.4f}),"
        f" scikit-learn {row['sklearn_fit_s']:.3f} s ({row['sklearn_accuracy']:.4f}): "
        f"{ratio:.1f}x faster")
    return [row]


def bench_text(*, max_iter=10, rounds=3, settle=SETTLE, out=print):
    """Paired: ``MLPClassifier()`` (Adam, hidden 100, batch 200, ``max_iter`` epochs) against
    scikit-learn's on ``text_problem``; test accuracies; fastnn's peak memory of a fit."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    import fastnn

    xtr, ytr, xte, yte = text_problem()
    kw = dict(max_iter=max_iter, random_state=0)
    ours, theirs = fastnn.MLPClassifier(**kw), SkMLP(**kw)
    fitted = {}

    def fit(model, key):
        return quiet_fit(fitted, key, model, xtr, ytr)

    fit(ours, "ours")()
    tracemalloc.start()
    t0 = time.perf_counter()
    fit(ours, "ours")()
    traced_s = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ratio, ta, tb = paired_ratio(fit(ours, "ours"), fit(theirs, "theirs"), rounds=rounds,
                                 budget=0.0, settle=settle)
    dense = xtr.shape[0] * xtr.shape[1] * 8
    row = dict(bench="sparse-text", ran=fitted["ours"].kernel_, rows=xtr.shape[0],
               features=xtr.shape[1], stored=int(xtr.nnz),
               density=float(xtr.nnz / (xtr.shape[0] * xtr.shape[1])), hidden=100,
               epochs=max_iter, fit_s=float(np.median(ta)), sklearn_fit_s=float(np.median(tb)),
               x_vs_sklearn=ratio, accuracy=float(fitted["ours"].score(xte, yte)),
               sklearn_accuracy=float(fitted["theirs"].score(xte, yte)),
               peak_bytes=int(peak), dense_bytes=int(dense), traced_fit_s=traced_s)
    out(f"sparse  text ({xtr.shape[0]} TF-IDF rows x {xtr.shape[1]}, {100 * row['density']:.2f}%"
        f" stored), MLPClassifier() Adam {max_iter} epochs: fastnn {row['fit_s']:.2f} s (test "
        f"accuracy {row['accuracy']:.4f}), scikit-learn {row['sklearn_fit_s']:.2f} s "
        f"({row['sklearn_accuracy']:.4f}): {ratio:.2f}x faster; fastnn's peak memory "
        f"{peak / 2**20:.0f} MiB, the dense matrix {dense / 2**20:.0f} MiB")
    return [row]


BENCHES = {"sparse-scaling": bench_scaling, "sparse-sklearn": bench_sklearn,
           "sparse-lazy": bench_lazy, "sparse-text": bench_text}
