"""The command line: `fastnn train` (default run, --data, --plot) and `fastnn info`."""
import re
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import cli


def _run(*args):
    return subprocess.run([sys.executable, "-m", "fastnn", *args], capture_output=True, text=True,
                          timeout=300)


def test_train_seed_experiment_short():
    res = _run("train", "--iters", "5")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "m=64, n=1000, hidden=100, out=10" in out
    ran = re.search(r"kernel      auto \(ran ([\w-]+)[;:].*dtype float64", out)
    assert ran and ran.group(1) in fastnn.kernels.available(), out
    first, last = [float(w.rstrip(",")) for w in out.split("loss        first ")[1].split()[:3:2]]
    assert last < first


def test_train_options_in_process(capsys):
    assert cli.main(["train", "--m", "9", "--n", "5", "--hidden", "4", "--out", "2", "--iters", "3",
                     "--dtype", "float32", "--kernel", "naive", "--threads", "1", "--lr", "0.01",
                     "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "iter     " not in out  # --quiet: no progress lines
    assert "kernel      naive, dtype float32, threads 1" in out


def test_train_data_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.standard_normal((30, 6)), y=rng.standard_normal(30))
    assert cli.main(["train", "--data", str(path), "--hidden", "5", "--iters", "4",
                     "--lr", "0.01"]) == 0
    assert "m=30, n=6, hidden=5, out=1" in capsys.readouterr().out


def test_train_data_file_problems(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((3, 2)))
    with pytest.raises(SystemExit, match="missing array.*y"):
        cli.main(["train", "--data", str(path)])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(SystemExit, match="cannot read"):
        cli.main(["train", "--data", str(tmp_path / "bad.npz")])
    np.savez(path, x=np.ones((3, 2)), y=np.array([1.0, np.nan, 2.0]))
    with pytest.raises(SystemExit, match="array y has nan at row 2"):
        cli.main(["train", "--data", str(path), "--hidden", "2"])


def test_train_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curve.png"
    res = _run("train", "--iters", "5", "--plot", str(png), "--quiet")
    assert res.returncode == 0, res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(SystemExit, match="matplotlib"):
        cli.main(["train", "--iters", "1", "--plot", "x.png"])


def test_bad_option_values():
    res = _run("train", "--iters", "0")
    assert res.returncode == 2 and "positive" in res.stderr
    res = _run("train", "--kernel", "nope")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_info():
    res = _run("info")
    assert res.returncode == 0, res.stderr
    for word in ("numpy", "numba", "numba layer", "blas", "threads", "cpu", "kernels"):
        assert word in res.stdout
    from fastnn import machine
    simd = next(line for line in res.stdout.splitlines() if line.startswith("simd"))
    has = "avx512_bf16" in machine.cpu_flags()  # the line agrees with /proc/cpuinfo
    assert ("AVX512_BF16: yes" if has else "AVX512_BF16: no") in simd or not machine.cpu_flags()


def test_bench_small(tmp_path):
    out = tmp_path / "b.json"
    res = _run("bench", "--shapes", "5x7x3x2", "--dtype", "float32,float64", "--rounds", "1",
               "--budget", "0.001", "--settle", "0", "--stages", "forward,backward,step,train",
               "--json", str(out))
    assert res.returncode == 0, res.stderr
    import json

    report = json.loads(out.read_text())
    kernels = {r["kernel"] for r in report["rows"]}
    assert kernels == set(fastnn.kernels.names())
    for r in report["rows"]:
        assert r["shape"] == [5, 7, 3, 2] and r["us"] > 0 and r["x_vs_numpy"] > 0
        assert r["gflops"] > 0 and 0 < r["pct_peak"]
    assert set(report["peak_gflops"]) == {"float32", "float64"}
    assert "x numpy" in res.stdout


def test_bench_pairs_other_activations_with_relu(tmp_path):
    out = tmp_path / "b.json"
    res = _run("bench", "--shapes", "5x7x3x2", "--kernels", "fused", "--activation",
               "relu,tanh,logistic", "--rounds", "1", "--budget", "0.001", "--settle", "0",
               "--json", str(out))
    assert res.returncode == 0, res.stderr
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [r["activation"] for r in rows] == ["relu", "tanh", "logistic"]
    assert "x_relu" not in rows[0] and all(r["x_relu"] > 0 for r in rows[1:])
    assert "fused+tanh" in res.stdout and "x relu" in res.stdout


def test_bench_train_lbfgs_on_digits(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "b.json"
    res = _run("bench-train", "--benches", "digits-lbfgs", "--rounds", "1", "--settle", "0",
               "--json", str(out))
    assert res.returncode == 0, res.stderr
    import json

    (row,) = json.loads(out.read_text())["rows"]
    assert row["n_iter"] == row["sklearn_n_iter"] == 200
    assert abs(row["accuracy"] - row["sklearn_accuracy"]) < 0.01
    assert row["x_vs_sklearn"] > 0 and row["x_vs_sklearn_one_thread"] > 0


def test_bench_bad_shape():
    res = _run("bench", "--shapes", "3x4")
    assert res.returncode != 0 and "MxNxHxK" in res.stderr


def test_train_csv_classify_with_text_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3))
    names = np.array(["cat", "dog"])[(x[:, 0] > 0).astype(int)]
    path = tmp_path / "d.csv"
    lines = ["a,label,b,c"] + [f"{r[0]},{n},{r[1]},{r[2]}" for r, n in zip(x, names)]
    path.write_text("\n".join(lines) + "\n")
    assert cli.main(["train", "--data", str(path), "--target", "label", "--task", "classify",
                     "--hidden", "16", "--epochs", "60", "--batch-size", "16", "--optimizer",
                     "adam", "--lr", "0.01", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "m=60, n=3, hidden=16, out=2" in out
    acc = float(out.split("accuracy    train ")[1].split()[0])
    assert acc > 0.9


def test_train_csv_problems(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(SystemExit, match="no column 'y'"):
        cli.main(["train", "--data", str(path)])
    path.write_text("a,y\n1,cat\n3,dog\n")
    with pytest.raises(SystemExit, match="--task classify"):
        cli.main(["train", "--data", str(path), "--hidden", "2", "--iters", "1"])
    path.write_text("a,y\nx,1\n3,2\n")
    with pytest.raises(SystemExit, match="must be numbers"):
        cli.main(["train", "--data", str(path)])


def test_train_digits_reports_test_accuracy(capsys):
    pytest.importorskip("sklearn")
    assert cli.main(["train", "--dataset", "digits", "--epochs", "30", "--batch-size", "64",
                     "--optimizer", "adam", "--dtype", "float32", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert float(out.split("accuracy    test ")[1].split()[0]) > 0.93


def test_train_checkpoint_and_resume(tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    common = ["train", "--m", "40", "--n", "5", "--hidden", "6", "--out", "2", "--batch-size",
              "8", "--lr", "0.01", "--quiet"]
    assert cli.main(common + ["--epochs", "2", "--checkpoint", str(ck),
                              "--checkpoint-every", "3"]) == 0
    assert cli.main(common + ["--epochs", "4", "--resume", str(ck), "--checkpoint",
                              str(tmp_path / "end.npz")]) == 0
    assert cli.main(common + ["--epochs", "4", "--checkpoint", str(tmp_path / "full.npz")]) == 0
    from fastnn.checkpoint import load

    a, b = load(tmp_path / "end.npz"), load(tmp_path / "full.npz")
    assert a.step == b.step == 20
    for p, q in zip(a.params, b.params):
        np.testing.assert_array_equal(p, q)


def test_train_epochs_plot_with_validation(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curve.png"
    res = _run("train", "--m", "50", "--n", "4", "--hidden", "5", "--out", "1", "--epochs", "5",
               "--batch-size", "10", "--lr", "0.01", "--validation-fraction", "0.2", "--plot",
               str(png))
    assert res.returncode == 0, res.stderr
    assert "validation  loss" in res.stdout
    assert "step/s" in res.stderr  # the progress bar
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_digits_without_scikit_learn_is_a_clear_message(monkeypatch):
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    with pytest.raises(SystemExit, match="needs scikit-learn"):
        cli.main(["train", "--dataset", "digits", "--epochs", "1"])


def test_build_fills_the_cache_with_what_auto_runs(capsys):
    from fastnn import kernels
    from fastnn.auto import build as background

    if not kernels.jit.CACHE:
        pytest.skip("Numba's on-disk cache is off (FASTNN_CACHE=0): nothing to build into")
    assert cli.main(["build", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "cache" in out and ("ready already" in out or "built" in out)
    assert all(kernels.ready(t, "float64") for t in background.targets())
    assert kernels.ready("sparse", "float64")  # fastnn build includes the sparse rung
    assert "sparse" not in background.targets()  # the background build does not
    assert cli.main(["build", "--dtype", "float16"]) == 2
    assert "expected float32, float64 and/or bfloat16" in capsys.readouterr().err
    assert cli.main(["build", "--dtype", "bfloat16"]) == 0  # the bf16 rung this CPU runs
    assert kernels.ready("bf16" if kernels.bf16.bf.NATIVE else "bf16-emulated", "float32")
