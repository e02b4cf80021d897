"""Gradient-descent optimizers: GD, momentum, Nesterov, RMSprop and Adam, in place on numpy arrays.

Every optimizer updates a dict of parameters ``params: name -> ndarray`` from a dict of
gradients with exactly the same keys and shapes (course notes, week 2)::

    gd        W -= α dW
    momentum  v = β v + (1−β) dW                 W -= α v
    nesterov  v = β v + (1−β) dW                 W -= α ((1−β) dW + β v)
    rmsprop   s = β2 s + (1−β2) dW²              W -= α dW / (√s + ε)
    adam      v = β1 v + (1−β1) dW               v̂ = v / (1−β1^t)
              s = β2 s + (1−β2) dW²              ŝ = s / (1−β2^t)
                                                 W -= α v̂ / (√ŝ + ε)

``t`` counts ``step()`` calls and is 1 at the first update. The moments ``v`` and ``s``
have the shape and dtype of their parameter and are created (as zeros) the first time
a parameter is stepped. Usage::

    opt = make_optimizer("adam", 1e-3, beta2=0.99)
    opt.step(params, grads)          # params' arrays change in place
    opt.lr = 3e-4                    # takes effect at the next step
    saved = opt.state_dict()         # {"t": 1, "moments": {"fc1.W/v": ..., ...}}
    norms = opt.step(params, grads, update_norms=["fc1.W"])   # {"fc1.W": ‖ΔW‖}

Speed: after its first step an optimizer allocates nothing. Every pass of an update
is an in-place ufunc (``out=``) into a preallocated scratch array, and scalars are
Python floats, so float32 parameters stay float32 throughout. When the params lie
back to back in one array, and the grads likewise (as a ``Network``'s do), the
moments are laid out the same way and one update runs over the whole span instead
of one per param: the same elementwise arithmetic, bit for bit, in a dozen numpy
calls in all instead of a dozen per param (in cache-sized chunks when the span is
long, see ``CHUNK``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Mapping
from typing import NamedTuple

import numpy as np

__all__ = [
    "OPTIMIZERS",
    "GD",
    "Adam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "flat_span",
    "make_optimizer",
    "optimizer_formula",
]


def _check_number(name: str, value: object) -> float:
    """Return ``value`` as a Python float, or raise ValueError if it is not a finite real."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def flat_span(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The 1-D array that ``arrays`` fill back to back in this order, or None."""
    base = arrays[0].base if arrays else None
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    start = position = arrays[0].__array_interface__["data"][0]
    for array in arrays:
        if (array.base is not base or array.dtype != base.dtype
                or not array.flags.c_contiguous
                or array.__array_interface__["data"][0] != position):
            return None
        position += array.nbytes
    first = (start - base.__array_interface__["data"][0]) // base.itemsize
    return base[first:first + (position - start) // base.itemsize]


def _add_squares(squares: dict[str, float], offsets, start: int, update: np.ndarray) -> None:
    """Add to ``squares[name]`` the sum of squares of that param's part of ``update``.

    ``update`` is one chunk of a whole-span update, starting at ``start`` in the span;
    ``offsets`` maps each param name to its [start, stop) in the span.
    """
    stop = start + update.size
    for name in squares:
        first, last = offsets[name]
        low, high = max(first, start), min(last, stop)
        if low < high:
            part = update[low - start:high - start]
            squares[name] += float(np.vdot(part, part))


#: A whole-span update longer than this many elements runs chunk by chunk, CHUNK
#: elements at a time, so that each chunk's five arrays (param, grad, two moments,
#: scratch) stay in cache through the dozen passes of an Adam update instead of
#: streaming from memory a dozen times. Measured inside the training step (float32,
#: 2-core AMD EPYC, 1 MB L2 per core, 32 MB L3, quiet machine): on the
#: 784-1024-1024-10 net's 1.85M params (37 MB of arrays) Adam took 3.6 / 4.3 / 4.8 ms
#: (min / 25th percentile / median) whole, 3.3 / 3.8 / 4.0 in 64k-element chunks and
#: 3.2 / 3.7 / 3.8 in 128k ones; on the 784-256-128-10 net's 234k params chunking
#: only added the per-chunk overhead of a dozen numpy calls (267 -> 305 µs min).
CHUNK_ABOVE = 1 << 20
CHUNK = 1 << 17


class _Span(NamedTuple):
    """The 1-D arrays a whole-span update runs on, and what they were derived from."""

    param_names: tuple[str, ...]
    params: tuple[np.ndarray, ...]
    grad_names: tuple[str, ...]
    grads: tuple[np.ndarray, ...]
    chunks: list[tuple]  # (param, grad, moments tuple, scratch) per chunk, each 1-D
    starts: tuple[int, ...]  # where each chunk starts in the span
    offsets: dict[str, tuple[int, int]]  # param name -> [start, stop) in the span

    def fits(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> bool:
        """The same names and the very same arrays as when this span was built."""
        return (tuple(params) == self.param_names and tuple(grads) == self.grad_names
                and all(map(operator.is_, params.values(), self.params))
                and all(map(operator.is_, grads.values(), self.grads)))


def _check_lr(value: object) -> float:
    lr = _check_number("lr", value)
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return lr


def _check_beta(name: str, value: object) -> float:
    beta = _check_number(name, value)
    if not 0 <= beta < 1:
        raise ValueError(f"{name} must be in [0, 1), got {beta}")
    return beta


def _check_eps(value: object) -> float:
    eps = _check_number("eps", value)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return eps


class Optimizer:
    """Base class: holds α, the hyperparameters, the step counter ``t`` and the moments.

    Subclasses set ``name``, ``hparam_names`` (their own hyperparameters, stored as
    attributes of the same names), ``moment_names`` (the per-parameter state) and
    implement ``_update``.
    """

    name: str = ""
    hparam_names: tuple[str, ...] = ()
    moment_names: tuple[str, ...] = ()

    def __init__(self, lr: float):
        self.lr = lr
        self.t = 0
        # param name -> moments in the order of ``moment_names``, each shaped like the param
        self._moments: dict[str, tuple[np.ndarray, ...]] = {}
        # param name -> preallocated work array (not state: never saved)
        self._scratch: dict[str, np.ndarray] = {}
        # the whole-span update of the last step, if params and grads allowed one
        self._span: _Span | None = None

    # -- hyperparameters ---------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate α (> 0, finite); settable between steps."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _check_lr(value)

    @property
    def hparams(self) -> dict[str, float]:
        """The optimizer's own hyperparameters (α excluded), e.g. ``{"beta": 0.9}``."""
        return {name: getattr(self, name) for name in self.hparam_names}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in {"lr": self.lr, **self.hparams}.items())
        return f"{type(self).__name__}({settings})"

    # -- stepping ----------------------------------------------------------------------

    def step(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        update_norms: Collection[str] = (),
    ) -> dict[str, float]:
        """Apply one update to every array in ``params``, in place; ``t`` increases by 1.

        params: name -> array of any shape; grads: the same names, same shapes.
        Inputs are checked before anything changes.

        Returns ``{name: ‖ΔW‖}`` (the L2 norm of the update subtracted from the param)
        for each name in ``update_norms``. It is read from the work array the update was
        computed in, while still in cache, so that a caller tracking the
        update-to-weight ratio needs no copy of W before the step.
        """
        span = self._span
        if span is None or not span.fits(params, grads):
            self._check_step_inputs(params, grads)
            span = self._span = self._build_span(params, grads)
        unknown = [name for name in update_norms if name not in params]
        if unknown:
            raise ValueError(f"update_norms names unknown params {unknown}")
        self.t += 1
        constants = self._step_constants()
        squares = dict.fromkeys(update_norms, 0.0)
        if span is not None:
            for start, chunk in zip(span.starts, span.chunks, strict=True):
                self._update(*chunk, *constants)
                if squares:
                    _add_squares(squares, span.offsets, start, chunk[3])
            return {name: math.sqrt(total) for name, total in squares.items()}
        for name, param in params.items():
            moments = self._moments.get(name)
            if moments is None:
                moments = tuple(np.zeros(param.shape, param.dtype) for _ in self.moment_names)
                self._moments[name] = moments
            scratch = self._scratch.get(name)
            if scratch is None or (scratch.shape, scratch.dtype) != (param.shape, param.dtype):
                scratch = self._scratch[name] = np.empty(param.shape, param.dtype)
            self._update(param, grads[name], moments, scratch, *constants)
            if name in squares:
                squares[name] = float(np.vdot(scratch, scratch))
        return {name: math.sqrt(total) for name, total in squares.items()}

    def _build_span(self, params, grads) -> _Span | None:
        """A whole-span update if params and grads each lie back to back in one array.

        The moments are then laid out back to back too (existing values copied in), so
        that the update is one pass per operation over all of them.
        """
        names = tuple(params)
        param_span = flat_span(list(params.values()))
        grad_span = flat_span([grads[name] for name in names])
        if param_span is None or grad_span is None:
            return None
        moments = []
        for i, _ in enumerate(self.moment_names):
            current = [self._moments[name][i] for name in names if name in self._moments]
            span = flat_span(current) if len(current) == len(names) else None
            if span is None or span.dtype != param_span.dtype or span.size != param_span.size:
                span = np.zeros(param_span.size, param_span.dtype)
                offset = 0
                for name, param in params.items():
                    if name in self._moments:
                        span[offset:offset + param.size] = self._moments[name][i].reshape(-1)
                    offset += param.size
            moments.append(span)
        offset, offsets = 0, {}
        for name, param in params.items():
            self._moments[name] = tuple(
                moment[offset:offset + param.size].reshape(param.shape) for moment in moments)
            offsets[name] = (offset, offset + param.size)
            offset += param.size
        size = param_span.size
        chunk = CHUNK if size > CHUNK_ABOVE else size
        scratch = np.empty(min(chunk, size), param_span.dtype)
        chunks = [(param_span[start:start + chunk], grad_span[start:start + chunk],
                   tuple(moment[start:start + chunk] for moment in moments),
                   scratch[:min(chunk, size - start)])
                  for start in range(0, size, chunk)]
        return _Span(names, tuple(params.values()), tuple(grads), tuple(grads.values()), chunks,
                     tuple(range(0, size, chunk)), offsets)

    def _check_step_inputs(self, params, grads) -> None:
        if params.keys() != grads.keys():
            missing = sorted(set(params) - set(grads))
            extra = sorted(set(grads) - set(params))
            raise ValueError(
                f"grads must have exactly the keys of params; missing {missing}, extra {extra}"
            )
        for name, param in params.items():
            grad = grads[name]
            if grad.shape != param.shape:
                raise ValueError(
                    f"grad {name!r} has shape {grad.shape}, its param has shape {param.shape}"
                )
            moments = self._moments.get(name)
            if moments and (moments[0].shape, moments[0].dtype) != (param.shape, param.dtype):
                raise ValueError(
                    f"optimizer state for {name!r} is {moments[0].dtype}{moments[0].shape}, "
                    f"the param is {param.dtype}{param.shape}; reset() the optimizer or load "
                    "a matching state"
                )

    def _step_constants(self) -> tuple[float, ...]:
        """Python-float scalars of this step (after ``t`` was increased), passed to _update."""
        return ()

    def _update(self, param, grad, moments, scratch, *constants) -> None:
        """Update ``param`` and its ``moments`` in place; ``scratch`` is free work space.

        All arrays have the param's shape; ``moments`` follow ``moment_names``. Must
        end with ``param -= scratch``, leaving in ``scratch`` the update itself (which
        ``step`` reads for ``update_norms``).
        """
        raise NotImplementedError

    # -- state -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every moment and set ``t`` back to 0 (hyperparameters are kept)."""
        self.t = 0
        self._moments.clear()
        self._scratch.clear()
        self._span = None

    def state_dict(self) -> dict:
        """``{"t": int, "moments": {"<param>/<moment>": array copy}}``; moments are "v", "s"."""
        moments = {
            f"{param_name}/{moment_name}": moment.copy()
            for param_name, param_moments in self._moments.items()
            for moment_name, moment in zip(self.moment_names, param_moments, strict=True)
        }
        return {"t": self.t, "moments": moments}

    def load_state_dict(
        self, state: Mapping, params: Mapping[str, np.ndarray] | None = None
    ) -> None:
        """Replace ``t`` and the moments with copies of those in ``state``.

        Everything is checked first and nothing changes if anything is wrong (ValueError):
        ``t`` an int ≥ 0; moment keys ``"<param>/<moment>"`` with this optimizer's moment
        names, all of them for each param present. With ``params``, every moment must
        match its param's shape and dtype, and when ``t > 0`` every param needs its moments.
        """
        t, moments = self._validated_state(state, params)
        self.t = t
        self._moments = moments
        self._span = None

    def _validated_state(self, state, params) -> tuple[int, dict[str, tuple[np.ndarray, ...]]]:
        if not isinstance(state, Mapping) or set(state) != {"t", "moments"}:
            keys = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                f"optimizer state must have exactly keys 't' and 'moments', got {keys}"
            )
        t = state["t"]
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"optimizer state 't' must be an integer >= 0, got {t!r}")
        if not isinstance(state["moments"], Mapping):
            raise ValueError("optimizer state 'moments' must be a dict of arrays")

        by_param: dict[str, dict[str, np.ndarray]] = {}
        for key, array in state["moments"].items():
            param_name, _, moment_name = str(key).rpartition("/")
            if not param_name or moment_name not in self.moment_names:
                expected = ", ".join(f"'<param>/{m}'" for m in self.moment_names) or "none"
                raise ValueError(
                    f"unexpected moment {key!r} for optimizer {self.name!r} (expects {expected})"
                )
            if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
                raise ValueError(
                    f"moment {key!r} must be a float array, got {type(array).__name__}"
                )
            by_param.setdefault(param_name, {})[moment_name] = array

        for param_name, found in by_param.items():
            missing = [m for m in self.moment_names if m not in found]
            if missing:
                raise ValueError(f"optimizer state lacks moment(s) {missing} of {param_name!r}")
            layouts = {f"{array.dtype}{array.shape}" for array in found.values()}
            if len(layouts) > 1:
                raise ValueError(
                    f"moments of {param_name!r} differ in dtype or shape: {sorted(layouts)}"
                )

        if params is not None:
            for param_name, found in by_param.items():
                if param_name not in params:
                    raise ValueError(f"optimizer state has moments of unknown param {param_name!r}")
                param = params[param_name]
                for moment_name, array in found.items():
                    if array.shape != param.shape or array.dtype != param.dtype:
                        raise ValueError(
                            f"moment '{param_name}/{moment_name}' is {array.dtype}{array.shape}, "
                            f"its param is {param.dtype}{param.shape}"
                        )
            without_moments = sorted(set(params) - set(by_param))
            if t > 0 and self.moment_names and without_moments:
                raise ValueError(f"optimizer state at t={t} lacks the moments of {without_moments}")

        moments = {
            param_name: tuple(np.array(found[m], order="C", copy=True) for m in self.moment_names)
            for param_name, found in by_param.items()
        }
        return int(t), moments


