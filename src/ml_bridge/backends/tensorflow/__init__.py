"""The TensorFlow/Keras backend: what :data:`ml_bridge.core.registry.BACKENDS` hands out for
``tensorflow`` (also ``tf``, ``keras``).

Its modules are those of every backend (see :mod:`ml_bridge.backends`): ``core`` (``capture``,
devices, version, threads), ``model`` (:class:`KerasModel`), ``specs`` (spec inference),
``loading`` (``load_model``; the accepted sources are listed there), ``export`` (frozen
GraphDefs and SavedModels, served inference-only), ``trainer`` (``model.fit`` driven by the
neutral callbacks, and the release of each run's traced step) and ``builtins``. This module
imports no TensorFlow: the names below import it on first use.
"""
import os
from typing import TYPE_CHECKING, List

from ml_bridge.backends import Probe, TryImport, lazy_exports

# oneDNN's CPU kernels, which TensorFlow turns on by itself only on some processors (not on
# CPUs without AVX-512, e.g. many AMD ones): there its own Conv3D gradients run an order of
# magnitude slower (bench/NOTES.md). Read when TensorFlow is first imported, so it is set
# before any module of this backend imports it; a user's own TF_ENABLE_ONEDNN_OPTS wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

if TYPE_CHECKING:
    from ml_bridge.backends.tensorflow.core import (
        capture,
        devices,
        framework_version,
        parse_device,
        set_threads,
    )
    from ml_bridge.backends.tensorflow.loading import load_model
    from ml_bridge.backends.tensorflow.model import KerasModel

#: How to install TensorFlow (as requirements.txt pins it).
INSTALL = "optional: pip install -r requirements.txt (tensorflow-cpu==2.21.0)"

__all__: List[str] = ["KerasModel", "capture", "devices", "framework_version", "load_model",
                      "parse_device", "probe", "set_threads"]

__getattr__ = lazy_exports(__name__, "tensorflow", {
    "capture": ".core", "devices": ".core", "framework_version": ".core",
    "parse_device": ".core", "set_threads": ".core", "load_model": ".loading",
    "KerasModel": ".model"})


def probe(try_import: TryImport) -> Probe:
    """TensorFlow's version and the devices it sees, or why it does not import (for ``doctor``)."""
    tf, err = try_import("tensorflow")
    if tf is None:
        return Probe("tensorflow", error=err, install=INSTALL)
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    if gpus:
        devices = "CPU, " + ", ".join(gpus)
    elif tf.test.is_built_with_cuda():
        devices = ("CPU (no GPU visible to this CUDA-capable build; for one: nvidia-smi, "
                   "CUDA_VISIBLE_DEVICES)")
    else:
        devices = "CPU (CPU-only build)"
    return Probe("tensorflow", str(tf.__version__), devices)
