"""The training policy both backends follow, decided here once and translated by each.

A model that brings no loss or metrics of its own trains by these rules (its own loss, and for
TensorFlow its own metrics, replace them):

* output 0 of a classifier: cross-entropy against class ids, on scores (from logits) unless
  the model says it outputs probabilities; metric ``accuracy``, or for targets holding a class
  per pixel ([N, H, W]) ``pixel_accuracy`` and ``mean_iou`` over the epoch's pixels;
* every other output, and every output of a model that is not a classifier: mean squared
  error, no metric.

``keep_partial`` (:class:`PartialWeights`): a stopped run puts back the weights of the end of
the last completed epoch, or of the start when none completed; a run that is not stopped keeps
what it trained. Each backend supplies how to copy and restore its weights.
"""
from dataclasses import dataclass
from typing import Callable, Generic, List, Optional, Tuple, TypeVar

#: Loss names of :class:`OutputPolicy`.
CROSS_ENTROPY = "cross_entropy"
MSE = "mse"
#: Metric names of :class:`OutputPolicy`: the keys they have in the logs.
ACCURACY = "accuracy"
PIXEL_ACCURACY = "pixel_accuracy"
MEAN_IOU = "mean_iou"

W = TypeVar("W")


@dataclass(frozen=True)
class OutputPolicy:
    """How one output trains when the model brings no loss or metrics of its own."""

    loss: str
    """:data:`CROSS_ENTROPY` (targets are class ids) or :data:`MSE`."""
    from_logits: bool = True
    """For cross-entropy: the output holds scores, not probabilities (softmax not applied)."""
    metrics: Tuple[str, ...] = ()
    """Metric names, in log order: (:data:`ACCURACY`,), (:data:`PIXEL_ACCURACY`,
    :data:`MEAN_IOU`) or none."""

    @property
    def per_pixel(self) -> bool:
        """True when targets hold a class per pixel (the metrics come from a confusion matrix)."""
        return PIXEL_ACCURACY in self.metrics


def per_pixel_targets(is_classifier: bool, target_ndim: int) -> bool:
    """Whether a classifier's first target array ([N, H, W]) holds a class per pixel."""
    return is_classifier and target_ndim == 3


def output_policies(is_classifier: bool, outputs_probabilities: bool, n_outputs: int,
                    per_pixel: bool) -> List[OutputPolicy]:
    """The policy of each of ``n_outputs`` outputs (see the module docstring).

    Args:
        is_classifier: the model has labels (output 0 holds class scores).
        outputs_probabilities: output 0 already holds probabilities.
        n_outputs: how many outputs train (at least one).
        per_pixel: the first target array holds a class per pixel
            (:func:`per_pixel_targets`).
    """
    rest = [OutputPolicy(MSE)] * (max(n_outputs, 1) - 1)
    if not is_classifier:
        return [OutputPolicy(MSE)] + rest
    metrics = (PIXEL_ACCURACY, MEAN_IOU) if per_pixel else (ACCURACY,)
    return [OutputPolicy(CROSS_ENTROPY, not outputs_probabilities, metrics)] + rest


class PartialWeights(Generic[W]):
    """``keep_partial`` for one run: snapshots at the start and after every completed epoch.

    Without keep_partial it takes no copies (a copy of every weight per epoch is not free) and
    :meth:`restore` does nothing.

    Args:
        keep: the run's ``keep_partial``.
        take: copies the model's weights now.
        put: puts a copy made by ``take`` back into the model.
    """

    def __init__(self, keep: bool, take: Callable[[], W], put: Callable[[W], None]) -> None:
        self.keep = keep
        self._take = take
        self._put = put
        self._snapshot: Optional[W] = None

    def begin(self) -> None:
        """Before the first epoch: the weights a run stopped in epoch 1 goes back to."""
        if self.keep:
            self._snapshot = self._take()

    def epoch_completed(self) -> None:
        """After a completed epoch: the weights a later stop goes back to."""
        if self.keep:
            self._snapshot = self._take()

    def restore(self) -> None:
        """After a stop: puts the last snapshot back (with keep_partial)."""
        if self.keep and self._snapshot is not None:
            self._put(self._snapshot)
