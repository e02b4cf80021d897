"""The whole network: gradient check, BatchNorm modes, population statistics."""

import json
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from dlcore import checkpoint, layers
from dlcore.network import INITS, Architecture, Network
from tests.gradcheck import numerical_gradient, relative_error


def small_net(activation="tanh", batchnorm=True, dtype="float64", seed=1, bn_position="before"):
    arch = Architecture(
        n_features=5,
        hidden=(6, 4),
        n_classes=3,
        activation=activation,
        batchnorm=batchnorm,
        dtype=dtype,
        bn_position=bn_position,
    )
    return Network(arch, seed=seed)


@pytest.mark.parametrize("activation", sorted(layers.ACTIVATIONS))
@pytest.mark.parametrize("batchnorm, bn_position", [
    (True, "before"), (True, "after"), (False, "before")])
def test_whole_network_gradient_with_bn_l2_and_dropout(activation, batchnorm, bn_position):
    """3 dense layers with BatchNorm (before or after the activation), L2 and a fixed
    dropout mask: rel. error < 1e-7."""
    rng = np.random.default_rng(3)
    net = small_net(activation, batchnorm, bn_position=bn_position)
    X, y = rng.standard_normal((12, 5)), rng.integers(0, 3, 12)
    masks = net.dropout_masks(12, keep_prob=0.75, rng=rng)
    # move γ, β, biases off their initial values so every gradient term matters
    for k, v in net.params.items():
        if not k.endswith(".W"):
            v += rng.standard_normal(v.shape) * 0.3
    cost, grads, _ = net.loss_and_grads(X, y, l2=0.3, masks=masks)
    assert set(grads) == set(net.params)
    for key, param in net.params.items():
        numeric = numerical_gradient(
            lambda: net.loss_and_grads(X, y, l2=0.3, masks=masks)[0], param
        )
        assert relative_error(grads[key], numeric) < 1e-7, key


@pytest.mark.parametrize("batchnorm", [True, False])
def test_whole_network_gradient_with_l1(batchnorm):
    """L1 (with L2 and dropout): rel. error < 1e-7, every weight well away from |w|'s kink."""
    rng = np.random.default_rng(4)
    net = small_net("tanh", batchnorm)
    for k, v in net.params.items():
        v += rng.standard_normal(v.shape) * 0.3
        if k.endswith(".W"):
            v[np.abs(v) < 1e-2] = 0.1
    X, y = rng.standard_normal((12, 5)), rng.integers(0, 3, 12)
    masks = net.dropout_masks(12, keep_prob=0.75, rng=rng)
    _, grads, _ = net.loss_and_grads(X, y, l2=0.1, masks=masks, l1=0.4)
    for key, param in net.params.items():
        numeric = numerical_gradient(
            lambda: net.loss_and_grads(X, y, l2=0.1, masks=masks, l1=0.4)[0], param
        )
        assert relative_error(grads[key], numeric) < 1e-7, key


def test_l1_adds_its_term_to_the_cost_and_sign_to_the_weight_gradients_only():
    rng = np.random.default_rng(5)
    net = small_net("relu")
    X, y = rng.standard_normal((16, 5)), rng.integers(0, 3, 16)
    net.params["fc2.W"][0, :] = 0.0  # sign(0) = 0: no pull on weights already at 0
    cost, grads, _ = net.loss_and_grads(X, y, l2=0.2)
    grads = {k: v.copy() for k, v in grads.items()}
    cost_l1, grads_l1, _ = net.loss_and_grads(X, y, l2=0.2, l1=0.3)
    weights = [net.params[k] for k in net.weight_keys]
    l1_term = 0.3 / (2 * 16) * sum(np.abs(W).sum() for W in weights)
    assert cost_l1 == pytest.approx(cost + l1_term, rel=1e-14)
    for key in net.params:
        if key in net.weight_keys:
            expected = grads[key] + 0.3 / (2 * 16) * np.sign(net.params[key])
            np.testing.assert_allclose(grads_l1[key], expected, rtol=1e-14, atol=1e-17)
        else:  # biases, γ and β are not regularised
            assert np.array_equal(grads_l1[key], grads[key]), key
    np.testing.assert_array_equal(grads_l1["fc2.W"][0], grads["fc2.W"][0])

    accuracy, evaluated = net.evaluate(X, y, l2=0.2, l1=0.3)
    _, evaluated_without = net.evaluate(X, y, l2=0.2)
    assert evaluated == pytest.approx(evaluated_without + l1_term, rel=1e-14)


