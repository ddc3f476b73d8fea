"""The command line and the files it reads and writes, as a user meets them: no data lost, no
silent wrong answer, clear errors, checkpoints usable as models, data sets, the progress bar.
Command-line cases run the real command in a subprocess and check the exit status, the message,
that no traceback is shown and that the user's files are intact."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn
from fastnn import checkpoint as ckpt_io

IRIS_LIKE = "f1,f2,f3,species\n" + "".join(
    f"{a:.2f},{b:.2f},{c:.2f},{s}\n"
    for a, b, c, s in zip(np.linspace(0, 1, 60), np.linspace(1, 0, 60) ** 2,
                          np.tile([0.1, 0.5, 0.9], 20), np.repeat(["setosa", "virginica",
                                                                   "versicolor"], 20)))


def _run(*args, cwd=None, timeout=300):
    res = subprocess.run([sys.executable, "-m", "fastnn", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=cwd)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    return res


@pytest.fixture
def iris(tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text(IRIS_LIKE)
    return path


# --- data lost ----------------------------------------------------------------------------------

def test_a_checkpoint_never_replaces_the_data_or_another_file(iris, tmp_path):
    before = iris.read_bytes()
    res = _run("train", "--data", str(iris), "--target", "species", "--task", "classify",
               "--epochs", "2", "--checkpoint", str(iris))
    assert res.returncode != 0 and "not a fastnn checkpoint" in res.stderr
    assert iris.read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    res = _run("train", "--iters", "2", "--checkpoint", str(notes))
    assert res.returncode != 0 and "refusing to replace" in res.stderr
    assert notes.read_text() == "mine"
    x, y = np.ones((4, 2)), np.ones(4)
    with pytest.raises(ckpt_io.CheckpointError, match="not a fastnn checkpoint"):
        fastnn.train(x, y, hidden=2, iters=1, lr=0.1, checkpoint=notes)
    assert notes.read_text() == "mine"


def test_an_estimator_never_saves_over_another_file(tmp_path):
    target = tmp_path / "data.npz"
    np.savez(target, x=np.ones(3))
    before = target.read_bytes()
    clf = fastnn.MLPClassifier(4, max_iter=2, random_state=0).fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(ckpt_io.CheckpointError, match="not a fastnn checkpoint"):
        clf.save(target)
    assert target.read_bytes() == before
    clf.save(tmp_path / "model.npz")
    clf.save(tmp_path / "model.npz")  # a checkpoint may be replaced


TRAIN_LONG = ["train", "--iters", "400000", "--m", "64", "--n", "256", "--hidden", "128", "--out",
              "4", "--quiet"]


def _interrupt(args, ck, cwd):
    proc = subprocess.Popen([sys.executable, "-m", "fastnn", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ck.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_ctrl_c_stops_at_a_step_writes_the_checkpoint_and_says_how_to_resume(tmp_path):
    ck = tmp_path / "run.npz"
    code, out, err = _interrupt(TRAIN_LONG + ["--checkpoint", str(ck), "--checkpoint-every",
                                              "2000"], ck, tmp_path)
    assert code == 130, err
    assert "Traceback" not in err and "interrupted after step" in err
    assert f"fastnn train --resume {ck}" in err
    state = ckpt_io.load(ck)
    assert 0 < state.step < 400000 and state.losses.shape == (state.step,)
    step = state.step
    res = _run("train", "--resume", str(ck), "--iters", str(step + 10), "--quiet")
    assert res.returncode == 0, res.stderr
    assert f"resumed     from step {step}" in res.stdout
    assert f"({step + 10} steps" in res.stdout


def test_ctrl_c_without_a_checkpoint_says_nothing_was_saved(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "fastnn", *TRAIN_LONG], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "nothing saved" in err and "Traceback" not in err


def test_train_raises_training_interrupted_with_the_result(tmp_path):
    """In Python, Ctrl-C ends train() at a step boundary with TrainingInterrupted (a
    KeyboardInterrupt) carrying the result and the checkpoint it wrote."""
    ck = tmp_path / "ck.npz"
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 16)), rng.standard_normal((32, 2))
    seen = []

    def press(t, loss):
        seen.append(t)
        if t == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(fastnn.TrainingInterrupted) as info:
        fastnn.train(x, y, hidden=8, iters=10_000, lr=1e-3, seed=0, checkpoint=ck,
                     callback=press, callback_every=1)
    result = info.value.result
    assert isinstance(info.value, KeyboardInterrupt) and result.interrupted
    assert result.n_steps == len(seen) >= 6 and info.value.checkpoint == str(ck)
    assert ckpt_io.load(ck).step == result.n_steps
    cont = fastnn.train(x, y, hidden=8, iters=20, lr=1e-3, resume=ck)
    whole = fastnn.train(x, y, hidden=8, iters=20, lr=1e-3, seed=0)
    np.testing.assert_array_equal(cont.losses, whole.losses)


# --- silent wrong answers -------------------------------------------------------------------------

def test_missing_labels_are_an_error_naming_the_rows_or_dropped_on_request(tmp_path):
    path = tmp_path / "d.csv"
    lines = IRIS_LIKE.splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ","
    lines[7] = lines[7].rsplit(",", 1)[0] + ",NA"
    path.write_text("\n".join(lines) + "\n")
    args = ["train", "--data", str(path), "--target", "species", "--task", "classify",
            "--epochs", "2"]
    res = _run(*args)
    assert res.returncode != 0 and "missing label" in res.stderr
    assert "lines 4, 8" in res.stderr and "--drop-missing" in res.stderr
    res = _run(*args, "--drop-missing", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "dropped 2 row(s)" in res.stderr and "out=3" in res.stdout


def test_integer_labels_with_the_default_task_get_a_hint(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.standard_normal((60, 3)), y=rng.integers(0, 3, 60))
    res = _run("train", "--data", str(path), "--epochs", "1", "--quiet")
    assert res.returncode == 0 and "--task classify" in res.stderr


# --- errors -----------------------------------------------------------------------------------

def test_output_paths_are_checked_before_training(tmp_path, iris):
    res = _run("train", "--iters", "3", "--checkpoint", str(tmp_path / "nodir" / "run.npz"))
    assert res.returncode != 0 and "does not exist" in res.stderr and "loss" not in res.stdout
    res = _run("train", "--iters", "3", "--plot", str(tmp_path / "nodir" / "c.png"))
    assert res.returncode != 0 and "does not exist" in res.stderr and "loss" not in res.stdout
    before = iris.read_bytes()
    res = _run("train", "--iters", "3", "--plot", str(iris))
    assert res.returncode != 0 and "not a PNG" in res.stderr and iris.read_bytes() == before


def test_bad_values_in_a_csv_name_the_line_and_the_column(tmp_path):
    path = tmp_path / "d.csv"
    lines = IRIS_LIKE.splitlines()
    lines[5] = "0.1,,0.3,setosa"
    path.write_text("\n".join(lines) + "\n")
    res = _run("train", "--data", str(path), "--target", "species", "--task", "classify")
    assert res.returncode != 0 and "line 6, column 'f2': missing value" in res.stderr
    lines[5] = "0.1,tall,0.3,setosa"
    path.write_text("\n".join(lines) + "\n")
    res = _run("train", "--data", str(path), "--target", "species", "--task", "classify")
    assert res.returncode != 0 and "line 6, column 'f2': 'tall' is not a number" in res.stderr


def test_spreadsheet_csv_files_semicolons_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeff".encode() + IRIS_LIKE.replace(",", ";").encode())
    res = _run("train", "--data", str(path), "--target", "species", "--task", "classify",
               "--epochs", "1", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "n=3" in res.stdout and "out=3" in res.stdout


def test_ctrl_c_before_training_is_not_a_traceback(tmp_path):
    """Ctrl-C while the command is still starting (imports, data, the first compile) ends it with
    status 130 and a line, not a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "fastnn", "bench", "--shapes", "seed",
                             "--rounds", "50"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err


