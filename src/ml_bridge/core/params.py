"""The parameter schema: each ``~`` parameter declared once, read and checked through that.

A :class:`Param` says a parameter's name, type, range, default and one line of doc. A
:class:`Schema` is the parameters of one reader (the node, the image format, a pipeline):
:meth:`Schema.read` turns raw values (a mapping, as rospy or a test gives them) into checked
ones, and :func:`render_table` writes the reference table. Every reader follows the same rules:

- a missing value, ``None`` or ``""`` (and ``[]`` for a list) is the default;
- numbers may come as numbers or as their text; an integer may come as a whole float
  (``4.0``), never as a fraction (``2.5`` is refused, not truncated);
- true/false also come as ``1``/``0``, ``yes``/``no``, ``on``/``off`` and their text;
- a bad value raises :class:`ParameterError` in one format: ``parameter ~NAME must be WHAT IT
  ACCEPTS, got VALUE`` (``; HINT`` where a fix can be named).

No rospy here: the ROS layer hands this module the values it read.
"""
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ml_bridge.core.errors import InputError

#: What each kind of parameter is called in messages and in the reference.
_NOUNS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
          "ints": "integers", "floats": "numbers", "names": "a list of names or one "
          "comma-separated string", "any": "any value"}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class ParameterError(InputError):
    """A ``~`` parameter has a value that cannot be used.

    An :class:`InputError`, as every other problem with what a user gave the node or a pipeline.
    """


