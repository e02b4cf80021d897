"""dlcore against PyTorch as an independent reference (float64, to ~1e-10).

Compared here:

1. ``layers.batchnorm_forward`` / ``batchnorm_backward`` against
   ``torch.nn.functional.batch_norm(training=True)`` and autograd.
2. ``layers.softmax_cross_entropy`` against ``torch.nn.functional.cross_entropy``
   (mean reduction), huge logits included.
3. A whole ``Network`` (Linear without bias + BatchNorm1d + activation per hidden
   layer, or Linear with bias + activation + BatchNorm1d with BatchNorm after
   the activation; Linear with bias at the output) in training mode: cost, every
   gradient, and the running statistics after one step.
4. The same network in inference mode against ``model.eval()``.
5. The activations ELU, SELU and sigmoid against ``F.elu``, ``F.selu`` and
   ``torch.sigmoid``, forward and backward (autograd), to 1e-9 relative.

Running statistics, the one deliberate difference from PyTorch: our
``update_running_stats(momentum=β)`` computes ``run = β·run + (1 − β)·batch``,
so β = 0.9 is the same average as ``torch.nn.BatchNorm1d(momentum=0.1)``
(torch's momentum is the complement). The running *means* therefore agree
exactly. The running *variances* do not: we feed in the biased batch variance
σ² = 1/m Σ(z − μ)² (the one the layer normalised with, as in the course),
while torch feeds in the unbiased m/(m − 1)·σ². Both normalise the batch
itself with the biased σ², so training-mode outputs and gradients agree.

The whole file is skipped when torch is not installed.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn

from dlcore import layers  # noqa: E402
from dlcore.network import BN_EPS, Architecture, Network  # noqa: E402

RTOL = 1e-10
ATOL = 1e-12
EPS = 1e-5


def close(actual, expected, rtol=RTOL, atol=ATOL, err_msg=""):
    """assert_allclose(rtol=1e-10, atol=1e-12) against a numpy array or torch tensor."""
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=err_msg)


def t(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


# ---------------------------------------------------------------------------
# 1. BatchNorm
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 7, 64])
@pytest.mark.parametrize("n", [1, 5, 33])
def test_batchnorm_matches_torch(m, n):
    rng = np.random.default_rng(1000 * m + n)
    z = rng.standard_normal((m, n)) * rng.uniform(0.5, 3.0, n) + rng.uniform(-2, 2, n)
    gamma = rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)
    beta = rng.standard_normal(n)
    dout = rng.standard_normal((m, n))

    out, cache = layers.batchnorm_forward(z.copy(), gamma, beta, EPS)
    dz, dgamma, dbeta = layers.batchnorm_backward(dout, cache)

    zt, gt, bt = t(z, True), t(gamma, True), t(beta, True)
    out_t = F.batch_norm(zt, None, None, weight=gt, bias=bt, training=True, eps=EPS)
    out_t.backward(t(dout))

    close(out, out_t, err_msg="out")
    close(cache.mean, zt.detach().mean(0), err_msg="batch mean")
    close(cache.var, zt.detach().var(0, unbiased=False), err_msg="batch var (biased)")
    close(dz, zt.grad, err_msg="dz")
    close(dgamma, gt.grad, err_msg="dgamma")
    close(dbeta, bt.grad, err_msg="dbeta")


# ---------------------------------------------------------------------------
# 2. Softmax cross-entropy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "m, C, scale",
    [(1, 2, 1.0), (16, 10, 1.0), (50, 3, 30.0), (32, 7, 1e4), (8, 5, -1e4)],
)
def test_softmax_cross_entropy_matches_torch(m, C, scale):
    rng = np.random.default_rng(m * C)
    logits = rng.standard_normal((m, C)) * scale
    y = rng.integers(0, C, m)

    loss, dlogits = layers.softmax_cross_entropy(logits.copy(), y)

    lt = t(logits, True)
    loss_t = F.cross_entropy(lt, torch.tensor(y, dtype=torch.long), reduction="mean")
    loss_t.backward()

    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    close(loss, loss_t.item(), err_msg="loss")
    close(dlogits, lt.grad, err_msg="dlogits")


def test_softmax_cross_entropy_extreme_rows_match_torch():
    """Ties, a ±1e4 spread inside one row, and a row with the true class far behind."""
    logits = np.array(
        [
            [1e4, 1e4, -1e4, 0.0],
            [-1e4, -1e4, -1e4, -1e4],
            [1e4, -1e4, 0.0, 5e3],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    y = np.array([2, 1, 3, 0])
    loss, dlogits = layers.softmax_cross_entropy(logits.copy(), y)
    lt = t(logits, True)
    loss_t = F.cross_entropy(lt, torch.tensor(y, dtype=torch.long))
    loss_t.backward()
    close(loss, loss_t.item(), err_msg="loss")
    close(dlogits, lt.grad, err_msg="dlogits")


# ---------------------------------------------------------------------------
# 3./4. The whole network
# ---------------------------------------------------------------------------

TORCH_ACT = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": lambda: nn.ELU(alpha=1.0),
    "selu": nn.SELU,
    "sigmoid": nn.Sigmoid,
}


def make_pair(activation, seed=3, bn_position="before"):
    """A Network with random γ, β and biases, and the same model in torch.

    Returns ``(net, model, linears, bns)`` with ``linears[l-1]`` the torch
    counterpart of ``fc{l}`` and ``bns[l-1]`` that of ``bn{l}``.
    """
    arch = Architecture(
        n_features=8, hidden=(16, 12), n_classes=4, activation=activation, batchnorm=True,
        bn_position=bn_position,
    )
    net = Network(arch, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for k, v in net.params.items():  # γ = 1, β = 0, b = 0 would hide mistakes
        if k.endswith(".gamma"):
            v[...] = rng.uniform(0.5, 1.5, v.shape)
        elif k.endswith(".beta") or k.endswith(".b"):
            v[...] = 0.3 * rng.standard_normal(v.shape)

    sizes = arch.layer_sizes
    n_layers = len(sizes) - 1
    modules, linears, bns = [], [], []
    for l in range(1, n_layers + 1):
        last = l == n_layers
        bias = last or bn_position == "after"
        lin = nn.Linear(sizes[l - 1], sizes[l], bias=bias, dtype=torch.float64)
        modules.append(lin)
        linears.append(lin)
        if not last:
            bn = nn.BatchNorm1d(sizes[l], eps=BN_EPS, momentum=0.1, dtype=torch.float64)
            act = TORCH_ACT[activation]()
            modules += [bn, act] if bn_position == "before" else [act, bn]
            bns.append(bn)
    model = nn.Sequential(*modules)

    with torch.no_grad():
        for l, lin in enumerate(linears, start=1):
            lin.weight.copy_(t(net.params[f"fc{l}.W"].T))  # torch weight is (out, in)
            if lin.bias is not None:
                lin.bias.copy_(t(net.params[f"fc{l}.b"]))
        for l, bn in enumerate(bns, start=1):
            bn.weight.copy_(t(net.params[f"bn{l}.gamma"]))
            bn.bias.copy_(t(net.params[f"bn{l}.beta"]))
            bn.running_mean.copy_(t(net.buffers[f"bn{l}.running_mean"]))
            bn.running_var.copy_(t(net.buffers[f"bn{l}.running_var"]))
    return net, model, linears, bns


def batch(m=32, n_features=8, n_classes=4, seed=7):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n_features)) * 2.0 + 0.5
    y = rng.integers(0, n_classes, m)
    return X, y


@pytest.mark.parametrize("bn_position", ["before", "after"])
@pytest.mark.parametrize("activation", sorted(TORCH_ACT))
def test_network_training_step_matches_torch(activation, bn_position):
    """One training-mode forward/backward: cost, every gradient, running stats.

    Running means agree exactly (β = 0.9 here is torch's momentum = 0.1).
    Running variances differ by design: ours is 0.9·1 + 0.1·σ²_biased, torch's
    0.9·1 + 0.1·σ²_unbiased with σ²_unbiased = m/(m − 1)·σ²_biased.
    """
    net, model, linears, bns = make_pair(activation, bn_position=bn_position)
    X, y = batch()
    m = X.shape[0]
    assert set(net.buffers) == {
        f"bn{l}.{s}" for l in (1, 2) for s in ("running_mean", "running_var")
    }

    cost, grads, batch_stats = net.loss_and_grads(X, y, l2=0.0)

    bn_inputs = {}
    hooks = [
        bn.register_forward_hook(
            lambda mod, inp, out, l=l: bn_inputs.__setitem__(l, inp[0].detach().clone())
        )
        for l, bn in enumerate(bns, start=1)
    ]
    model.train()
    model.zero_grad()
    logits_t = model(t(X))
    cost_t = F.cross_entropy(logits_t, torch.tensor(y, dtype=torch.long))
    cost_t.backward()
    for h in hooks:
        h.remove()

    close(cost, cost_t.item(), err_msg="cost")
    close(net.forward(X, mode="train"), logits_t, err_msg="train-mode logits")

    expected = {}
    for l, lin in enumerate(linears, start=1):
        expected[f"fc{l}.W"] = lin.weight.grad.T
        if lin.bias is not None:
            expected[f"fc{l}.b"] = lin.bias.grad
    for l, bn in enumerate(bns, start=1):
        expected[f"bn{l}.gamma"] = bn.weight.grad
        expected[f"bn{l}.beta"] = bn.bias.grad
    assert set(grads) == set(expected) == set(net.params)
    for k, g in expected.items():
        g = g.detach().numpy()
        assert grads[k].shape == g.shape, k
        close(grads[k], g, err_msg=k)

    # batch statistics of each BN layer's input: z = a·W, or g(a·W + b) after
    assert set(batch_stats) == {"bn1", "bn2"}
    for l in (1, 2):
        z = bn_inputs[l]
        mean, var = batch_stats[f"bn{l}"]
        close(mean, z.mean(0), err_msg=f"bn{l} batch mean")
        close(var, z.var(0, unbiased=False), err_msg=f"bn{l} batch var")

    # running statistics after one step
    net.update_running_stats(batch_stats, momentum=0.9)
    for l, bn in enumerate(bns, start=1):
        z = bn_inputs[l].numpy()
        biased = z.var(axis=0)
        unbiased = z.var(axis=0, ddof=1)
        ours_mean = net.buffers[f"bn{l}.running_mean"]
        ours_var = net.buffers[f"bn{l}.running_var"]
        close(ours_mean, bn.running_mean, err_msg=f"bn{l} running_mean")
        close(ours_var, 0.9 * 1.0 + 0.1 * biased, err_msg=f"bn{l} running_var (ours, biased)")
        close(
            bn.running_var,
            0.9 * 1.0 + 0.1 * unbiased,
            err_msg=f"bn{l} running_var (torch, unbiased)",
        )
        # the documented difference is real: ours = torch − 0.1·σ²/(m − 1)
        close(bn.running_var.numpy() - ours_var, 0.1 * biased / (m - 1), err_msg=f"bn{l} var gap")
        assert np.all(ours_var < bn.running_var.numpy())


@pytest.mark.parametrize("bn_position", ["before", "after"])
@pytest.mark.parametrize("activation", sorted(TORCH_ACT))
@pytest.mark.parametrize("stats", ["after_one_step", "random"])
def test_network_inference_matches_torch_eval(activation, stats, bn_position):
    net, model, linears, bns = make_pair(activation, bn_position=bn_position)
    X, y = batch()
    if stats == "after_one_step":
        _, _, batch_stats = net.loss_and_grads(X, y)
        net.update_running_stats(batch_stats, momentum=0.9)
    else:
        rng = np.random.default_rng(11)
        for k, v in net.buffers.items():
            if k.endswith("running_mean"):
                v[...] = rng.standard_normal(v.shape)
            else:
                v[...] = rng.uniform(0.2, 4.0, v.shape)
    with torch.no_grad():
        for l, bn in enumerate(bns, start=1):
            bn.running_mean.copy_(t(net.buffers[f"bn{l}.running_mean"]))
            bn.running_var.copy_(t(net.buffers[f"bn{l}.running_var"]))

    X_test, _ = batch(m=20, seed=8)
    before = {k: v.copy() for k, v in net.buffers.items()}
    logits = net.forward(X_test, mode="inference")
    model.eval()
    with torch.no_grad():
        logits_t = model(t(X_test))
    close(logits, logits_t, err_msg="inference logits")
    np.testing.assert_array_equal(net.predict(X_test), logits_t.argmax(1).numpy())
    for k, v in net.buffers.items():  # inference reads the buffers, never writes
        np.testing.assert_array_equal(v, before[k])


# ---------------------------------------------------------------------------
# 5. The activations added with the course's whole toolbox
# ---------------------------------------------------------------------------

TORCH_FUNCTIONS = {
    "elu": lambda z: F.elu(z, alpha=1.0),
    "selu": F.selu,
    "sigmoid": torch.sigmoid,
}


def test_every_activation_has_a_torch_reference():
    assert set(TORCH_ACT) == set(layers.ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(TORCH_FUNCTIONS))
def test_activation_matches_torch(name):
    """Forward and backward (autograd) at ≤ 1e-9 relative, z spread over ±10 and 0 itself."""
    rng = np.random.default_rng(42)
    z = rng.standard_normal((64, 9)) * 3.0
    z[0, :3] = [0.0, -1e-12, 1e-12]
    da = rng.standard_normal(z.shape)
    forward, backward = layers.ACTIVATIONS[name]
    a, cache = forward(z.copy())
    dz = backward(da, cache)

    zt = t(z, True)
    at = TORCH_FUNCTIONS[name](zt)
    at.backward(t(da))
    close(a, at, rtol=1e-9, atol=0, err_msg=f"{name} forward")
    close(dz, zt.grad, rtol=1e-9, atol=0, err_msg=f"{name} backward")


@pytest.mark.parametrize("name", sorted(TORCH_FUNCTIONS))
def test_activation_matches_torch_for_huge_inputs(name):
    z = np.array([[-1000.0, -50.0, 50.0, 1000.0]])
    a, _ = layers.ACTIVATIONS[name][0](z.copy())
    close(a, TORCH_FUNCTIONS[name](t(z)), rtol=1e-9, atol=0, err_msg=name)
