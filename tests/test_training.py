"""End to end: the math trains a real classifier (a property of the math, not a timing)."""

import pytest

from dlcore.data import MiniBatchIterator, prepare_dataset
from dlcore.network import Architecture, Network
from dlcore.optim import make_optimizer


def train(dataset, epochs, optimizer="adam", lr=1e-3, batchnorm=True, dtype="float64", seed=0):
    net = Network(
        Architecture(
            n_features=dataset.n_features,
            hidden=(64, 32),
            n_classes=dataset.n_classes,
            batchnorm=batchnorm,
            dtype=dtype,
        ),
        seed=seed,
    )
    opt = make_optimizer(optimizer, lr)
    batches = MiniBatchIterator(len(dataset.y_train), 64, seed=seed)
    dev_accuracy = []
    while batches.epoch < epochs:
        epoch = batches.epoch
        index = batches.next_batch()
        _, grads, stats = net.loss_and_grads(dataset.X_train[index], dataset.y_train[index])
        opt.step(net.params, grads)
        net.update_running_stats(stats, momentum=0.9)
        if batches.epoch != epoch:
            dev_accuracy.append(net.evaluate(dataset.X_dev, dataset.y_dev)[0])
    return net, dev_accuracy


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_digits_reaches_95_percent_dev_accuracy_with_batchnorm_and_adam(dtype):
    digits = prepare_dataset("digits", seed=0, dtype=dtype)
    _, dev_accuracy = train(digits, epochs=30, dtype=dtype)
    print(f"digits dev accuracy after 30 epochs ({dtype}): {dev_accuracy[-1]:.4f}")
    assert max(dev_accuracy) >= 0.95 and dev_accuracy[-1] >= 0.95


def test_spirals_are_learned():
    spirals = prepare_dataset("spirals", seed=0, n_samples=900)
    _, dev_accuracy = train(spirals, epochs=60, lr=1e-2)
    assert dev_accuracy[-1] >= 0.9