def test_nan_in_npz_data_names_row_and_column_counting_from_1(tmp_path):
    path = tmp_path / "d.npz"
    x = np.ones((5, 3))
    x[2, 1] = np.nan
    np.savez(path, x=x, y=np.ones(5))
    res = _run("train", "--data", str(path))
    assert res.returncode != 0 and "row 3, column 2 (counting from 1)" in res.stderr


@pytest.mark.parametrize("args, words", [
    (["train", "--lr", "0"], "lr: expected a finite number > 0.0, got 0.0"),
    (["train", "--threads", "64", "--iters", "2"], "using"),
])
def test_clear_messages(args, words):
    res = _run(*args)
    assert words in res.stderr, res.stderr


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path, iris):
    res = _run("train", "--resume", str(iris))
    assert res.returncode != 0 and "not a fastnn checkpoint" in res.stderr
    assert "allow_pickle" not in res.stderr


def test_help_and_version():
    res = _run("--help")
    assert res.returncode == 0 and "``" not in res.stdout
    for command in ("train", "predict", "bench", "bench-train", "tune", "info"):
        assert command in res.stdout
    res = _run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"fastnn {fastnn.__version__}"


# --- models you can use ---------------------------------------------------------------------------

def test_a_training_checkpoint_is_a_model(iris, tmp_path):
    ck = tmp_path / "run.npz"
    res = _run("train", "--data", str(iris), "--target", "species", "--task", "classify",
               "--epochs", "60", "--batch-size", "8", "--optimizer", "adam", "--lr", "0.02",
               "--checkpoint", str(ck), "--test-fraction", "0.25", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "accuracy    test" in res.stdout and "held-out" in res.stdout
    new = tmp_path / "new.csv"
    rows = IRIS_LIKE.splitlines()
    # other column order, no label column: columns are matched by name
    new.write_text("f3,f1,f2\n" + "".join(
        f"{r.split(',')[2]},{r.split(',')[0]},{r.split(',')[1]}\n" for r in rows[1:]))
    out = tmp_path / "pred.csv"
    res = _run("predict", "--model", str(ck), "--data", str(new), "--out", str(out), "--proba")
    assert res.returncode == 0, res.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "prediction,p_setosa,p_versicolor,p_virginica"
    labels = [line.split(",")[0] for line in lines[1:]]
    assert set(labels) <= {"setosa", "versicolor", "virginica"} and len(labels) == 60
    clf = fastnn.MLPClassifier.load(ck)
    assert clf.feature_names_in_.tolist() == ["f1", "f2", "f3"]
    x = np.array([[float(v) for v in r.split(",")[:3]] for r in rows[1:]])
    assert clf.predict(x).tolist() == labels
    res = _run("predict", "--model", str(ck), "--data", str(new), "--out", str(new))
    assert res.returncode != 0 and "is the input" in res.stderr


def test_resume_takes_the_settings_from_the_checkpoint(iris, tmp_path):
    ck = tmp_path / "run.npz"
    common = ["--data", str(iris), "--target", "species", "--task", "classify", "--batch-size",
              "8", "--optimizer", "adam", "--lr", "0.01", "--seed", "3", "--quiet"]
    first = _run("train", *common, "--epochs", "2", "--checkpoint", str(ck))
    assert first.returncode == 0, first.stderr
    cont = _run("train", "--resume", str(ck), "--epochs", "5")
    whole = _run("train", *common, "--epochs", "5")
    assert cont.returncode == 0 and whole.returncode == 0, cont.stderr
    assert "resumed     from step 16" in cont.stdout

    def last(out):
        return [line for line in out.splitlines() if line.startswith("loss")][0]

    assert last(cont.stdout) == last(whole.stdout)


# --- data sets ------------------------------------------------------------------------------------

def _idx(array) -> bytes:
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    return head + array.astype(np.uint8).tobytes()


def _fake_idx_set(rng, n_train=120, n_test=40):
    images = rng.integers(0, 256, (n_train + n_test, 4, 4))
    labels = (images[:, 0, 0] > 127).astype(np.uint8) + 2 * (images[:, 1, 1] > 127)
    return {"train_images": _idx(images[:n_train]), "train_labels": _idx(labels[:n_train]),
            "test_images": _idx(images[n_train:]), "test_labels": _idx(labels[n_train:])}


def test_mnist_from_a_folder_of_idx_files(tmp_path):
    from fastnn import data

    files = _fake_idx_set(np.random.default_rng(0))
    for role, blob in files.items():
        name = data.IDX_SETS["mnist"].files[role][0][:-3]  # uncompressed names
        (tmp_path / name).write_bytes(blob)
    x, y, xt, yt, _ = data.load_dataset("mnist", data_dir=str(tmp_path))
    assert x.shape == (120, 16) and xt.shape == (40, 16) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1 and set(y) <= {0, 1, 2, 3}
    res = _run("train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "3",
               "--batch-size", "16", "--hidden", "8", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "accuracy    test" in res.stdout and "(40 held-out samples)" in res.stdout
    gz = tmp_path / "gz"
    gz.mkdir()
    import gzip

    (gz / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(files["train_images"]))
    res = _run("train", "--dataset", "mnist", "--data-dir", str(gz))
    assert res.returncode != 0 and "sha256" in res.stderr


def test_datasets_download_from_a_mirror_once_and_check_sha256(tmp_path, monkeypatch):
    import dataclasses
    import gzip
    import hashlib
    import http.server
    import threading

    from fastnn import data

    served = tmp_path / "mirror"
    served.mkdir()
    files = {}
    for role, blob in _fake_idx_set(np.random.default_rng(1)).items():
        name = data.IDX_SETS["mnist"].files[role][0]
        packed = gzip.compress(blob)
        (served / name).write_bytes(packed)
        files[role] = (name, hashlib.sha256(packed).hexdigest())
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(served), **k)

        def log_message(self, *a):
            requests.append(a)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        spec = dataclasses.replace(data.IDX_SETS["mnist"], mirrors=(
            "http://127.0.0.1:9/nothing-here/", url), files=files)
        monkeypatch.setitem(data.IDX_SETS, "mnist", spec)
        monkeypatch.setenv("FASTNN_DATA_DIR", str(tmp_path / "cache"))
        x, y, xt, yt, _ = data.load_dataset("mnist")
        assert x.shape == (120, 16) and len(requests) == 4
        data.load_dataset("mnist")  # from the cache: no new request
        assert len(requests) == 4
        bad = dataclasses.replace(spec, files={**files, "test_labels": (files["test_labels"][0],
                                                                        "0" * 64)})
        monkeypatch.setitem(data.IDX_SETS, "mnist", bad)
        with pytest.raises(data.DataError, match="wrong sha256"):
            data.load_dataset("mnist")
    finally:
        server.shutdown()


# --- long runs ----------------------------------------------------------------------------------

def test_the_progress_bar_shows_this_blocks_loss_and_the_epoch():
    from fastnn.training import loop
    from fastnn.training.state import RunState

    calls = []

    class Bar:
        def set_postfix(self, post, refresh=False):
            calls.append(("postfix", dict(post)))

        def update(self, n):
            calls.append(("update", n))

    run = loop.Run.__new__(loop.Run)
    run.state = RunState(20, losses=np.arange(20.0), step=7)
    run.per_epoch = 5
    loop._update_bar(Bar(), run, 5)
    assert [c[0] for c in calls] == ["postfix", "update"]
    post = calls[0][1]
    assert post["epoch"] == "2/4" and post["loss"] == "6" and post["epoch mean"] == "5.5"
