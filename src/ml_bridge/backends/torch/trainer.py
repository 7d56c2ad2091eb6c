"""The training loop of :meth:`TorchModel.fit`, speaking Keras's hook names.

One epoch shuffles the training set with a seeded generator (the same run twice gives the
same weights), steps the optimizer once per batch and polls ``callbacks.should_stop()`` after
every batch. Epochs passed to hooks are 0-based.

Loss, metrics and keep_partial follow :mod:`ml_bridge.core.policy`; this module translates
them to torch. Output 0 trains on the one target array; a class per pixel means targets [N, H, W]
against scores [N, C, H, W], and ``pixel_accuracy`` and ``mean_iou`` come from a confusion
matrix accumulated over the whole epoch.
"""
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ml_bridge.backends.torch.model import from_numpy, outputs_to_list, to_numpy
from ml_bridge.core.box_metrics import MAP50, MapTally
from ml_bridge.core.box_targets import CenterGrid, check_boxes
from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import TrainingError
from ml_bridge.core.metrics import mean_iou, pixel_accuracy
from ml_bridge.core.policy import (
    ACCURACY,
    CROSS_ENTROPY,
    MEAN_IOU,
    MSE,
    PIXEL_ACCURACY,
    OutputPolicy,
    PartialWeights,
    output_policies,
    per_pixel_targets,
)
from ml_bridge.core.training import Callback, FitResult, Logs, TrainConfig

if TYPE_CHECKING:
    from ml_bridge.backends.torch.model import TorchModel

#: Seed of the shuffling generator; epoch ``e`` uses the permutation drawn ``e``-th.
SHUFFLE_SEED = 0


class Trainer:
    """Trains one TorchModel in place with one config and one callback."""

    def __init__(self, model: "TorchModel", config: TrainConfig, callbacks: Callback) -> None:
        """Checks the settings before anything is trained.

        Raises:
            TrainingError: invalid config or a model without trainable parameters.
        """
        config.validate()
        if not model.trainable:
            raise TrainingError(f"model {model.source} has no trainable parameters (a frozen "
                                "TorchScript module or requires_grad=False everywhere)")
        self.model = model
        self.config = config
        self.callbacks = callbacks
        self.batch_size = config.batch_size or model.default_batch_size
        self.learning_rate = config.learning_rate or model.default_learning_rate
        self.policy = OutputPolicy(MSE)  # set by fit from the targets

    def fit(self, train: Dataset, validation: Optional[Dataset]) -> FitResult:
        """Runs up to ``config.epochs`` epochs; returns early (stopped) when asked to.

        Raises:
            DatasetError: the data does not fit the model (raised before any training).
        """
        model = self.model
        model.check_targets(train)
        if validation is not None:
            model.check_targets(validation)
        if model.box_grid is not None:  # a detector trains on its boxes' dense encoding
            train = _encoded(train, model.box_grid)
            validation = None if validation is None else _encoded(validation, model.box_grid)
        # Per-pixel targets: [N, H, W] class ids (check_targets matched them to the output).
        dense = per_pixel_targets(model.is_classifier, train.targets[0].ndim)
        self.policy = output_policies(model.is_classifier, model.outputs_probabilities, 1,
                                      dense)[0]
        module = model.module
        params = [p for p in module.parameters() if p.requires_grad]
        factory = model.optimizer
        optimizer = (factory(params, self.learning_rate) if factory is not None
                     else torch.optim.Adam(params, lr=self.learning_rate))
        rng = np.random.default_rng(SHUFFLE_SEED)
        history: List[Logs] = []
        partial = PartialWeights(self.config.keep_partial, lambda: _state_copy(module),
                                 module.load_state_dict)
        partial.begin()
        stopped = False
        # The restored context may hold inference mode or no-grad for serving; training
        # needs autograd whatever the calling thread's state.
        with torch.inference_mode(False), torch.enable_grad():
            self.callbacks.on_train_begin({})
            try:
                for epoch in range(self.config.epochs):
                    module.train()
                    self.callbacks.on_epoch_begin(epoch, {})
                    logs, stopped = self._epoch(train, optimizer, rng)
                    if stopped:
                        break
                    if validation is not None:
                        logs.update({f"val_{k}": v for k, v in self.evaluate(validation).items()})
                    history.append(logs)
                    partial.epoch_completed()
                    self.callbacks.on_epoch_end(epoch, dict(logs))
                if stopped:
                    partial.restore()
            finally:
                module.eval()
            self.callbacks.on_train_end(dict(history[-1]) if history else {})
        return FitResult(epochs_completed=len(history), stopped=stopped, history=history)

    def _epoch(self, data: Dataset, optimizer: torch.optim.Optimizer,
               rng: np.random.Generator) -> Tuple[Logs, bool]:
        """One epoch; returns its logs and whether a stop was asked for."""
        n = len(data)
        order = rng.permutation(n)
        total_loss = 0.0
        seen = 0
        tally = self._tally()
        for batch, start in enumerate(range(0, n, self.batch_size)):
            self.callbacks.on_batch_begin(batch, {})
            idx = order[start:start + self.batch_size]
            inputs = [from_numpy(np.ascontiguousarray(a[idx]), self.model.torch_device)
                      for a in data.inputs]
            target = self._target(data.targets[0][idx])
            optimizer.zero_grad(set_to_none=True)
            output = outputs_to_list(self.model.module(*inputs))[0]
            loss = self._loss(output, target)
            loss.backward()
            optimizer.step()
            value = float(loss.item())
            rows = len(idx)
            total_loss += value * rows
            seen += rows
            batch_logs: Dict[str, float] = {"loss": value, "size": float(rows)}
            if tally is not None:
                batch_logs.update(tally.add(output.detach(), target))
            self.callbacks.on_batch_end(batch, batch_logs)
            if self.callbacks.should_stop():
                return {}, True
        logs: Logs = {"loss": total_loss / seen}
        if tally is not None:
            logs.update(tally.logs())
        return logs, False

    def evaluate(self, data: Dataset) -> Logs:
        """``loss`` and the classifier metrics on ``data``, in eval mode without gradients."""
        module = self.model.module
        was_training = module.training
        module.eval()
        total_loss = 0.0
        tally = self._tally()
        try:
            with torch.no_grad():
                for start in range(0, len(data), self.batch_size):
                    part = slice(start, start + self.batch_size)
                    inputs = [from_numpy(np.ascontiguousarray(a[part]), self.model.torch_device)
                              for a in data.inputs]
                    target = self._target(data.targets[0][part])
                    output = outputs_to_list(module(*inputs))[0]
                    rows = int(target.shape[0])
                    total_loss += float(self._loss(output, target).item()) * rows
                    if tally is not None:
                        tally.add(output, target)
        finally:
            module.train(was_training)
        logs: Logs = {"loss": total_loss / len(data)}
        if tally is not None:
            logs.update(tally.logs())
        return logs

    def _tally(self) -> Optional[Union["_Tally", "_BoxTally"]]:
        if self.model.box_grid is not None:
            return _BoxTally(self.model.box_grid)
        if not self.policy.metrics:
            return None
        return _Tally(self.model.n_classes(), self.policy.per_pixel)

    def _target(self, target: np.ndarray) -> torch.Tensor:
        device = self.model.torch_device
        if self.policy.loss != CROSS_ENTROPY:
            return from_numpy(np.ascontiguousarray(target, dtype=np.float32), device)
        if self.policy.per_pixel:
            return from_numpy(np.ascontiguousarray(target, dtype=np.int64), device)
        return from_numpy(target.reshape(-1).astype(np.int64), device)

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.model.loss is not None:
            return self.model.loss(output, target)
        if self.policy.loss != CROSS_ENTROPY:
            return F.mse_loss(output.float(), target)
        if not self.policy.from_logits:
            # Cross-entropy of probabilities: log first, as the model already applied softmax.
            return F.nll_loss(torch.log(output.float().clamp_min(1e-12)), target)
        return F.cross_entropy(output.float(), target)


