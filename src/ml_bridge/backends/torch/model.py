"""TorchModel: an nn.Module or TorchScript module served and trained by ml_bridge."""
import copy
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ml_bridge.backends.torch.core import TorchContext
from ml_bridge.core.box_targets import check_boxes
from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import (
    CheckpointError,
    DatasetError,
    InputError,
    ModelCallError,
    TrainingError,
)
from ml_bridge.core.model import BackendModel, ImagePreprocess
from ml_bridge.core.spec import ArraySpec, validate_inputs
from ml_bridge.core.targets import canonical_targets
from ml_bridge.core.training import Callback, FitResult, TrainConfig
from ml_bridge.core.vision import ImageFormat

#: torch's loss signature: ``loss(output, target) -> scalar tensor``.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: What a ModelBundle's ``optimizer`` is: ``factory(params, lr) -> Optimizer``.
OptimizerFactory = Callable[[Any, float], torch.optim.Optimizer]


def outputs_to_list(result: Any) -> List[torch.Tensor]:
    """A model's return value as a list: a tensor, a tuple/list of tensors or a dict of them.

    Raises:
        ModelCallError: the model returned something else.
    """
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in result):
        return list(result)
    if isinstance(result, Mapping) and all(isinstance(t, torch.Tensor) for t in result.values()):
        return list(result.values())
    raise ModelCallError(f"the model returned {type(result).__name__}; ml_bridge serves models "
                         "that return a tensor, a tuple/list of tensors or a dict of tensors")


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU numpy copy; dtypes numpy lacks (bfloat16 from autocast) become float32."""
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()


def from_numpy(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A tensor on ``device``; read-only arrays (e.g. message bytes) are copied first."""
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device)


