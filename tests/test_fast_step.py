"""The fast training step against the default one: the same numbers, bit for bit.

``Network.loss_and_grads(..., reuse_buffers=True)`` runs the very operations of
the default path on preallocated arrays, and an optimizer given params and grads
that lie back to back in one array updates them in one pass per operation. Both
must change only where results are stored, never the results: compared here with
``np.array_equal``, float32 and float64, with and without BatchNorm, dropout and
L2, for every activation, and across batch-size changes (which reallocate).
"""

import tracemalloc

import numpy as np
import pytest

from dlcore import optim
from dlcore.layers import ACTIVATIONS
from dlcore.network import Architecture, Network
from dlcore.optim import OPTIMIZERS, make_optimizer


def make_net(dtype="float64", batchnorm=True, activation="relu", hidden=(12, 7), seed=0,
             bn_position="before"):
    arch = Architecture(n_features=9, hidden=hidden, n_classes=4, activation=activation,
                        batchnorm=batchnorm, dtype=dtype, bn_position=bn_position)
    return Network(arch, seed=seed)


def batch(m, dtype, seed):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((m, 9)) * 2.0 + 0.5).astype(dtype)
    return X, rng.integers(0, 4, m)


def assert_results_equal(a, b):
    cost_a, grads_a, stats_a = a
    cost_b, grads_b, stats_b = b
    assert cost_a == cost_b
    assert list(grads_a) == list(grads_b)
    for key in grads_a:
        assert grads_a[key].dtype == grads_b[key].dtype, key
        assert np.array_equal(grads_a[key], grads_b[key]), key
    assert list(stats_a) == list(stats_b)
    for name in stats_a:
        for x, y in zip(stats_a[name], stats_b[name], strict=True):
            assert np.array_equal(x, y), name


def snapshot(result):
    """A deep copy of (cost, grads, batch_stats), safe from later reuse of the buffers."""
    cost, grads, stats = result
    return (cost, {k: v.copy() for k, v in grads.items()},
            {k: tuple(s.copy() for s in pair) for k, pair in stats.items()})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("keep_prob", [1.0, 0.7])
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_reused_buffers_give_the_default_results_bit_for_bit(dtype, batchnorm, keep_prob, l2):
    """Training with Adam: each step's results, and the weights after it, are identical."""
    default_net = make_net(dtype, batchnorm)
    fast_net = make_net(dtype, batchnorm)
    default_opt, fast_opt = make_optimizer("adam", 0.01), make_optimizer("adam", 0.01)
    mask_rng = np.random.default_rng(5)
    for step, m in enumerate([16, 16, 5, 16, 33, 33, 2]):  # batch size changes reallocate
        X, y = batch(m, dtype, seed=step)
        masks = default_net.dropout_masks(m, keep_prob, mask_rng)
        expected = default_net.loss_and_grads(X, y, l2, masks)
        actual = fast_net.loss_and_grads(X, y, l2, masks, reuse_buffers=True)
        assert_results_equal(actual, expected)
        assert all(g.dtype == np.dtype(dtype) for g in actual[1].values())
        default_opt.step(default_net.params, expected[1])
        fast_opt.step(fast_net.params, actual[1])
        default_net.update_running_stats(expected[2], 0.9)
        fast_net.update_running_stats(actual[2], 0.9)
        for key in default_net.params:
            assert np.array_equal(default_net.params[key], fast_net.params[key]), (step, key)
        for key in default_net.buffers:
            assert np.array_equal(default_net.buffers[key], fast_net.buffers[key]), (step, key)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_activation_gives_the_same_results(activation, dtype):
    default_net = make_net(dtype, activation=activation)
    fast_net = make_net(dtype, activation=activation)
    rng = np.random.default_rng(1)
    for step in range(3):
        X, y = batch(20, dtype, seed=10 + step)
        masks = default_net.dropout_masks(20, 0.8, rng)
        assert_results_equal(fast_net.loss_and_grads(X, y, 0.1, masks, reuse_buffers=True),
                             default_net.loss_and_grads(X, y, 0.1, masks))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_l1_gives_the_same_results(dtype, batchnorm):
    default_net = make_net(dtype, batchnorm)
    fast_net = make_net(dtype, batchnorm)
    for step, m in enumerate([16, 16, 5]):
        X, y = batch(m, dtype, seed=20 + step)
        for l2, l1 in [(0.0, 0.3), (0.2, 0.3)]:
            assert_results_equal(fast_net.loss_and_grads(X, y, l2, l1=l1, reuse_buffers=True),
                                 default_net.loss_and_grads(X, y, l2, l1=l1))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batchnorm_after_the_activation_gives_the_same_results(activation, dtype):
    """BatchNorm after the activation, with dropout, L2 and L1, Adam and running
    statistics, across batch-size changes: every step identical, bit for bit."""
    default_net = make_net(dtype, activation=activation, bn_position="after")
    fast_net = make_net(dtype, activation=activation, bn_position="after")
    default_opt, fast_opt = make_optimizer("adam", 0.01), make_optimizer("adam", 0.01)
    mask_rng = np.random.default_rng(6)
    for step, m in enumerate([16, 16, 5, 33]):
        X, y = batch(m, dtype, seed=30 + step)
        masks = default_net.dropout_masks(m, 0.8, mask_rng)
        expected = default_net.loss_and_grads(X, y, 0.1, masks, l1=0.05)
        actual = fast_net.loss_and_grads(X, y, 0.1, masks, l1=0.05, reuse_buffers=True)
        assert_results_equal(actual, expected)
        default_opt.step(default_net.params, expected[1])
        fast_opt.step(fast_net.params, actual[1])
        default_net.update_running_stats(expected[2], 0.9)
        fast_net.update_running_stats(actual[2], 0.9)
        after_default, after_fast = default_net.state_arrays(), fast_net.state_arrays()
        for key in after_default:
            assert np.array_equal(after_default[key], after_fast[key]), (step, key)


