"""A module that serves the moving average of its recent training weights.

Keras's optimizers do this with ``use_ema``; torch's training loop has no end-of-training hook
to swap weights, so the module keeps the average itself: each forward pass in train mode
folds the weights the last optimizer step left into the average, and ``train()`` / ``eval()``
swap the two sets. In eval mode (serving, validation, export) the parameters are the average;
in train mode they are the weights being trained.
"""
from typing import Any, List, Mapping, Optional

import torch
from torch import nn


class AveragedModule(nn.Module):
    """Base of a module whose eval-mode weights are an exponential moving average.

    Subclasses call :meth:`track_average` at the top of ``forward``. Loading a state dict
    starts the average afresh from the loaded weights (a restored or checkpointed model
    serves exactly what was loaded). Buffers (BatchNorm's running statistics) are not
    averaged: they follow the training weights.
    """

    def __init__(self, momentum: float) -> None:
        """``momentum``: the weight the average keeps at each step (0.99: about 100 steps)."""
        super().__init__()
        self.momentum = momentum
        self._steps = 0
        self._average: Optional[List[torch.Tensor]] = None
        self._trained: Optional[List[torch.Tensor]] = None  # set while the average is served

    def track_average(self) -> None:
        """Folds the current weights into the average (training forward passes only)."""
        if self.training and torch.is_grad_enabled():
            self._fold()

    @torch.jit.unused
    def _fold(self) -> None:
        with torch.no_grad():
            params = [p.detach() for p in self.parameters()]
            if self._average is None:
                self._average = [p.clone() for p in params]
                self._steps = 0
                return
            # A shorter memory over the first steps (as tf.train.ExponentialMovingAverage's
            # num_updates): a run of a few dozen steps serves its late weights, not its first.
            self._steps += 1
            momentum = min(self.momentum, (1.0 + self._steps) / (10.0 + self._steps))
            for average, param in zip(self._average, params):
                average.lerp_(param, 1.0 - momentum)

    def train(self, mode: bool = True) -> "AveragedModule":
        """Switches modes; eval mode puts the average in the parameters, train mode the
        trained weights back."""
        if mode != self.training:
            with torch.no_grad():
                params = list(self.parameters())
                if not mode and self._average is not None:
                    self._trained = [p.detach().clone() for p in params]
                    for param, average in zip(params, self._average):
                        param.copy_(average)
                elif mode and self._trained is not None:
                    for param, trained in zip(params, self._trained):
                        param.copy_(trained)
                    self._trained = None
        return super().train(mode)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        """Loads the weights and forgets the average (see the class)."""
        self._average = None
        self._trained = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
