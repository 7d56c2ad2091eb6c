"""Built-ins trained once per test session and shared by every test that needs a trained model.

``trained(backend, model, dataset)`` loads the built-in and trains it through
:meth:`ModelServer.fit` with the defaults users get from ``~train`` (10 epochs, default batch
size and learning rate); the first caller pays, later callers get the same server. Training
each built-in to its quality threshold once per backend keeps ``make test`` fast.
"""
import functools
from typing import Tuple

from ml_bridge.core.server import ModelServer
from ml_bridge.core.training import TrainingOutcome

#: The epochs INTERFACE.md promises the built-in image models' quality after.
EPOCHS = 10


@functools.lru_cache(maxsize=None)
def trained(backend: str, model: str, dataset: str,
            epochs: int = EPOCHS) -> Tuple[ModelServer, TrainingOutcome]:
    """A ModelServer serving ``model`` trained on ``dataset``, and the training result."""
    server = ModelServer.load(backend, model, max_batch=8)
    result = server.fit(dataset, epochs=epochs)
    return server, result
