"""Torch's thread-local state, captured once in main and restored on any thread; devices.

Grad mode, inference mode, the default device of :func:`torch.set_default_device`, autocast
and CUDA's current device and stream all live in thread-local storage: a rospy callback
thread starts with torch's defaults, not with what main set up. :class:`TorchContext`
captures them in main and ``with context:`` puts them back on whatever thread enters it.

Entering compares every item with the entering thread's current state and only switches what
differs, so restoring onto a fresh thread whose state already matches costs a few cheap
reads (well under ten microseconds) and pushes nothing.
"""
import contextlib
import threading
from types import TracebackType
from typing import Dict, List, Optional, Tuple, Type

import torch

from ml_bridge.core.context import Context
from ml_bridge.core.errors import ModelLoadError

#: (enabled, dtype) of autocast for one device type.
AutocastState = Tuple[bool, torch.dtype]


def parse_device(name: str) -> torch.device:
    """Turns a launch argument ``device`` (cpu, cuda, cuda:N) into a usable torch.device.

    ``cuda`` resolves to the current CUDA device, so the result always carries an index.

    Raises:
        ModelLoadError: the name is not a device, CUDA is not available, or the index does
            not exist.
    """
    text = (name or "cpu").strip().lower()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as err:
        raise ModelLoadError(f"unknown device '{name}'; use cpu, cuda or cuda:N ({err})") from err
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ModelLoadError(f"device '{name}' is not supported by ml_bridge's torch backend; "
                             "use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ModelLoadError(
            f"device '{name}' asked for, but CUDA is not available to torch "
            f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'}; no GPU visible "
            "or no driver). Use device:=cpu, or install a CUDA build of torch "
            "(`rosrun ml_bridge doctor` shows what torch sees)")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if device.index is None else device.index
    if not 0 <= index < count:
        raise ModelLoadError(f"device '{name}' does not exist: {count} CUDA device(s) visible "
                             f"(cuda:0 .. cuda:{count - 1})")
    return torch.device("cuda", index)


def framework_version() -> str:
    """torch's version string, e.g. "2.3.1+cpu"."""
    return str(torch.__version__)


def set_threads(threads: int) -> None:
    """Runs torch's CPU operators on ``threads`` threads (intra-op) in this process."""
    torch.set_num_threads(threads)