def test_weight_sparsity_counts_small_weights_per_layer():
    net = small_net()
    W1 = net.params["fc1.W"]  # (5, 6): 30 weights
    W1[...] = 1.0
    W1[0, :] = [0.0, 1e-4, -1e-4, 1e-3, -1e-3, 0.5e-3]  # 4 with |w| < 1e-3
    net.params["fc2.W"][...] = 0.0
    sparsity = net.weight_sparsity()
    assert list(sparsity) == ["fc1", "fc2", "fc3"]
    assert sparsity["fc1"] == 4 / 30
    assert sparsity["fc2"] == 1.0
    assert 0.0 <= sparsity["fc3"] < 0.1
    assert net.weight_sparsity(threshold=2.0)["fc1"] == 1.0
    assert all(isinstance(v, float) for v in sparsity.values())
    for bad in (0.0, -1e-3, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="threshold"):
            net.weight_sparsity(threshold=bad)


def test_keys_shapes_and_no_bias_before_batchnorm():
    net = small_net(batchnorm=True)
    assert sorted(net.params) == sorted(
        ["fc1.W", "bn1.gamma", "bn1.beta", "fc2.W", "bn2.gamma", "bn2.beta", "fc3.W", "fc3.b"]
    )
    assert sorted(net.buffers) == sorted(
        ["bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"]
    )
    assert net.params["fc1.W"].shape == (5, 6)
    assert np.all(net.params["bn1.gamma"] == 1) and np.all(net.params["bn1.beta"] == 0)
    assert sorted(small_net(batchnorm=False).params) == sorted(
        ["fc1.W", "fc1.b", "fc2.W", "fc2.b", "fc3.W", "fc3.b"]
    )
    assert small_net(batchnorm=False).bn_layers == []


def test_init_scales():
    arch = Architecture(n_features=400, hidden=(300,), n_classes=10, init="he")
    W = Network(arch, seed=0).params["fc1.W"]
    assert W.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    arch = Architecture(n_features=400, hidden=(300,), n_classes=10, init="xavier")
    assert Network(arch, seed=0).params["fc1.W"].std() == pytest.approx(np.sqrt(1 / 400), rel=0.02)
    arch = Architecture(n_features=400, hidden=(300,), n_classes=10, init="glorot")
    net = Network(arch, seed=0)
    assert net.params["fc1.W"].std() == pytest.approx(np.sqrt(2 / (400 + 300)), rel=0.02)
    assert net.params["fc2.W"].std() == pytest.approx(np.sqrt(2 / (300 + 10)), rel=0.05)


@pytest.mark.parametrize("init, variance", [
    ("he", lambda n_in, n_out: 2.0 / n_in),
    ("xavier", lambda n_in, n_out: 1.0 / n_in),
    ("glorot", lambda n_in, n_out: 2.0 / (n_in + n_out)),
])
def test_init_draws_exactly_one_standard_normal_matrix_per_layer(init, variance):
    """Bit for bit: the weights a seed gave before Glorot existed are the weights it gives now."""
    arch = Architecture(n_features=5, hidden=(6, 4), n_classes=3, init=init)
    net = Network(arch, seed=9)
    rng = np.random.default_rng(9)
    sizes = arch.layer_sizes
    for l in range(1, len(sizes)):
        n_in, n_out = sizes[l - 1], sizes[l]
        expected = rng.standard_normal((n_in, n_out)) * np.sqrt(variance(n_in, n_out))
        assert np.array_equal(net.params[f"fc{l}.W"], expected), l


