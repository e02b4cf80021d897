"""dlcore.optim against the course formulas, written out by hand, and against torch.optim."""

import math
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose

from dlcore.optim import OPTIMIZERS, make_optimizer, optimizer_formula
from tests.latex_width import line_widths

LR = 0.01


def random_problem(seed=0, dtype=np.float64, steps=5):
    """Two parameters and a list of `steps` gradient dicts for them."""
    rng = np.random.default_rng(seed)
    shapes = {"fc1.W": (4, 3), "fc1.b": (3,)}
    params = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
    grads = [
        {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
        for _ in range(steps)
    ]
    return params, grads


def copy_params(params):
    return {name: array.copy() for name, array in params.items()}


# -- one and two steps, by hand ------------------------------------------------------------


def test_gd_first_step_is_w_minus_lr_times_grad():
    params, grads = random_problem()
    expected = {k: params[k] - LR * grads[0][k] for k in params}
    make_optimizer("gd", LR).step(params, grads[0])
    for k in params:
        assert_allclose(params[k], expected[k], rtol=1e-15)


def test_momentum_first_two_steps():
    beta = 0.8
    params, grads = random_problem()
    w0, g1, g2 = params["fc1.W"].copy(), grads[0]["fc1.W"], grads[1]["fc1.W"]
    opt = make_optimizer("momentum", LR, beta=beta)

    opt.step(params, grads[0])
    v1 = (1 - beta) * g1
    assert_allclose(params["fc1.W"], w0 - LR * v1, rtol=1e-14)

    opt.step(params, grads[1])
    v2 = beta * v1 + (1 - beta) * g2
    assert_allclose(params["fc1.W"], w0 - LR * v1 - LR * v2, rtol=1e-14)


def test_nesterov_first_two_steps():
    """v = βv + (1−β)dW;  W -= α((1−β)dW + βv), with the v just updated."""
    beta = 0.8
    params, grads = random_problem()
    w0, g1, g2 = params["fc1.W"].copy(), grads[0]["fc1.W"], grads[1]["fc1.W"]
    opt = make_optimizer("nesterov", LR, beta=beta)

    opt.step(params, grads[0])
    v1 = (1 - beta) * g1
    w1 = w0 - LR * ((1 - beta) * g1 + beta * v1)
    assert_allclose(params["fc1.W"], w1, rtol=1e-14)
    assert_allclose(opt.state_dict()["moments"]["fc1.W/v"], v1, rtol=1e-14)

    opt.step(params, grads[1])
    v2 = beta * v1 + (1 - beta) * g2
    assert_allclose(params["fc1.W"], w1 - LR * ((1 - beta) * g2 + beta * v2), rtol=1e-14)
    assert_allclose(opt.state_dict()["moments"]["fc1.W/v"], v2, rtol=1e-14)


def test_nesterov_with_beta_zero_is_gd():
    params, grads = random_problem()
    gd_params = copy_params(params)
    nesterov, gd = make_optimizer("nesterov", LR, beta=0.0), make_optimizer("gd", LR)
    for g in grads:
        nesterov.step(params, g)
        gd.step(gd_params, g)
    for k in params:
        assert_allclose(params[k], gd_params[k], rtol=1e-14)


def test_rmsprop_first_two_steps():
    beta2, eps = 0.9, 1e-8
    params, grads = random_problem()
    w0, g1, g2 = params["fc1.W"].copy(), grads[0]["fc1.W"], grads[1]["fc1.W"]
    opt = make_optimizer("rmsprop", LR, beta2=beta2, eps=eps)

    opt.step(params, grads[0])
    s1 = (1 - beta2) * g1**2
    w1 = w0 - LR * g1 / (np.sqrt(s1) + eps)
    assert_allclose(params["fc1.W"], w1, rtol=1e-14)

    opt.step(params, grads[1])
    s2 = beta2 * s1 + (1 - beta2) * g2**2
    assert_allclose(params["fc1.W"], w1 - LR * g2 / (np.sqrt(s2) + eps), rtol=1e-14)


def test_adam_first_step_is_lr_times_sign_of_grad():
    eps = 1e-8
    params = {"w": np.zeros(5)}
    grads = {"w": np.array([3.0, -0.5, 1e-9, 0.0, -2e-7])}
    make_optimizer("adam", LR, eps=eps).step(params, grads)
    # v̂ = g and ŝ = g², so the update is α·g/(|g|+ε): α·sign(g) unless |g| is near ε
    g = grads["w"]
    assert_allclose(params["w"], -LR * g / (np.abs(g) + eps), rtol=1e-12, atol=0)
    assert params["w"][3] == 0.0


def test_adam_first_two_steps_with_bias_correction():
    beta1, beta2, eps = 0.9, 0.99, 1e-8
    params, grads = random_problem()
    w0, g1, g2 = params["fc1.W"].copy(), grads[0]["fc1.W"], grads[1]["fc1.W"]
    opt = make_optimizer("adam", LR, beta1=beta1, beta2=beta2, eps=eps)
    opt.step(params, grads[0])
    opt.step(params, grads[1])

    v1, s1 = (1 - beta1) * g1, (1 - beta2) * g1**2
    w1 = w0 - LR * (v1 / (1 - beta1)) / (np.sqrt(s1 / (1 - beta2)) + eps)
    v2, s2 = beta1 * v1 + (1 - beta1) * g2, beta2 * s1 + (1 - beta2) * g2**2
    v2_hat, s2_hat = v2 / (1 - beta1**2), s2 / (1 - beta2**2)
    assert_allclose(params["fc1.W"], w1 - LR * v2_hat / (np.sqrt(s2_hat) + eps), rtol=1e-12)
    assert opt.t == 2


def test_t_counts_steps_not_params():
    params, grads = random_problem()
    opt = make_optimizer("adam", LR)
    assert opt.t == 0
    for g in grads[:3]:
        opt.step(params, g)
    assert opt.t == 3


# -- the course's toy cost J(w) = w² − 10w + 25, minimum at w = 5 ----------------------------


@pytest.mark.parametrize(
    "name, lr, hparams, steps",
    [
        ("gd", 0.1, {}, 200),
        ("momentum", 0.1, {"beta": 0.9}, 500),
        ("rmsprop", 0.01, {"beta2": 0.999}, 3000),
        ("adam", 0.1, {}, 2000),
    ],
)
def test_minimises_course_quadratic(name, lr, hparams, steps):
    params = {"w": np.zeros(1)}
    opt = make_optimizer(name, lr, **hparams)
    for _ in range(steps):
        w = params["w"]
        opt.step(params, {"w": 2 * w - 10})  # dJ/dw
    assert abs(params["w"][0] - 5) < 1e-3


# -- dtype, in place -----------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_params_stay_float32_and_are_updated_in_place(name):
    params, grads = random_problem(dtype=np.float32)
    arrays_before = {k: v for k, v in params.items()}
    values_before = copy_params(params)
    opt = make_optimizer(name, LR)
    for g in grads:
        opt.step(params, g)
    for k, array in params.items():
        assert array is arrays_before[k]
        assert array.dtype == np.float32
        assert not np.array_equal(array, values_before[k])
    for key, moment in opt.state_dict()["moments"].items():
        assert moment.dtype == np.float32, key


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_matches_float64_closely(name):
    params64, grads64 = random_problem(dtype=np.float64)
    params32 = {k: v.astype(np.float32) for k, v in params64.items()}
    opt64, opt32 = make_optimizer(name, LR), make_optimizer(name, LR)
    for g in grads64:
        opt64.step(params64, g)
        opt32.step(params32, {k: v.astype(np.float32) for k, v in g.items()})
    for k in params64:
        assert_allclose(params32[k], params64[k], rtol=1e-5, atol=1e-6)


# -- hyperparameters -----------------------------------------------------------------------


def test_defaults_and_hparams():
    assert OPTIMIZERS == ("gd", "momentum", "nesterov", "rmsprop", "adam")
    assert make_optimizer("gd", LR).hparams == {}
    assert make_optimizer("momentum", LR).hparams == {"beta": 0.9}
    assert make_optimizer("nesterov", LR).hparams == {"beta": 0.9}
    assert make_optimizer("nesterov", LR, beta=0.5).beta == 0.5
    assert make_optimizer("rmsprop", LR).hparams == {"beta2": 0.999, "eps": 1e-8}
    assert make_optimizer("adam", LR).hparams == {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    adam = make_optimizer("adam", 0.5, beta1=0.8)
    assert (adam.name, adam.lr, adam.hparams["beta1"]) == ("adam", 0.5, 0.8)


def test_lr_is_settable_and_validated():
    opt = make_optimizer("gd", 0.1)
    opt.lr = 0.5
    params, grads = {"w": np.ones(2)}, {"w": np.ones(2)}
    opt.step(params, grads)
    assert_allclose(params["w"], 0.5)
    with pytest.raises(ValueError, match="-0.5"):
        opt.lr = -0.5
    assert opt.lr == 0.5


@pytest.mark.parametrize(
    "name, lr, hparams, shown",
    [
        ("gd", 0.0, {}, "0.0"),
        ("gd", -0.1, {}, "-0.1"),
        ("adam", math.nan, {}, "nan"),
        ("adam", math.inf, {}, "inf"),
        ("momentum", 0.1, {"beta": 1.0}, "1.0"),
        ("momentum", 0.1, {"beta": -0.2}, "-0.2"),
        ("nesterov", 0.1, {"beta": 1.0}, "beta must be in [0, 1), got 1.0"),
        ("nesterov", 0.0, {}, "lr must be > 0, got 0.0"),
        ("nesterov", 0.1, {"beta1": 0.9}, "beta1"),
        ("rmsprop", 0.1, {"beta2": 1.5}, "beta2 must be in [0, 1), got 1.5"),
        ("adam", 0.1, {"beta1": 1.0}, "beta1"),
        ("adam", 0.1, {"eps": 0.0}, "eps must be > 0, got 0.0"),
        ("rmsprop", 0.1, {"eps": -1e-8}, "-1e-08"),
        ("adam", 0.1, {"beta": 0.9}, "beta"),
        ("gd", 0.1, {"beta": 0.9}, "beta"),
        ("momentum", 0.1, {"beta": "0.9"}, "'0.9'"),
        ("sgd", 0.1, {}, "'sgd'"),
    ],
)
def test_invalid_hyperparameters_raise_naming_the_value(name, lr, hparams, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        make_optimizer(name, lr, **hparams)


def test_optimizer_formula_is_latex_for_every_optimizer():
    for name in OPTIMIZERS:
        formula = optimizer_formula(name)
        assert r"\alpha" in formula
    assert r"\beta_1^t" in optimizer_formula("adam")
    assert r"(1-\beta)\, dW + \beta\, v_{dW}" in optimizer_formula("nesterov")
    with pytest.raises(ValueError, match="adagrad"):
        optimizer_formula("adagrad")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_formula_fits_a_narrow_sidebar(name):
    """At most ~45 characters of rendered math per line (a 380 px sidebar)."""
    widths = line_widths(optimizer_formula(name))
    assert max(widths) <= 45, widths


# -- step input checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_grads, message",
    [
        ({"fc1.W": np.zeros((4, 3))}, "fc1.b"),
        ({"fc1.W": np.zeros((4, 3)), "fc1.b": np.zeros(3), "fc2.W": np.zeros(1)}, "fc2.W"),
        ({"fc1.W": np.zeros((3, 4)), "fc1.b": np.zeros(3)}, "(3, 4)"),
    ],
)
def test_step_rejects_mismatched_grads_and_changes_nothing(bad_grads, message):
    params, grads = random_problem()
    opt = make_optimizer("adam", LR)
    opt.step(params, grads[0])
    before_params, before_state = copy_params(params), opt.state_dict()
    with pytest.raises(ValueError, match=re.escape(message)):
        opt.step(params, bad_grads)
    assert opt.t == 1
    assert_state_equal(opt.state_dict(), before_state)
    for k in params:
        assert np.array_equal(params[k], before_params[k])


# -- state_dict / load_state_dict ----------------------------------------------------------


def assert_state_equal(a, b):
    assert a["t"] == b["t"]
    assert a["moments"].keys() == b["moments"].keys()
    for key in a["moments"]:
        assert a["moments"][key].dtype == b["moments"][key].dtype
        assert np.array_equal(a["moments"][key], b["moments"][key]), key


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_continues_bit_for_bit(name, dtype):
    params, grads = random_problem(dtype=dtype, steps=7)
    opt = make_optimizer(name, LR)
    for g in grads[:3]:
        opt.step(params, g)
    saved_state, saved_params = opt.state_dict(), copy_params(params)

    for g in grads[3:]:
        opt.step(params, g)  # A

    restored = make_optimizer(name, LR)
    restored.load_state_dict(saved_state, params=saved_params)
    for g in grads[3:]:
        restored.step(saved_params, g)  # B

    for k in params:
        assert np.array_equal(params[k], saved_params[k]), k
    assert_state_equal(restored.state_dict(), opt.state_dict())


def test_state_dict_layout_and_copies():
    params, grads = random_problem()
    opt = make_optimizer("adam", LR)
    opt.step(params, grads[0])
    state = opt.state_dict()
    assert state["t"] == 1
    assert sorted(state["moments"]) == ["fc1.W/s", "fc1.W/v", "fc1.b/s", "fc1.b/v"]
    state["moments"]["fc1.W/v"][...] = 123.0  # a copy: the optimizer must not see this
    assert not np.any(opt.state_dict()["moments"]["fc1.W/v"] == 123.0)
    assert make_optimizer("gd", LR).state_dict() == {"t": 0, "moments": {}}
    assert sorted(make_optimizer("momentum", LR).moment_names) == ["v"]


def test_load_state_dict_copies_arrays_in():
    params, grads = random_problem()
    opt = make_optimizer("rmsprop", LR)
    opt.step(params, grads[0])
    state = opt.state_dict()
    fresh = make_optimizer("rmsprop", LR)
    fresh.load_state_dict(state, params)
    state["moments"]["fc1.W/s"][...] = -1.0
    assert np.all(fresh.state_dict()["moments"]["fc1.W/s"] >= 0)


def test_reset_forgets_moments_and_t():
    params, grads = random_problem()
    opt = make_optimizer("momentum", LR)
    opt.step(params, grads[0])
    opt.reset()
    assert opt.state_dict() == {"t": 0, "moments": {}}
    assert opt.hparams == {"beta": 0.9}


def _adam_state_after_one_step():
    params, grads = random_problem()
    opt = make_optimizer("adam", LR)
    opt.step(params, grads[0])
    return params, opt.state_dict()


def _bad_load_arguments(case):
    """(state, params, text the error must contain) for one way of breaking a valid load."""
    params, state = _adam_state_after_one_step()
    moments = state["moments"]
    without_b_s = {k: v for k, v in moments.items() if k != "fc1.b/s"}
    params_without_b = {k: v for k, v in params.items() if k != "fc1.b"}
    return {
        "negative-t": ({**state, "t": -1}, params, "-1"),
        "float-t": ({**state, "t": 1.5}, params, "1.5"),
        "no-moments-key": ({"t": 1}, params, "moments"),
        "missing-s": ({**state, "moments": without_b_s}, params, "'fc1.b'"),
        "unknown-moment": (
            {**state, "moments": {**moments, "fc1.b/m": np.zeros(3)}},
            params,
            "fc1.b/m",
        ),
        "wrong-shape": (
            {**state, "moments": {**moments, "fc1.W/v": np.zeros((3, 4))}},
            params,
            "(3, 4)",
        ),
        "wrong-dtype": (
            {**state, "moments": {**moments, "fc1.W/v": moments["fc1.W/v"].astype(np.float32)}},
            params,
            "float32",
        ),
        "param-without-moments": (state, {**params, "fc2.W": np.zeros(2)}, "fc2.W"),
        "moments-of-unknown-param": (state, params_without_b, "fc1.b"),
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "negative-t",
        "float-t",
        "no-moments-key",
        "missing-s",
        "unknown-moment",
        "wrong-shape",
        "wrong-dtype",
        "param-without-moments",
        "moments-of-unknown-param",
    ],
)
def test_load_state_dict_rejects_bad_state_and_changes_nothing(case):
    bad_state, bad_params, message = _bad_load_arguments(case)
    params, grads = random_problem(seed=1)
    opt = make_optimizer("adam", LR)
    opt.step(params, grads[0])
    opt.step(params, grads[1])
    before = opt.state_dict()
    with pytest.raises(ValueError, match=re.escape(message)):
        opt.load_state_dict(bad_state, params=bad_params)
    assert_state_equal(opt.state_dict(), before)


def test_load_state_dict_rejects_another_optimizers_moments():
    params, adam_state = _adam_state_after_one_step()
    with pytest.raises(ValueError, match="'rmsprop'"):
        make_optimizer("rmsprop", LR).load_state_dict(adam_state, params)
    with pytest.raises(ValueError, match="'gd'"):
        make_optimizer("gd", LR).load_state_dict(adam_state)


def test_load_state_dict_at_t0_accepts_params_without_moments():
    params, _ = random_problem()
    opt = make_optimizer("adam", LR)
    opt.load_state_dict({"t": 0, "moments": {}}, params)
    assert opt.t == 0


# -- references ----------------------------------------------------------------------------


def test_momentum_matches_a_hand_loop_over_50_steps():
    beta = 0.95
    params, grads = random_problem(seed=3, steps=50)
    expected = copy_params(params)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    opt = make_optimizer("momentum", LR, beta=beta)
    for g in grads:
        opt.step(params, g)
        for k in expected:
            velocity[k] = beta * velocity[k] + (1 - beta) * g[k]
            expected[k] = expected[k] - LR * velocity[k]
    for k in params:
        assert_allclose(params[k], expected[k], rtol=1e-13, atol=1e-15)


def test_nesterov_matches_a_hand_loop_over_50_steps():
    beta = 0.95
    params, grads = random_problem(seed=4, steps=50)
    expected = copy_params(params)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    opt = make_optimizer("nesterov", LR, beta=beta)
    for g in grads:
        opt.step(params, g)
        for k in expected:
            velocity[k] = beta * velocity[k] + (1 - beta) * g[k]
            expected[k] = expected[k] - LR * ((1 - beta) * g[k] + beta * velocity[k])
    for k in params:
        assert_allclose(params[k], expected[k], rtol=1e-13, atol=1e-15)


def test_momentum_and_nesterov_states_load_into_each_other():
    """Both keep "v", the same average of the same gradients: after a switch the next
    Nesterov step starts from momentum's velocity, and back again."""
    beta = 0.8
    params, grads = random_problem(seed=5, steps=4)
    momentum = make_optimizer("momentum", LR, beta=beta)
    for g in grads[:3]:
        momentum.step(params, g)
    velocity = momentum.state_dict()["moments"]["fc1.W/v"]
    w, g = params["fc1.W"].copy(), grads[3]["fc1.W"]

    nesterov = make_optimizer("nesterov", LR, beta=beta)
    nesterov.load_state_dict(momentum.state_dict(), params=params)
    assert_state_equal(nesterov.state_dict(), momentum.state_dict())
    nesterov.step(params, grads[3])
    v = beta * velocity + (1 - beta) * g
    assert_allclose(params["fc1.W"], w - LR * ((1 - beta) * g + beta * v), rtol=1e-13)

    back = make_optimizer("momentum", LR, beta=beta)
    back.load_state_dict(nesterov.state_dict(), params=params)
    assert_state_equal(back.state_dict(), nesterov.state_dict())


def _compare_with_torch(ours, make_torch_optimizer, steps=50):
    torch = pytest.importorskip("torch")
    params, grads = random_problem(seed=7, steps=steps)
    torch_params = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()
    }
    reference = make_torch_optimizer(torch, list(torch_params.values()))
    for step, g in enumerate(grads, start=1):
        ours.step(params, g)
        for k, tensor in torch_params.items():
            tensor.grad = torch.tensor(g[k], dtype=torch.float64)
        reference.step()
        for k, tensor in torch_params.items():
            assert_allclose(
                params[k],
                tensor.detach().numpy(),
                rtol=1e-10,
                atol=1e-14,
                err_msg=f"{k} after step {step}",
            )


