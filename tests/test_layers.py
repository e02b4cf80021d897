"""Every backward function against a numerical gradient (float64), and the
forward formulas against their definitions."""

import warnings

import numpy as np
import pytest

from dlcore import layers
from tests.gradcheck import numerical_gradient, relative_error

TOL = 1e-7


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def check_grads(forward, backward, inputs, rng):
    """Gradcheck of f(inputs) through the scalar Σ out·dout for a random dout."""
    out, cache = forward(*inputs)
    dout = rng.standard_normal(out.shape)
    analytic = backward(dout, cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)
    for x, dx in zip(inputs, analytic, strict=False):
        if dx is None:
            continue
        numeric = numerical_gradient(lambda: float(np.sum(forward(*inputs)[0] * dout)), x)
        assert relative_error(dx, numeric) < TOL


def test_dense_gradients(rng):
    x, W, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    check_grads(layers.dense_forward, layers.dense_backward, [x, W, b], rng)


def test_dense_without_bias_has_no_bias_gradient(rng):
    x, W = rng.standard_normal((5, 4)), rng.standard_normal((4, 3))
    out, cache = layers.dense_forward(x, W)
    np.testing.assert_allclose(out, x @ W)
    assert layers.dense_backward(np.ones_like(out), cache)[2] is None


def test_batchnorm_gradients(rng):
    z = rng.standard_normal((8, 4)) * 3 + 1
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    check_grads(layers.batchnorm_forward, layers.batchnorm_backward, [z, gamma, beta], rng)


def test_batchnorm_forward_formula(rng):
    z = rng.standard_normal((16, 3)) * 5 + 2
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.array([0.0, -1.0, 3.0])
    out, cache = layers.batchnorm_forward(z, gamma, beta, eps=1e-5)
    mean, var = z.mean(axis=0), ((z - z.mean(axis=0)) ** 2).mean(axis=0)  # biased σ²
    np.testing.assert_allclose(cache.mean, mean)
    np.testing.assert_allclose(cache.var, var)
    np.testing.assert_allclose(out, gamma * (z - mean) / np.sqrt(var + 1e-5) + beta)
    # normalised units have mean β and standard deviation ≈ |γ|
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), np.abs(gamma), rtol=1e-5)


