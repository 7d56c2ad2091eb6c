"""TorchContext: torch's thread-local state captured in main is restored on other threads.

Every test has a negative control: the same call on a fresh thread without the context shows
torch's defaults, so the context (not luck) is what makes the difference.
"""
import threading
from typing import Any, Callable, Iterator, List

import pytest
import torch
from threads import on_thread

from ml_bridge.backends.torch.core import TorchContext, devices, parse_device
from ml_bridge.core.errors import ModelLoadError

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def inside(ctx: TorchContext, fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        with ctx:
            return fn()
    return call


@pytest.fixture(autouse=True)
def main_state_restored() -> Iterator[None]:
    """Every test leaves main as it found it, even when it fails half-way."""
    yield
    torch.set_default_device(None)
    torch.set_grad_enabled(True)
    assert not torch.is_inference_mode_enabled()
    assert not torch.is_autocast_enabled("cpu")


def test_default_device_is_restored_on_another_thread() -> None:
    torch.set_default_device("meta")
    ctx = TorchContext.capture("cpu")
    torch.set_default_device(None)
    assert on_thread(lambda: torch.empty(1).device.type) == "cpu"  # negative control
    assert on_thread(inside(ctx, lambda: torch.empty(1).device.type)) == "meta"
    assert ctx.describe()["default_device"] == "meta"


def test_default_device_is_undone_after_the_block() -> None:
    torch.set_default_device("meta")
    ctx = TorchContext.capture("cpu")
    torch.set_default_device(None)

    def use_then_leave() -> List[str]:
        with ctx:
            during = torch.empty(1).device.type
        return [during, torch.empty(1).device.type]

    assert on_thread(use_then_leave) == ["meta", "cpu"]


def test_grad_mode_is_restored() -> None:
    with torch.no_grad():
        ctx = TorchContext.capture("cpu")

    def tracks_grad() -> bool:
        return bool((torch.ones(2, requires_grad=True) * 2).requires_grad)

    assert on_thread(tracks_grad) is True  # negative control: grad is on by default
    assert on_thread(inside(ctx, tracks_grad)) is False
    assert ctx.describe()["grad_enabled"] == "False"


def test_inference_mode_is_restored() -> None:
    with torch.inference_mode():
        ctx = TorchContext.capture("cpu")

    def makes_inference_tensor() -> bool:
        return bool(torch.ones(2).is_inference())

    assert on_thread(makes_inference_tensor) is False  # negative control
    assert on_thread(inside(ctx, makes_inference_tensor)) is True
    assert on_thread(inside(ctx, torch.is_grad_enabled)) is False


def test_cpu_autocast_is_restored() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ctx = TorchContext.capture("cpu")

    def matmul_dtype() -> torch.dtype:
        return torch.mm(torch.ones(4, 4), torch.ones(4, 4)).dtype

    assert on_thread(matmul_dtype) == torch.float32  # negative control
    assert on_thread(inside(ctx, matmul_dtype)) == torch.bfloat16
    assert ctx.describe()["autocast_cpu"] == "bfloat16"


def test_state_differing_from_main_is_switched_and_put_back() -> None:
    ctx = TorchContext.capture("cpu")  # main: grad on, defaults everywhere

    def on_a_no_grad_thread() -> List[bool]:
        torch.set_grad_enabled(False)
        with ctx:
            during = torch.is_grad_enabled()
        return [during, torch.is_grad_enabled()]

    assert on_thread(on_a_no_grad_thread) == [True, False]


def test_reentrant_on_one_thread() -> None:
    with torch.no_grad():
        ctx = TorchContext.capture("cpu")

    def nested() -> List[bool]:
        seen = []
        with ctx:
            seen.append(torch.is_grad_enabled())
            with ctx:
                seen.append(torch.is_grad_enabled())
            seen.append(torch.is_grad_enabled())
        seen.append(torch.is_grad_enabled())
        return seen

    assert on_thread(nested) == [False, False, False, True]


def test_entered_on_many_threads_at_once() -> None:
    torch.set_default_device("meta")
    with torch.no_grad():
        ctx = TorchContext.capture("cpu")
    torch.set_default_device(None)
    barrier = threading.Barrier(6)
    results: List[Any] = []
    lock = threading.Lock()

    def worker() -> None:
        with ctx:
            barrier.wait(10)  # all six are inside at the same time
            state = (torch.empty(1).device.type, torch.is_grad_enabled())
            barrier.wait(10)
        after = (torch.empty(1).device.type, torch.is_grad_enabled())
        with lock:
            results.append((state, after))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [(("meta", False), ("cpu", True))] * 6


def test_exception_inside_still_restores() -> None:
    with torch.no_grad():
        ctx = TorchContext.capture("cpu")

    def fail_inside() -> bool:
        with pytest.raises(ValueError):
            with ctx:
                raise ValueError("boom")
        return torch.is_grad_enabled()

    assert on_thread(fail_inside) is True


def test_parse_device_cpu() -> None:
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_device(" CPU ") == torch.device("cpu")
    assert parse_device("") == torch.device("cpu")
    assert devices()[0] == "cpu"


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu0"])
def test_parse_device_refuses_unknown_names(name: str) -> None:
    with pytest.raises(ModelLoadError, match="cpu, cuda or cuda:N"):
        parse_device(name)


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_clear_error(name: str) -> None:
    with pytest.raises(ModelLoadError, match="CUDA is not available.*device:=cpu"):
        parse_device(name)
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        TorchContext.capture(name)
    assert devices() == ["cpu"]


@cuda_only
def test_cuda_bad_index_is_a_clear_error() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(ModelLoadError, match="does not exist"):
        parse_device(f"cuda:{count}")
    assert parse_device("cuda").index is not None


@cuda_only
def test_cuda_stream_is_restored() -> None:
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        ctx = TorchContext.capture("cuda:0")

    def current() -> Any:
        return torch.cuda.current_stream(0)

    assert on_thread(current) != stream  # negative control: the default stream
    assert on_thread(inside(ctx, current)) == stream


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs two CUDA devices")
def test_cuda_current_device_is_restored() -> None:
    previous = torch.cuda.current_device()
    torch.cuda.set_device(1)
    try:
        ctx = TorchContext.capture("cuda:1")
    finally:
        torch.cuda.set_device(previous)
    assert on_thread(torch.cuda.current_device) == 0  # negative control
    assert on_thread(inside(ctx, torch.cuda.current_device)) == 1
