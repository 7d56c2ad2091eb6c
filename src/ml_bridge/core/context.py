"""The framework context: captured once in main, restored around every framework call.

Framework state such as torch's grad mode and default device, or TensorFlow's default graph,
session and device scope, is thread-local. rospy calls back on threads it creates, so the
state set up in main is missing there. A backend captures it into a :class:`Context` object
(``capture``) and every caller restores it with ``with context:``.
"""
import functools
from types import TracebackType
from typing import Any, Callable, Dict, Optional, Type, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """Base class: a context that restores nothing. Backends override the three methods.

    A Context may be entered on several threads at once and re-entered on one thread: the
    state of each entry is kept per thread by the subclasses.
    """

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        return None

    def describe(self) -> Dict[str, str]:
        """What was captured, for logs and ``doctor``."""
        return {}


def in_context(context: Context) -> Callable[[F], F]:
    """Decorator: runs the wrapped callback with ``context`` restored on the calling thread."""
    def wrap(func: F) -> F:
        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            with context:
                return func(*args, **kwargs)
        return call  # type: ignore[return-value]
    return wrap
