"""``load_model(source, options)``: built-ins, factories, .keras files and exported models;
``check_weights_file``: a checkpoint checked before Keras reads it.

Accepted model sources, tried in this order:

* a built-in name: ``digits_mlp``, ``image_cnn``;
* an existing path: a ``.keras`` file (Keras 3, loaded with ``safe_mode=True``, so Lambda
  layers carrying Python bytecode are refused), a SavedModel directory, or a frozen GraphDef
  ``.pb`` (needs ``input_tensor`` and ``output_tensor``);
* ``package.module:callable``: a factory returning a ``keras.Model`` or a
  :class:`~ml_bridge.core.model.ModelBundle`.

``options.labels`` overrides the model's labels; a model with labels is a classifier. Models
loaded from files have no labels of their own. ``options.extra`` may hold
``outputs_probabilities`` ("true" when output 0 already holds probabilities; .keras files
ending in a softmax are detected) and, for SavedModels, ``signature``.
"""
import os
from typing import Any, Callable, Optional

from ml_bridge.core.errors import CheckpointError, MLBridgeError, ModelLoadError
from ml_bridge.core.factory import import_factory, is_factory
from ml_bridge.core.model import BackendModel, ModelBundle, ModelOptions

from .core import parse_device

__all__ = ["check_weights_file", "load_model"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_FORMS = ("a built-in name ({builtins}), a .keras file, a SavedModel directory, a frozen "
          "GraphDef .pb file (with input_tensor and output_tensor), or a package.module:callable "
          "factory returning a keras.Model or a ModelBundle")


def _accepted() -> str:
    from .builtins import BUILTINS

    return _FORMS.format(builtins=", ".join(sorted(BUILTINS)))


def _flag(options: ModelOptions, key: str) -> Optional[bool]:
    value = options.extra.get(key, "").strip().lower()
    return None if not value else value in ("1", "true", "yes", "on")


def load_model(source: str, options: ModelOptions) -> BackendModel:
    """Loads a model for serving and training on ``options.device``.

    Raises:
        ModelLoadError: unknown name, missing or unreadable file, unsafe content, wrong tensor
            names, or a device TensorFlow does not have; the message names the cause and
            the accepted forms.
    """
    import tensorflow as tf

    from .builtins import BUILTINS

    device = parse_device(options.device)
    source = source.strip()
    if source in BUILTINS:
        with tf.device(device):
            return _from_bundle(BUILTINS.get(source)(), source, device, options, BUILTINS.get(source))
    if os.path.exists(source):
        return _from_path(source, device, options)
    if is_factory(source):
        factory = import_factory(source)
        with tf.device(device):
            try:
                built = factory()
            except MLBridgeError:
                raise
            except Exception as err:
                raise ModelLoadError(f"factory {source} raised {type(err).__name__}: "
                                     f"{err}") from err
            return _from_bundle(built, source, device, options, factory)
    raise ModelLoadError(f"cannot load '{source}': no such built-in model, file or directory, "
                         f"and not a package.module:callable. Use {_accepted()}.")


def _from_bundle(built: Any, source: str, device: str, options: ModelOptions,
                 rebuild: Callable[[], Any]) -> BackendModel:
    from .model import KerasModel

    bundle = built if isinstance(built, ModelBundle) else ModelBundle(model=built)
    probabilities = _flag(options, "outputs_probabilities")
    return KerasModel(
        bundle.model, source, device, labels=list(options.labels or bundle.labels),
        outputs_probabilities=(bundle.outputs_probabilities if probabilities is None
                               else probabilities),
        preprocess_image=bundle.preprocess_image, loss=bundle.loss,
        optimizer=bundle.optimizer, metrics=bundle.metrics, batch_size=bundle.batch_size,
        learning_rate=bundle.learning_rate, rebuild=rebuild, image_format=bundle.image_format,
        box_grid=bundle.box_grid)


def _from_path(path: str, device: str, options: ModelOptions) -> BackendModel:
    from .export import FrozenGraphModel, SavedModelModel

    probabilities = _flag(options, "outputs_probabilities")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ModelLoadError(f"directory {path} is not a SavedModel (no saved_model.pb in "
                                 f"it). Use {_accepted()}.")
        return SavedModelModel(path, device, options.extra.get("signature", "serving_default"),
                               options.input_tensor, options.output_tensor,
                               labels=options.labels, outputs_probabilities=bool(probabilities))
    if path.endswith(".keras"):
        return _load_keras_file(path, device, options, probabilities)
    if path.endswith(".pb"):
        return FrozenGraphModel(path, device, options.input_tensor, options.output_tensor,
                                labels=options.labels, outputs_probabilities=bool(probabilities))
    raise ModelLoadError(f"cannot load {path}: the tensorflow backend reads .keras files, "
                         f"SavedModel directories and frozen .pb GraphDefs. Use {_accepted()}.")


def _load_keras_file(path: str, device: str, options: ModelOptions,
                     probabilities: Optional[bool]) -> BackendModel:
    import keras
    import tensorflow as tf

    from .model import KerasModel

    def load() -> Any:
        # safe_mode refuses Lambda layers with pickled bytecode and other code in the config;
        # compile=False: training compiles afresh, so no saved optimizer or loss is revived.
        return keras.saving.load_model(path, compile=False, safe_mode=True)

    with tf.device(device):
        try:
            model = load()
        except Exception as err:  # Keras raises ValueError, TypeError, OSError, zip errors
            raise ModelLoadError(f"cannot load {path}: {type(err).__name__}: "
                                 f"{str(err).strip()[:1000]}") from err
        if probabilities is None:
            last = model.layers[-1] if getattr(model, "layers", None) else None
            activation = getattr(last, "activation", None)
            probabilities = getattr(activation, "__name__", "") == "softmax"
        return KerasModel(model, path, device, labels=list(options.labels),
                          outputs_probabilities=probabilities, rebuild=load)


def check_weights_file(path: str, suffix: str, n_weights: int) -> None:
    """Refuses, before Keras sees it, a file that is not a Keras HDF5 weight file of a model with
    ``n_weights`` weight arrays.

    Raises:
        CheckpointError: missing, another suffix, not HDF5 (e.g. a pickle), corrupt, or a
            different number of weight arrays.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.endswith(suffix):
        raise CheckpointError(f"checkpoint {path}: TensorFlow checkpoints are Keras weight files "
                              f"ending in '{suffix}'")
    with open(path, "rb") as f:
        head = f.read(8)
    if head != _HDF5_SIGNATURE:
        what = (" It looks like a Python pickle, which is refused: unpickling can run code."
                if head[:1] == b"\x80" else "")
        raise CheckpointError(f"checkpoint {path} is not an HDF5 weight file (it starts with "
                              f"{head!r}).{what}")
    import h5py

    count = [0]

    def visit(name: str, obj: Any) -> None:
        # A trained model's file also holds its optimizer's state, which serving does not load.
        if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer/"):
            count[0] += 1

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} is corrupt: {err}") from err
    if count[0] != n_weights:
        raise CheckpointError(f"checkpoint {path} holds {count[0]} weight arrays; this model has "
                              f"{n_weights}: it was saved from a different model")
