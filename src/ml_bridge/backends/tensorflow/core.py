"""TensorFlow's thread-local state: device names, threads, and the context captured in main.

TensorFlow keeps the default graph, the default session, the device scope and (in graph
mode) Keras 2's backend session per thread. A rospy callback thread starts with none of what
main set up, which is what produces the classic "Tensor ... is not an element of this graph"
and "Could not find variable" failures. :func:`capture` records that state in main;
``with context:`` re-establishes it on any thread.
"""
import functools
import re
import sys
import threading
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Type

import tensorflow as tf

from ml_bridge.core.context import Context
from ml_bridge.core.errors import MLBridgeError, ModelLoadError

_DEVICE = re.compile(r"^(?:/?(?:device:)?)(cpu|gpu|cuda)(?::(\d+))?$", re.IGNORECASE)


def parse_device(device: str) -> str:
    """Turns a user's device name into TensorFlow's.

    "cpu" -> "/CPU:0"; "cuda", "cuda:N", "gpu", "gpu:N", "/GPU:N" -> "/GPU:N".

    Raises:
        ModelLoadError: the name is not understood, or TensorFlow has no such device.
    """
    match = _DEVICE.match(device.strip() or "cpu")
    if not match:
        raise ModelLoadError(f"unknown device '{device}'; use cpu, cuda or cuda:N")
    kind = "CPU" if match.group(1).lower() == "cpu" else "GPU"
    index = int(match.group(2) or 0)
    found = tf.config.list_physical_devices(kind)
    if kind == "CPU" and index > 0:
        found = tf.config.list_logical_devices("CPU")
    if index >= len(found):
        if kind == "GPU" and not found:
            fix = "TensorFlow sees no GPU (a CPU-only build, or no CUDA driver): use device cpu"
        else:
            fix = f"use an index below {len(found)}"
        raise ModelLoadError(f"device '{device}' means /{kind}:{index}, but TensorFlow has "
                             f"{len(found)} {kind} device(s): {fix}")
    return f"/{kind}:{index}"


def _eager_device_name() -> str:
    # No public getter exists for the eager device scope (tf.device only sets it); the
    # eager context's thread-local device name is what tf.device writes, so read it there.
    from tensorflow.python.eager import context as eager_context

    return str(eager_context.context().device_name or "")


def _graph_device_stack(graph: tf.Graph) -> List[Any]:
    # The graph's device functions, outermost first, as the user passed them to
    # graph.device(): strings or functions. In TF2 the stack is per thread (and per graph).
    specs = graph._device_function_stack.peek_objs()  # no public accessor
    return [getattr(s, "_device_name_or_function", s.display_name) for s in reversed(list(specs))]


def _keras2_session() -> Optional[Any]:
    """Keras 2's backend session in graph mode, if tf_keras is in use; else None."""
    if "tf_keras" not in sys.modules:
        return None  # never import tf_keras for users who do not use it
    try:
        from tf_keras.api._v1.keras import backend as keras2_backend
    except ImportError:
        return None
    # get_session() returns the default session if one is set, else Keras 2's own session
    # for the current graph (created on first use, as Keras itself would).
    return keras2_backend.get_session()


class _KerasPolicy:
    """Sets Keras 3's (thread-local) dtype policy for one block; one instance per entry."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.previous: Any = None

    def __enter__(self) -> None:
        import keras

        self.previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.name)

    def __exit__(self, *exc_info: Any) -> None:
        import keras

        keras.config.set_dtype_policy(self.previous)


def _keras3_policy() -> str:
    """This thread's Keras 3 dtype policy if Keras is in use and it is not the default."""
    keras = sys.modules.get("keras")
    config = getattr(keras, "config", None)
    if config is None or not hasattr(config, "dtype_policy"):
        return ""
    name = str(config.dtype_policy().name)
    return "" if name == "float32" else name


