"""TensorFlow's serialized serving formats, served inference-only: frozen GraphDefs and SavedModels.

A frozen GraphDef ``.pb`` is imported into its own ``tf.Graph`` and run by its own
``tf.compat.v1.Session``; its tensors are named by ``input_tensor`` / ``output_tensor``
(e.g. ``x:0``; several as a comma-separated list). A SavedModel directory is loaded with
``tf.saved_model.load`` and called through a signature (``serving_default`` unless
``extra["signature"]`` names another); Keras's ``model.export`` and TF's
``tf.saved_model.save`` both write one. Neither kind has training attached: they serve only.
"""
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import (
    CheckpointError,
    DatasetError,
    InputError,
    ModelLoadError,
    TrainingError,
)
from ml_bridge.core.model import BackendModel
from ml_bridge.core.spec import validate_inputs
from ml_bridge.core.training import Callback, FitResult, TrainConfig

from .core import capture
from .specs import tensor_spec


def _split(names: str) -> List[str]:
    return [n.strip() for n in names.split(",") if n.strip()]


class _InferenceOnly(BackendModel):
    """Shared behaviour of the models that cannot be trained or checkpointed."""

    backend = "tensorflow"
    #: These models have no weights to checkpoint; nothing is ever written with this suffix.
    checkpoint_suffix = ".inference-only"
    kind = "model"

    def _setup(self, source: str, device: str, labels: Sequence[str],
               outputs_probabilities: bool) -> None:
        self.source = source
        self.device = device
        self.labels = [str(label) for label in labels]
        self.is_classifier = bool(self.labels)
        self.outputs_probabilities = outputs_probabilities
        if self.is_classifier and self.outputs[0].shape[-1] not in (-1, len(self.labels)):
            raise ModelLoadError(f"{source} has {len(self.labels)} labels but its output 0 is "
                                 f"{self.outputs[0].describe()}: one label per class is needed")

    @property
    def trainable(self) -> bool:
        """Always False: these models serve only."""
        return False

    def clone(self) -> "BackendModel":
        """The model itself: it is immutable, so a copy would be identical."""
        return self

    def fit(self, train: Dataset, validation: Optional[Dataset], config: TrainConfig,
            callbacks: Callback, native_callbacks: Sequence[Any] = ()) -> FitResult:
        """Always raises TrainingError: there is nothing to train."""
        raise TrainingError(f"{self.source} is a {self.kind}, which is inference-only: load a "
                            ".keras file, a built-in or a package.module:callable factory to "
                            "train")

    def check_targets(self, dataset: Dataset) -> None:
        """Checks the inputs and the number of targets (the model cannot train anyway)."""
        dataset.check()
        try:
            validate_inputs(dataset.inputs, self.inputs, max_elements=2**62)
        except InputError as err:
            raise DatasetError(f"dataset '{dataset.name}' does not fit the model: {err}") from err
        if len(dataset.targets) != len(self.outputs):
            raise DatasetError(f"dataset '{dataset.name}' has {len(dataset.targets)} target "
                               f"array(s); the model has {len(self.outputs)} output(s)")

    def save_checkpoint(self, path: str) -> None:
        """Always raises CheckpointError: there are no trainable weights."""
        raise CheckpointError(f"{self.source} is a {self.kind}: it has no weights to save")

    def load_checkpoint(self, path: str) -> None:
        """Always raises CheckpointError: there are no trainable weights."""
        raise CheckpointError(f"{self.source} is a {self.kind}: it cannot load weights "
                              f"from {path}")

    def framework_version(self) -> str:
        """TensorFlow's version, e.g. "2.21.0"."""
        return str(tf.__version__)


