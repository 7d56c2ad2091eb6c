"""Named things ml_bridge looks up by a user's word: one small :class:`Registry` class.

Backends, pipelines, sinks, datasets and built-in models each live in a ``Registry``. An entry
is registered by a call or as a decorator; a second entry under a taken name is refused with
the place the first came from, and an unknown name is answered with the valid ones. An entry
may be *lazy*: a ``"package.module:attribute"`` string imported on first use, so that naming
a backend or a pipeline imports no framework until it is asked for.

This module also holds the backend registry (:data:`BACKENDS`): each backend module provides
``load_model(source, options) -> BackendModel``, ``framework_version() -> str``,
``devices() -> List[str]``, ``set_threads(n)`` and ``probe(try_import)`` (what ``doctor``
reports); see :mod:`ml_bridge.backends` for the modules every backend package has.
"""
import importlib
import sys
import threading
from types import ModuleType
from typing import Any, Dict, Generic, Iterator, List, Optional, Tuple, Type, TypeVar, Union

from ml_bridge.core.errors import BackendError, InputError

T = TypeVar("T")


class _Lazy:
    """An entry not imported yet: ``package.module[:attribute]``."""

    def __init__(self, path: str) -> None:
        self.path = path


class Registry(Generic[T]):
    """Name -> entry, for one kind of thing (``"backend"``, ``"pipeline"``, ...).

    Names are matched case-insensitively, without surrounding blanks, and through aliases.
    Lookups and registrations may come from any thread.

    Args:
        kind: what an entry is, for messages ("unknown pipeline 'x'; valid pipelines: ...").
        error: the exception an unknown name raises (an :class:`InputError` by default).
    """

    def __init__(self, kind: str, error: Type[Exception] = InputError) -> None:
        self.kind = kind
        self._error = error
        self._entries: Dict[str, Union[T, _Lazy]] = {}
        self._origins: Dict[str, str] = {}
        self._aliases: Dict[str, str] = {}
        self._lock = threading.Lock()

    # -- registering ------------------------------------------------------------------------
    def register(self, name: str, entry: Any = None, *, aliases: Tuple[str, ...] = (),
                 lazy: bool = False) -> Any:
        """Registers ``entry`` under ``name``; without ``entry``, returns a decorator.

        Args:
            name: the name users give.
            entry: the thing itself, or with ``lazy`` a ``"package.module:attribute"`` string
                (``"package.module"`` for a module) imported on first :meth:`get`.
            aliases: other names for it.
            lazy: ``entry`` is an import path.

        Raises:
            ValueError: the name or an alias is taken already (the message says where from).
        """
        if entry is None:
            def decorate(obj: T) -> T:
                self._add(name, obj, aliases, _caller(1))
                return obj
            return decorate
        if lazy and not isinstance(entry, str):
            raise TypeError(f"a lazy {self.kind} entry is an import path string, got {entry!r}")
        self._add(name, _Lazy(entry) if lazy else entry, aliases, _caller(1))
        return entry

    def _add(self, name: str, entry: Any, aliases: Tuple[str, ...], origin: str) -> None:
        key = _key(name)
        with self._lock:
            for taken in (key,) + tuple(_key(a) for a in aliases):
                if taken in self._entries or taken in self._aliases:
                    first = self._aliases.get(taken, taken)
                    raise ValueError(f"{self.kind} '{taken}' is registered already, by "
                                     f"{self._origins[first]}; choose another name")
            self._entries[key] = entry
            self._origins[key] = origin
            for alias in aliases:
                self._aliases[_key(alias)] = key

    # -- looking up -------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The registered name that ``name`` (any case, or an alias) stands for.

        Raises:
            the registry's error: an unknown name; the message lists the valid ones.
        """
        key = _key(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise self._error(f"unknown {self.kind} '{name}'; valid {self.kind}s: "
                              f"{', '.join(self.names())}")
        return key

    def get(self, name: str) -> T:
        """The entry of ``name``, imported first when it is lazy.

        Raises:
            the registry's error: an unknown name (lists the valid ones), or a lazy entry that
            cannot be imported (names the import and the cause).
        """
        key = self.canonical(name)
        entry = self._entries[key]
        if isinstance(entry, _Lazy):
            loaded = self._import(key, entry.path)
            with self._lock:
                self._entries[key] = loaded
            return loaded
        return entry

    def _import(self, key: str, path: str) -> T:
        module, _, attribute = path.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in filter(None, attribute.split(".")):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as err:
            raise self._error(f"{self.kind} '{key}' cannot be loaded from {path} ({err})") from err
        return obj  # type: ignore[no-any-return]

    def origin(self, name: str) -> str:
        """Where the entry of ``name`` was registered (``file:line``)."""
        return self._origins[self.canonical(name)]

    def names(self) -> List[str]:
        """The registered names, sorted (aliases not included)."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def _key(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a registry name is a string, got {name!r}")
    return name.strip().lower()


def _caller(depth: int) -> str:
    """``file:line`` of the code ``depth`` frames above the caller of this function."""
    frame: Optional[Any] = sys._getframe(depth + 1)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"


#: The backends, by name; each entry is its module, imported on first use.
BACKENDS: "Registry[ModuleType]" = Registry("backend", BackendError)
BACKENDS.register("torch", "ml_bridge.backends.torch", aliases=("pytorch",), lazy=True)
BACKENDS.register("tensorflow", "ml_bridge.backends.tensorflow", aliases=("tf", "keras"), lazy=True)


def names() -> List[str]:
    """The valid backend names."""
    return BACKENDS.names()


def canonical(name: str) -> str:
    """The backend's canonical name; raises BackendError listing the valid ones."""
    return BACKENDS.canonical(name)


def load(name: str) -> ModuleType:
    """Imports and returns the backend module; its framework is imported by the first call
    that needs it (a missing framework raises BackendError there)."""
    key = canonical(name)
    try:
        return BACKENDS.get(key)
    except BackendError as err:
        raise BackendError(f"backend '{key}' cannot be imported ({err.__cause__ or err}); run "
                           "`make setup` or `rosrun ml_bridge doctor`") from err

