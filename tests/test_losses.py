"""The softmax cross-entropy loss: every variant against the reference, stability for large
logits, label handling, and (when installed) PyTorch's cross_entropy as an outside oracle."""
import numpy as np
import pytest

import fastnn
from fastnn import reference
from conftest import SHAPES, VARIANTS, assert_close, make_problem, params_as, tolerance

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]
ALL = VARIANTS + ["reference"]


def _labels(m, k, seed=0):
    return np.random.default_rng(seed).integers(0, k, m)


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_softmax_loss_and_grads(kernel, shape, dtype):
    m, n, h, k = shape
    x, _, params = make_problem(*shape, dtype)
    labels = _labels(m, k)
    loss, grads = fastnn.loss_and_grads(params, x, labels, kernel=kernel, loss="softmax")
    ref_loss, ref_grads = reference.loss_and_grads(
        params_as(params, np.float64), x.astype(np.float64), np.eye(k)[labels], "softmax")
    tol = tolerance(dtype, *shape)
    assert_close(loss, ref_loss, tol, "loss")
    for name, g, r in zip(fastnn.Params._fields, grads, ref_grads):
        assert g.dtype == dtype
        assert_close(g, r, tol, f"d{name}")


@pytest.mark.parametrize("kernel", VARIANTS)
def test_softmax_sgd_step(kernel, dtype):
    shape = (13, 31, 17, 11)
    x, _, params = make_problem(*shape, dtype)
    labels = _labels(13, 11)
    ref = params_as(params, np.float64)
    lr = 0.05
    ref_loss = reference.sgd_step(ref, x.astype(np.float64), np.eye(11)[labels], lr, "softmax")
    loss = fastnn.sgd_step(params, x, labels, lr, kernel=kernel, loss="softmax")
    tol = tolerance(dtype, *shape)
    assert_close(loss, ref_loss, tol, "loss")
    for name, p, r in zip(fastnn.Params._fields, params, ref):
        assert_close(p, r, tol, name)


@pytest.mark.parametrize("kernel", ALL)
@pytest.mark.parametrize("scale", [1e3, 1e30])
def test_softmax_is_stable_for_large_logits(kernel, scale):
    """Logits of 1e3 overflow a naive exp; the max-shifted log-sum-exp gives the exact answer:
    with logits (0, scale) the loss is scale for label 0 and 0 for label 1, and the gradient is
    (p - onehot)/m with p = (0, 1)."""
    params = fastnn.Params(np.zeros((1, 1)), np.array([1.0]), np.array([[0.0, scale]]),
                           np.zeros(2))
    x = np.zeros((2, 1))
    labels = np.array([0, 1])
    loss, grads = fastnn.loss_and_grads(params, x, labels, kernel=kernel, loss="softmax")
    assert loss == pytest.approx(scale / 2, rel=1e-12)
    np.testing.assert_allclose(grads.b2, [-0.5, 0.5], rtol=1e-12)
    assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kernel", VARIANTS)
def test_labels_one_hot_and_probabilities_agree(kernel, dtype):
    x, _, params = make_problem(9, 5, 7, 4, dtype)
    labels = _labels(9, 4, seed=3)
    a = fastnn.loss_and_grads(params, x, labels, kernel=kernel, loss="softmax")
    b = fastnn.loss_and_grads(params, x, np.eye(4)[labels], kernel=kernel, loss="softmax")
    assert a[0] == b[0]
    for g, h in zip(a[1], b[1]):
        np.testing.assert_array_equal(g, h)


@pytest.mark.parametrize("bad, err, match", [
    (np.array([0, 1, 4]), ValueError, r"\[0, 4\)"),
    (np.array([0, -1, 2]), ValueError, r"\[0, 4\)"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "integer class labels"),
    (np.array([0, 1]), ValueError, "expected 3 labels"),
    (-np.eye(4)[:3], ValueError, "non-negative"),
    (np.zeros((3, 3)), ValueError, r"\(3, 4\)"),
])
def test_bad_softmax_targets(bad, err, match):
    x, _, params = make_problem(3, 2, 5, 4, np.float64)
    with pytest.raises(err, match=match):
        fastnn.loss_and_grads(params, x, bad, loss="softmax")


def test_unknown_loss_is_refused():
    x, y, params = make_problem(3, 2, 5, 4, np.float64)
    with pytest.raises(ValueError, match="loss: expected one of"):
        fastnn.loss_and_grads(params, x, y, loss="hinge")


def test_softmax_matches_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    x, _, params = make_problem(17, 6, 9, 5, np.float64)
    labels = _labels(17, 5, seed=7)
    t = [torch.tensor(p, requires_grad=True) for p in params]
    z2 = torch.relu(torch.tensor(x) @ t[0] + t[1]) @ t[2] + t[3]
    out = torch.nn.functional.cross_entropy(z2, torch.tensor(labels))
    out.backward()
    loss, grads = fastnn.loss_and_grads(params, x, labels, loss="softmax")
    assert loss == pytest.approx(out.item(), rel=1e-13)
    for g, tp in zip(grads, t):
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=1e-11, atol=1e-14)
