"""kernel="auto": it runs the variant it measured fastest, remembers the choice on disk, and never
trusts a choice file that is corrupt or was written for another machine."""
import json
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import autotune
from fastnn.auto import policy
from conftest import assert_same_numbers, make_problem, tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding


@pytest.fixture
def tune_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_TUNE_DIR", str(tmp_path))
    monkeypatch.setattr(policy, "WARM_UP", 0.002)  # keep the measurement short in tests
    monkeypatch.setattr(autotune, "MEASURE_FLOPS", 0)  # measure even the tests' small shapes
    autotune.forget()
    yield tmp_path
    autotune.forget()


def test_auto_runs_the_chosen_variant_and_remembers_it(tune_dir):
    x, y, params = make_problem(11, 13, 17, 3, np.float64)
    fastnn.sgd_step(params.copy(), x, y, 1e-2, kernel="auto")  # a training step measures
    loss, grads = fastnn.loss_and_grads(params, x, y, kernel="auto")
    stored = json.loads((tune_dir / "tune.json").read_text())
    (key, entry), = stored["choices"].items()
    assert key == f"11x13x17x3/float64/t{fastnn.get_num_threads()}"
    assert entry["kernel"] in autotune.candidates()
    assert set(entry["us"]) == set(autotune.ready(np.float64))
    assert {"numpy", "fused-wide"} <= set(entry["us"])
    assert min(entry["us"], key=entry["us"].get) == entry["kernel"]
    chosen = entry["kernel"]
    want_loss, want_grads = fastnn.loss_and_grads(params, x, y, kernel=chosen)
    tol = tolerance(np.float64, 11, 13, 17, 3)
    assert_same_numbers(loss, want_loss, chosen, tol)
    for g, w in zip(grads, want_grads):
        assert_same_numbers(g, w, chosen, tol)
    # and steps/predict/train go the same way
    p1, p2 = params.copy(), params.copy()
    assert_same_numbers(fastnn.sgd_step(p1, x, y, 1e-2, kernel="auto"),
                        fastnn.sgd_step(p2, x, y, 1e-2, kernel=chosen), chosen, tol)
    assert_same_numbers(fastnn.predict(params, x, kernel="auto"),
                        fastnn.predict(params, x, kernel=chosen), chosen, tol)
    run = fastnn.train(x, y, iters=3, lr=1e-2, params=params, kernel="auto")
    assert run.kernel == "auto" and np.isfinite(run.losses).all()


