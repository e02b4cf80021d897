"""Every backward function against a numerical gradient (float64), and the
forward formulas against their definitions."""

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