class TorchModel(BackendModel):
    """A torch module with its specs, labels and training defaults.

    The module is kept in eval mode while serving; :meth:`fit` switches it to train mode and
    back. Every call expects the context of :meth:`capture_context` to be restored.
    """

    backend = "torch"
    checkpoint_suffix = ".pt"

    def __init__(self, module: torch.nn.Module, source: str, device: torch.device,
                 inputs: Sequence[ArraySpec], outputs: Sequence[ArraySpec],
                 labels: Sequence[str] = (), outputs_probabilities: bool = False,
                 preprocess_image: Optional[ImagePreprocess] = None, batch_size: int = 32,
                 learning_rate: float = 1e-3, loss: Optional[LossFn] = None,
                 optimizer: Optional[OptimizerFactory] = None,
                 image_format: Optional[ImageFormat] = None) -> None:
        """Wraps ``module``, moved to ``device`` and put in eval mode.

        Args:
            module: An nn.Module or TorchScript module.
            source: What was asked for (built-in name, factory path or file).
            device: Where the module runs.
            inputs: Specs of the positional inputs of ``forward``.
            outputs: Specs of the outputs (may be empty when they cannot be known).
            labels: Class labels; non-empty makes the model a classifier.
            outputs_probabilities: Output 0 already holds probabilities.
            preprocess_image: Image -> model inputs, for image topics.
            batch_size: Default training batch size.
            learning_rate: Default learning rate.
            loss: ``loss(output, target)``; None = cross-entropy for classifiers, else MSE.
            optimizer: ``factory(params, lr)``; None = Adam.
            image_format: What a vision model takes per frame (pipelines and the built-in
                image datasets use it); None for models that take no images.
        """
        self.module = module.to(device).eval()
        self.source = source
        self.device = str(device)
        self.torch_device = device
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.labels = [str(label) for label in labels]
        self.is_classifier = bool(self.labels)
        self.outputs_probabilities = outputs_probabilities
        self.preprocess_image = preprocess_image
        self.default_batch_size = batch_size
        self.default_learning_rate = learning_rate
        self.loss = loss
        self.optimizer = optimizer
        self.image_format = image_format

    @property
    def is_script(self) -> bool:
        """True for a TorchScript module."""
        return isinstance(self.module, torch.jit.ScriptModule)

    def capture_context(self) -> TorchContext:
        """Captures this thread's torch state for the model's device (call in main)."""
        return TorchContext.capture(self.device)

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        """Runs the module on validated inputs under inference mode; numpy outputs."""
        with torch.inference_mode():
            tensors = [from_numpy(a, self.torch_device) for a in inputs]
            result = self.module(*tensors)
            return [to_numpy(t) for t in outputs_to_list(result)]

    @property
    def trainable(self) -> bool:
        """True when the module has parameters that require gradients."""
        return any(p.requires_grad for p in self.module.parameters())

    def clone(self) -> "TorchModel":
        """An independent deep copy (also of a TorchScript module) with the same weights."""
        twin = copy.copy(self)
        twin.module = copy.deepcopy(self.module)
        twin.inputs = list(self.inputs)
        twin.outputs = list(self.outputs)
        twin.labels = list(self.labels)
        return twin

    def fit(self, train: Dataset, validation: Optional[Dataset], config: TrainConfig,
            callbacks: Callback, native_callbacks: Sequence[Any] = ()) -> FitResult:
        """Trains in place on this thread; see :class:`ml_bridge.core.model.BackendModel`.

        Raises:
            TrainingError: invalid config, an untrainable model, or ``native_callbacks``
                given (torch has no callback type of its own: use ml_bridge Callbacks).
            DatasetError: the data does not fit the model. Both are raised before training.
        """
        from ml_bridge.backends.torch.trainer import Trainer

        if native_callbacks:
            names = ", ".join(sorted({type(c).__name__ for c in native_callbacks}))
            raise TrainingError(f"the torch backend has no native callbacks; got {names}. "
                                "Subclass ml_bridge.core.training.Callback instead (same hook "
                                "names as Keras and Lightning)")
        return Trainer(self, config, callbacks).fit(train, validation)

    def n_classes(self) -> int:
        """Classes of a classifier: dimension 1 of output 0 ([N, C] or per-pixel [N, C, h, w]),
        else the label count."""
        shape = self.outputs[0].shape if self.outputs else ()
        if len(shape) >= 2 and shape[1] > 0:
            return int(shape[1])
        return len(self.labels)

    def output_shape(self, dataset: Dataset) -> Sequence[int]:
        """Shape of output 0 for this dataset's first sample, from the spec or by running it."""
        if self.outputs and all(d >= 0 for d in self.outputs[0].shape[1:]):
            return self.outputs[0].shape
        first = validate_inputs([a[:1] for a in dataset.inputs], self.inputs)
        return tuple(self.predict(first)[0].shape)

    def check_targets(self, dataset: Dataset) -> None:
        """Raises DatasetError if the dataset's inputs or targets do not fit this model.

        A classifier takes one integer target array of class ids in [0, classes), shaped
        [N] or [N, 1], or [N, H, W] (a class per pixel) when output 0 holds per-pixel scores
        [N, C, H, W]; other models take one target array shaped like output 0.
        """
        dataset.check()
        try:
            validate_inputs([a[:1] for a in dataset.inputs], self.inputs)
        except InputError as err:
            raise DatasetError(f"dataset '{dataset.name}': its inputs do not fit the model: "
                               f"{err}") from err
        if len(dataset.targets) != 1:
            raise DatasetError(f"dataset '{dataset.name}' has {len(dataset.targets)} target "
                               "arrays; the torch backend trains output 0 on one target array")
        target = dataset.targets[0]
        name = f"dataset '{dataset.name}'"
        if self.box_grid is not None:  # a detector: boxes [N, K, 5], encoded by the trainer
            check_boxes(f"{name} target 0", target, self.box_grid.classes)
            return
        if self.is_classifier:
            if target.ndim == 3:  # the layout is ours: [N, C, H, W] scores
                self._check_dense(dataset, target)
            # Dtypes, shapes and class ids: the one check both backends share.
            canonical_targets(dataset.name, [target], self.outputs[:1], self.n_classes())
            return
        want = self.output_shape(dataset)
        if len(want) != target.ndim or any(w >= 0 and w != g
                                           for w, g in zip(want[1:], target.shape[1:])):
            dims = ", ".join(str(d) for d in want[1:])
            raise DatasetError(f"{name}: targets have shape {list(target.shape)}, but the model's "
                               f"output 0 is [N, {dims}]")
        canonical_targets(dataset.name, [target], self.outputs[:1], 0)  # numbers it can take

    def _check_dense(self, dataset: Dataset, target: np.ndarray) -> None:
        """Per-pixel targets [N, H, W] need per-pixel scores [N, C, H, W] of the same H x W."""
        out = tuple(self.output_shape(dataset))
        name = f"dataset '{dataset.name}'"
        if len(out) != 4:
            raise DatasetError(f"{name}: targets {list(target.shape)} hold a class per pixel, but "
                               f"the model's output 0 is {list(out)}, not per-pixel class scores "
                               "[N, C, H, W]")
        if tuple(target.shape[1:]) != out[2:]:
            raise DatasetError(f"{name}: targets are {target.shape[1]} x {target.shape[2]} class "
                               f"ids per pixel, but the model's output 0 is {out[2]} x {out[3]} "
                               f"per pixel ({list(out)}); resize the masks (nearest-neighbour) "
                               "to the output's size")

    def save_checkpoint(self, path: str) -> None:
        """Writes the state dict with torch.save (the caller makes it atomic)."""
        torch.save(self.module.state_dict(), path)

    def load_checkpoint(self, path: str) -> None:
        """Loads a state dict with ``weights_only=True``: a file carrying code is refused.

        Keys and shapes are checked before anything is copied, so a checkpoint that does not
        fit leaves the weights untouched.

        Raises:
            CheckpointError: missing, corrupt, refused or not fitting this model.
        """
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {path} does not exist")
        try:
            state = torch.load(path, map_location=self.torch_device, weights_only=True)
        except Exception as err:  # pickle, zip and torch errors: all mean "unusable file"
            raise CheckpointError(f"cannot load checkpoint {path}: {type(err).__name__}: "
                                  f"{_first_line(err)} (it is corrupt, not a torch state dict, "
                                  "or carries code, which weights_only loading refuses)") from err
        if not isinstance(state, Mapping) or not all(
                isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a "
                                  "state dict of tensors (save with torch.save(model.state_dict()))")
        problem = _mismatch(self.module.state_dict(), state)
        if problem:
            raise CheckpointError(f"checkpoint {path} does not fit the model {self.source}: "
                                  f"{problem}")
        try:
            self.module.load_state_dict(state, strict=True)
        except Exception as err:
            raise CheckpointError(f"cannot load checkpoint {path} into {self.source}: "
                                  f"{_first_line(err)}") from err

    def weights_finite(self) -> bool:
        """False if any floating-point parameter or buffer holds NaN or infinity."""
        with torch.no_grad():
            return all(bool(torch.isfinite(t).all()) for t in self.module.state_dict().values()
                       if t.is_floating_point() or t.is_complex())

    def framework_version(self) -> str:
        """torch's version, e.g. "2.3.1"."""
        return str(torch.__version__)

    def describe(self) -> str:
        """One line for logs and ``~info``."""
        kind = "TorchScript" if self.is_script else type(self.module).__name__
        return f"{self.source} ({kind}, torch {torch.__version__}, {self.device})"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _mismatch(own: Dict[str, torch.Tensor], loaded: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``loaded`` from loading strictly into a module with state ``own`` ("" if fits)."""
    missing = sorted(set(own) - set(loaded))
    unexpected = sorted(set(loaded) - set(own))
    shapes = [f"{k} {list(loaded[k].shape)} vs {list(v.shape)}" for k, v in own.items()
              if k in loaded and loaded[k].shape != v.shape]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:5])}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:5])}")
    if shapes:
        parts.append(f"shape mismatch {'; '.join(shapes[:5])} (file vs model)")
    return "; ".join(parts)
