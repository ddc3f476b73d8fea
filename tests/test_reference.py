"""The reference itself: its gradients against central finite differences, and the seed's bugs."""
import numpy as np
import pytest

import fastnn
from fastnn import reference


def _loss(params, x, y, loss="squared"):
    return reference.loss_and_grads(params, x, y, loss)[0]


def _targets(rng, m, k, loss):
    if loss == "squared":
        return rng.standard_normal((m, k))
    if loss == "softmax":  # one-hot rows
        return np.eye(k)[rng.integers(0, k, m)]
    # softmax with probability rows, and one all-zero row (s_i = 0 in the gradient)
    t = rng.random((m, k))
    t /= t.sum(axis=1, keepdims=True)
    t[0] = 0.0
    return t


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (4, 5, 6, 3), (7, 3, 9, 1), (5, 8, 4, 2)])
@pytest.mark.parametrize("init", ["normal", "he"])
@pytest.mark.parametrize("loss", ["squared", "softmax", "softmax-probabilities"])
def test_gradients_match_central_differences(shape, init, loss):
    m, n, h, k = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((m, n))
    y = _targets(rng, m, k, loss)
    loss = loss.split("-")[0]
    params = fastnn.init_params(n, h, k, init=init, seed=3)
    if init == "he":  # non-zero biases so that db is tested on generic values
        params.b1[:] = rng.standard_normal(h)
        params.b2[:] = rng.standard_normal(k)
    z1 = x @ params.w1 + params.b1
    # A step of eps must not cross the ReLU kink, where L is not differentiable.
    assert np.abs(z1).min() > 1e-3
    _, grads = reference.loss_and_grads(params, x, y, loss)
    eps = 1e-6
    for name, p, g in zip(fastnn.Params._fields, params, grads):
        fd = np.empty_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            up = _loss(params, x, y, loss)
            p[idx] = old - eps
            down = _loss(params, x, y, loss)
            p[idx] = old
            fd[idx] = (up - down) / (2 * eps)
        # Central differences err by O(eps**2 * L''') ~ 1e-12 from truncation and by
        # ~u*|L|/eps ~ 1e-10*|L| from rounding; 1e-6 relative leaves a wide margin and would still
        # catch any wrong factor (the seed's /m, a missing 2, a wrong mask).
        scale = max(np.abs(fd).max(), 1.0)
        assert np.abs(g - fd).max() <= 1e-6 * scale, name


def test_relu_backward_is_a_mask_not_a_clamp():
    # One sample, one hidden unit with z1 > 0 and a negative upstream gradient: the seed's
    # max(da1, 0) would give 0, the true gradient is negative.
    x = np.array([[1.0]])
    y = np.array([[10.0]])
    params = fastnn.Params(np.array([[1.0]]), np.array([0.0]), np.array([[1.0]]), np.array([0.0]))
    _, g = reference.loss_and_grads(params, x, y)
    # z2 = 1, dz2 = 2 * (1 - 10) = -18, dz1 = -18 * w2 = -18, dw1 = x * dz1
    assert g.w1[0, 0] == -18.0 and g.b1[0] == -18.0


def test_bias_gradients_are_per_unit_batch_sums():
    x, y = np.eye(3), np.zeros((3, 2))
    params = fastnn.init_params(3, 4, 2, init="normal", seed=0)
    loss, g = reference.loss_and_grads(params, x, y)
    assert g.b1.shape == (4,) and g.b2.shape == (2,)
    z2 = reference.predict(params, x)
    np.testing.assert_allclose(g.b2, (2 / 3) * z2.sum(axis=0), rtol=1e-14)