class TFContext(Context):
    """TensorFlow state captured on one thread, restored with ``with context:`` on any.

    Restores, in this order: the default graph (graph mode), the default session, the
    device scope and a non-default Keras 3 dtype policy (e.g. mixed_float16, which Keras
    keeps per thread and applies to layers built on that thread, as in ``clone``). In eager
    mode, a caller that sits inside some graph is lifted back to eager with
    ``tf.init_scope()``. Entries are kept on a per-thread stack, so the context may be entered
    on several threads at once and re-entered on one.
    """

    def __init__(self, eager: bool, graph: Optional[tf.Graph], session: Optional[Any],
                 devices: List[Any], keras: str = "", dtype_policy: str = "") -> None:
        self.eager = eager
        self.graph = graph
        self.session = session
        self.devices = devices
        self.keras = keras
        self.dtype_policy = dtype_policy
        self._local = threading.local()
        self._enter_fns = self._plan()

    def _plan(self) -> List[Callable[[], Any]]:
        """The context managers to enter, decided once so that a restore does no thinking."""
        fns: List[Callable[[], Any]] = []
        graph = self.graph
        if graph is not None:
            fns.append(graph.as_default)
            if self.session is not None:
                fns.append(self.session.as_default)
            for dev in self.devices:
                fns.append(functools.partial(graph.device, dev))
        else:
            fns.append(self._lift_to_eager)
            for dev in self.devices:
                fns.append(functools.partial(tf.device, dev))
        if self.dtype_policy:
            fns.append(functools.partial(_KerasPolicy, self.dtype_policy))
        return fns

    @staticmethod
    def _lift_to_eager() -> Any:
        # Only needed when the caller sits inside a graph; tf.init_scope is not free.
        return tf.init_scope() if not tf.executing_eagerly() else None

    def __enter__(self) -> "TFContext":
        stack = ExitStack()
        try:
            for fn in self._enter_fns:
                manager = fn()
                if manager is not None:
                    stack.enter_context(manager)
        except BaseException:
            stack.close()
            raise
        stacks = getattr(self._local, "stacks", None)
        if stacks is None:
            stacks = self._local.stacks = []
        stacks.append(stack)
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._local.stacks.pop().__exit__(exc_type, exc, tb)

    def describe(self) -> Dict[str, str]:
        """What was captured: mode, graph, session, device scope and Keras flavour."""
        devices = [d if isinstance(d, str) else getattr(d, "__name__", repr(d))
                   for d in self.devices]
        return {
            "mode": "graph" if self.graph is not None else "eager",
            "graph": f"tf.Graph@{id(self.graph):#x}" if self.graph is not None else "",
            "session": f"Session@{id(self.session):#x}" if self.session is not None else "",
            "device": " > ".join(str(d) for d in devices),
            "keras": self.keras,
            "dtype_policy": self.dtype_policy,
        }


def capture(device: Optional[str] = None, graph: Optional[tf.Graph] = None,
            session: Optional[Any] = None) -> TFContext:
    """Captures this thread's TensorFlow state (call in main, where the model was built).

    Args:
        device: a TensorFlow device (e.g. "/GPU:0") to restore inside whatever device scope
            this thread has; None keeps only the thread's own scope.
        graph: the graph to make default; None takes this thread's default graph in graph
            mode and none in eager mode.
        session: the session to make default; None takes this thread's default session, or
            with Keras 2 (tf_keras) in graph mode its backend session.

    Returns:
        A context that restores the state with ``with context:`` on any thread.
    """
    eager = tf.executing_eagerly()
    keras = _keras_flavour()
    thread_graph = None if eager else tf.compat.v1.get_default_graph()
    if graph is None:
        graph = thread_graph
    if session is None and graph is not None:
        session = _same_graph(tf.compat.v1.get_default_session(), graph)
        if session is None and graph is thread_graph:
            session = _same_graph(_keras2_session(), graph)
    if graph is not None:
        devices = _graph_device_stack(graph) if graph is thread_graph else []
    else:
        name = _eager_device_name()
        devices = [name] if name else []
    if device:
        devices.append(device)
    return TFContext(eager=eager, graph=graph, session=session, devices=devices, keras=keras,
                     dtype_policy=_keras3_policy())


def _same_graph(session: Optional[Any], graph: tf.Graph) -> Optional[Any]:
    # A session of another graph cannot run this graph's tensors: not worth restoring.
    return session if session is not None and session.graph is graph else None


def _keras_flavour() -> str:
    parts = []
    if "keras" in sys.modules:
        parts.append(f"keras {getattr(sys.modules['keras'], '__version__', '?')}")
    if "tf_keras" in sys.modules:
        parts.append(f"tf_keras {getattr(sys.modules['tf_keras'], '__version__', '?')}")
    return ", ".join(parts)


def framework_version() -> str:
    """TensorFlow's version, e.g. "2.21.0"."""
    return str(tf.__version__)


def devices() -> List[str]:
    """The device names this backend accepts here: "cpu" and "cuda:N" per visible GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    return ["cpu"] + [f"cuda:{i}" for i in range(len(gpus))]


def set_threads(threads: int) -> None:
    """Runs TensorFlow's CPU operators on ``threads`` threads (intra-op) in this process.

    Raises:
        MLBridgeError: TensorFlow has already started its thread pools (set it first).
    """
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError as err:
        raise MLBridgeError(f"TensorFlow's threads cannot be set any more: {err} (set them "
                            "before the first model is loaded)") from err