def test_default_results_are_fresh_and_reused_ones_are_overwritten():
    net = make_net()
    X1, y1 = batch(16, "float64", seed=1)
    X2, y2 = batch(16, "float64", seed=2)

    first = net.loss_and_grads(X1, y1)
    kept = snapshot(first)
    net.loss_and_grads(X2, y2)
    assert_results_equal(first, kept)  # the default path never touches earlier results

    fast_first = net.loss_and_grads(X1, y1, reuse_buffers=True)
    fast_second = net.loss_and_grads(X2, y2, reuse_buffers=True)
    assert fast_second[1]["fc1.W"] is fast_first[1]["fc1.W"]  # the same buffers...
    assert_results_equal(fast_second, snapshot(net.loss_and_grads(X2, y2)))  # ...now batch 2's

    fast_other_size = net.loss_and_grads(X1[:7], y1[:7], reuse_buffers=True)
    assert fast_other_size[1]["fc1.W"] is not fast_first[1]["fc1.W"]  # reallocated
    assert_results_equal(fast_other_size, net.loss_and_grads(X1[:7], y1[:7]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_results_are_equal_at_a_size_where_blas_runs_threaded(dtype):
    """784-256-128-10 with batch 256: multithreaded BLAS products, buffers vs fresh arrays."""
    arch = Architecture(n_features=784, hidden=(256, 128), n_classes=10, dtype=dtype)
    default_net, fast_net = Network(arch, seed=0), Network(arch, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(2):
        X, y = rng.standard_normal((256, 784)).astype(dtype), rng.integers(0, 10, 256)
        assert_results_equal(fast_net.loss_and_grads(X, y, 0.1, reuse_buffers=True),
                             default_net.loss_and_grads(X, y, 0.1))


def test_the_fast_path_does_not_change_its_inputs_or_the_network():
    net = make_net(dtype="float32")
    X, y = batch(16, "float32", seed=3)
    masks = net.dropout_masks(16, 0.5, np.random.default_rng(0))
    before = (X.copy(), y.copy(), [mask.copy() for mask in masks], net.state_arrays())
    net.loss_and_grads(X, y, 0.2, masks, reuse_buffers=True)
    assert np.array_equal(X, before[0]) and np.array_equal(y, before[1])
    assert all(np.array_equal(a, b) for a, b in zip(masks, before[2], strict=True))
    after = net.state_arrays()
    assert all(np.array_equal(after[k], before[3][k]) for k in after)


def test_float64_data_on_a_float32_network_is_converted():
    net = make_net(dtype="float32")
    X, y = batch(16, "float64", seed=4)
    cost, grads, stats = net.loss_and_grads(X, y, reuse_buffers=True)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(s.dtype == np.float32 for pair in stats.values() for s in pair)
    assert_results_equal((cost, grads, stats), net.loss_and_grads(X.astype(np.float32), y))


@pytest.mark.parametrize("bn_position", ["before", "after"])
def test_a_fast_step_allocates_nothing_large(bn_position):
    """After the first step, no array near the size of a layer's activations is allocated.

    (Small things still are: (n,) statistics, and numpy's 32 kB iteration buffer
    for each broadcast operation; heap blocks that size are reused, not faulted in.)
    """
    net = make_net(dtype="float32", hidden=(256, 128), bn_position=bn_position)
    optimizer = make_optimizer("adam", 1e-3)
    X, y = batch(256, "float32", seed=0)  # activations (256, 256) float32 = 256 kB

    def step():
        _, grads, stats = net.loss_and_grads(X, y, 0.1, None, reuse_buffers=True)
        optimizer.step(net.params, grads)
        net.update_running_stats(stats, 0.9)

    step()
    tracemalloc.start()
    try:
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 128 * 1024, f"a step allocated up to {peak} bytes at once"


# ---------------------------------------------------------------------------
# The optimizers' update over a whole span of back-to-back params
# ---------------------------------------------------------------------------


def separate_copies(arrays):
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_whole_span_update_equals_the_per_param_update(name, dtype):
    net = make_net(dtype)
    span_params = net.params  # back to back in one array
    separate_params = separate_copies(net.params)  # each its own array
    span_opt, separate_opt = make_optimizer(name, 0.01), make_optimizer(name, 0.01)
    for step in range(6):
        X, y = batch(16, dtype, seed=step)
        _, grads, _ = net.loss_and_grads(X, y, 0.1, reuse_buffers=True)
        span_opt.step(span_params, grads)
        separate_opt.step(separate_params, separate_copies(grads))
        assert span_opt._span is not None and separate_opt._span is None
        for key in span_params:
            assert np.array_equal(span_params[key], separate_params[key]), (step, key)
    a, b = span_opt.state_dict(), separate_opt.state_dict()
    assert a["t"] == b["t"] and list(a["moments"]) == list(b["moments"])
    for key in a["moments"]:
        assert np.array_equal(a["moments"][key], b["moments"][key]), key


@pytest.mark.parametrize("name", ["nesterov", "rmsprop", "adam"])
def test_a_chunked_span_update_equals_the_per_param_update(name, monkeypatch):
    """Long spans are updated chunk by chunk (uneven last chunk here): same numbers."""
    monkeypatch.setattr(optim, "CHUNK_ABOVE", 50)
    monkeypatch.setattr(optim, "CHUNK", 37)
    net = make_net("float32")
    separate_params = separate_copies(net.params)
    span_opt, separate_opt = make_optimizer(name, 0.01), make_optimizer(name, 0.01)
    for step in range(4):
        _, grads, _ = net.loss_and_grads(*batch(16, "float32", seed=step), reuse_buffers=True)
        span_opt.step(net.params, grads)
        separate_opt.step(separate_params, separate_copies(grads))
    assert len(span_opt._span.chunks) == -(-sum(p.size for p in net.params.values()) // 37)
    for key in net.params:
        assert np.array_equal(net.params[key], separate_params[key]), key


@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam"])
def test_whole_span_update_continues_a_loaded_or_separate_state_bit_for_bit(name):
    """Moments built per param (or loaded) are packed into the span with their values."""
    net = make_net()
    separate_params = separate_copies(net.params)
    separate_opt = make_optimizer(name, 0.01)
    grads_per_step = []
    for step in range(6):
        X, y = batch(16, "float64", seed=step)
        grads_per_step.append(snapshot(net.loss_and_grads(X, y))[1])

    for grads in grads_per_step[:3]:  # three steps per param...
        separate_opt.step(separate_params, grads)
    net.load_state_arrays({f"params/{k}": v for k, v in separate_params.items()}
                          | {f"buffers/{k}": v for k, v in net.buffers.items()})
    loaded_opt = make_optimizer(name, 0.01)
    loaded_opt.load_state_dict(separate_opt.state_dict(), params=net.params)
    for grads in grads_per_step[3:]:  # ...then three on the span, from the loaded state
        separate_opt.step(separate_params, grads)
        span_grads = net.loss_and_grads(*batch(16, "float64", seed=0), reuse_buffers=True)[1]
        for key, value in grads.items():
            span_grads[key][...] = value
        loaded_opt.step(net.params, span_grads)
    assert loaded_opt._span is not None
    for key in net.params:
        assert np.array_equal(net.params[key], separate_params[key]), key


def test_the_span_is_rebuilt_when_the_arrays_change():
    net = make_net()
    opt = make_optimizer("adam", 0.01)
    X, y = batch(16, "float64", seed=0)
    opt.step(net.params, net.loss_and_grads(X, y, reuse_buffers=True)[1])
    first = opt._span
    opt.step(net.params, net.loss_and_grads(X, y, reuse_buffers=True)[1])
    assert opt._span is first  # the same arrays: nothing rebuilt
    opt.step(net.params, net.loss_and_grads(X, y)[1])  # fresh grads
    assert opt._span is not first and opt._span is not None
    separate = separate_copies(net.params)
    opt.step(separate, separate_copies(net.loss_and_grads(X, y)[1]))  # not back to back
    assert opt._span is None
    with pytest.raises(ValueError, match="shape"):  # checked as ever, nothing changes
        opt.step(net.params, {k: np.zeros(3) for k in net.params})
    assert opt.t == 4


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("layout", ["span", "separate"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_update_norms_are_the_norms_of_the_change_in_each_param(name, layout, chunked,
                                                                monkeypatch):
    """``step(..., update_norms=...)`` returns ‖W_after − W_before‖ per named param,
    read from the optimizer's work array, whatever the layout (span, chunks straddling
    params, or one update per param)."""
    if chunked:
        monkeypatch.setattr(optim, "CHUNK_ABOVE", 50)
        monkeypatch.setattr(optim, "CHUNK", 37)
    net = make_net("float64")
    params = net.params if layout == "span" else separate_copies(net.params)
    opt = make_optimizer(name, 0.01)
    wanted = ["fc1.W", "fc2.W", "fc3.W"]
    for step in range(3):
        _, grads, _ = net.loss_and_grads(*batch(16, "float64", seed=step), reuse_buffers=True)
        if layout == "separate":
            grads = separate_copies(grads)
        before = separate_copies(params)
        norms = opt.step(params, grads, update_norms=wanted)
        assert list(norms) == wanted
        for key in wanted:
            expected = np.linalg.norm(params[key] - before[key])
            assert norms[key] == pytest.approx(expected, rel=1e-9), (step, key)
    assert (opt._span is not None) == (layout == "span")
    assert opt.step(params, grads) == {}


def test_update_norms_of_an_unknown_param_raise_before_anything_changes():
    net = make_net()
    opt = make_optimizer("adam", 0.01)
    before = separate_copies(net.params)
    _, grads, _ = net.loss_and_grads(*batch(16, "float64", seed=0))
    with pytest.raises(ValueError, match="fc9.W"):
        opt.step(net.params, grads, update_norms=["fc9.W"])
    assert opt.t == 0
    for key in net.params:
        assert np.array_equal(net.params[key], before[key])
