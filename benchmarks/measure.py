"""Spreads of repeated measurements, pass/miss targets, the machine, and the progress callback."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

# Where a long benchmark reports what it is doing (a line to stderr), or None for silence.
Progress = Callable[[str], None] | None


@dataclass(frozen=True)
class Spread:
    """Median and spread of repeated samples (same unit as the samples)."""

    count: int
    median: float
    minimum: float
    maximum: float
    p10: float
    p90: float
    p50: float
    p99: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        """Summarize `samples` (at least one); percentiles interpolate between ranks."""
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(float(s) for s in samples)
        return cls(
            count=len(ordered),
            median=statistics.median(ordered),
            minimum=ordered[0],
            maximum=ordered[-1],
            p10=percentile(ordered, 10),
            p90=percentile(ordered, 90),
            p50=percentile(ordered, 50),
            p99=percentile(ordered, 99),
        )

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The `q`-th percentile of sorted `ordered`, linear between closest ranks (numpy's default)."""
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


@dataclass(frozen=True)
class Target:
    """One SPEC section 9 quality bar beside the figure measured for it."""

    name: str
    target: str  # the bar, as a human reads it
    measured: str  # the figure compared, with its unit
    passed: bool | None  # None: not measured in this run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Section:
    """One table of the report: its title, column headers, rows and notes."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "processor": platform.machine(),
    }


def utc_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