def test_batchnorm_inference_uses_running_estimates_and_changes_nothing(rng):
    z = rng.standard_normal((10, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    running_mean, running_var = np.array([0.5, -1.0, 2.0]), np.array([4.0, 0.25, 1.0])
    before = running_mean.copy(), running_var.copy()
    out = layers.batchnorm_inference(z, gamma, beta, running_mean, running_var, eps=1e-5)
    np.testing.assert_allclose(out, gamma * (z - running_mean) / np.sqrt(running_var + 1e-5) + beta)
    np.testing.assert_array_equal(running_mean, before[0])
    np.testing.assert_array_equal(running_var, before[1])
    train_out, _ = layers.batchnorm_forward(z, gamma, beta)
    assert not np.allclose(out, train_out)  # the two modes really differ


def test_running_stats_follow_the_ewma_step_by_step(rng):
    running_mean, running_var = np.zeros(3), np.ones(3)
    expected_mean, expected_var = np.zeros(3), np.ones(3)
    for _ in range(20):
        mean, var = rng.standard_normal(3), rng.random(3)
        layers.update_running_stats(running_mean, running_var, mean, var, momentum=0.9)
        expected_mean = 0.9 * expected_mean + 0.1 * mean
        expected_var = 0.9 * expected_var + 0.1 * var
        np.testing.assert_allclose(running_mean, expected_mean, rtol=1e-14)
        np.testing.assert_allclose(running_var, expected_var, rtol=1e-14)


@pytest.mark.parametrize("name", sorted(layers.ACTIVATIONS))
def test_activation_gradients(name, rng):
    forward, backward = layers.ACTIVATIONS[name]
    z = rng.standard_normal((6, 5))
    z[np.abs(z) < 1e-3] = 0.5  # keep central differences off the kink
    check_grads(forward, backward, [z], rng)


SELU_SCALE, SELU_ALPHA = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
DEFINITIONS = {  # activation -> (a(z), da/dz (z)) written out from the textbook formulas
    "elu": (lambda z: np.where(z > 0, z, np.exp(z) - 1), lambda z: np.where(z > 0, 1, np.exp(z))),
    "selu": (
        lambda z: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * (np.exp(z) - 1)),
        lambda z: SELU_SCALE * np.where(z > 0, 1, SELU_ALPHA * np.exp(z)),
    ),
    "sigmoid": (
        lambda z: 1 / (1 + np.exp(-z)),
        lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2,
    ),
}


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_activation_matches_its_definition(name, rng):
    forward, backward = layers.ACTIVATIONS[name]
    definition, derivative = DEFINITIONS[name]
    z = rng.standard_normal((40, 7)) * 3
    da = rng.standard_normal(z.shape)
    a, cache = forward(z)
    np.testing.assert_allclose(a, definition(z), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(backward(da, cache), da * derivative(z), rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_new_activation_gradients_in_the_tails(name, rng):
    """Gradient check where sigmoid saturates and the ELUs' exponential branch flattens."""
    forward, backward = layers.ACTIVATIONS[name]
    z = rng.standard_normal((6, 5)) * 6
    z[np.abs(z) < 1e-3] = 0.5
    check_grads(forward, backward, [z], rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(layers.ACTIVATIONS))
def test_activations_are_stable_for_huge_inputs(name, dtype):
    """No overflow, no warning, finite values and gradients for |z| up to 1e30."""
    z = np.array([[-1e30, -1000.0, -100.0, -1e-30, 0.0, 1e-30, 100.0, 1000.0, 1e30]], dtype)
    forward, backward = layers.ACTIVATIONS[name]
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        a, cache = forward(z)
        grad = backward(np.ones_like(z), cache)
    assert a.dtype == grad.dtype == dtype
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(grad))


def test_saturating_limits_are_exact():
    z = np.array([[-1000.0, 1000.0]])
    expected = {
        "sigmoid": [[0.0, 1.0]],
        "elu": [[-1.0, 1000.0]],
        "selu": [[-SELU_SCALE * SELU_ALPHA, SELU_SCALE * 1000.0]],
    }
    for name, limits in expected.items():
        forward, backward = layers.ACTIVATIONS[name]
        a, cache = forward(z)
        np.testing.assert_array_equal(a, limits, err_msg=name)
        # the gradient vanishes in the saturated tail(s)
        assert backward(np.ones_like(z), cache)[0, 0] == 0.0, name
    sigmoid_forward, sigmoid_backward = layers.ACTIVATIONS["sigmoid"]
    assert sigmoid_backward(np.ones_like(z), sigmoid_forward(z)[1])[0, 1] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(layers.ACTIVATIONS))
def test_activation_in_place_contract(name, dtype, rng):
    """forward(z, out=z) and backward(da, cache, out=cache), as the network calls them,
    give exactly the fresh-array results and never touch da."""
    forward, backward = layers.ACTIVATIONS[name]
    z = (rng.standard_normal((9, 4)) * 3).astype(dtype)
    da = rng.standard_normal(z.shape).astype(dtype)
    da_before = da.copy()
    fresh_a, fresh_cache = forward(z)
    fresh_grad = backward(da, fresh_cache)
    in_place = z.copy()
    a, cache = forward(in_place, out=in_place)
    assert a is in_place
    np.testing.assert_array_equal(a, fresh_a)
    activated = cache[0] if isinstance(cache, tuple) else cache
    assert activated is a
    grad = backward(da, cache, out=activated)
    assert grad is activated
    np.testing.assert_array_equal(grad, fresh_grad)
    np.testing.assert_array_equal(da, da_before)


def test_dropout_gradient_and_scaling(rng):
    a = rng.standard_normal((200, 50))
    mask = layers.dropout_mask(a.shape, 0.8, rng)
    assert set(np.unique(mask)) <= {0.0, 1 / 0.8}
    assert abs((mask > 0).mean() - 0.8) < 0.02
    small, small_mask = a[:4, :5].copy(), mask[:4, :5]
    check_grads(
        lambda x: layers.dropout_forward(x, small_mask), layers.dropout_backward, [small], rng
    )
    # inverted dropout keeps the expected activation
    big = np.ones((2000, 100))
    out, _ = layers.dropout_forward(big, layers.dropout_mask(big.shape, 0.5, rng))
    assert abs(out.mean() - 1.0) < 0.01


def test_dropout_rejects_bad_keep_prob(rng):
    with pytest.raises(ValueError, match="1.5"):
        layers.dropout_mask((2, 2), 1.5, rng)


def test_softmax_cross_entropy_gradient_and_value(rng):
    logits, y = rng.standard_normal((7, 4)), rng.integers(0, 4, 7)
    loss, dlogits = layers.softmax_cross_entropy(logits, y)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(probs[np.arange(7), y]).mean(), rel=1e-12)
    numeric = numerical_gradient(lambda: layers.softmax_cross_entropy(logits, y)[0], logits)
    assert relative_error(dlogits, numeric) < TOL


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [-1e300, 1e300, 0.0]])
    loss, dlogits = layers.softmax_cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    # row 1 is (almost) certainly wrong: its loss is the logit gap, not inf
    assert loss == pytest.approx((0.0 + 2e300) / 2, rel=1e-12)
    float32_loss, _ = layers.softmax_cross_entropy(np.array([[1e30, 0]], np.float32), np.array([1]))
    assert np.isfinite(float32_loss)