class GD(Optimizer):
    """Plain gradient descent: ``W -= α dW``. No state besides ``t``."""

    name = "gd"

    def _update(self, param, grad, moments, scratch) -> None:
        np.multiply(grad, self.lr, out=scratch)
        param -= scratch


class Momentum(Optimizer):
    """Gradient descent with momentum: ``v = β v + (1−β) dW;  W -= α v``.

    ``v`` (shape of W) is an exponentially weighted average of the gradients over about
    1/(1−β) steps; not bias-corrected (the course: with β = 0.9 it warms up in ~10 steps).
    """

    name = "momentum"
    hparam_names = ("beta",)
    moment_names = ("v",)

    def __init__(self, lr: float, beta: float = 0.9):
        super().__init__(lr)
        self.beta = _check_beta("beta", beta)

    def _update(self, param, grad, moments, scratch) -> None:
        (velocity,) = moments
        # 1) v = β v + (1−β) dW
        velocity *= self.beta
        np.multiply(grad, 1.0 - self.beta, out=scratch)
        velocity += scratch
        # 2) W -= α v
        np.multiply(velocity, self.lr, out=scratch)
        param -= scratch


class Nesterov(Optimizer):
    """Nesterov momentum, with the course's (1−β) scaling::

        v = β v + (1−β) dW
        W -= α ((1−β) dW + β v)          (the v just updated)

    It steps with the gradient "looking ahead" along the velocity: the update is
    the v of the *next* step if the gradient stayed dW. The same as
    ``torch.optim.SGD(momentum=β, nesterov=True, dampening=0)`` with
    ``lr = α(1−β)`` (torch's buffer is v/(1−β)). Its moment is momentum's ``v``,
    the same average of the same gradients, so the state of one loads into the other.
    """

    name = "nesterov"
    hparam_names = ("beta",)
    moment_names = ("v",)

    def __init__(self, lr: float, beta: float = 0.9):
        super().__init__(lr)
        self.beta = _check_beta("beta", beta)

    def _update(self, param, grad, moments, scratch) -> None:
        (velocity,) = moments
        # (1−β) dW + β v_new = v_new + β (v_new − v_old): with the change Δ of v kept
        # in scratch, the update needs no second work array.
        # 1) Δ = (1−β)(dW − v);  v += Δ, i.e. v = β v + (1−β) dW
        np.subtract(grad, velocity, out=scratch)
        scratch *= 1.0 - self.beta
        velocity += scratch
        # 2) W -= α (v + β Δ)
        scratch *= self.beta
        scratch += velocity
        scratch *= self.lr
        param -= scratch


