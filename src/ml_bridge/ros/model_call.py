"""One model call from the ROS layer, with the ``~timeout`` every caller (service, streams) honours.

A call that waits longer than ``~timeout`` for the model gets the same message everywhere:
``~predict`` replies with it, a stream skips the frame and warns with it.
"""
import concurrent.futures
from typing import Callable, Optional, Sequence

import numpy as np

from ml_bridge.core.errors import ModelCallError
from ml_bridge.core.server import ModelOutput, ModelServer


class ModelTimeout(ModelCallError):
    """The model did not answer within ``~timeout`` (it is busy with long calls, or stuck)."""


def timeout_message(timeout: Optional[float]) -> str:
    """What a caller is told when the model did not answer within ``timeout`` seconds."""
    return f"the model did not answer within ~timeout = {timeout:g} s (it is busy or stuck)"


def predict_within(server: ModelServer, inputs: Sequence[np.ndarray],
                   timeout: Optional[float]) -> ModelOutput:
    """``server.predict(inputs, timeout)`` (where it runs is the executor's), with a timeout
    raised as :class:`ModelTimeout`.

    Raises:
        ModelTimeout: the model did not answer within ``timeout`` seconds.
        MLBridgeError: anything :meth:`ModelServer.predict` raises.
    """
    return _named(server.predict, inputs, timeout)


def submit_within(server: ModelServer, inputs: Sequence[np.ndarray],
                  timeout: Optional[float]) -> ModelOutput:
    """The call submitted (:meth:`ModelServer.predict_async`), then waited for at most
    ``timeout`` seconds: the streams' calls. Calls submitted together are joined into
    micro-batches (frames of several cameras share calls), and a model that hangs times the
    frame out without holding the stream's thread.

    Raises:
        ModelTimeout: the model did not answer within ``timeout`` seconds.
        MLBridgeError: the inputs are invalid, or the call failed.
    """
    return _named(lambda arrays, wait: server.predict_async(arrays)(wait), inputs, timeout)


def _named(call: Callable[[Sequence[np.ndarray], Optional[float]], ModelOutput],
           inputs: Sequence[np.ndarray], timeout: Optional[float]) -> ModelOutput:
    try:
        return call(inputs, timeout)
    except concurrent.futures.TimeoutError as err:  # its str() is empty: say what happened
        raise ModelTimeout(timeout_message(timeout)) from err
