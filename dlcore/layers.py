"""Layers as pure forward/backward pairs.

Every ``*_forward`` returns ``(out, cache)`` and every ``*_backward(dout, cache)``
returns the gradients of its inputs, so each pair can be gradient-checked alone
(``tests/test_layers.py``). Nothing here holds state; :mod:`dlcore.network`
owns the arrays and calls these functions.

Arrays are batch-major: ``x`` has shape ``(m, n)``, one example per row.
Every function keeps the dtype it is given (float32 stays float32): scalars are
plain Python floats so numpy never upcasts.

Optional ``out=`` arguments, as in numpy's ufuncs, name preallocated arrays to
write results into; without them every result is a fresh array and no input is
changed. The network's training step passes them (see
``Network.loss_and_grads(..., reuse_buffers=True)``) so that a step allocates
nothing large: fresh temporaries of ≥ 256 kB may be mapped anew, at a page
fault per 4 kB, every time. Both ways run the very same operations, so their
results are identical.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# ---------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------


def dense_forward(x, W, b=None, out=None):
    """Affine layer ``z = x W + b``.

    x: (m, n_in), W: (n_in, n_out), b: (n_out,) or None; out: (m, n_out) or None.
    A layer followed by BatchNorm has no bias: BatchNorm subtracts the batch
    mean, which would cancel any bias, and its β takes that role.
    """
    z = np.matmul(x, W, out=out)
    if b is not None:
        z += b
    return z, (x, W, b is not None)


def dense_backward(dz, cache, out=None, input_grad=True):
    """dz: (m, n_out) -> (dx (m, n_in), dW (n_in, n_out), db (n_out,) or None).

    out: ``(dx, dW, db)`` arrays to write into, any of them None.
    ``input_grad=False`` skips dx (returned as None): the first layer's dx is
    the gradient of the data, which nothing needs, and costs a whole matrix
    product as large as the layer's forward one.
    """
    x, W, has_bias = cache
    dx_out, dW_out, db_out = (None, None, None) if out is None else out
    dx = np.matmul(dz, W.T, out=dx_out) if input_grad else None
    dW = np.matmul(x.T, dz, out=dW_out)
    db = np.add.reduce(dz, axis=0, out=db_out) if has_bias else None
    return dx, dW, db


# ---------------------------------------------------------------------------
# Batch Normalization
# ---------------------------------------------------------------------------


class BatchNormCache(NamedTuple):
    centered: np.ndarray  # (m, n)  z − μ
    inv_std: np.ndarray  # (n,)  1/√(σ²+ε)
    gamma: np.ndarray  # (n,)
    mean: np.ndarray  # (n,)  batch μ
    var: np.ndarray  # (n,)  batch σ² (biased, 1/m)


def batchnorm_forward(z, gamma, beta, eps=1e-5, out=None, overwrite_z=False, centered_out=None):
    """BatchNorm in training mode, normalising each unit over the mini-batch.

    z: (m, n), gamma: (n,), beta: (n,), out: (m, n) or None::

        μ      = 1/m Σᵢ z⁽ⁱ⁾
        σ²     = 1/m Σᵢ (z⁽ⁱ⁾ − μ)²          (biased, as in the course)
        z_norm = (z − μ) / √(σ² + ε)
        out    = γ · z_norm + β

    At test time the network uses :func:`batchnorm_inference` with running
    estimates of μ and σ² instead (see :func:`update_running_stats`). The batch
    μ and σ² are returned in the cache (``cache.mean``, ``cache.var``) so the
    caller can update those estimates; this function changes nothing unless
    ``overwrite_z``: then z itself is centred in place and becomes
    ``cache.centered``, saving an (m, n) array. ``centered_out`` names another
    (m, n) array to hold z − μ instead, for when z must survive (BatchNorm after
    the activation: z is then the activation's output, which its backward needs).

    z_norm is never stored: ``out = (z − μ)·(γ/√(σ²+ε)) + β`` and the backward
    pass works from z − μ, which saves a pass over (m, n) each way.
    """
    m = z.shape[0]
    mean = np.add.reduce(z, axis=0)
    mean /= m
    centered = np.subtract(z, mean, out=z if overwrite_z else centered_out)
    var = np.einsum("ij,ij->j", centered, centered)
    var /= m
    inv_std = np.sqrt(var + eps)
    np.divide(1.0, inv_std, out=inv_std)
    out = np.multiply(centered, gamma * inv_std, out=out)
    out += beta
    return out, BatchNormCache(centered, inv_std, gamma, mean, var)


def batchnorm_backward(dout, cache, out=None):
    """dout: (m, n) -> (dz (m, n), dgamma (n,), dbeta (n,)).

    The fused form of backprop through μ and σ² (all sums over the batch),
    with z_norm = (z − μ)/√(σ²+ε)::

        dβ = Σ dout
        dγ = Σ dout · z_norm
        dz = γ/(m·√(σ²+ε)) · (m·dout − dβ − z_norm·dγ)

    out: ``(dz, dgamma, dbeta)`` arrays to write into, any of them None. dz may
    be ``cache.centered`` itself (the cache is then spent), never ``dout``.
    """
    centered, inv_std, gamma, _, _ = cache
    dz_out, dgamma_out, dbeta_out = (None, None, None) if out is None else out
    m = dout.shape[0]
    dbeta = np.add.reduce(dout, axis=0, out=dbeta_out)
    dgamma = np.einsum("ij,ij->j", dout, centered, out=dgamma_out)
    dgamma *= inv_std
    # dz = γ/√(σ²+ε) · (dout − dβ/m − (z − μ)·dγ/(m·√(σ²+ε)))
    dz = np.multiply(centered, dgamma * inv_std / m, out=dz_out)
    dz += dbeta / m
    np.subtract(dout, dz, out=dz)
    dz *= gamma * inv_std
    return dz, dgamma, dbeta


def batchnorm_inference(z, gamma, beta, running_mean, running_var, eps=1e-5):
    """BatchNorm at test time: ``γ·(z − μ_run)/√(σ²_run + ε) + β``.

    z: (m, n); the running estimates are read, never modified, so evaluating
    a model can't change it.
    """
    scale = gamma / np.sqrt(running_var + eps)
    return z * scale + (beta - running_mean * scale)


def update_running_stats(running_mean, running_var, batch_mean, batch_var, momentum):
    """Exponentially weighted averages of the batch statistics, in place.

    ``run = β·run + (1 − β)·batch`` with the course's β (``momentum``, default
    0.9 in :class:`dlcore.network.Network`): the estimate averages roughly the
    last 1/(1 − β) mini-batches.

    Note for PyTorch users: ``torch.nn.BatchNorm1d(momentum=0.1)`` means the
    complement, ``run = (1 − 0.1)·run + 0.1·batch``, i.e. the same average as
    β = 0.9 here. (torch also feeds the *unbiased* batch variance into its
    running_var; here the biased σ² the layer normalised with is used.)
    """
    running_mean *= momentum
    running_mean += (1.0 - momentum) * batch_mean
    running_var *= momentum
    running_var += (1.0 - momentum) * batch_var


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------


# Every activation's cache is its output a, from which its derivative can be written
# (for the ReLUs and ELUs a > 0 exactly where z > 0), so a forward pass may run in
# place (out=z) and a backward pass may write its result over the spent cache (out=a).


def relu_forward(z, out=None):
    """a = max(0, z); z: (m, n)."""
    # A row of zeros, not the scalar 0: numpy's maximum against a scalar is not
    # vectorised and ~3x slower.
    a = np.maximum(z, np.zeros(z.shape[-1:], z.dtype), out=out)
    return a, a


def relu_backward(da, cache, out=None):
    """da · [a > 0]; out may be the cache a, never da."""
    # A multiply by the 0/1 mask, not np.where: where's branch per element is
    # ~17x slower on the random signs of a hidden layer.
    mask = np.greater(cache, 0.0, out=np.empty_like(da) if out is None else out)
    return np.multiply(da, mask, out=mask)


def leaky_relu_forward(z, slope=0.01, out=None):
    """a = z if z > 0 else slope·z."""
    a = np.where(z > 0, z, z * slope)
    if out is not None:
        np.copyto(out, a)
        a = out
    return a, (a, slope)


def leaky_relu_backward(da, cache, out=None):
    a, slope = cache
    grad = np.where(a > 0, da, da * slope)
    if out is not None:
        np.copyto(out, grad)
        grad = out
    return grad


def tanh_forward(z, out=None):
    a = np.tanh(z, out=out)
    return a, a


def tanh_backward(da, cache, out=None):
    """da · (1 − a²); out may be the cache a, never da."""
    a = cache
    grad = np.multiply(a, a, out=out)
    np.subtract(1.0, grad, out=grad)
    return np.multiply(da, grad, out=grad)


ELU_ALPHA = 1.0  # elu_backward's branch-free min(a + 1, 1) holds for α = 1 only
# SELU's constants (Klambauer et al. 2017): with them and N(0, 1/n_in) weights, unit
# mean and variance are a fixed point of each layer.
SELU_SCALE = 1.0507009873554804934193349852946  # λ
SELU_ALPHA = 1.6732632423543772848170429916717  # α


def _exponential_linear(z, alpha, out):
    """z where z ≥ 0, α(eᶻ − 1) where z < 0; into ``out`` (which may be z) or a new array."""
    negative = z < 0.0  # before a possibly in-place copy overwrites z
    a = np.copy(z) if out is None else out
    if a is not z:
        np.copyto(a, z)
    # Only where z < 0: eᶻ of a large positive z would overflow, and expm1 keeps
    # eᶻ − 1 exact near 0.
    np.expm1(a, out=a, where=negative)
    np.multiply(a, alpha, out=a, where=negative)
    return a


def elu_forward(z, out=None):
    """a = z if z > 0 else α(eᶻ − 1), α = 1; z: (m, n).

    Smooth at 0 (for α = 1) and negative for z < 0, which pulls the mean activation
    towards 0 where ReLU's stays positive; saturates at −α for large negative z.
    """
    a = _exponential_linear(z, ELU_ALPHA, out)
    return a, a


def elu_backward(da, cache, out=None):
    """da · (1 if a > 0 else a + α); out may be the cache a, never da."""
    # eᶻ = (a + α)/α for z < 0. With α = 1 the derivative is min(a + 1, 1): a + 1 > 1
    # exactly where a > 0. One branch-free pass, no mask.
    grad = np.add(cache, ELU_ALPHA, out=out)
    np.minimum(grad, 1.0, out=grad)
    return np.multiply(da, grad, out=grad)


def selu_forward(z, out=None):
    """a = λz if z > 0 else λα(eᶻ − 1), with λ ≈ 1.0507, α ≈ 1.6733 (``SELU_SCALE``/``_ALPHA``).

    Meant for self-normalising nets *without* BatchNorm: with ``init="xavier"``
    (N(0, 1/n_in), LeCun's) activations drift towards mean 0 and variance 1 on their
    own. Behind BatchNorm that property is moot.
    """
    a = _exponential_linear(z, SELU_ALPHA, out)
    a *= SELU_SCALE
    return a, a


def selu_backward(da, cache, out=None):
    """da · (λ if a > 0 else a + λα); out may be the cache a, never da."""
    positive = cache > 0.0  # before out (maybe the cache) is overwritten
    grad = np.add(cache, SELU_SCALE * SELU_ALPHA, out=out)  # λα·eᶻ for z < 0
    np.copyto(grad, SELU_SCALE, where=positive)
    return np.multiply(da, grad, out=grad)


def sigmoid_forward(z, out=None):
    """a = 1/(1 + e⁻ᶻ); z: (m, n).

    A poor hidden activation: it saturates (σ' ≤ 1/4, ≈ 0 for |z| ≳ 10, so gradients
    shrink through every layer) and its outputs are all positive (not zero-centred).
    """
    # a = exp(−softplus(−z)), softplus(x) = log(1 + eˣ) = logaddexp(0, x): no e^|z| is
    # ever formed, so z = ±1000 neither overflows nor warns, and small a keeps its
    # relative accuracy (1 − σ(−z) would not).
    a = np.negative(z, out=out)
    np.logaddexp(0.0, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    return a, a


def sigmoid_backward(da, cache, out=None):
    """da · a(1 − a); out may be the cache a, never da."""
    # a(1 − a) = 1/4 − (a − 1/2)²: a chain of one-input passes, so it can run in place
    # over a. Exact to ~1e-17 absolute (as tanh's 1 − a²); only where σ' < ~1e-12,
    # a unit that passes no gradient anyway, is its relative error large.
    grad = np.subtract(cache, 0.5, out=out)
    np.multiply(grad, grad, out=grad)
    np.subtract(0.25, grad, out=grad)
    return np.multiply(da, grad, out=grad)


ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "tanh": (tanh_forward, tanh_backward),
    "elu": (elu_forward, elu_backward),
    "selu": (selu_forward, selu_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
}


# ---------------------------------------------------------------------------
# Inverted dropout
# ---------------------------------------------------------------------------


def dropout_mask(shape, keep_prob, rng, dtype=np.float64):
    """A mask of 0 and 1/keep_prob: each unit is kept with probability keep_prob."""
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob!r}")
    keep = rng.random(shape, dtype=np.dtype(dtype)) < keep_prob
    return np.multiply(keep, 1.0 / keep_prob, dtype=dtype)


def dropout_forward(a, mask, out=None):
    """Inverted dropout: ``a · mask`` where mask holds 0 or 1/keep_prob.

    Scaling by 1/keep_prob at training time keeps E[a] unchanged, so nothing
    needs rescaling at test time (where dropout is simply off). The mask is an
    argument (see :func:`dropout_mask`) so a test can fix it.
    """
    return np.multiply(a, mask, out=out), mask


def dropout_backward(da, cache, out=None):
    """da · mask; out may be da itself."""
    return np.multiply(da, cache, out=out)


# ---------------------------------------------------------------------------
# Softmax, cross-entropy, L2 and L1
# ---------------------------------------------------------------------------


def softmax(logits):
    """Row-wise softmax, stable for logits of any size (the row max is subtracted)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def softmax_cross_entropy(logits, y, out=None):
    """Mean cross-entropy of softmax(logits) against integer labels.

    logits: (m, C), y: (m,) ints in [0, C) -> (loss, dlogits (m, C))::

        L = −1/m Σᵢ log softmax(logits⁽ⁱ⁾)[yᵢ]
        dL/dlogits = (softmax(logits) − onehot(y)) / m

    Computed from log-softmax (logits minus their row max and the log of the
    shifted sum), so huge logits neither overflow nor produce log(0).
    out: (m, C) array for dlogits; it may be ``logits`` itself.
    """
    m = logits.shape[0]
    rows = np.arange(m)
    shifted = np.subtract(logits, logits.max(axis=1, keepdims=True), out=out)
    shifted_true = shifted[rows, y]
    exp = np.exp(shifted, out=shifted)
    sum_exp = exp.sum(axis=1)
    log_prob_true = shifted_true - np.log(sum_exp)
    loss = -float(np.add.reduce(log_prob_true)) / m
    dlogits = exp
    dlogits /= sum_exp[:, None]
    dlogits[rows, y] -= 1.0
    dlogits *= 1.0 / m
    return loss, dlogits


def l2_penalty(weights, lam, m):
    """L2 regularisation ``λ/(2m) · Σ_l ‖W_l‖²_F`` over the given weight matrices.

    weights: iterable of arrays; m: the mini-batch size. Its gradient with
    respect to each W is ``(λ/m)·W`` (see :func:`l2_grad`).
    """
    if lam == 0.0:
        return 0.0
    return lam / (2.0 * m) * sum(float(np.vdot(W, W)) for W in weights)


def l2_grad(W, lam, m, out=None):
    """(λ/m)·W; out: an array shaped like W, or None."""
    return np.multiply(W, lam / m, out=out)


def l1_penalty(weights, lam, m):
    """L1 regularisation ``λ/(2m) · Σ_l ‖W_l‖₁`` (the sum of every |w|) over the given weights.

    weights: iterable of arrays; m: the mini-batch size. The same λ/(2m) scale as
    :func:`l2_penalty`, so one λ means the same strength at ‖W‖ ≈ 1. Its gradient,
    ``λ/(2m)·sign(W)`` (see :func:`l1_grad`), pulls every weight towards 0 by the
    same amount however small it is: L1 drives weights to exactly 0 (sparse W),
    where L2's pull, proportional to W, fades as W shrinks.
    """
    if lam == 0.0:
        return 0.0
    # |W| is a temporary the size of W: numpy has no reduction of |w| that avoids it.
    return lam / (2.0 * m) * sum(float(np.add.reduce(np.abs(W), axis=None)) for W in weights)


def l1_grad(W, lam, m, out=None):
    """(λ/(2m))·sign(W), with sign(0) = 0 (the subgradient that leaves zeros at 0).

    out: an array shaped like W, or None.
    """
    grad = np.sign(W, out=out)
    grad *= lam / (2.0 * m)
    return grad