class RMSprop(Optimizer):
    """RMSprop: ``s = β2 s + (1−β2) dW²;  W -= α dW / (√s + ε)``.

    ``s`` (shape of W) is the running mean of squared gradients; dividing by its root
    damps directions whose gradients oscillate. Same as ``torch.optim.RMSprop`` with
    ``alpha=β2, eps=ε, momentum=0, centered=False``.
    """

    name = "rmsprop"
    hparam_names = ("beta2", "eps")
    moment_names = ("s",)

    def __init__(self, lr: float, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(lr)
        self.beta2 = _check_beta("beta2", beta2)
        self.eps = _check_eps(eps)

    def _update(self, param, grad, moments, scratch) -> None:
        (mean_square,) = moments
        # 1) s = β2 s + (1−β2) dW²
        mean_square *= self.beta2
        np.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - self.beta2
        mean_square += scratch
        # 2) W -= α dW / (√s + ε)
        np.sqrt(mean_square, out=scratch)
        scratch += self.eps
        np.divide(grad, scratch, out=scratch)
        scratch *= self.lr
        param -= scratch


class Adam(Optimizer):
    """Adam = momentum + RMSprop, bias-corrected::

        v = β1 v + (1−β1) dW        v̂ = v / (1−β1^t)
        s = β2 s + (1−β2) dW²       ŝ = s / (1−β2^t)
        W -= α v̂ / (√ŝ + ε)

    ``v``, ``s``: shape of W. The corrections are folded into two scalars, exactly as
    ``torch.optim.Adam`` does: ``W -= step_size · v / (√s / √(1−β2^t) + ε)`` with
    ``step_size = α / (1−β1^t)``; algebraically the same update.
    """

    name = "adam"
    hparam_names = ("beta1", "beta2", "eps")
    moment_names = ("v", "s")

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(lr)
        self.beta1 = _check_beta("beta1", beta1)
        self.beta2 = _check_beta("beta2", beta2)
        self.eps = _check_eps(eps)

    def _step_constants(self) -> tuple[float, float]:
        step_size = self.lr / (1.0 - self.beta1**self.t)
        root_bias_correction2 = math.sqrt(1.0 - self.beta2**self.t)
        return step_size, root_bias_correction2

    def _update(self, param, grad, moments, scratch, step_size, root_bias_correction2) -> None:
        velocity, mean_square = moments
        # 1) v = β1 v + (1−β1) dW
        velocity *= self.beta1
        np.multiply(grad, 1.0 - self.beta1, out=scratch)
        velocity += scratch
        # 2) s = β2 s + (1−β2) dW²
        mean_square *= self.beta2
        np.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - self.beta2
        mean_square += scratch
        # 3) W -= α/(1−β1^t) · v / (√s/√(1−β2^t) + ε), with both scalars folded
        #    into the denominator: W -= v / (√s/(√(1−β2^t)·step) + ε/step)
        np.sqrt(mean_square, out=scratch)
        scratch *= 1.0 / (root_bias_correction2 * step_size)
        scratch += self.eps / step_size
        np.divide(velocity, scratch, out=scratch)
        param -= scratch


_OPTIMIZER_CLASSES: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (GD, Momentum, Nesterov, RMSprop, Adam)
}

