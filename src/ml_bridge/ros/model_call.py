"""One model call from the ROS layer, with the ``~timeout`` every caller (service, streams) honours.

A call that waits longer than ``~timeout`` for the model thread gets the same message
everywhere: ``~predict`` replies with it, a stream skips the frame and warns with it.
"""
import concurrent.futures
import time
from typing import Callable, Optional, Sequence

import numpy as np

from ml_bridge.core.errors import ModelCallError
from ml_bridge.core.server import ModelServer, Prediction


class ModelTimeout(ModelCallError):
    """The model did not answer within ``~timeout`` (it is busy with long calls, or stuck)."""


def timeout_message(timeout: Optional[float]) -> str:
    """What a caller is told when the model did not answer within ``timeout`` seconds."""
    return f"the model did not answer within ~timeout = {timeout:g} s (it is busy or stuck)"


def predict_within(server: ModelServer, inputs: Sequence[np.ndarray],
                   timeout: Optional[float], batched: bool = False) -> Prediction:
    """``server.predict(inputs, timeout)``, with a timeout raised as :class:`ModelTimeout`.

    ``batched``: always through the model thread's queue, where requests that arrive together
    are joined into one call (the image streams: frames of several cameras are micro-batched,
    and a model that hangs times the frame out). Otherwise an idle CPU model runs the call on
    this thread (``~model_thread``), the fastest path for single ``~predict`` requests.

    Raises:
        ModelTimeout: the model did not answer within ``timeout`` seconds.
        MLBridgeError: anything :meth:`ModelServer.predict` raises.
    """
    if batched:
        return predict_queued(server, inputs, timeout)()
    try:
        return server.predict(inputs, timeout=timeout)
    except concurrent.futures.TimeoutError as err:  # its str() is empty: say what happened
        raise ModelTimeout(timeout_message(timeout)) from err


def predict_queued(server: ModelServer, inputs: Sequence[np.ndarray],
                   timeout: Optional[float]) -> Callable[[], Prediction]:
    """Validates ``inputs`` and queues the call on the model thread now; the function returned
    waits for its Prediction until ``timeout`` seconds after the call was queued (however late
    it is called). Requests queued together before any is waited on are joined into
    micro-batches.

    Raises:
        MLBridgeError: the inputs are invalid (at once), or the call failed (when waited on;
            a timeout as :class:`ModelTimeout`).
    """
    wait = server.predict_async(inputs)
    deadline = None if timeout is None else time.monotonic() + timeout

    def result() -> Prediction:
        try:
            return wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError as err:  # its str() is empty: say what happened
            raise ModelTimeout(timeout_message(timeout)) from err
    return result
