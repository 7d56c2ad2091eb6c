"""What TensorFlow keeps, process-wide, of every training run's traced step: released after it.

Every goal trains a fresh copy of the served model, so Keras traces a new train step each time,
and two process-wide tables kept it all, for good (about 4.5 MB per one-epoch goal of
digits_mlp, without a plateau):

- the gradient registry: the optimizer sums gradients with ``ReplicaContext.all_reduce``,
  a ``tf.custom_gradient``; traced in graph mode, each one registers a ``CustomGradient-<n>``
  gradient function that is never unregistered and whose closure holds the whole traced
  train-step graph;
- the eager context's kernel cache: kernels instantiated for the run's functions and dataset
  ops stay cached after the functions themselves are gone.

Once a run is over nothing differentiates its step again, so both are dropped after each run.
"""
import logging
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

from tensorflow.python.eager import context
from tensorflow.python.framework import ops

log = logging.getLogger(__name__)

_CUSTOM_GRADIENT = "CustomGradient-"


def _gradient_registry() -> Optional[Dict[str, Any]]:
    """TensorFlow's gradient function table (private), or None if this version has none."""
    table = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return table if isinstance(table, dict) else None


@contextmanager
def released_traces() -> Iterator[None]:
    """Around one training run: forgets the custom gradients it registered and cached kernels.

    Only registrations made while the run traced are removed, so it assumes nothing else in
    the process traces a ``tf.custom_gradient`` it will differentiate later, at the same time
    (ml_bridge's model thread only calls functions traced before the run).
    """
    registry = _gradient_registry()
    if registry is None:
        log.debug("no tf gradient registry in this TensorFlow: traced steps are not released")
    before = set(registry) if registry is not None else set()
    try:
        yield
    finally:
        if registry is not None:
            for name in list(registry):  # a copy: another thread may register meanwhile
                if name not in before and name.startswith(_CUSTOM_GRADIENT):
                    registry.pop(name, None)
        # Kernels are reference-counted: one running on another thread stays valid.
        context.context().clear_kernel_cache()
