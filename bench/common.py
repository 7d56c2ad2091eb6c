"""Figures, repetitions and the results table shared by every benchmark module.

Every figure is a ratio measured side by side in one run: each repetition measures both sides
back to back, and the figure is the median of the per-repetition ratios, with their spread.
"""
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence


@dataclass
class Figure:
    """One benchmark figure: the per-repetition values, or why it could not be measured."""

    key: str
    goal: str
    values: List[float] = field(default_factory=list)
    reason: str = ""
    details: Dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> Optional[float]:
        """Median of the repetitions, or None if the figure was not measured."""
        return float(statistics.median(self.values)) if self.values else None

    @property
    def spread(self) -> Optional[List[float]]:
        """[min, max] of the repetitions."""
        return [min(self.values), max(self.values)] if self.values else None


def p50(samples: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(samples))


def time_calls(fn: Callable[[], Any], count: int) -> List[float]:
    """Wall time of each of ``count`` calls of ``fn``, seconds."""
    out = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def missing(key: str, goal: str, reason: str) -> Figure:
    """A figure that could not be measured, with the reason."""
    return Figure(key, goal, reason=reason)


def results_dict(figures: Sequence[Figure], meta: Dict[str, Any]) -> Dict[str, Any]:
    """What bench/results.json holds: each key a number (or null), then the details."""
    out: Dict[str, Any] = {f.key: f.median for f in figures}
    out["_details"] = {f.key: {"goal": f.goal, "median": f.median, "spread": f.spread,
                               "repetitions": f.values, "reason": f.reason or None, **f.details}
                       for f in figures}
    out["_meta"] = meta
    return out


def write_results(path: str, figures: Sequence[Figure], meta: Dict[str, Any]) -> None:
    """Writes the results as JSON (NaN-free: missing figures are null)."""
    with open(path, "w") as f:
        json.dump(results_dict(figures, meta), f, indent=2, sort_keys=False)
        f.write("\n")


def merge_results(path: str, figures: Sequence[Figure], meta: Dict[str, Any]) -> None:
    """Writes ``figures`` into the results at ``path`` (created if missing), keeping every
    other key as it was; the run that measured them is recorded with their details."""
    try:
        with open(path) as f:
            data: Dict[str, Any] = json.load(f)
    except FileNotFoundError:
        data = {"_details": {}, "_meta": {}}
    new = results_dict(figures, meta)
    rest = {k: v for k, v in data.items() if not k.startswith("_")}
    rest.update({f.key: new[f.key] for f in figures})
    details = {**data.get("_details", {}), **new["_details"]}
    for fig in figures:
        details[fig.key]["run"] = meta
    with open(path, "w") as f:
        json.dump({**rest, "_details": details, "_meta": data.get("_meta", {})}, f, indent=2)
        f.write("\n")


def _num(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def table(figures: Sequence[Figure]) -> str:
    """The printed table: figure / goal / median / spread (or the reason it is null)."""
    rows = [("figure", "goal", "median", "spread [min, max] (n)")]
    for f in figures:
        if f.values:
            spread = f.spread or [0.0, 0.0]
            rows.append((f.key, f.goal, _num(f.median),
                         f"[{_num(spread[0])}, {_num(spread[1])}] ({len(f.values)})"))
        else:
            rows.append((f.key, f.goal, "null", f.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
        if i == 0:
            lines.append("-" * (sum(widths) + 6 + len(r[3])))
    return "\n".join(lines)