def test_every_init_has_a_one_line_description():
    assert set(INITS) == {"he", "xavier", "glorot"}
    for name, description in INITS.items():
        assert isinstance(description, str) and "\n" not in description and "N(0" in description
        Architecture(n_features=2, hidden=(2,), n_classes=2, init=name)  # accepted
    with pytest.raises(ValueError, match="'lecun'"):
        Architecture(n_features=2, hidden=(2,), n_classes=2, init="lecun")


def test_seed_fixes_the_weights():
    a, b, c = small_net(seed=5), small_net(seed=5), small_net(seed=6)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["fc1.W"], c.params["fc1.W"])


@pytest.mark.parametrize("bn_position", ["before", "after"])
def test_inference_never_changes_buffers_and_differs_from_train_mode(bn_position):
    rng = np.random.default_rng(0)
    net = small_net(bn_position=bn_position)
    X = rng.standard_normal((50, 5)) * 4 + 3
    for _ in range(3):
        _, _, stats = net.loss_and_grads(X[:20], rng.integers(0, 3, 20))
        net.update_running_stats(stats, momentum=0.9)
    before = {k: v.copy() for k, v in net.buffers.items()}
    inference = net.forward(X, mode="inference")
    train = net.forward(X, mode="train")
    net.evaluate(X, rng.integers(0, 3, 50))
    net.population_stats(X)
    assert all(np.array_equal(before[k], net.buffers[k]) for k in before)
    assert not np.allclose(inference, train)


@pytest.mark.parametrize("bn_position", ["before", "after"])
def test_running_estimates_converge_to_population_statistics(bn_position):
    """With fixed weights, the EWMA of mini-batch statistics approaches the
    population μ/σ² of the whole set (σ² up to the batch's (m−1)/m bias)."""
    rng = np.random.default_rng(0)
    net = small_net(bn_position=bn_position)
    X = rng.standard_normal((4000, 5)) * 2 + 1
    for _ in range(300):
        batch = X[rng.choice(4000, 256, replace=False)]
        _, _, stats = net.loss_and_grads(batch, np.zeros(256, int))
        net.update_running_stats(stats, momentum=0.9)
    population = net.population_stats(X)
    for name, (mean, var) in population.items():
        scale = np.sqrt(var)
        assert np.all(np.abs(net.buffers[f"{name}.running_mean"] - mean) < 0.15 * scale), name
        np.testing.assert_allclose(net.buffers[f"{name}.running_var"], var, rtol=0.15)


def test_float32_network_stays_float32():
    rng = np.random.default_rng(0)
    net = small_net(dtype="float32", activation="relu")
    X = rng.standard_normal((16, 5)).astype(np.float32)
    cost, grads, stats = net.loss_and_grads(
        X, rng.integers(0, 3, 16), l2=0.1, masks=net.dropout_masks(16, 0.9, rng)
    )
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(s.dtype == np.float32 for pair in stats.values() for s in pair)
    net.update_running_stats(stats)
    assert all(b.dtype == np.float32 for b in net.buffers.values())
    assert net.forward(X).dtype == np.float32