def bad(name: str, accepts: str, value: Any, hint: str = "") -> ParameterError:
    """The one error format: ``parameter ~NAME must be ACCEPTS, got VALUE[; HINT]``."""
    return ParameterError(f"parameter ~{name} must be {accepts}, got {value!r}"
                          + (f"; {hint}" if hint else ""))


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Param:
    """One parameter's declaration.

    Attributes:
        name: the name without ``~``.
        kind: ``int``, ``float``, ``bool``, ``str``, ``ints`` / ``floats`` (lists, or their text
            separated by commas or spaces), ``names`` (a list, or one comma-separated string)
            or ``any`` (taken as it is; its reader checks it).
        default: the value when it is not given (``None``: the model's own, see ``doc``).
        doc: one line for the reference.
        low: the smallest value (of each item, for lists); ``above``: ``low`` itself excluded.
        high: the largest value.
        note: words in brackets after what it accepts (a unit, what a special value means).
        choices: the accepted words of a ``str`` (compared without case and blanks).
        count: how many items a list must have (0: any).
        accepts: what it accepts, where the words made from ``kind`` would not say it.
        convert: turns a given value into the parameter's value, raising ValueError or
            TypeError for a bad one (instead of the ``kind``'s rule).
        launch: ``launch/server.launch`` has an argument of this name.
        launch_default: that argument's default, where it is not ``default`` (a path under
            ``$(env HOME)``).
    """

    name: str
    kind: str
    default: Any
    doc: str
    low: Optional[float] = None
    above: bool = False
    high: Optional[float] = None
    note: str = ""
    choices: Tuple[str, ...] = ()
    count: int = 0
    accepts: str = ""
    convert: Optional[Callable[[Any], Any]] = None
    launch: bool = False
    launch_default: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in _NOUNS:
            raise ValueError(f"parameter {self.name}: unknown kind {self.kind!r}; kinds: "
                             f"{', '.join(_NOUNS)}")

    def describe(self, too_high: bool = False) -> str:
        """What the parameter accepts, as messages and the reference say it."""
        note = f" ({self.note})" if self.note else ""
        if too_high and self.high is not None:
            return f"at most {_number_text(self.high)}{note}"
        if self.accepts:
            return self.accepts + note
        if self.choices:
            return f"{', '.join(self.choices[:-1])} or {self.choices[-1]}{note}"
        noun = _NOUNS[self.kind]
        if self.kind in ("ints", "floats"):
            noun = f"a list of {self.count or ''} {noun}".replace("  ", " ")
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.above else '>='} {_number_text(self.low)}")
        if self.high is not None:
            bounds.append(f"<= {_number_text(self.high)}")
        return " ".join([noun] + [" and ".join(bounds)] * bool(bounds)) + note

    def error(self, value: Any, hint: str = "", too_high: bool = False) -> ParameterError:
        """The parameter's error for ``value`` (for checks only its reader can make)."""
        return bad(self.name, self.describe(too_high), value, hint)

    def read(self, value: Any) -> Any:
        """The checked value of this parameter given ``value`` (blank: the default).

        Raises:
            ParameterError: in the one format.
        """
        if value is None or (isinstance(value, (str, list, tuple)) and not value
                             and self.kind != "any"):
            # a fresh list each time: a caller may change what it was given
            return list(self.default) if isinstance(self.default, list) else self.default
        try:
            if self.convert is not None:
                return self.convert(value)
            if self.kind in ("int", "float"):
                return self._in_range(self._scalar(value), value)
            if self.kind in ("ints", "floats"):
                return self._items(value)
            return _READERS[self.kind](self, value)
        except (TypeError, ValueError):
            raise self.error(value) from None

    def _scalar(self, value: Any) -> Any:
        if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
            raise TypeError(value)
        if self.kind in ("int", "ints"):
            if isinstance(value, int):
                return value
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    value = float(value)
            if not float(value).is_integer():  # never truncated: 2.5 is no integer
                raise ValueError(value)
            return int(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
        return number

    def _in_range(self, number: Any, value: Any) -> Any:
        if self.low is not None and (number < self.low or (self.above and number == self.low)):
            raise self.error(value)
        if self.high is not None and number > self.high:
            raise self.error(value, too_high=True)
        return number

    def _items(self, value: Any) -> List[Any]:
        if isinstance(value, str):
            value = value.strip("[] ").replace(",", " ").split()
        if not isinstance(value, (list, tuple)) or (self.count and len(value) != self.count):
            raise TypeError(value)
        numbers = [self._scalar(item) for item in value]
        for number in numbers:
            self._in_range(number, value)
        return numbers


def _read_bool(param: Param, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(value)


def _read_str(param: Param, value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        raise TypeError(value)
    text = str(value)  # a number where a name is expected is taken as its text
    if param.choices:
        text = text.strip().lower()
        if text not in param.choices:
            raise ValueError(value)
    return text


def _read_names(param: Param, value: Any) -> List[str]:
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise TypeError(value)


_READERS: Dict[str, Callable[[Param, Any], Any]] = {
    "bool": _read_bool, "str": _read_str, "names": _read_names, "any": lambda p, v: v}


class Schema:
    """The parameters one reader takes (the node, the image format, a pipeline).

    Args:
        title: what they belong to, for the reference ("node", "segment", ...).
        params: the declarations; a name may be declared only once.
    """

    def __init__(self, title: str, *params: Param) -> None:
        self.title = title
        self._params: Dict[str, Param] = {}
        for param in params:
            if param.name in self._params:
                raise ValueError(f"parameter {param.name} is declared twice in {title}")
            self._params[param.name] = param

    def __iter__(self) -> Iterator[Param]:
        return iter(self._params.values())

    def __len__(self) -> int:
        return len(self._params)

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def default(self, name: str) -> Any:
        """The declared default of ``name``."""
        return self._params[name].default

    def read(self, values: Mapping[str, Any]) -> Dict[str, Any]:
        """Every declared parameter, checked, from ``values`` (missing ones: their defaults).

        Raises:
            ParameterError: the first bad value, in declaration order.
        """
        return {name: param.read(values.get(name)) for name, param in self._params.items()}


def _default_text(param: Param) -> str:
    if param.default is None:
        return "the model's"
    if isinstance(param.default, bool):
        return f"`{str(param.default).lower()}`"
    if isinstance(param.default, str):
        return f"`{param.default}`" if param.default else '`""`'
    if isinstance(param.default, (list, tuple)):
        return f"`{list(param.default)}`"
    return f"`{param.default}`"


def render_table(schema: Schema, launch_column: bool = False) -> str:
    """The markdown reference table of ``schema``: parameter, accepted values, default, doc.

    With ``launch_column``, a column says which parameters ``server.launch`` takes as arguments
    (and that argument's default where it differs).
    """
    head = ["Parameter", "Accepts", "Default"] + ["Launch arg"] * launch_column + ["Meaning"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for param in schema:
        row = [f"`~{param.name}`", param.describe(), _default_text(param)]
        if launch_column:
            row.append(("yes" + (f" (`{param.launch_default}`)" if param.launch_default else ""))
                       if param.launch else "no")
        row.append(param.doc)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"


def merged(*schemas: Schema, title: str = "") -> Schema:
    """One schema of the parameters of ``schemas`` (a name declared twice is refused)."""
    params: Sequence[Param] = [p for schema in schemas for p in schema]
    return Schema(title or " + ".join(s.title for s in schemas), *params)
