"""ntksolve.training_loop: the divergence test every trainer shares, and a run that scikit-learn
itself refuses mid-way, reported like the other trainers' divergence.

References: the scale and the messages by hand (the zero predictor's MSE ``0.5 mean(y^2)``); the
step at which the PyTorch trainer (a second implementation of the same rule) sees the same run
diverge.
"""

import numpy as np
import pytest

from ntksolve import MLP
from ntksolve._config import DIVERGENCE_FACTOR
from ntksolve.dynamics import GradientDescent
from ntksolve.training import TrainingDivergedError
from ntksolve.training_loop import LossWatch


def test_loss_watch_scale_and_reasons():
    watch = LossWatch(zero=0.5 * np.mean(np.array([1.0, 3.0]) ** 2), dtype=np.float64)  # 2.5
    assert watch.check(0.1) == "" and watch.scale == 2.5  # the zero predictor's loss is larger
    assert watch.check(DIVERGENCE_FACTOR * 2.5) == ""  # at the factor, not over it
    assert watch.check(DIVERGENCE_FACTOR * 2.5 * 1.01).startswith("loss grew to 2.52e+06, over 1e+06")
    assert watch.check(np.inf) == "loss became non-finite"
    # a minibatch loss (or seed) is only checked for being finite: its scale is the batch's
    assert watch.check_step(np.full(3, 1e300), batched=True) == ""
    assert watch.check_step(np.array([1.0, np.nan]), batched=True) == "batch loss became non-finite"
    first = LossWatch(zero=0.0, dtype=np.float32, units=2.0, name="training loss")
    assert first.check(4.0) == "" and first.scale == 4.0
    assert first.check(4.0e7) == "training loss grew to 2e+07, over 1e+06 times its initial scale 2"


def test_sklearn_run_refused_by_scikit_learn_is_a_divergence_at_torchs_step():
    pytest.importorskip("torch")
    from ntksolve.sklearn.trainer import train_network_sklearn
    from ntksolve.torch import train_network_torch

    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 3))
    net = MLP([16], n_outputs=1, parameterization="standard", bias_std=0.5)
    params = net.init(3, 0)
    run = dict(steps=50, dynamics=GradientDescent(30.0, momentum=0.9), batches=[rng.choice(8, 4) for _ in range(50)])
    torch_run = train_network_torch(net, params, X, X[:, 0], on_divergence="return", **run)
    assert torch_run.diverged
    with pytest.raises(TrainingDivergedError, match="batch loss became non-finite") as info:
        train_network_sklearn(net, params, X, X[:, 0], **run)
    assert info.value.result.message.startswith(torch_run.message.split(":")[0])  # the same step