class FrozenGraphModel(_InferenceOnly):
    """A frozen GraphDef served in graph mode by its own graph and session."""

    kind = "frozen GraphDef"

    def __init__(self, path: str, device: str, input_tensor: str, output_tensor: str,
                 labels: Sequence[str] = (), outputs_probabilities: bool = False) -> None:
        """Imports the GraphDef in ``path`` onto ``device`` and opens a session on it.

        Raises:
            ModelLoadError: unreadable file, or tensor names missing from the graph (the
                message lists candidate names).
        """
        graph_def = tf.compat.v1.GraphDef()
        try:
            with open(path, "rb") as f:
                graph_def.ParseFromString(f.read())  # protobuf parsing: no code runs
        except Exception as err:  # DecodeError, or RuntimeWarning-like protobuf errors
            hint = (" (this is a SavedModel: pass its directory)"
                    if os.path.basename(path) == "saved_model.pb" else "")
            raise ModelLoadError(f"cannot read {path} as a frozen GraphDef{hint}: {err}") from err
        self.graph = tf.Graph()
        try:
            with self.graph.as_default(), self.graph.device(device):
                tf.import_graph_def(graph_def, name="")
        except (ValueError, tf.errors.OpError) as err:
            raise ModelLoadError(f"cannot import the GraphDef in {path}: {err}") from err
        if not _split(input_tensor) or not _split(output_tensor):
            raise ModelLoadError(f"{path} is a frozen GraphDef: name its tensors with the launch "
                                 "arguments input_tensor and output_tensor (e.g. x:0). "
                                 f"{self._candidates()}")
        self._feeds = [self._tensor(n, "input_tensor") for n in _split(input_tensor)]
        self._fetches = [self._tensor(n, "output_tensor") for n in _split(output_tensor)]
        self.inputs = [tensor_spec(t.name, t.dtype, t.shape, "input") for t in self._feeds]
        self.outputs = [tensor_spec(t.name, t.dtype, t.shape, "output") for t in self._fetches]
        self.session = tf.compat.v1.Session(graph=self.graph)
        self.graph.finalize()  # nothing may add ops while sessions run it on other threads
        self._setup(path, device, labels, outputs_probabilities)

    def _candidates(self) -> str:
        ops = self.graph.get_operations()
        placeholders = [op.name for op in ops if op.type == "Placeholder"]
        consumed = {t.op.name for op in ops for t in op.inputs}
        sinks = [op.name for op in ops if op.name not in consumed and op.type != "NoOp"]
        return (f"Placeholders in the graph: {', '.join(placeholders[:8]) or 'none'}; "
                f"ops nothing consumes (likely outputs): {', '.join(sinks[-8:]) or 'none'}")

    def _tensor(self, name: str, argument: str) -> tf.Tensor:
        full = name if ":" in name else name + ":0"
        try:
            return self.graph.get_tensor_by_name(full)
        except (KeyError, ValueError) as err:
            raise ModelLoadError(f"{argument} '{name}' is not a tensor of the graph ({err}). "
                                 f"{self._candidates()}") from err

    def capture_context(self) -> Context:
        """The model's graph and session as the defaults, plus its device scope."""
        return capture(device=self.device, graph=self.graph, session=self.session)

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        """Runs the session on validated inputs; numpy outputs, batch first."""
        results = self.session.run(self._fetches, feed_dict=dict(zip(self._feeds, inputs)))
        return [np.asarray(r) for r in results]

    def describe(self) -> str:
        """Source, tensor names and device."""
        feeds = ",".join(t.name for t in self._feeds)
        fetches = ",".join(t.name for t in self._fetches)
        return f"{self.source} (frozen GraphDef {feeds} -> {fetches}, {self.device})"


class SavedModelModel(_InferenceOnly):
    """A SavedModel directory served eagerly through one of its signatures."""

    kind = "SavedModel"

    def __init__(self, path: str, device: str, signature: str = "serving_default",
                 input_names: str = "", output_names: str = "", labels: Sequence[str] = (),
                 outputs_probabilities: bool = False) -> None:
        """Loads the SavedModel in ``path`` onto ``device``.

        Inputs and outputs are the signature's, in sorted name order unless ``input_names``
        / ``output_names`` (comma-separated) give the order.

        Raises:
            ModelLoadError: not a SavedModel, no such signature, or unknown names.
        """
        try:
            with tf.device(device):
                self._loaded = tf.saved_model.load(path)  # holds the variables alive
        except Exception as err:  # TF raises OSError, ValueError or its own errors here
            raise ModelLoadError(f"cannot load the SavedModel in {path}: {err}") from err
        signatures: Dict[str, Any] = dict(getattr(self._loaded, "signatures", {}) or {})
        if signature not in signatures:
            raise ModelLoadError(f"SavedModel {path} has no signature '{signature}'; it has: "
                                 f"{', '.join(sorted(signatures)) or 'none'} (extra: signature)")
        self._fn = signatures[signature]
        in_specs: Dict[str, tf.TensorSpec] = dict(self._fn.structured_input_signature[1])
        out_specs: Dict[str, tf.TensorSpec] = dict(self._fn.structured_outputs)
        self._in_names = self._order(in_specs, input_names, "input", path)
        self._out_names = self._order(out_specs, output_names, "output", path)
        self.inputs = [tensor_spec(n, in_specs[n].dtype, in_specs[n].shape, "input")
                       for n in self._in_names]
        self.outputs = [tensor_spec(n, out_specs[n].dtype, out_specs[n].shape, "output")
                        for n in self._out_names]
        self._setup(path, device, labels, outputs_probabilities)

    @staticmethod
    def _order(specs: Dict[str, Any], names: str, what: str, path: str) -> List[str]:
        wanted = _split(names) or sorted(specs)
        unknown = [n for n in wanted if n not in specs]
        if unknown:
            raise ModelLoadError(f"SavedModel {path} has no {what} {', '.join(unknown)}; its "
                                 f"{what}s are: {', '.join(sorted(specs))}")
        return wanted

    def capture_context(self) -> Context:
        """This thread's TensorFlow state plus the model's device scope."""
        return capture(device=self.device)

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        """Calls the signature on validated inputs; numpy outputs, batch first."""
        out = self._fn(**{n: tf.convert_to_tensor(a) for n, a in zip(self._in_names, inputs)})
        return [out[n].numpy() for n in self._out_names]

    def describe(self) -> str:
        """Source, signature names and device."""
        return (f"{self.source} (SavedModel {','.join(self._in_names)} -> "
                f"{','.join(self._out_names)}, {self.device})")
