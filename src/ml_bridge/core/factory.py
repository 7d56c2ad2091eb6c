"""``package.module:callable`` model factories, resolved the same way for every backend."""
import importlib
import re
from typing import Any, Callable

from ml_bridge.core.errors import ModelLoadError

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_factory(source: str) -> bool:
    """True if ``source`` is written as ``package.module:callable``."""
    return bool(_FACTORY.match(source))


def import_factory(source: str) -> Callable[[], Any]:
    """Imports the callable named by ``package.module:callable`` (it is not called).

    Raises:
        ModelLoadError: not a factory path, the module does not import, the attribute is
            missing, or it is not callable.
    """
    if not is_factory(source):
        raise ModelLoadError(f"'{source}' is not a factory path; write it as "
                             "'package.module:callable', e.g. 'my_pkg.models:build'")
    module_name, attr = source.split(":", 1)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # any error while importing the user's module, named for them
        raise ModelLoadError(f"cannot import '{module_name}' for factory '{source}': "
                             f"{type(err).__name__}: {err}. Is its package on PYTHONPATH "
                             "(source your workspace's devel/setup.bash)?") from err
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(f"factory '{source}': '{module_name}' has no attribute '{attr}'")
        target = getattr(target, part)
    if not callable(target):
        raise ModelLoadError(f"factory '{source}' is a {type(target).__name__}, not a callable")
    return target  # type: ignore[no-any-return]