def devices() -> List[str]:
    """The devices this process can use: ``cpu`` and ``cuda:N`` for every visible GPU."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found


def _autocast_types() -> List[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _current_default_device() -> torch.device:
    # A default device is a DeviceContext on the (thread-local) torch-function mode stack:
    # with an empty stack it is cpu, and get_default_device's few microseconds are saved.
    stack_len = getattr(torch._C, "_len_torch_function_stack", None)
    if stack_len is not None and stack_len() == 0:
        return torch.device("cpu")
    return torch.get_default_device()


class TorchContext(Context):
    """Torch's thread-local state of one thread, to restore on others.

    Build it with :meth:`capture` in main. It may be entered on several threads at once and
    re-entered on one thread; every entry keeps its own undo stack per thread.
    """

    def __init__(self, device: torch.device, grad_enabled: bool = True,
                 inference_mode: bool = False,
                 default_device: torch.device = torch.device("cpu"),
                 autocast: Optional[Dict[str, AutocastState]] = None,
                 cuda_device: Optional[int] = None,
                 cuda_stream: Optional["torch.cuda.Stream"] = None) -> None:
        """Holds captured state; most callers want :meth:`capture` instead.

        Args:
            device: The model's device.
            grad_enabled: torch.is_grad_enabled() to restore.
            inference_mode: torch.is_inference_mode_enabled() to restore.
            default_device: torch.get_default_device() to restore.
            autocast: Device type -> (enabled, dtype) to restore.
            cuda_device: Current CUDA device index to restore (None: leave alone).
            cuda_stream: Current CUDA stream of the model's device (None: leave alone).
        """
        self.device = device
        self.grad_enabled = grad_enabled
        self.inference_mode = inference_mode
        self.default_device = default_device
        self.autocast: Dict[str, AutocastState] = dict(autocast or {})
        self.cuda_device = cuda_device
        self.cuda_stream = cuda_stream
        self._local = threading.local()

    @classmethod
    def capture(cls, device: str = "cpu") -> "TorchContext":
        """Captures the calling thread's torch state (call it in main).

        Args:
            device: The model's device (cpu, cuda, cuda:N); CUDA's current device and stream
                are captured only for a CUDA model on a machine with CUDA.

        Raises:
            ModelLoadError: ``device`` is not usable (see :func:`parse_device`).
        """
        dev = parse_device(device) if isinstance(device, str) else torch.device(device)
        autocast = {t: (torch.is_autocast_enabled(t), torch.get_autocast_dtype(t))
                    for t in _autocast_types()}
        cuda_device = None
        cuda_stream = None
        if dev.type == "cuda" and torch.cuda.is_available():
            cuda_device = torch.cuda.current_device()
            cuda_stream = torch.cuda.current_stream(dev)
        return cls(dev, grad_enabled=torch.is_grad_enabled(),
                   inference_mode=torch.is_inference_mode_enabled(),
                   default_device=torch.get_default_device(), autocast=autocast,
                   cuda_device=cuda_device, cuda_stream=cuda_stream)

    def _stack(self) -> List[Optional[contextlib.ExitStack]]:
        stack: Optional[List[Optional[contextlib.ExitStack]]] = getattr(self._local, "stack", None)
        if stack is None:
            stack = []
            self._local.stack = stack
        return stack

    def _switch(self) -> Optional[contextlib.ExitStack]:
        """Enters what differs from the current thread's state; None if nothing does."""
        undo: Optional[contextlib.ExitStack] = None

        def push(manager: "contextlib.AbstractContextManager[object]") -> None:
            nonlocal undo
            if undo is None:
                undo = contextlib.ExitStack()
            undo.enter_context(manager)

        try:
            # Device first: the stream context switches the current device to its own.
            if self.cuda_device is not None and torch.cuda.current_device() != self.cuda_device:
                push(torch.cuda.device(self.cuda_device))
            if (self.cuda_stream is not None
                    and torch.cuda.current_stream(self.device) != self.cuda_stream):
                push(torch.cuda.stream(self.cuda_stream))
            if _current_default_device() != self.default_device:
                push(torch.device(self.default_device))
            # Inference mode before grad mode: entering inference_mode(False) turns grad on.
            if torch.is_inference_mode_enabled() != self.inference_mode:
                push(torch.inference_mode(self.inference_mode))
            if torch.is_grad_enabled() != self.grad_enabled:
                push(torch.set_grad_enabled(self.grad_enabled))
            for device_type, (enabled, dtype) in self.autocast.items():
                if (torch.is_autocast_enabled(device_type) != enabled
                        or (enabled and torch.get_autocast_dtype(device_type) != dtype)):
                    push(torch.autocast(device_type, dtype=dtype, enabled=enabled))
        except BaseException:
            if undo is not None:
                undo.close()
            raise
        return undo

    def __enter__(self) -> "TorchContext":
        self._stack().append(self._switch())
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        undo = self._stack().pop()
        if undo is not None:
            undo.__exit__(exc_type, exc, tb)

    def describe(self) -> Dict[str, str]:
        """What was captured, as strings for logs and ``doctor``."""
        info = {
            "torch": torch.__version__,
            "device": str(self.device),
            "grad_enabled": str(self.grad_enabled),
            "inference_mode": str(self.inference_mode),
            "default_device": str(self.default_device),
        }
        for device_type, (enabled, dtype) in self.autocast.items():
            info[f"autocast_{device_type}"] = str(dtype).replace("torch.", "") if enabled else "off"
        if self.cuda_device is not None:
            info["cuda_device"] = f"cuda:{self.cuda_device}"
        if self.cuda_stream is not None:
            info["cuda_stream"] = f"0x{self.cuda_stream.cuda_stream:x}"
        return info
