"""The PyTorch backend: what :data:`ml_bridge.core.registry.BACKENDS` hands out for ``torch``.

Its modules are those of every backend (see :mod:`ml_bridge.backends`): ``core``
(:class:`TorchContext`, devices, version, threads), ``model`` (:class:`TorchModel`), ``specs``
(spec inference for modules that declare none), ``loading`` (``load_model``), ``export``
(TorchScript files with their metadata: ``save_torchscript``), ``trainer`` (the training loop)
and ``builtins``. This module imports no torch: the names below import it on first use.
"""
from typing import TYPE_CHECKING, List

from ml_bridge.backends import Probe, TryImport, lazy_exports

if TYPE_CHECKING:
    from ml_bridge.backends.torch.core import (
        TorchContext,
        devices,
        framework_version,
        parse_device,
        set_threads,
    )
    from ml_bridge.backends.torch.export import save_torchscript
    from ml_bridge.backends.torch.loading import load_model
    from ml_bridge.backends.torch.model import TorchModel

#: How to install torch (as requirements.txt pins it).
INSTALL = "optional: pip install -r requirements.txt (torch==2.13.0, CPU)"

__all__: List[str] = ["TorchContext", "TorchModel", "devices", "framework_version",
                      "load_model", "parse_device", "probe", "save_torchscript", "set_threads"]

__getattr__ = lazy_exports(__name__, "torch", {
    "TorchContext": ".core", "devices": ".core", "framework_version": ".core",
    "parse_device": ".core", "set_threads": ".core", "save_torchscript": ".export",
    "load_model": ".loading", "TorchModel": ".model"})


def probe(try_import: TryImport) -> Probe:
    """torch's version and the devices it sees, or why it does not import (for ``doctor``)."""
    torch, err = try_import("torch")
    if torch is None:
        return Probe("torch", error=err, install=INSTALL)
    if torch.cuda.is_available():
        gpus = [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                for i in range(torch.cuda.device_count())]
        devices = "cpu, " + ", ".join(gpus)
    elif getattr(torch.version, "cuda", None) is None:
        devices = "cpu (CPU-only build, no CUDA)"
    else:
        devices = (f"cpu (no GPU visible to this CUDA {torch.version.cuda} build; for one: "
                   "nvidia-smi, CUDA_VISIBLE_DEVICES)")
    return Probe("torch", str(torch.__version__), devices)
