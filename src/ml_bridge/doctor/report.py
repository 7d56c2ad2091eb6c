"""What a doctor check returns (:class:`Result`) and what it looks at (:class:`Env`)."""
import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ml_bridge.backends import Probe

OK, WARN, FAIL = "OK", "WARN", "FAIL"
#: Words in an import error that mean "built against another numpy ABI".
NUMPY_ABI_SIGNS = ("numpy.core.multiarray failed to import", "_ARRAY_API not found",
                   "compiled using NumPy 1.x", "compiled against ABI version",
                   "numpy.core._multiarray_umath", "numpy.dtype size changed")
NUMPY_FIX = "in the venv run: pip install 'numpy<2' 'ml_dtypes<0.6'"
VENV_FIX = ("make the venv from the system Python: /usr/bin/python3 -m venv --system-site-packages "
            ".venv (`make setup` does this), then `source build/env.sh`")


@dataclass(frozen=True)
class Result:
    """The outcome of one check: one line of the report."""

    status: str    # OK, WARN or FAIL
    subject: str   # what was checked, with its version where there is one
    detail: str    # what was found
    fix: str = ""  # what to do about a WARN or FAIL

    @property
    def failed(self) -> bool:
        """True for a required check that failed."""
        return self.status == FAIL

    def line(self) -> str:
        """The report line, e.g. ``FAIL numpy 2.0.1: ... — in the venv run: ...``."""
        text = f"{self.status:<4} {self.subject}: {self.detail}"
        return f"{text} — {self.fix}" if self.fix else text


@dataclass
class Env:
    """What the checks look at; every field can be replaced by a test."""

    importer: Callable[[str], Any] = importlib.import_module
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    executable: str = sys.executable
    prefix: str = sys.prefix
    base_prefix: str = sys.base_prefix
    version: Tuple[int, int, int] = tuple(sys.version_info[:3])  # type: ignore[assignment]
    master_timeout: float = 1.0
    _imports: Dict[str, Tuple[Any, Optional[BaseException]]] = field(default_factory=dict)
    #: What each backend's probe found, by backend (see ``ml_bridge.doctor.probe``).
    probes: Dict[str, Probe] = field(default_factory=dict)

    def try_import(self, name: str) -> Tuple[Any, Optional[BaseException]]:
        """(module, None) or (None, the error); each name is imported once per Env."""
        if name not in self._imports:
            try:
                self._imports[name] = (self.importer(name), None)
            except Exception as err:  # reported by the check that asked, never dropped
                self._imports[name] = (None, err)
        return self._imports[name]


Check = Callable[[Env], Result]


def _err(err: Optional[BaseException]) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _numpy_abi_error(err: Optional[BaseException]) -> bool:
    return err is not None and any(sign in str(err) for sign in NUMPY_ABI_SIGNS)