def test_l2_penalty_and_gradient(rng):
    W1, W2 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    penalty = layers.l2_penalty([W1, W2], lam=0.7, m=10)
    assert penalty == pytest.approx(0.7 / 20 * ((W1**2).sum() + (W2**2).sum()), rel=1e-14)
    numeric = numerical_gradient(lambda: layers.l2_penalty([W1, W2], 0.7, 10), W1)
    assert relative_error(layers.l2_grad(W1, 0.7, 10), numeric) < TOL


def test_l1_penalty_and_gradient_closed_form(rng):
    W1, W2 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    W1[0, 0] = 0.0
    penalty = layers.l1_penalty([W1, W2], lam=0.7, m=10)
    assert penalty == pytest.approx(0.7 / 20 * (np.abs(W1).sum() + np.abs(W2).sum()), rel=1e-14)
    assert layers.l1_penalty([W1, W2], lam=0.0, m=10) == 0.0
    grad = layers.l1_grad(W1, 0.7, 10)
    np.testing.assert_array_equal(grad, 0.7 / 20 * np.sign(W1))
    assert grad[0, 0] == 0.0  # sign(0) = 0: a weight at 0 stays there
    out = np.empty_like(W1)
    assert layers.l1_grad(W1, 0.7, 10, out=out) is out
    np.testing.assert_array_equal(out, grad)
    float32 = W1.astype(np.float32)
    assert layers.l1_grad(float32, 0.7, 10).dtype == np.float32
    assert isinstance(layers.l1_penalty([float32], 0.7, 10), float)


def test_l1_gradient_is_the_numerical_one_away_from_zero(rng):
    W1, W2 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    W1[np.abs(W1) < 1e-3] = 0.5  # |w| is not differentiable at 0
    numeric = numerical_gradient(lambda: layers.l1_penalty([W1, W2], 0.7, 10), W1)
    assert relative_error(layers.l1_grad(W1, 0.7, 10), numeric) < TOL


@pytest.mark.parametrize("name", sorted(layers.ACTIVATIONS))
def test_float32_stays_float32(name, rng):
    z = rng.standard_normal((8, 3)).astype(np.float32)
    gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    out, cache = layers.batchnorm_forward(z, gamma, beta)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layers.batchnorm_backward(out, cache))
    forward, backward = layers.ACTIVATIONS[name]
    a, act_cache = forward(z)
    assert a.dtype == np.float32 and backward(a, act_cache).dtype == np.float32
    loss, dlogits = layers.softmax_cross_entropy(z, np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    assert dlogits.dtype == np.float32
