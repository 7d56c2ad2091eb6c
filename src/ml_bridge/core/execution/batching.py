"""Micro-batching shared by the model thread and the inline path: which requests can be joined,
how they are grouped, and one joined model call split back into each request's result."""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, TypeVar

import numpy as np

from ml_bridge.core.errors import MLBridgeError

#: Runs the model on inputs: (outputs, what served them, milliseconds); raises MLBridgeError.
CallFn = Callable[[List[np.ndarray]], Tuple[List[np.ndarray], Any, float]]


@dataclass
class WorkerResult:
    """Outputs of one request, what produced them (as the PredictFn said) and the model time."""

    outputs: List[np.ndarray]
    served: Any
    inference_ms: float
    batched_with: int = 1


class Batchable(Protocol):
    """What a request needs to be joined: its inputs, rows (batch dimension) and key."""

    inputs: List[np.ndarray]
    rows: int
    key: Tuple[Any, ...]


R = TypeVar("R", bound=Batchable)
#: A request's answer: (request, result or None, error or None).
Answer = Tuple[R, Optional[WorkerResult], Optional[MLBridgeError]]


def batch_key(inputs: List[np.ndarray]) -> Tuple[int, Tuple[Any, ...]]:
    """(rows, key): requests with equal keys can be concatenated along the first dimension."""
    rows = int(inputs[0].shape[0]) if inputs and inputs[0].ndim > 0 else 0
    key = tuple((a.shape[1:], a.dtype.str) for a in inputs) if rows else ("unbatchable", id(inputs))
    return rows, key


def group_requests(requests: Sequence[R], max_batch: int) -> List[List[R]]:
    """The requests in calls: equal keys joined in arrival order, at most ``max_batch`` rows
    a call; requests without a batch dimension alone."""
    groups: List[List[R]] = []
    open_groups: Dict[Any, Tuple[List[R], int]] = {}
    for r in requests:
        group, rows = open_groups.get(r.key, (None, 0))
        if group is None or max_batch == 1 or r.rows == 0 or rows + r.rows > max_batch:
            group, rows = [], 0
            groups.append(group)
        group.append(r)
        open_groups[r.key] = (group, rows + r.rows)
    return groups


def run_requests(call: CallFn, requests: Sequence[R], max_batch: int) -> List[Answer[R]]:
    """Runs requests, those of one key joined into calls of at most ``max_batch`` rows; a
    joined call that fails is retried one by one, so one bad request fails alone."""
    out: List[Answer[R]] = []
    for group in group_requests(requests, max_batch):
        if len(group) > 1:
            joined = [np.concatenate(parts) for parts in zip(*(r.inputs for r in group))]
            total = sum(r.rows for r in group)
            try:
                outputs, served, ms = call(joined)
            except MLBridgeError:
                outputs = []  # retried one by one below
            if outputs and all(o.ndim > 0 and o.shape[0] == total for o in outputs):
                start = 0
                for r in group:
                    part = [o[start:start + r.rows] for o in outputs]
                    out.append((r, WorkerResult(part, served, ms, len(group)), None))
                    start += r.rows
                continue
        for r in group:
            try:
                outputs, served, ms = call(r.inputs)
            except MLBridgeError as err:
                out.append((r, None, err))
                continue
            out.append((r, WorkerResult(outputs, served, ms), None))
    return out
