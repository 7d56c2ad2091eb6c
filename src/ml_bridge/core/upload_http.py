"""One HTTP try of an upload, its headers and the wait before the next try; no rospy.

Header values may name environment variables (``Bearer ${TOKEN}``). They are kept as written
(in the rules and in the outbox, so no secret reaches the disk) and expanded at send time;
what fails is told by the header's and the variable's names, never by a value.
"""
import os
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

from ml_bridge.core.errors import MLBridgeError

#: Seconds to wait for the connection, and then for each read of the answer.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
#: ``${NAME}`` in a header value.
VARIABLE = re.compile(r"\$\{([^}]*)\}")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MissingVariable(MLBridgeError):
    """A header names an environment variable that is not set."""


def variables(template: str) -> List[str]:
    """The names of the variables ``template`` refers to, in order."""
    return VARIABLE.findall(template)


def expand(template: str, environ: Mapping[str, str]) -> str:
    """``template`` with each ``${NAME}`` replaced by ``environ[NAME]``.

    Raises:
        MissingVariable: naming the first variable that is not set.
    """
    def value(m: "re.Match[str]") -> str:
        if m.group(1) not in environ:
            raise MissingVariable(m.group(1))
        return environ[m.group(1)]
    return VARIABLE.sub(value, template)


def backoff(failures: int, retry_max: float, base: float = 1.0,
            rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after ``failures`` tries in a row failed: ``base`` doubling with each
    failure, never more than ``retry_max``; jittered down by up to half, so that nodes whose
    server came back at once do not all try again at once."""
    if failures <= 0:
        return 0.0
    delay = min(retry_max, base * 2.0 ** min(failures - 1, 60))  # 2.0 ** 1024 overflows
    return delay * (0.5 + 0.5 * rand())


@dataclass(frozen=True)
class Outcome:
    """What a try came to: ``ok`` on a 2xx answer, else ``problem`` (no header values)."""

    ok: bool
    problem: str = ""


class Http:
    """Sends uploads with one :class:`requests.Session` (connections are reused)."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        """``environ``: where ``${NAME}`` is looked up (default: the process environment)."""
        import requests  # here: the rules import this module, and most rules upload nothing

        self.environ = os.environ if environ is None else environ
        self.session: requests.Session = requests.Session()

    def post_json(self, url: str, headers: Mapping[str, str], body: Any) -> Outcome:
        """POSTs ``body`` as JSON to ``url``."""
        return self._call("POST", url, headers, json=body)

    def put_file(self, url: str, headers: Mapping[str, str], path: str) -> Outcome:
        """PUTs the file ``path`` (streamed from the disk) to ``url``."""
        try:
            with open(path, "rb") as f:
                return self._call("PUT", url, {"Content-Type": "application/octet-stream",
                                               **headers}, data=f)
        except OSError as err:
            return Outcome(False, f"cannot read {path}: {err}")

    def _call(self, method: str, url: str, templates: Mapping[str, str],
              **kwargs: Any) -> Outcome:
        import requests

        try:
            headers = self._headers(templates)
        except MissingVariable as err:
            names = [k for k, v in templates.items() if str(err) in variables(v)]
            return Outcome(False, f"header {names[0]} names ${{{err}}}, which is not set in the "
                                  "node's environment; export it before starting the node")
        try:
            # Redirects are not followed: a header meant for ``url`` goes nowhere else.
            response = self.session.request(method, url, headers=headers, allow_redirects=False,
                                            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), **kwargs)
        except requests.exceptions.InvalidHeader:  # its message holds the value
            return Outcome(False, "a header value is not valid for HTTP (a line break or "
                                  f"leading space?) in {', '.join(templates)}; values not shown")
        except requests.RequestException as err:
            return Outcome(False, f"{method} {url}: {type(err).__name__}: {err}")
        with response:
            if 200 <= response.status_code < 300:
                return Outcome(True)
            where = (f" to {response.headers.get('Location')} (not followed: set the url to "
                     "where it leads)" if response.is_redirect else "")
            return Outcome(False, f"{method} {url}: HTTP {response.status_code} "
                                  f"{response.reason}{where}")

    def _headers(self, templates: Mapping[str, str]) -> Dict[str, str]:
        return {name: expand(value, self.environ) for name, value in templates.items()}

    def close(self) -> None:
        """Closes the session's connections."""
        self.session.close()