class _Tally:
    """A classifier's metrics over an epoch: ``accuracy`` per sample or, for per-pixel
    targets, ``pixel_accuracy`` and ``mean_iou`` from one confusion matrix of all pixels."""

    def __init__(self, classes: int, dense: bool) -> None:
        self.classes = classes
        self.dense = dense
        self.correct = 0
        self.seen = 0
        self.confusion = np.zeros((classes, classes), np.int64)

    def add(self, output: torch.Tensor, target: torch.Tensor) -> Dict[str, float]:
        """Counts one batch; returns the batch's own metric."""
        predicted = output.argmax(dim=1)
        if not self.dense:
            hits = int((predicted == target).sum().item())
            self.correct += hits
            self.seen += int(target.numel())
            return {ACCURACY: hits / max(int(target.numel()), 1)}
        pairs = target.reshape(-1) * self.classes + predicted.reshape(-1)
        counts = torch.bincount(pairs, minlength=self.classes * self.classes)
        batch = counts.cpu().numpy().reshape(self.classes, self.classes)
        self.confusion += batch
        return {PIXEL_ACCURACY: pixel_accuracy(batch)}

    def logs(self) -> Logs:
        """The epoch's metrics."""
        if not self.dense:
            return {ACCURACY: self.correct / max(self.seen, 1)}
        return {PIXEL_ACCURACY: pixel_accuracy(self.confusion),
                MEAN_IOU: mean_iou(self.confusion)}


class _BoxTally:
    """A detector's ``map50`` over an epoch (see :class:`MapTally`)."""

    def __init__(self, grid: CenterGrid) -> None:
        self.tally = MapTally(grid)

    def add(self, output: torch.Tensor, target: torch.Tensor) -> Dict[str, float]:
        """Collects one batch; the metric needs the whole epoch, so the batch reports none."""
        self.tally.add(to_numpy(output), to_numpy(target))
        return {}

    def logs(self) -> Logs:
        """The epoch's metric."""
        return {MAP50: self.tally.result()}


def _encoded(data: Dataset, grid: CenterGrid) -> Dataset:
    """``data`` with its boxes replaced by their dense training targets."""
    return Dataset(data.name, data.inputs, [grid.encode(check_boxes(
        f"dataset '{data.name}' target 0", data.targets[0], grid.classes))])


def _state_copy(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
