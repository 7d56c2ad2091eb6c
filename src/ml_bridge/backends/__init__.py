"""One subpackage per framework; each may import its framework, never rospy.

Every backend package has the same modules, as Keras 3's ``keras/src/backend/{tensorflow,torch}/``
do, so that what one backend does is found under the same name in the other:

``__init__``
    The backend API that :data:`ml_bridge.core.registry.BACKENDS` hands out: ``load_model``,
    ``framework_version``, ``devices``, ``set_threads`` and ``probe`` (what ``doctor`` reports).
    It imports no framework: naming a backend or probing it works without its framework
    installed; the first call that needs the framework imports it (:func:`lazy_exports`).
``core``
    The framework's thread-local state (the :class:`~ml_bridge.core.context.Context` captured
    in main and restored on any thread), device names, version and CPU threads.
``model``
    The :class:`~ml_bridge.core.model.BackendModel` that is served and trained.
``specs``
    Input and output ArraySpecs of a model that does not declare them.
``loading``
    ``load_model``: built-in names, ``package.module:callable`` factories, files.
``export``
    The framework's serialized serving formats (TorchScript; frozen GraphDefs, SavedModels).
``trainer``
    ``fit``: the policy of :mod:`ml_bridge.core.policy` (loss, metrics, keep_partial) in the
    framework's terms, driven by the neutral callbacks.
``builtins``
    The built-in models, by name.
``averaged``
    Serving the moving average of the last training steps' weights (the built-ins use it).
``detector``
    The built-in detector ``shapes_det``: its network (served in the YOLOv8 layout) and its
    loss, in the framework's terms; the box encoding and ``map50`` are in core.

A new backend is such a package plus one line registering it in ``BACKENDS``; the conformance
suite (test/unit/test_conformance.py) then runs against it.
"""
import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Tuple

from ml_bridge.core.errors import BackendError

#: ``try_import(name) -> (module, None)`` or ``(None, the error)``: how a probe imports its
#: framework (``doctor`` hands in its own, which tests replace with fakes).
TryImport = Callable[[str], Tuple[Any, Optional[BaseException]]]


@dataclass(frozen=True)
class Probe:
    """What a backend's ``probe`` found: its framework's version and devices, or why not."""

    framework: str
    """The framework's name, e.g. ``torch``."""
    version: str = ""
    """Its version; empty when it does not import."""
    devices: str = ""
    """The devices it sees, in words, e.g. ``cpu (CPU-only build, no CUDA)``."""
    error: Optional[BaseException] = None
    """Why the framework does not import; None when it does."""
    install: str = ""
    """How to install the framework, for a report of a missing one."""

    @property
    def available(self) -> bool:
        """True when the framework imports."""
        return self.error is None


def lazy_exports(package: str, backend: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a backend package: ``name`` comes from ``exports[name]``.

    The submodule (relative to ``package``) is imported on first use and the value kept in the
    package, so later uses cost nothing.

    Args:
        package: the backend package's ``__name__``.
        backend: the backend's name, for errors.
        exports: attribute name -> submodule (e.g. ``".loading"``) that defines it.

    Returns:
        The ``__getattr__``; it raises AttributeError for other names, and BackendError when
        the submodule cannot be imported (its framework is missing or broken).
    """
    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(exports[name], package)
        except ImportError as err:
            raise BackendError(f"backend '{backend}' cannot be imported ({err}); run "
                               "`make setup` or `rosrun ml_bridge doctor`") from err
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    return getattr_
