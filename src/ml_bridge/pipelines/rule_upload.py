"""A rule's ``upload`` action, validated: where its events are POSTed; no rospy.

::

    upload: {url: "https://example.com/events", headers: {Authorization: "Bearer ${TOKEN}"},
             bag: false}

``${NAME}`` in a header value is the environment variable ``NAME``, read when the event is
sent (:mod:`ml_bridge.core.upload_http`); ``bag: true`` also PUTs the rule's bag, so it needs
``record``.
"""
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

from ml_bridge.core.errors import InputError
from ml_bridge.core.upload_http import ENV_NAME, VARIABLE

UPLOAD_FIELDS = ("url", "headers", "bag")
# An HTTP header name (RFC 9110 token).
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class Upload:
    """Where a rule's events go: ``url``, with ``headers`` (values as written) and, with
    ``bag``, the rule's bag once complete."""

    url: str
    headers: Tuple[Tuple[str, str], ...] = ()
    bag: bool = False

    @property
    def header_dict(self) -> Dict[str, str]:
        """The headers as a dict, values unexpanded."""
        return dict(self.headers)


def parse_upload(value: Any, records: bool, fail: Callable[[str, str], InputError]) -> Upload:
    """The ``upload`` field of a rule; ``records``: whether the rule has ``record``.

    Raises:
        InputError: from ``fail(field, problem)``, naming the field that is wrong.
    """
    if not isinstance(value, dict):
        raise fail("upload", f"must be a dict with url, headers, bag; got {value!r}")
    for name in value:
        if name not in UPLOAD_FIELDS:
            raise fail(f"upload.{name}", f"unknown field; upload has {', '.join(UPLOAD_FIELDS)}")
    url = value.get("url")
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail("upload.url", f"must be an http:// or https:// address with a host, e.g. "
                                 f"https://example.com/events; got {url!r}")
    headers = value.get("headers") or {}
    if not isinstance(headers, dict):
        raise fail("upload.headers", f"must be a dict of header names to values, got {headers!r}")
    checked = []
    for name, text in headers.items():
        field = f"upload.headers.{name}"
        if not isinstance(name, str) or not _HEADER.match(name):
            raise fail(field, "is not an HTTP header name (letters, digits, '-')")
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise fail(field, f"must be text (quote it in yaml), got {text!r}")
        text = str(text)
        if "\r" in text or "\n" in text:
            raise fail(field, "holds a line break, which HTTP headers cannot carry")
        for var in VARIABLE.findall(text):
            if not ENV_NAME.match(var):
                raise fail(field, f"${{{var}}} is not an environment variable's name (letters, "
                                  "digits and '_', not starting with a digit)")
        checked.append((name, text))
    bag = value.get("bag", False)
    if not isinstance(bag, bool):
        raise fail("upload.bag", f"must be true or false, got {bag!r}")
    if bag and not records:
        raise fail("upload.bag", "true uploads the rule's bag, but the rule records none: add "
                                 "'record' or set bag: false")
    return Upload(str(url), tuple(checked), bag)
