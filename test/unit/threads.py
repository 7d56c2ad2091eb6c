"""Running a function on a fresh thread, as rospy runs callbacks, for the tests."""
import threading
from typing import Any, Callable, List

TIMEOUT = 30.0


def on_thread(fn: Callable[[], Any], name: str = "caller") -> Any:
    """Runs ``fn`` on a fresh thread named ``name`` (the framework's per-thread defaults there);
    returns its result or raises its error."""
    out: List[Any] = []
    errors: List[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(TIMEOUT)
    if errors:
        raise errors[0]
    return out[0]