def test_state_arrays_round_trip_and_validation():
    net, other = small_net(seed=1), small_net(seed=2)
    other.load_state_arrays(net.state_arrays())
    assert all(np.array_equal(net.params[k], other.params[k]) for k in net.params)
    bad = net.state_arrays()
    bad["params/fc1.W"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="fc1.W"):
        other.load_state_arrays(bad)
    nan = net.state_arrays()
    nan["params/bn1.gamma"][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        other.load_state_arrays(nan)


@pytest.mark.parametrize(
    "bad",
    [
        dict(hidden=(0,)),
        dict(activation="swish"),
        dict(init="zeros"),
        dict(dtype="float16"),
        dict(n_classes=1),
        dict(bn_position="middle"),
        dict(bn_position=None),
    ],
)
def test_architecture_rejects_bad_values(bad):
    kwargs = dict(n_features=4, hidden=(3,), n_classes=2) | bad
    with pytest.raises(ValueError):
        Architecture(**kwargs)


# ---------------------------------------------------------------------------
# BatchNorm after the activation
# ---------------------------------------------------------------------------


def reference_forward(net, X, mode):
    """Logits and BN-input statistics, written out layer by layer from the definitions."""
    p, b = net.params, net.buffers
    act = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0)}[net.arch.activation]
    stats = {}

    def bn(l, x):
        if mode == "train":
            mean, var = x.mean(axis=0), x.var(axis=0)
            stats[f"bn{l}"] = (mean, var)
        else:
            mean, var = b[f"bn{l}.running_mean"], b[f"bn{l}.running_var"]
        return p[f"bn{l}.gamma"] * (x - mean) / np.sqrt(var + 1e-5) + p[f"bn{l}.beta"]

    a = X
    for l in (1, 2):
        z = a @ p[f"fc{l}.W"] + p.get(f"fc{l}.b", 0.0)
        a = act(bn(l, z)) if net.arch.bn_position == "before" else bn(l, act(z))
    return a @ p["fc3.W"] + p["fc3.b"], stats


def perturbed(net, seed=0):
    """net with every param and running statistic moved off its initial value."""
    rng = np.random.default_rng(seed)
    for v in net.params.values():
        v += rng.standard_normal(v.shape) * 0.3
    for k, v in net.buffers.items():
        is_var = k.endswith("running_var")
        v[...] = rng.uniform(0.5, 2.0, v.shape) if is_var else rng.standard_normal(v.shape)
    return net


def test_batchnorm_after_the_activation_keeps_the_hidden_biases():
    net = small_net(bn_position="after")
    assert list(net.params) == [
        "fc1.W", "fc1.b", "bn1.gamma", "bn1.beta",
        "fc2.W", "fc2.b", "bn2.gamma", "bn2.beta",
        "fc3.W", "fc3.b",
    ]
    assert sorted(net.buffers) == sorted(small_net().buffers)
    assert net.bn_layers == ["bn1", "bn2"]
    # the same draws: only the biases are new, and they start at 0
    before = small_net(bn_position="before")
    for key in before.params:
        assert np.array_equal(net.params[key], before.params[key]), key
    assert not net.params["fc1.b"].any()


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("bn_position", ["before", "after"])
def test_every_mode_follows_the_definitions(bn_position, activation):
    """Training step, train and inference modes and population statistics against a
    layer-by-layer reference: z̃ = BN(z), a = g(z̃) before; a = g(z), ã = BN(a) after."""
    net = perturbed(small_net(activation, bn_position=bn_position))
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((30, 5)) * 2 + 1, rng.integers(0, 3, 30)
    expected_train, expected_stats = reference_forward(net, X, "train")
    expected_inference, _ = reference_forward(net, X, "inference")

    cost, _, batch_stats = net.loss_and_grads(X, y)
    logits = expected_train - expected_train.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert cost == pytest.approx(-log_probs[np.arange(30), y].mean(), rel=1e-12)
    np.testing.assert_allclose(net.forward(X, mode="train"), expected_train, rtol=1e-12)
    np.testing.assert_allclose(net.forward(X), expected_inference, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(net.predict(X), expected_inference.argmax(axis=1))
    accuracy, _ = net.evaluate(X, y)
    assert accuracy == np.mean(expected_inference.argmax(axis=1) == y)
    population = net.population_stats(X)
    for name, (mean, var) in expected_stats.items():
        for got in (batch_stats[name], population[name]):
            np.testing.assert_allclose(got[0], mean, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(got[1], var, rtol=1e-12)
    if bn_position == "after" and activation == "relu":
        assert np.all(population["bn1"][0] >= 0)  # the statistics of a = ReLU(z)


def test_the_two_placements_are_different_networks():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 5))
    before, after = small_net(bn_position="before"), small_net(bn_position="after")
    assert not np.allclose(before.forward(X, mode="train"), after.forward(X, mode="train"))


