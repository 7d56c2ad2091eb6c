"""The execution seam: how a model call runs, decided once, when the server is built.

Every caller (``~predict``, the streams, training's clone and swap) goes through one
:class:`ModelExecutor`: ``submit(inputs) -> Future``, a blocking ``predict(inputs, timeout)``,
``exclusive(fn)`` for work that must not overlap a call, ``close()``. :func:`make_executor`
picks the implementation from ``~model_thread`` and the model's device:

- :class:`ModelThread`: one thread runs every call, micro-batching what waits together (GPU
  models, ``model_thread: always``).
- :class:`InlineExecutor`: a blocking call runs on the caller's thread, with the context
  restored there and the model lock held; what arrives meanwhile is micro-batched by the
  caller that holds the model (CPU models, ``model_thread: never``).

Another implementation (a remote server with many requests in flight) subclasses
:class:`ModelExecutor` and is returned here; nothing else changes.
"""
from ml_bridge.core.context import Context
from ml_bridge.core.errors import InputError
from ml_bridge.core.execution.base import ModelExecutor, PredictFn, WorkerStopped
from ml_bridge.core.execution.batching import WorkerResult
from ml_bridge.core.execution.inline import InlineExecutor
from ml_bridge.core.execution.model_thread import ModelThread

#: Values of ``~model_thread``: where a request runs when the model is idle.
MODEL_THREAD_MODES = ("auto", "always", "never")

__all__ = ["MODEL_THREAD_MODES", "InlineExecutor", "ModelExecutor", "ModelThread", "PredictFn",
           "WorkerResult", "WorkerStopped", "make_executor", "runs_inline"]


def runs_inline(model_thread: str, device: str) -> bool:
    """Whether a request that finds the model idle runs on the caller's thread.

    ``always``: no, every call goes through the model thread. ``never``: yes, on any device.
    ``auto``: yes for CPU models (the hand-off costs more than a small model's call, and CPU
    frameworks keep no per-thread state the context does not restore); no on a GPU, whose
    streams and per-thread handles were not shown safe to drive from many threads.

    Raises:
        InputError: ``model_thread`` is not one of MODEL_THREAD_MODES.
    """
    mode = (model_thread or "auto").strip().lower()
    if mode not in MODEL_THREAD_MODES:
        raise InputError(f"~model_thread must be one of {', '.join(MODEL_THREAD_MODES)}, got "
                         f"'{model_thread}' (auto: on the caller's thread for CPU models)")
    if mode == "auto":
        return "cpu" in (device or "cpu").lower()
    return mode == "never"


def make_executor(context: Context, predict_fn: PredictFn, max_batch: int = 1,
                  model_thread: str = "auto", device: str = "cpu",
                  name: str = "ml_bridge-model") -> ModelExecutor:
    """The executor for a model on ``device`` under ``~model_thread`` (:func:`runs_inline`).

    Raises:
        InputError: ``model_thread`` is not one of MODEL_THREAD_MODES.
        ValueError: ``max_batch`` < 1.
    """
    if runs_inline(model_thread, device):
        return InlineExecutor(context, predict_fn, max_batch, name)
    return ModelThread(context, predict_fn, max_batch, name)
