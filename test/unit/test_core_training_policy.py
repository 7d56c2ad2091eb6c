"""ml_bridge.core.policy: the loss, metrics and keep_partial rules both backends translate."""
from typing import List

import pytest

from ml_bridge.core import policy
from ml_bridge.core.policy import OutputPolicy, PartialWeights, output_policies, per_pixel_targets

ACCURACY, CROSS_ENTROPY, MSE = policy.ACCURACY, policy.CROSS_ENTROPY, policy.MSE


def test_a_classifier_trains_output_0_with_cross_entropy_and_accuracy() -> None:
    assert output_policies(True, False, 1, False) == [
        OutputPolicy(CROSS_ENTROPY, from_logits=True, metrics=(ACCURACY,))]
    first = output_policies(True, True, 1, False)[0]
    assert first.loss == CROSS_ENTROPY and not first.from_logits and not first.per_pixel


def test_per_pixel_targets_get_pixel_accuracy_and_mean_iou() -> None:
    assert per_pixel_targets(True, 3) and not per_pixel_targets(True, 1)
    assert not per_pixel_targets(False, 3)  # a regression target may be 3-D too
    first = output_policies(True, False, 1, True)[0]
    assert first.metrics == (policy.PIXEL_ACCURACY, policy.MEAN_IOU) and first.per_pixel


def test_other_outputs_and_regressors_use_mse_without_metrics() -> None:
    policies = output_policies(True, False, 3, False)
    assert [p.loss for p in policies] == [CROSS_ENTROPY, MSE, MSE]
    assert [p.metrics for p in policies[1:]] == [(), ()]
    assert output_policies(False, False, 2, False) == [OutputPolicy(MSE), OutputPolicy(MSE)]


class Weights:
    """A model's weights as one number, with the copies taken and restores made."""

    def __init__(self) -> None:
        self.value = 0
        self.taken = 0
        self.restored: List[int] = []

    def take(self) -> int:
        self.taken += 1
        return self.value

    def put(self, value: int) -> None:
        self.restored.append(value)
        self.value = value


@pytest.mark.parametrize("completed, expected", [(0, 0), (2, 20)])
def test_keep_partial_restores_the_last_completed_epoch(completed: int, expected: int) -> None:
    weights = Weights()
    partial = PartialWeights(True, weights.take, weights.put)
    partial.begin()
    for epoch in range(completed):
        weights.value = (epoch + 1) * 10
        partial.epoch_completed()
    weights.value = 999  # the interrupted epoch's weights
    partial.restore()
    assert weights.value == expected and weights.restored == [expected]


def test_without_keep_partial_nothing_is_copied_or_restored() -> None:
    weights = Weights()
    partial = PartialWeights(False, weights.take, weights.put)
    partial.begin()
    partial.epoch_completed()
    weights.value = 7
    partial.restore()
    assert weights.taken == 0 and weights.restored == [] and weights.value == 7