#: Names accepted by make_optimizer, in the order the course introduces them.
OPTIMIZERS: tuple[str, ...] = tuple(_OPTIMIZER_CLASSES)


def make_optimizer(name: str, lr: float, **hparams: float) -> Optimizer:
    """Build the optimizer ``name`` (one of ``OPTIMIZERS``) with α = ``lr``.

    hparams: ``beta`` (momentum, nesterov); ``beta2``, ``eps`` (rmsprop); ``beta1``, ``beta2``,
    ``eps`` (adam); omitted ones take their defaults (β 0.9, β1 0.9, β2 0.999, ε 1e-8).
    Unknown names or out-of-range values raise ValueError.
    """
    cls = _OPTIMIZER_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    unknown = sorted(set(hparams) - set(cls.hparam_names))
    if unknown:
        accepted = ", ".join(cls.hparam_names) or "none"
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for {name!r} (accepts: {accepted})"
        )
    return cls(lr, **hparams)


_FORMULAS = {
    "gd": r"W := W - \alpha\, dW",
    "momentum": r"""\begin{aligned}
v_{dW} &= \beta\, v_{dW} + (1-\beta)\, dW \\
W &:= W - \alpha\, v_{dW}
\end{aligned}""",
    "nesterov": r"""\begin{aligned}
v_{dW} &= \beta\, v_{dW} + (1-\beta)\, dW \\
W &:= W - \alpha \left((1-\beta)\, dW + \beta\, v_{dW}\right)
\end{aligned}""",
    "rmsprop": r"""\begin{aligned}
s_{dW} &= \beta_2\, s_{dW} + (1-\beta_2)\, dW^2 \\
W &:= W - \alpha \frac{dW}{\sqrt{s_{dW}} + \varepsilon}
\end{aligned}""",
    "adam": r"""\begin{aligned}
v_{dW} &= \beta_1 v_{dW} + (1-\beta_1)\, dW \\
s_{dW} &= \beta_2 s_{dW} + (1-\beta_2)\, dW^2 \\
\hat v_{dW} &= \frac{v_{dW}}{1-\beta_1^t}, \quad
\hat s_{dW} = \frac{s_{dW}}{1-\beta_2^t} \\
W &:= W - \alpha \frac{\hat v_{dW}}{\sqrt{\hat s_{dW}} + \varepsilon}
\end{aligned}""",
}


def optimizer_formula(name: str) -> str:
    """The update rule of optimizer ``name`` as LaTeX (for ``st.latex``).

    One relation per line, at most ~45 characters of rendered math each, so that
    it fits a narrow (380 px) sidebar.
    """
    if name not in _FORMULAS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return _FORMULAS[name]
