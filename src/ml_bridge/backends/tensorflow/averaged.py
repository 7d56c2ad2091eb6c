"""Serving the moving average of the recent training weights, in Keras's terms.

The counterpart of the torch backend's ``averaged`` module. At a constant learning rate each
step's weights are a noisy draw around the optimum and their average is nearer to it. Keras's
optimizers keep the average themselves (``use_ema``); what they leave to the caller is swapping
it in: :func:`serving_callbacks` makes validation measure the average and leaves the average in
the model after ``fit``, so what is validated is what is served.
"""
from typing import Any, List

import keras

#: The weight the average keeps at each step (0.99: about the last hundred steps).
MOMENTUM = 0.99


def averaging_adam(learning_rate: float) -> keras.optimizers.Optimizer:
    """Adam whose model, after ``fit`` with :func:`serving_callbacks`, holds the average."""
    return keras.optimizers.Adam(learning_rate=learning_rate, use_ema=True,
                                 ema_momentum=MOMENTUM)


def serving_callbacks(keras_model: Any) -> List[keras.callbacks.Callback]:
    """The callbacks that swap the average in for validation and after fit (none if the
    compiled optimizer does not average)."""
    if getattr(keras_model.optimizer, "use_ema", False):
        return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]
    return []