def test_adam_matches_torch_over_50_steps():
    beta1, beta2, eps = 0.85, 0.99, 1e-6
    _compare_with_torch(
        make_optimizer("adam", LR, beta1=beta1, beta2=beta2, eps=eps),
        lambda torch, tensors: torch.optim.Adam(
            tensors, lr=LR, betas=(beta1, beta2), eps=eps, foreach=False
        ),
    )


def test_rmsprop_matches_torch_over_50_steps():
    beta2, eps = 0.9, 1e-6
    _compare_with_torch(
        make_optimizer("rmsprop", LR, beta2=beta2, eps=eps),
        lambda torch, tensors: torch.optim.RMSprop(
            tensors, lr=LR, alpha=beta2, eps=eps, momentum=0, centered=False, foreach=False
        ),
    )


def test_nesterov_matches_torch_sgd_with_nesterov_over_50_steps():
    """torch.optim.SGD(momentum=β, nesterov=True, dampening=0) with lr = α(1−β): its
    buffer b = v/(1−β), so its step lr·(dW + β b) is α((1−β) dW + β v)."""
    beta = 0.9
    _compare_with_torch(
        make_optimizer("nesterov", LR, beta=beta),
        lambda torch, tensors: torch.optim.SGD(
            tensors, lr=LR * (1 - beta), momentum=beta, dampening=0, nesterov=True,
            foreach=False,
        ),
    )


def test_momentum_matches_torch_sgd_over_50_steps():
    """The same correspondence for plain momentum: SGD(momentum=β) with lr = α(1−β)."""
    beta = 0.9
    _compare_with_torch(
        make_optimizer("momentum", LR, beta=beta),
        lambda torch, tensors: torch.optim.SGD(
            tensors, lr=LR * (1 - beta), momentum=beta, dampening=0, foreach=False
        ),
    )
