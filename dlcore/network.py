"""A fully connected softmax classifier with optional Batch Normalization.

Architecture, for hidden sizes ``(h1, ..., hL)``, with BatchNorm before each
activation (``bn_position="before"``, the course's: z̃ = BN(z), a = g(z̃))::

    x ─ fc1 ─ bn1 ─ act ─ [dropout] ─ fc2 ─ bn2 ─ act ─ ... ─ fc{L+1} ─ softmax

or after it (``bn_position="after"``: a = g(z), ã = BN(a))::

    x ─ fc1 ─ act ─ bn1 ─ [dropout] ─ fc2 ─ act ─ bn2 ─ ... ─ fc{L+1} ─ softmax

With BatchNorm before the activation, hidden dense layers have no bias (BN's
mean subtraction would cancel it; β replaces it). After the activation, or
without BatchNorm, every dense layer has a bias ``fc{l}.b``. The output layer
always has a bias and no BatchNorm.

State lives in three flat dicts with namespaced keys:

- ``params``  trainable: ``fc1.W`` (n_in, n_out), ``bn1.gamma``, ``bn1.beta``, ``fc3.b``
- ``buffers`` not trained: ``bn1.running_mean``, ``bn1.running_var``
- ``grads``   returned by :meth:`Network.loss_and_grads`, exactly the keys of ``params``

The params lie back to back in one array underneath (so an optimizer can update
them all in one pass), and ``loss_and_grads(..., reuse_buffers=True)`` is the
allocation-free fast path of a training loop (read its warning).

The class only holds arrays and calls the pure functions of :mod:`dlcore.layers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields

import numpy as np

from dlcore import layers

BN_EPS = 1e-5

#: Weight initialisations (``Architecture.init``), each with a line a UI can show.
#: All draw W ~ N(0, variance); biases, β start at 0 and γ at 1.
INITS = {
    "he": "He: N(0, 2/n_in), for ReLU and its kin (leaky ReLU, ELU)",
    "xavier": "Xavier (the course's): N(0, 1/n_in), for tanh; LeCun's, for SELU",
    "glorot": "Glorot: N(0, 2/(n_in + n_out)), for tanh and sigmoid",
}


#: Where BatchNorm sits in a hidden layer (``Architecture.bn_position``), with a line each.
BN_POSITIONS = {
    "before": "Before the activation (the course's): z̃ = BN(z), a = g(z̃)",
    "after": "After the activation: a = g(z), ã = BN(a); the dense layer keeps its bias",
}


def _init_variance(init: str, n_in: int, n_out: int) -> float:
    """The variance of W (n_in, n_out)'s entries under initialisation ``init`` (see INITS).

    He keeps the variance of ReLU activations from layer to layer; Xavier (1/n_in)
    keeps that of tanh's near-linear centre; Glorot averages fan-in and fan-out so
    that the gradients' variance is kept on the way back as well.
    """
    if init == "he":
        return 2.0 / n_in
    if init == "xavier":
        return 1.0 / n_in
    if init == "glorot":
        return 2.0 / (n_in + n_out)
    raise ValueError(f"init must be one of {sorted(INITS)}, got {init!r}")


@dataclass(frozen=True)
class Architecture:
    """Everything that fixes the shapes and meaning of a network's arrays.

    ``bn_position`` ("before" or "after" the activation, see :data:`BN_POSITIONS`)
    only matters with ``batchnorm``. Fields added later come last and default to
    what the network was before they existed, so that :meth:`from_dict` can read
    an architecture saved by an older version as the very same network.
    """

    n_features: int
    hidden: tuple[int, ...]
    n_classes: int
    activation: str = "relu"
    batchnorm: bool = True
    init: str = "he"
    dtype: str = "float64"
    bn_position: str = "before"

    def __post_init__(self):
        if self.n_features < 1:
            raise ValueError(f"n_features must be ≥ 1, got {self.n_features!r}")
        if self.n_classes < 2:
            raise ValueError(f"a classifier needs ≥ 2 classes, got {self.n_classes!r}")
        if any(int(h) != h or h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {self.hidden!r}")
        if self.activation not in layers.ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(layers.ACTIVATIONS)}, got {self.activation!r}"
            )
        if not isinstance(self.init, str) or self.init not in INITS:
            raise ValueError(f"init must be one of {sorted(INITS)}, got {self.init!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not isinstance(self.bn_position, str) or self.bn_position not in BN_POSITIONS:
            raise ValueError(
                f"bn_position must be 'before' or 'after' (the activation), "
                f"got {self.bn_position!r}"
            )

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden, self.n_classes)

    @property
    def weight_keys(self) -> list[str]:
        """The dense weight matrices' names, e.g. ["fc1.W", "fc2.W"]: one per layer."""
        return [f"fc{l}.W" for l in range(1, len(self.hidden) + 2)]

    @property
    def bn_units(self) -> dict[str, int]:
        """Each BatchNorm layer's name and width, e.g. {"bn1": 128}: one per hidden layer."""
        return {f"bn{l}": n for l, n in enumerate(self.hidden, 1)} if self.batchnorm else {}

    def to_dict(self) -> dict:
        """Every field, JSON-native (``hidden`` as a list)."""
        return {**asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, d: Mapping) -> Architecture:
        """The architecture :meth:`to_dict` gave ``d``, also one saved before a field existed.

        A missing field that has a default takes it (a dict written before
        ``bn_position`` existed is the "before" network it was). A missing required
        field, a key that is no field, or a bad value raise ValueError naming it.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"an architecture must be a dict, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(key) for key in d if key not in names)
        if unknown:
            raise ValueError(f"unknown architecture field(s) {unknown}; known: {names}")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in d]
        if missing:
            raise ValueError(f"architecture lacks the field(s) {missing}")
        hidden = d["hidden"]
        if not isinstance(hidden, (list, tuple)):
            raise ValueError(f"hidden must be a list of layer sizes, got {hidden!r}")
        try:
            return cls(**{**d, "hidden": tuple(hidden)})
        except TypeError as error:  # e.g. a size that is text: compared with 1 above
            raise ValueError(f"invalid architecture {dict(d)!r}: {error}") from None


class Network:
    """The classifier. ``Network(arch, seed)`` draws fresh weights.

    Initialisation (``arch.init``, see :data:`INITS`): "he" W ~ N(0, 2/n_in) for
    ReLU, leaky ReLU and ELU; "xavier" W ~ N(0, 1/n_in) (the course's variant) for
    tanh and SELU; "glorot" W ~ N(0, 2/(n_in + n_out)) for tanh and sigmoid.
    γ = 1, β = 0, biases 0, running mean 0 and running variance 1.
    """

    def __init__(self, arch: Architecture, seed: int = 0):
        self.arch = arch
        self.dtype = np.dtype(arch.dtype)
        self.n_layers = len(arch.hidden) + 1  # dense layers, output included
        self._bn_after = arch.bn_position == "after"
        rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        sizes = arch.layer_sizes
        for l in range(1, self.n_layers + 1):
            n_in, n_out = sizes[l - 1], sizes[l]
            std = np.sqrt(_init_variance(arch.init, n_in, n_out))
            W = rng.standard_normal((n_in, n_out)) * std
            self.params[f"fc{l}.W"] = W.astype(self.dtype)
            if self._has_bias(l):
                self.params[f"fc{l}.b"] = np.zeros(n_out, self.dtype)
            if self._has_bn(l):
                self.params[f"bn{l}.gamma"] = np.ones(n_out, self.dtype)
                self.params[f"bn{l}.beta"] = np.zeros(n_out, self.dtype)
                self.buffers[f"bn{l}.running_mean"] = np.zeros(n_out, self.dtype)
                self.buffers[f"bn{l}.running_var"] = np.ones(n_out, self.dtype)
        # one array underneath: an optimizer then updates all params in one pass
        drawn, self.params = self.params, _back_to_back(self.params, self.dtype)
        for name, value in drawn.items():
            self.params[name][...] = value
        self._step_buffers: _StepBuffers | None = None  # for reuse_buffers=True

    # -- structure ---------------------------------------------------------

    def _has_bn(self, l: int) -> bool:  # as arch.bn_units says, cheaply (every step asks)
        return self.arch.batchnorm and l < self.n_layers

    def _has_bias(self, l: int) -> bool:
        # BatchNorm right after the dense layer subtracts the batch mean, which
        # would cancel a bias; after the activation it does not.
        return not self._has_bn(l) or self._bn_after

    @property
    def bn_layers(self) -> list[str]:
        """Names of the BatchNorm layers, e.g. ["bn1", "bn2"]."""
        return list(self.arch.bn_units)

    @property
    def weight_keys(self) -> list[str]:
        """The dense weight matrices: what L2 and L1 penalise, one per layer."""
        return self.arch.weight_keys

    def weight_sparsity(self, threshold: float = 1e-3) -> dict[str, float]:
        """Fraction of each dense layer's weights with |w| < threshold, e.g. {"fc1": 0.42}.

        What L1 does that L2 doesn't: L1 drives weights to 0, L2 only shrinks them.
        Cheap enough for every step: two boolean reductions per matrix, no float copy
        (−t < w < t counted as #(w < t) − #(w ≤ −t)).
        """
        threshold = _positive_number("threshold", threshold)
        sparsity = {}
        for key in self.weight_keys:
            W = self.params[key]
            near_zero = np.count_nonzero(W < threshold) - np.count_nonzero(W <= -threshold)
            sparsity[key.removesuffix(".W")] = near_zero / W.size
        return sparsity

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every param and buffer: what a compatible checkpoint must match."""
        return {k: v.shape for k, v in {**self.params, **self.buffers}.items()}

    # -- training mode -----------------------------------------------------

    def dropout_masks(self, batch_size: int, keep_prob: float, rng) -> list | None:
        """One inverted-dropout mask per hidden layer's activations, or None if off."""
        if keep_prob >= 1.0:
            return None
        return [
            layers.dropout_mask((batch_size, h), keep_prob, rng, self.dtype)
            for h in self.arch.hidden
        ]

    def loss_and_grads(self, X, y, l2=0.0, masks=None, *, l1=0.0, reuse_buffers=False):
        """Forward and backward pass in training mode on one mini-batch.

        X: (m, n_features), y: (m,) int class ids, masks: from
        :meth:`dropout_masks` or None; l2, l1: the regularisation strengths λ.
        Returns ``(cost, grads, batch_stats)``: cost J = mean cross-entropy +
        λ₂/(2m)·Σ‖W‖²_F + λ₁/(2m)·Σ‖W‖₁ (dense weights only, not biases, γ or β);
        grads has exactly the keys of ``params``; batch_stats
        maps ``"bn1"`` to the batch ``(μ, σ²)`` of what that layer normalises
        (z, or the activation a with ``bn_position="after"``). Buffers are
        not touched: :meth:`update_running_stats` does that, so this function
        is pure and can be gradient-checked. X is converted to the network's
        dtype if it has another one.

        ``reuse_buffers=True`` is the fast path of a training loop. WARNING:
        the returned grads are then this network's own preallocated arrays,
        valid only until the next call with ``reuse_buffers=True``, which
        overwrites them (copy them to keep them). All the step's large arrays
        are allocated at the first such call and again whenever the batch size
        changes. The results are bit-for-bit those of the default path, which
        runs the same operations on fresh arrays (tests/test_fast_step.py).
        batch_stats are small fresh arrays either way.
        """
        X = np.asarray(X, dtype=self.dtype)
        if not reuse_buffers:
            return self._loss_and_grads(X, y, l2, l1, masks, _StepBuffers(self, X.shape[0]))
        if self._step_buffers is None or self._step_buffers.batch_size != X.shape[0]:
            self._step_buffers = None  # free the old arrays before allocating new ones
            self._step_buffers = _StepBuffers(self, X.shape[0])
        return self._loss_and_grads(X, y, l2, l1, masks, self._step_buffers)

    def _loss_and_grads(self, X, y, l2, l1, masks, buffers):
        """The step of :meth:`loss_and_grads`, writing every large array into ``buffers``."""
        p = self.params
        m = X.shape[0]
        forward_act, backward_act = layers.ACTIVATIONS[self.arch.activation]
        L = self.n_layers
        caches = []
        batch_stats = {}
        a = X
        # 1) forward through the hidden layers. BatchNorm before the activation
        #    centres z in place and the activation runs in place on its output;
        #    after it, the activation runs in place on z and BatchNorm centres a
        #    copy, since the activation's backward needs its output a.
        for l in range(1, L):
            z, dense_cache = layers.dense_forward(
                a, p[f"fc{l}.W"], p.get(f"fc{l}.b"), out=buffers.z[l]
            )
            bn_cache = None
            if self._has_bn(l) and not self._bn_after:
                z, bn_cache = layers.batchnorm_forward(
                    z, p[f"bn{l}.gamma"], p[f"bn{l}.beta"], BN_EPS,
                    out=buffers.bn_out[l], overwrite_z=True,
                )
            activated, act_cache = forward_act(z, out=z)
            a = activated
            if self._has_bn(l) and self._bn_after:
                a, bn_cache = layers.batchnorm_forward(
                    activated, p[f"bn{l}.gamma"], p[f"bn{l}.beta"], BN_EPS,
                    out=buffers.bn_out[l], centered_out=buffers.centered[l],
                )
            if bn_cache is not None:
                batch_stats[f"bn{l}"] = (bn_cache.mean, bn_cache.var)
            if masks is not None:
                a, _ = layers.dropout_forward(a, masks[l - 1], out=buffers.dropped(l))
            caches.append((dense_cache, bn_cache, act_cache, activated))
        # 2) output layer and cost; dlogits overwrite the logits
        logits, out_cache = layers.dense_forward(a, p[f"fc{L}.W"], p[f"fc{L}.b"], out=buffers.z[L])
        cost, dlogits = layers.softmax_cross_entropy(logits, y, out=logits)
        cost += layers.l2_penalty((p[k] for k in self.weight_keys), l2, m)
        cost += layers.l1_penalty((p[k] for k in self.weight_keys), l1, m)
        # 3) backward, output layer first; each step writes over a spent cache
        #    (the activation's gradient over its output, BatchNorm's over its
        #    input minus μ)
        grads = buffers.grads
        da, _, _ = layers.dense_backward(
            dlogits, out_cache, out=(buffers.da[L - 1], grads[f"fc{L}.W"], grads[f"fc{L}.b"])
        )
        for l in range(L - 1, 0, -1):
            dense_cache, bn_cache, act_cache, activated = caches[l - 1]
            if masks is not None:
                da = layers.dropout_backward(da, masks[l - 1], out=da)
            if bn_cache is not None and self._bn_after:
                da, _, _ = layers.batchnorm_backward(da, bn_cache, out=(
                    bn_cache.centered, grads[f"bn{l}.gamma"], grads[f"bn{l}.beta"]))
            dz = backward_act(da, act_cache, out=activated)
            if bn_cache is not None and not self._bn_after:
                dz, _, _ = layers.batchnorm_backward(dz, bn_cache, out=(
                    bn_cache.centered, grads[f"bn{l}.gamma"], grads[f"bn{l}.beta"]))
            da, _, _ = layers.dense_backward(dz, dense_cache, input_grad=l > 1, out=(
                buffers.da.get(l - 1), grads[f"fc{l}.W"], grads.get(f"fc{l}.b")))
        # 4) the regularisers' gradients on every weight matrix: L2's (λ/m)·W, L1's
        #    (λ/(2m))·sign(W)
        if l2:
            for k in self.weight_keys:
                grads[k] += layers.l2_grad(p[k], l2, m, out=buffers.weight_scratch(p[k]))
        if l1:
            for k in self.weight_keys:
                grads[k] += layers.l1_grad(p[k], l1, m, out=buffers.weight_scratch(p[k]))
        return cost, grads, batch_stats

    def update_running_stats(self, batch_stats, momentum=0.9):
        """``run = β·run + (1 − β)·batch`` for every BN layer (β = ``momentum``)."""
        for name, (mean, var) in batch_stats.items():
            layers.update_running_stats(
                self.buffers[f"{name}.running_mean"],
                self.buffers[f"{name}.running_var"],
                mean,
                var,
                momentum,
            )

    # -- inference mode ----------------------------------------------------

    def forward(self, X, mode="inference"):
        """Logits (m, C) without dropout.

        mode "inference" normalises with the running estimates (what a deployed
        model does); mode "train" normalises with the statistics of X itself,
        as during training. Neither changes any param or buffer.
        """
        logits, _ = self._forward_with_stats(X, mode)
        return logits

    def _forward_with_stats(self, X, mode):
        if mode not in ("inference", "train"):
            raise ValueError(f"mode must be 'inference' or 'train', got {mode!r}")
        p = self.params
        forward_act, _ = layers.ACTIVATIONS[self.arch.activation]
        stats = {}
        a = X
        for l in range(1, self.n_layers):
            a, _ = layers.dense_forward(a, p[f"fc{l}.W"], p.get(f"fc{l}.b"))
            if self._has_bn(l) and not self._bn_after:
                a = self._normalise(l, a, mode, stats)
            a, _ = forward_act(a)
            if self._has_bn(l) and self._bn_after:
                a = self._normalise(l, a, mode, stats)
        L = self.n_layers
        logits, _ = layers.dense_forward(a, p[f"fc{L}.W"], p[f"fc{L}.b"])
        return logits, stats

    def _normalise(self, l, x, mode, stats):
        """Layer l's BatchNorm of x in ``mode``; in "train" mode x's (μ, σ²) go into stats."""
        gamma, beta = self.params[f"bn{l}.gamma"], self.params[f"bn{l}.beta"]
        if mode == "train":
            out, cache = layers.batchnorm_forward(x, gamma, beta, BN_EPS)
            stats[f"bn{l}"] = (cache.mean, cache.var)
            return out
        running_mean = self.buffers[f"bn{l}.running_mean"]
        running_var = self.buffers[f"bn{l}.running_var"]
        return layers.batchnorm_inference(x, gamma, beta, running_mean, running_var, BN_EPS)

    def predict(self, X, mode="inference"):
        """Class ids (m,)."""
        return self.forward(X, mode).argmax(axis=1)

    def evaluate(self, X, y, l2=0.0, mode="inference", *, l1=0.0):
        """``(accuracy, cost)`` on a whole set; cost includes the L2 and L1 terms like J."""
        logits = self.forward(X, mode)
        cost, _ = layers.softmax_cross_entropy(logits, y)
        weights = [self.params[k] for k in self.weight_keys]
        cost += layers.l2_penalty(weights, l2, X.shape[0])
        cost += layers.l1_penalty(weights, l1, X.shape[0])
        accuracy = float((logits.argmax(axis=1) == y).mean())
        return accuracy, float(cost)

    def population_stats(self, X):
        """The true μ and σ² of what every BN layer normalises (z, or a if BN follows
        the activation) over a whole data set.

        Each layer is normalised with the statistics of the whole set (a
        training-mode pass with the entire set as one batch) using the current
        weights: this is what the running estimates approximate as the
        weights settle. Returns ``{"bn1": (mean (n,), var (n,)), ...}``.
        """
        _, stats = self._forward_with_stats(X, "train")
        return stats

    # -- copying -----------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Copies of params and buffers, keyed ``params/fc1.W``, ``buffers/bn1.running_mean``."""
        out = {f"params/{k}": v.copy() for k, v in self.params.items()}
        out.update({f"buffers/{k}": v.copy() for k, v in self.buffers.items()})
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays`; checks every key, shape and dtype first."""
        expected = {f"params/{k}": v for k, v in self.params.items()}
        expected.update({f"buffers/{k}": v for k, v in self.buffers.items()})
        missing = sorted(set(expected) - set(arrays))
        extra = sorted(set(arrays) - set(expected))
        if missing or extra:
            raise ValueError(
                f"arrays do not fit this network: missing {missing}, unexpected {extra}")
        for key, target in expected.items():
            value = np.asarray(arrays[key])
            if value.shape != target.shape:
                raise ValueError(f"{key}: shape {value.shape} does not fit {target.shape}")
            if value.dtype != target.dtype:
                raise ValueError(f"{key}: dtype {value.dtype} does not fit {target.dtype}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{key}: holds NaN or inf")
        for key, target in expected.items():
            target[...] = arrays[key]


def _positive_number(name: str, value) -> float:
    """``value`` as a Python float if it is a finite real > 0, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {number}")
    return number


def _back_to_back(like: dict[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
    """Uninitialised arrays shaped like those of ``like``, back to back in one 1-D array.

    The params and the grads of a network are laid out this way so that an
    optimizer can update all of them in one pass per operation (see dlcore.optim).
    """
    span = np.empty(sum(a.size for a in like.values()), dtype)
    views, offset = {}, 0
    for name, array in like.items():
        views[name] = span[offset:offset + array.size].reshape(array.shape)
        offset += array.size
    return views


class _StepBuffers:
    """Every large array one training step writes, for one batch size m.

    ``Network.loss_and_grads`` runs on a fresh instance per call by default and
    on one kept instance with ``reuse_buffers=True``. Per hidden layer l (n units):
    ``z[l]`` (m, n) the dense output; ``bn_out[l]`` (m, n) BatchNorm's output;
    ``da[l]`` (m, n) the gradient flowing into layer l's output. With BatchNorm
    before the activation, z[l] is centred in place and bn_out[l] activated in
    place; after it, z[l] is activated in place and ``centered[l]`` (m, n) holds
    the activation minus its batch mean. ``z[L]`` holds the logits, then dlogits.
    ``grads``, back to back like the params, is what the step returns.
    """

    def __init__(self, net: Network, batch_size: int):
        self.batch_size = m = batch_size
        dtype = net.dtype
        sizes = net.arch.layer_sizes
        self.z = {l: np.empty((m, sizes[l]), dtype) for l in range(1, net.n_layers)}
        # Column-major logits: the softmax's reductions over each row's few classes
        # then run along contiguous memory (2x faster for 10 classes).
        self.z[net.n_layers] = np.empty((m, sizes[-1]), dtype, order="F")
        self.bn_out = {l: np.empty((m, sizes[l]), dtype) for l in range(1, net.n_layers)
                       if net._has_bn(l)}
        self.centered = {l: np.empty_like(self.bn_out[l]) for l in self.bn_out
                         if net._bn_after}
        self.da = {l: np.empty((m, sizes[l]), dtype) for l in range(1, net.n_layers)}
        self.grads = _back_to_back(net.params, dtype)
        self._dropped: dict[int, np.ndarray] = {}
        self._weight_scratch: dict[tuple[int, ...], np.ndarray] = {}

    def dropped(self, l: int) -> np.ndarray:
        """(m, n) layer l's activations after dropout; allocated when dropout is first on."""
        if l not in self._dropped:
            self._dropped[l] = np.empty_like(self.da[l])
        return self._dropped[l]

    def weight_scratch(self, weight: np.ndarray) -> np.ndarray:
        """Scratch shaped like ``weight``, for L2's gradient; allocated when L2 is first on."""
        if weight.shape not in self._weight_scratch:
            self._weight_scratch[weight.shape] = np.empty_like(weight)
        return self._weight_scratch[weight.shape]
