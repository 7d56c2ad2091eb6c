"""Backends, loaded lazily by name: importing ml_bridge imports no framework."""
import importlib
from types import ModuleType
from typing import Dict, List

from ml_bridge.core.errors import BackendError

#: Backend name -> module. Each module provides ``load_model(source, options) -> BackendModel``,
#: ``framework_version() -> str``, ``devices() -> List[str]`` and ``set_threads(n)``.
BACKENDS: Dict[str, str] = {
    "torch": "ml_bridge.backends.torch",
    "tensorflow": "ml_bridge.backends.tensorflow",
}
ALIASES: Dict[str, str] = {"pytorch": "torch", "tf": "tensorflow", "keras": "tensorflow"}


def names() -> List[str]:
    """The valid backend names."""
    return sorted(BACKENDS)


def canonical(name: str) -> str:
    """The backend's canonical name; raises BackendError listing the valid ones."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in BACKENDS:
        raise BackendError(f"unknown backend '{name}'; valid backends: {', '.join(names())}")
    return key


def load(name: str) -> ModuleType:
    """Imports and returns the backend module (the framework is imported here, not before)."""
    key = canonical(name)
    try:
        return importlib.import_module(BACKENDS[key])
    except ImportError as err:
        raise BackendError(f"backend '{key}' cannot be imported ({err}); run `make setup` or "
                           f"`rosrun ml_bridge doctor`") from err
