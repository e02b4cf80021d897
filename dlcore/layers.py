"""Layers as pure forward/backward pairs.

Every ``*_forward`` returns ``(out, cache)`` and every ``*_backward(dout, cache)``
returns the gradients of its inputs, so each pair can be gradient-checked alone
(``tests/test_layers.py``). Nothing here holds state; :mod:`dlcore.network`
owns the arrays and calls these functions.

Arrays are batch-major: ``x`` has shape ``(m, n)``, one example per row.
Every function keeps the dtype it is given (float32 stays float32): scalars are
plain Python floats so numpy never upcasts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# ---------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------


def dense_forward(x, W, b=None):
    """Affine layer ``z = x W + b``.

    x: (m, n_in), W: (n_in, n_out), b: (n_out,) or None.
    A layer followed by BatchNorm has no bias: BatchNorm subtracts the batch
    mean, which would cancel any bias, and its β takes that role.
    """
    z = x @ W
    if b is not None:
        z += b
    return z, (x, W, b is not None)


def dense_backward(dz, cache):
    """dz: (m, n_out) -> (dx (m, n_in), dW (n_in, n_out), db (n_out,) or None)."""
    x, W, has_bias = cache
    dx = dz @ W.T
    dW = x.T @ dz
    db = dz.sum(axis=0) if has_bias else None
    return dx, dW, db


# ---------------------------------------------------------------------------
# Batch Normalization
# ---------------------------------------------------------------------------


class BatchNormCache(NamedTuple):
    z_norm: np.ndarray  # (m, n)
    inv_std: np.ndarray  # (n,)  1/√(σ²+ε)
    gamma: np.ndarray  # (n,)
    mean: np.ndarray  # (n,)  batch μ
    var: np.ndarray  # (n,)  batch σ² (biased, 1/m)


def batchnorm_forward(z, gamma, beta, eps=1e-5):
    """BatchNorm in training mode, normalising each unit over the mini-batch.

    z: (m, n), gamma: (n,), beta: (n,)::

        μ      = 1/m Σᵢ z⁽ⁱ⁾
        σ²     = 1/m Σᵢ (z⁽ⁱ⁾ − μ)²          (biased, as in the course)
        z_norm = (z − μ) / √(σ² + ε)
        out    = γ · z_norm + β

    At test time the network uses :func:`batchnorm_inference` with running
    estimates of μ and σ² instead (see :func:`update_running_stats`). The batch
    μ and σ² are returned in the cache (``cache.mean``, ``cache.var``) so the
    caller can update those estimates; this function changes nothing.
    """
    mean = z.mean(axis=0)
    centered = z - mean
    var = np.einsum("ij,ij->j", centered, centered) / z.shape[0]
    inv_std = 1.0 / np.sqrt(var + eps)
    z_norm = centered
    z_norm *= inv_std
    out = z_norm * gamma
    out += beta
    return out, BatchNormCache(z_norm, inv_std, gamma, mean, var)


def batchnorm_backward(dout, cache):
    """dout: (m, n) -> (dz (m, n), dgamma (n,), dbeta (n,)).

    The fused form of backprop through μ and σ² (all sums over the batch)::

        dβ = Σ dout
        dγ = Σ dout · z_norm
        dz = γ/(m·√(σ²+ε)) · (m·dout − dβ − z_norm·dγ)
    """
    z_norm, inv_std, gamma, _, _ = cache
    m = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.einsum("ij,ij->j", dout, z_norm)
    dz = z_norm * (dgamma / m)
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


def relu_forward(z):
    """a = max(0, z); z: any shape."""
    return np.maximum(z, 0.0, dtype=z.dtype), z


def relu_backward(da, cache):
    z = cache
    return np.where(z > 0, da, 0.0).astype(da.dtype, copy=False)


def leaky_relu_forward(z, slope=0.01):
    """a = z if z > 0 else slope·z."""
    return np.where(z > 0, z, z * slope), (z, slope)


def leaky_relu_backward(da, cache):
    z, slope = cache
    return np.where(z > 0, da, da * slope)


def tanh_forward(z):
    a = np.tanh(z)
    return a, a


def tanh_backward(da, cache):
    a = cache
    return da * (1.0 - a * a)


ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "tanh": (tanh_forward, tanh_backward),
}


# ---------------------------------------------------------------------------
# Inverted dropout
# ---------------------------------------------------------------------------


def dropout_mask(shape, keep_prob, rng, dtype=np.float64):
    """A mask of 0 and 1/keep_prob: each unit is kept with probability keep_prob."""
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob!r}")
    keep = rng.random(shape, dtype=np.dtype(dtype)) < keep_prob
    return keep.astype(dtype) * (1.0 / keep_prob)


def dropout_forward(a, mask):
    """Inverted dropout: ``a · mask`` where mask holds 0 or 1/keep_prob.

    Scaling by 1/keep_prob at training time keeps E[a] unchanged, so nothing
    needs rescaling at test time (where dropout is simply off). The mask is an
    argument (see :func:`dropout_mask`) so a test can fix it.
    """
    return a * mask, mask


def dropout_backward(da, cache):
    return da * cache


# ---------------------------------------------------------------------------
# Softmax, cross-entropy and L2
# ---------------------------------------------------------------------------


def softmax(logits):
    """Row-wise softmax, stable for logits of any size (the row max is subtracted)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def softmax_cross_entropy(logits, y):
    """Mean cross-entropy of softmax(logits) against integer labels.

    logits: (m, C), y: (m,) ints in [0, C) -> (loss, dlogits (m, C))::

        L = −1/m Σᵢ log softmax(logits⁽ⁱ⁾)[yᵢ]
        dL/dlogits = (softmax(logits) − onehot(y)) / m

    Computed from log-softmax (logits minus their row max and the log of the
    shifted sum), so huge logits neither overflow nor produce log(0).
    """
    m = logits.shape[0]
    rows = np.arange(m)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)
    log_prob_true = shifted[rows, y] - np.log(sum_exp)
    loss = float(-log_prob_true.mean())
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


def l2_grad(W, lam, m):
    return W * (lam / m)
