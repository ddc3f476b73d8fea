"""The fused optimiser kernel against its numpy reference and against torch.optim."""
import numpy as np
import pytest

import fastnn
from fastnn.optim import Optimizer
from conftest import UNIT_ROUNDOFF

# compares variants, BLAS kernels or thread counts to rounding: .ci/run runs these again
# with the AVX2 kernels forced on an AVX-512 machine (tests/conftest.py, the rule)
pytestmark = pytest.mark.rounding

CONFIGS = [
    dict(name="sgd"),
    dict(name="sgd", alpha=0.1),
    dict(name="sgd", momentum=0.9),
    dict(name="sgd", momentum=0.9, nesterov=True, alpha=0.01),
    dict(name="adam"),
    dict(name="adam", alpha=0.05, beta1=0.5, beta2=0.9, eps=1e-3),
    # scikit-learn's form (the estimators'): alpha per batch weight, velocity of steps, eps
    dict(name="sgd", momentum=0.9, alpha=0.1, form="scikit-learn"),
    dict(name="sgd", momentum=0.9, nesterov=True, alpha=0.1, form="scikit-learn",
         l2_weight=3.0),
    dict(name="adam", alpha=0.05, eps=1e-3, form="scikit-learn"),
]
IDS = ["-".join(f"{k}={v}" for k, v in c.items()) for c in CONFIGS]


def _grads_sequence(params, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [fastnn.Params(*(rng.standard_normal(p.shape).astype(p.dtype) for p in params))
            for _ in range(steps)]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 13, 3), (31, 17, 10)])
def test_kernel_matches_reference(config, shape, dtype):
    params = fastnn.init_params(*shape, dtype=dtype, seed=1)
    params.b1[:] = 0.3
    ref = params.copy()
    opt_k = Optimizer(lr=0.05, **config)
    opt_r = Optimizer(lr=0.05, **config)
    u = UNIT_ROUNDOFF[np.dtype(dtype)]
    for grads in _grads_sequence(params, 5):
        pk = opt_k.step(params, grads, 7.0)  # (7 rows: the scikit-learn form's alpha / 7)
        pr = opt_r.reference_step(ref, grads, 7.0)
        assert pk == pytest.approx(pr, rel=1e-6 if dtype == np.float32 else 1e-12)
    for name, a, b in zip(fastnn.Params._fields, params, ref):
        assert a.dtype == dtype
        # 5 steps of a few rounding errors each, relative to the params' scale
        np.testing.assert_allclose(a, b, rtol=0, atol=64 * u * max(1.0, np.abs(b).max()),
                                   err_msg=name)
    assert opt_k.t == 5


# torch.optim is the outside oracle of the torch form only; the scikit-learn form is checked
# against scikit-learn's own optimisers below
TORCH_FORM = [(c, i) for c, i in zip(CONFIGS, IDS) if c.get("form", "torch") == "torch"]


@pytest.mark.parametrize("config", [c for c, _ in TORCH_FORM], ids=[i for _, i in TORCH_FORM])
def test_matches_torch_optim(config):
    torch = pytest.importorskip("torch")
    params = fastnn.init_params(6, 5, 3, seed=2)
    tp = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    name = config["name"]
    kw = dict(config)
    del kw["name"]
    alpha = kw.pop("alpha", 0.0)
    # torch applies weight_decay per parameter group: weights decayed, biases not
    groups = [dict(params=[tp[0], tp[2]], weight_decay=alpha), dict(params=[tp[1], tp[3]])]
    if name == "sgd":
        topt = torch.optim.SGD(groups, lr=0.05, **kw)
    else:
        betas = (kw.pop("beta1", 0.9), kw.pop("beta2", 0.999))
        topt = torch.optim.Adam(groups, lr=0.05, betas=betas, **kw)
    opt = Optimizer(lr=0.05, **config)
    for grads in _grads_sequence(params, 7, seed=5):
        for t, g in zip(tp, grads):
            t.grad = torch.tensor(g)
        topt.step()
        opt.step(params, grads)
    for p, t in zip(params, tp):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("config", [
    dict(name="sgd", momentum=0.9, nesterov=True), dict(name="sgd", momentum=0.5),
    dict(name="sgd"), dict(name="adam", beta1=0.8, beta2=0.95, eps=1e-4)],
    ids=["nesterov", "momentum", "plain", "adam"])
def test_scikit_learn_form_matches_scikit_learn(config):
    """The scikit-learn form against scikit-learn's own MLP optimisers (an outside oracle): its
    gradient carries the L2 term as ``alpha * W / B``, its lr changes between steps (a schedule),
    and the batch size changes (a partial last batch)."""
    pytest.importorskip("sklearn")
    from sklearn.neural_network import _stochastic_optimizers as sk

    params = fastnn.init_params(6, 5, 3, seed=2)
    theirs = [p.copy() for p in params]
    name, alpha = config.pop("name"), 0.3
    if name == "sgd":
        nesterov = config.get("nesterov", False)
        other = sk.SGDOptimizer(theirs, 0.05, "constant", config.get("momentum", 0.0), nesterov)
    else:
        other = sk.AdamOptimizer(theirs, 0.05, config["beta1"], config["beta2"], config["eps"])
    opt = Optimizer(name, 0.05, alpha=alpha, form="scikit-learn", **config)
    for t, grads in enumerate(_grads_sequence(params, 9, seed=5)):
        batch = 7.0 if t % 3 else 2.5  # rows or a weight sum
        if t == 4 and name == "sgd":  # a schedule's step: scikit-learn changes learning_rate
            opt.lr = other.learning_rate = 0.01
        decayed = [g + (alpha * w / batch if i in (0, 2) else 0.0)
                   for i, (g, w) in enumerate(zip(grads, theirs))]
        other.update_params(theirs, decayed)
        opt.step(params, grads, batch)
    for p, q in zip(params, theirs):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kw, err, match", [
    (dict(name="rmsprop"), ValueError, "optimizer: expected one of"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(momentum=1.5), ValueError, "momentum"),
    (dict(form="keras"), ValueError, "form"),
    (dict(l2_weight=-1.0), ValueError, "l2_weight"),
    (dict(momentum=-0.1), ValueError, "momentum"),
    (dict(nesterov=True), ValueError, "nesterov"),
    (dict(nesterov="yes", momentum=0.5), TypeError, "nesterov"),
    (dict(alpha=-1.0), ValueError, "alpha"),
    (dict(name="adam", beta2=1.0), ValueError, "beta2"),
    (dict(name="adam", eps=0.0), ValueError, "eps"),
    (dict(lr="0.1"), TypeError, "lr"),
])
def test_bad_hyperparameters(kw, err, match):
    kw.setdefault("lr", 0.1)
    name = kw.pop("name", "sgd")
    with pytest.raises(err, match=match):
        Optimizer(name, **kw)