# ---------------------------------------------------------------------------
# Reading architectures saved before a field existed
# ---------------------------------------------------------------------------

FIXTURE = Path(__file__).parent / "fixtures" / "run-fixture-v1"


def test_to_dict_gives_every_field_and_from_dict_inverts_it():
    arch = Architecture(n_features=4, hidden=(3, 2), n_classes=2, activation="selu",
                        init="glorot", bn_position="after", dtype="float32")
    d = arch.to_dict()
    assert list(d) == [f.name for f in fields(Architecture)]
    assert d["hidden"] == [3, 2] and d["bn_position"] == "after"
    assert json.loads(json.dumps(d)) == d
    assert Architecture.from_dict(d) == arch
    assert Architecture.from_dict(json.loads(json.dumps(d))) == arch


def test_from_dict_reads_a_dict_written_before_bn_position_existed():
    old = {"n_features": 3, "hidden": [6], "n_classes": 3, "activation": "relu",
           "batchnorm": True, "init": "he", "dtype": "float64"}
    arch = Architecture.from_dict(old)
    assert arch.bn_position == "before"
    assert arch == Architecture(n_features=3, hidden=(6,), n_classes=3)
    assert Architecture.from_dict({"n_features": 3, "hidden": [6], "n_classes": 3}) == arch


@pytest.mark.parametrize("bad, shown", [
    ({"colour": "red"}, "colour"),
    ({"bn_position": "middle"}, "middle"),
    ({"hidden": 6}, "6"),
    ({"n_features": "3"}, "'3'"),
])
def test_from_dict_refuses_unknown_keys_and_bad_values(bad, shown):
    d = {"n_features": 3, "hidden": [6], "n_classes": 3} | bad
    with pytest.raises(ValueError, match=re.escape(shown)):
        Architecture.from_dict(d)


def test_from_dict_refuses_a_dict_without_a_required_field():
    with pytest.raises(ValueError, match="n_classes"):
        Architecture.from_dict({"n_features": 3, "hidden": [6]})
    with pytest.raises(ValueError, match="list"):
        Architecture.from_dict([("n_features", 3)])


def test_a_checkpoint_written_today_holds_exactly_the_initial_arrays_of_its_architecture():
    """The fixture's initial checkpoint, written before bn_position, L1 & co existed:
    its architecture read with from_dict and its seed give the very same arrays."""
    arrays, meta = checkpoint.read(FIXTURE / "ckpt-000000.npz", "panda-checkpoint-v1")
    assert meta["info"]["step"] == 0 and "bn_position" not in meta["architecture"]
    net = Network(Architecture.from_dict(meta["architecture"]), seed=meta["config"]["seed"])
    state = net.state_arrays()
    assert sorted(state) == sorted(k for k in arrays if k.startswith(("params/", "buffers/")))
    for key, value in state.items():
        assert value.dtype == arrays[key].dtype and np.array_equal(value, arrays[key]), key


def test_every_checkpoint_written_today_loads_into_its_from_dict_network():
    for path in sorted(FIXTURE.glob("ckpt-*.npz")):
        arrays, meta = checkpoint.read(path, "panda-checkpoint-v1")
        net = Network(Architecture.from_dict(meta["architecture"]))
        net.load_state_arrays({k: v for k, v in arrays.items()
                               if k.startswith(("params/", "buffers/"))})
        assert Architecture.from_dict(meta["architecture"]).to_dict() == {
            **meta["architecture"], "bn_position": "before"}