def test_a_new_process_reads_the_remembered_choice(tune_dir):
    x, y, params = make_problem(5, 4, 3, 2, np.float32)
    fastnn.sgd_step(params, x, y, 1e-2, kernel="auto")
    path = tune_dir / "tune.json"
    data = json.loads(path.read_text())
    key = next(iter(data["choices"]))
    # plant a choice the measurement would not make: a new process must use it, not re-measure
    data["choices"][key] = {"kernel": "naive",
                            "us": {name: 1.0 for name in autotune.candidates()}}
    path.write_text(json.dumps(data))
    code = ("import numpy as np, fastnn\nfrom fastnn import autotune\n"
            "autotune.measure = None  # would raise if called\n"
            "autotune.MEASURE_FLOPS = 0\n"
            "x = np.ones((5, 4), np.float32); y = np.ones((5, 2), np.float32)\n"
            "p = fastnn.init_params(4, 3, 2, dtype=np.float32)\n"
            "fastnn.sgd_step(p, x, y, 0.1, kernel='auto')\n"
            "print(autotune._memory)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "FASTNN_TUNE_DIR": str(tune_dir)})
    assert res.returncode == 0, res.stderr
    assert "'naive'" in res.stdout


@pytest.mark.parametrize("content", ["{not json", '{"fingerprint": "another machine", '
                                     '"choices": {"5x4x3x2/float64/t2": {"kernel": "naive"}}}',
                                     '[1, 2]', '{"fingerprint": null, "choices": 7}'])
def test_corrupt_or_foreign_choice_files_are_ignored(tune_dir, content):
    (tune_dir / "tune.json").write_text(content)
    x, y, params = make_problem(5, 4, 3, 2, np.float64)
    fastnn.sgd_step(params, x, y, 1e-2, kernel="auto")  # measures, does not crash
    data = json.loads((tune_dir / "tune.json").read_text())
    assert data["fingerprint"] == fastnn.machine.fingerprint()


def test_unwritable_tune_dir_still_works(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FASTNN_TUNE_DIR", str(blocker / "sub"))  # cannot be created
    monkeypatch.setattr(policy, "WARM_UP", 0.002)
    monkeypatch.setattr(autotune, "MEASURE_FLOPS", 0)
    autotune.forget()
    x, y, params = make_problem(5, 4, 3, 2, np.float64)
    fastnn.sgd_step(params, x, y, 1e-2, kernel="auto")
    entry = autotune.tune((5, 4, 3, 2), np.float64)  # reports its measurement all the same
    assert entry["kernel"] in autotune.candidates() and set(entry["us"]) == set(
        autotune.candidates())
    autotune.forget()


def test_tune_command(tune_dir):
    env = {**__import__("os").environ, "FASTNN_TUNE_DIR": str(tune_dir)}
    res = subprocess.run([sys.executable, "-m", "fastnn", "tune", "--shapes", "6x5x4x3",
                          "--dtype", "float32"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "6x5x4x3" in res.stdout and "float32" in res.stdout
    show = subprocess.run([sys.executable, "-m", "fastnn", "tune", "--show"], capture_output=True,
                          text=True, env=env)
    assert "6x5x4x3/float32" in show.stdout
    subprocess.run([sys.executable, "-m", "fastnn", "tune", "--clear"], env=env, check=True)
    assert not (tune_dir / "tune.json").exists()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_auto_minibatch_training_is_the_chosen_variants_run(tune_dir, optimizer):
    """Minibatch training with kernel="auto" measures on the batch shape, then runs exactly
    what the chosen variant runs (its compiled loop, plain SGD or any optimiser)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 9))
    labels = rng.integers(0, 4, 70)
    kw = dict(hidden=12, epochs=3, batch_size=16, lr=0.01, loss="softmax", seed=1,
              optimizer=optimizer)
    auto = fastnn.train(x, labels, kernel="auto", **kw)
    (entry,) = autotune._memory.values()
    choice = entry["kernel"]
    direct = fastnn.train(x, labels, kernel=choice, **kw)
    np.testing.assert_array_equal(auto.losses, direct.losses)
    for a, b in zip(auto.params, direct.params):
        np.testing.assert_array_equal(a, b)


def test_small_problems_run_fused_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_TUNE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "measure", None)  # would raise if called
    autotune.forget()
    x, y, params = make_problem(9, 7, 5, 3, np.float64)
    assert autotune.step_flops(9, 7, 5, 3) < autotune.MEASURE_FLOPS
    p1, p2 = params.copy(), params.copy()
    assert_same_numbers(fastnn.sgd_step(p1, x, y, 1e-2, kernel="auto"),
                        fastnn.sgd_step(p2, x, y, 1e-2, kernel=autotune.SMALL_CHOICE),
                        autotune.SMALL_CHOICE, tolerance(np.float64, 9, 7, 5, 3))
    assert not (tmp_path / "tune.json").exists()


def test_ready_candidates(tune_dir):
    """numpy and the primary routes are always ready; tiled once its step is compiled for the
    dtype."""
    from fastnn.kernels import tiled

    assert {"numpy", "fused-wide"} <= set(autotune.ready(np.float32))
    x, y, params = make_problem(5, 4, 3, 2, np.float32)
    fastnn.sgd_step(params, x, y, 1e-2, kernel="tiled")
    assert any(sig[0].dtype.name == "float32" for sig in tiled.step.signatures)
    assert "tiled" in autotune.ready(np.float32)


def test_a_new_process_finds_variants_in_the_disk_cache():
    """A variant compiled by an earlier process is ready in a new one (read from Numba's cache
    index, without loading it)."""
    if not fastnn.kernels.jit.CACHE:
        pytest.skip("Numba's on-disk cache is off (FASTNN_CACHE=0)")
    compile_ = ("import numpy as np, fastnn\n"
                "x = np.ones((5, 4)); y = np.ones((5, 2))\n"
                "fastnn.sgd_step(fastnn.init_params(4, 3, 2), x, y, 0.1, kernel='tiled')\n")
    subprocess.run([sys.executable, "-c", compile_], check=True)
    check = ("import numpy as np\nfrom fastnn import autotune\nfrom fastnn.kernels import tiled\n"
             "ready = autotune.ready(np.float64)\n"
             "print(sorted(ready), len(tiled.step.signatures))\n")
    res = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "'tiled'" in res.stdout and res.stdout.strip().endswith(" 0"), res.stdout


def test_a_remembered_choice_is_measured_again_when_a_candidate_becomes_ready(tune_dir):
    x, y, params = make_problem(6, 5, 4, 3, np.float64)
    key = f"6x5x4x3/float64/t{fastnn.get_num_threads()}"
    # a choice made when only numpy had been measured
    (tune_dir / "tune.json").write_text(json.dumps({
        "fingerprint": fastnn.machine.fingerprint(),
        "choices": {key: {"kernel": "numpy", "us": {"numpy": 1.0}}}}))
    fastnn.sgd_step(params, x, y, 1e-2, kernel="auto")
    entry = json.loads((tune_dir / "tune.json").read_text())["choices"][key]
    assert set(entry["us"]) == set(autotune.ready(np.float64)) and "fused-wide" in entry["us"]


def test_predict_and_loss_and_grads_never_measure(tune_dir, monkeypatch):
    """On a shape training has not stepped on (a whole data set, a validation split) they use
    the choice made for the same layers, else fused."""
    x, y, params = make_problem(12, 13, 17, 3, np.float64)
    big_x, big_y, _ = make_problem(40, 13, 17, 3, np.float64, seed=1)
    monkeypatch.setattr(autotune, "measure", lambda *a, **k: {"numpy": 1.0, "fused-wide": 2.0})
    first = fastnn.predict(params, big_x, kernel="auto")  # nothing measured yet: SMALL_CHOICE
    tol = tolerance(np.float64, 40, 13, 17, 3)
    assert_same_numbers(first, fastnn.predict(params, big_x, kernel=autotune.SMALL_CHOICE),
                        autotune.SMALL_CHOICE, tol)
    fastnn.sgd_step(params.copy(), x, y, 1e-2, kernel="auto")  # the "measurement" picks numpy
    monkeypatch.setattr(autotune, "measure", None)  # would raise if called
    assert_same_numbers(fastnn.predict(params, big_x, kernel="auto"),
                        fastnn.predict(params, big_x, kernel="numpy"), "numpy", tol)
    got = fastnn.loss_and_grads(params, big_x, big_y, kernel="auto")
    want = fastnn.loss_and_grads(params, big_x, big_y, kernel="numpy")
    assert_same_numbers(got[0], want[0], "numpy", tol)



def test_auto_runs_one_variant_per_run_and_resume_keeps_it(tune_dir, tmp_path, monkeypatch):
    """train(kernel="auto") chooses once; its checkpoints record the choice, and a resumed run
    continues with that variant even if auto would now choose another: bitwise equal to an
    uninterrupted run."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 9))
    labels = rng.integers(0, 3, 40)
    kw = dict(hidden=8, epochs=4, batch_size=16, lr=0.05, loss="softmax", seed=2,
              optimizer="adam", kernel="auto")
    monkeypatch.setattr(autotune, "choose", lambda *a, **k: "tiled")
    whole = fastnn.train(x, labels, **kw)
    assert whole.kernel == "auto" and whole.ran == "tiled"
    ck = tmp_path / "run.npz"
    fastnn.train(x, labels, **{**kw, "epochs": 2}, checkpoint=str(ck))
    monkeypatch.setattr(autotune, "choose", lambda *a, **k: "naive")  # auto has changed its mind
    resumed = fastnn.train(x, labels, **kw, resume=str(ck))
    assert resumed.ran == "tiled"
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    for a, b in zip(resumed.params, whole.params):
        np.testing.assert_array_equal(a, b)


def test_whole_loop_is_never_dropped_by_auto(tune_dir, monkeypatch):
    """train(kernel="auto", whole_loop=True) runs a variant with compiled loops even where numpy,
    which has none, measured fastest; with whole_loop=None it may run numpy's Python loop."""
    def numpy_wins(params, x, y, names=None, **kw):
        return {name: (1e-6 if name == "numpy" else 2e-6) for name in names}

    monkeypatch.setattr(autotune, "measure", numpy_wins)
    x, y, params = make_problem(30, 20, 10, 3, np.float64)
    kw = dict(iters=3, lr=1e-3, params=params, kernel="auto")
    assert fastnn.train(x, y, **kw).ran == "numpy"
    forced = fastnn.train(x, y, whole_loop=True, **kw)
    assert forced.ran != "numpy" and fastnn.kernels.get(forced.ran).whole_loop


def test_resolve_turns_every_name_into_a_variant(tune_dir):
    x, y, params = make_problem(8, 5, 4, 2, np.float64)
    for name in fastnn.kernels.names(reference=True):
        assert autotune.resolve(name, params, x, y).name == name
    auto = autotune.resolve("auto", params, x, y)
    assert auto.name in autotune.candidates() + [autotune.SMALL_CHOICE]
    with pytest.warns(FutureWarning, match="chunked"):
        assert autotune.resolve("blas", params, x, y).name == "chunked"
    with pytest.raises(ValueError, match="not a variant"):
        fastnn.kernels.get("auto")


def test_a_kernel_on_another_thread_pool_must_win_by_the_margin():
    """auto's pick: the fastest, but a kernel whose threads are not numpy's own BLAS pool
    (tiled's Numba workers, MKL's) must beat the best one on numpy's pool by
    OTHER_POOL_MARGIN, since alternating it with the user's numpy calls costs both sides."""
    from fastnn.auto import policy

    pools = {v.name: v.pool for v in fastnn.kernels.variants()}
    own = [n for n in autotune.candidates() if pools[n] == "numpy"]
    other = [n for n in autotune.candidates() if pools[n] != "numpy"]
    assert "numpy" in own and "tiled" in other
    close = 1.0 / (0.5 * (1 + policy.OTHER_POOL_MARGIN))  # ahead, but by less than the margin
    assert autotune.pick({"numpy": 1.0, "tiled": close}) == "numpy"
    assert autotune.pick({"numpy": 1.0, "tiled": 0.8}) == "tiled"
    compiled_own = next(n for n in own if n != "numpy")  # fused-wide (its -openblas twin: MKL)
    assert autotune.pick({"numpy": 1.0, compiled_own: 0.99, "tiled": 0.95}) == compiled_own
    assert autotune.pick({"tiled": 2.0, "chunked": 1.0}) == "chunked"  # no numpy-pool timing


# --- honest measurements: busy ones not reused, drift forgotten ------------------------------


def test_a_busy_measurement_is_kept_in_process_but_not_reused_from_disk(monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 200)), rng.standard_normal((300, 4))
    p = fastnn.init_params(200, 64, 4, seed=0)
    autotune.forget()

    def busy_measure(params, x, y, names=None, spreads=None, **kw):
        spreads.update({n: 3.0 for n in names})
        return {n: 1e-3 * (i + 1) for i, n in enumerate(names)}

    monkeypatch.setattr(autotune, "measure", busy_measure)
    first = autotune.choose(p, x, y)
    key = next(iter(autotune.remembered()))
    assert autotune.remembered()[key]["busy"]
    assert autotune.choose(p, x, y) == first  # this process keeps it
    autotune._memory.clear()  # a new process ...
    calls = []
    monkeypatch.setattr(autotune, "measure", lambda *a, **k: calls.append(1) or
                        busy_measure(*a, **k))
    autotune.choose(p, x, y)
    assert calls  # ... measures again
    autotune.forget()


def test_a_run_far_from_its_remembered_timing_drops_it():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 300)), rng.standard_normal((256, 3))
    p = fastnn.init_params(300, 64, 3, seed=0)
    autotune.forget()
    name = autotune.choose(p, x, y)
    key = next(iter(autotune.remembered()))
    us = autotune.remembered()[key]["us"][name]
    autotune.note_run(p, 256, name, fastnn.get_num_threads(), us * 1e-6 * 1.2)
    assert key in autotune.remembered()  # within the drift
    autotune.note_run(p, 256, name, fastnn.get_num_threads(), us * 1e-6 * 10)
    assert key not in autotune.remembered() and key not in autotune._memory


def test_a_choice_whose_loops_are_not_compiled_stands(tune_dir, monkeypatch):
    """A choice measured on ``sgd_step`` calls (its step compiled, its training loops not) is
    used by the next calls, not measured again on each (it was: 1.3 s a call), with the
    background build on, as users have it (no child started here)."""
    from fastnn.auto import build
    from fastnn.kernels import tiled

    monkeypatch.setattr(build, "enabled", lambda: True)
    monkeypatch.setattr(build, "start", lambda *a, **k: False)

    x, y, params = make_problem(7, 6, 5, 2, np.float32)
    fastnn.sgd_step(params.copy(), x, y, 1e-3, kernel="tiled")  # its step only
    assert not fastnn.kernels.ready("tiled", np.float32) or tiled.train_loop_optim.signatures
    calls = []

    def tiled_wins(params, x, y, names=None, spreads=None, **kw):
        calls.append(1)
        spreads.update({n: 1.0 for n in names})
        return {n: (1e-6 if n == "tiled" else 1e-3) for n in names}

    monkeypatch.setattr(autotune, "measure", tiled_wins)
    monkeypatch.setattr(policy, "OTHER_POOL_MARGIN", 1.0)
    for _ in range(3):
        fastnn.sgd_step(params, x, y, 1e-3, kernel="auto")
    assert calls == [1] and autotune.choose(params, x, y) == "tiled"
