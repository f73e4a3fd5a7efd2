"""Issue 13's capacity bars (SPEC section 9), each beside the figure `benchmarks.capacity`
measured for it; `passed: None` when the part was not measured."""

from __future__ import annotations

from typing import Any

from benchmarks.measure import Target

BUDGET_TOLERANCE = 0.1  # of N, plus one: the bucket's capacity and a request's scheduling delay
CONCURRENT_MIN_JOBS_PER_SECOND = 8.0
RSS_MAX_BYTES = 150 * 10**6
ENQUEUE_MIN_CALLS_PER_SECOND = 4_000.0
ENQUEUE_P99_MAX_MS = 10.0


def budget_limit(requests_per_second: float) -> float:
    """The most requests a 1 s window may see under a budget of `requests_per_second`."""
    return requests_per_second * (1 + BUDGET_TOLERANCE) + 1


def capacity_targets(capacity: dict[str, Any] | None) -> list[Target]:
    budget = None if capacity is None else capacity["budget"]
    concurrency = None if capacity is None else capacity["concurrency"]
    enqueue = None if capacity is None else capacity["enqueue"]
    return [*_budget(budget), *_concurrency(concurrency), *_enqueue(enqueue)]


def _budget(budget: dict[str, Any] | None) -> list[Target]:
    name = "4 worker processes, one RPC budget: busiest 1 s window"
    if budget is None:
        return [Target(name, "<= N (+10% + 1)", "not measured", None)]
    rate, run = budget["requests_per_second"], budget["budgeted"]
    busiest, limit = run["busiest_second_requests"], budget_limit(rate)
    return [
        Target(
            name,
            f"<= {rate:g} (+10% + 1 = {limit:.0f})",
            f"{busiest} requests; backlog of {run['jobs']} drained in {run['seconds']:.1f} s; "
            f"paid exactly once: {run['paid_exactly_once']}",
            busiest <= limit and run["paid_exactly_once"] and run["completed"] == run["jobs"],
        )
    ]


def _concurrency(concurrency: dict[str, Any] | None) -> list[Target]:
    names = ("max_jobs=8: jobs/s, one process", "max_jobs=8: worker peak RSS")
    if concurrency is None:
        return [
            Target(n, b, "not measured", None)
            for n, b in zip(names, (">= 8", "< 150 MB"), strict=True)
        ]
    run = next(r for r in concurrency["runs"] if r["max_jobs"] == 8)
    ok = run["paid_exactly_once"] and run["completed"] == run["jobs"]
    return [
        Target(
            names[0],
            f">= {CONCURRENT_MIN_JOBS_PER_SECOND:g}, nothing paid twice",
            f"{run['jobs_per_second']:.2f} jobs/s ({run['jobs']} jobs); paid exactly once: "
            f"{run['paid_exactly_once']}",
            run["jobs_per_second"] >= CONCURRENT_MIN_JOBS_PER_SECOND and ok,
        ),
        Target(
            names[1],
            "< 150 MB",
            f"{run['peak_rss_bytes'] / 10**6:.1f} MB",
            run["peak_rss_bytes"] < RSS_MAX_BYTES,
        ),
    ]


def _enqueue(enqueue: dict[str, Any] | None) -> list[Target]:
    names = ("enqueue, 50 concurrent callers: calls/s", "enqueue, 50 concurrent callers: p99")
    bars = (f">= {ENQUEUE_MIN_CALLS_PER_SECOND:,.0f}", f"< {ENQUEUE_P99_MAX_MS:g} ms")
    if enqueue is None:
        return [Target(n, b, "not measured", None) for n, b in zip(names, bars, strict=True)]
    now, before = enqueue["one_script"], enqueue["lock_then_arq_enqueue"]
    p99, p99_before = now["milliseconds"]["p99"], before["milliseconds"]["p99"]
    return [
        Target(
            names[0],
            bars[0],
            f"{now['calls_per_second']:,.0f} (lock then arq enqueue: "
            f"{before['calls_per_second']:,.0f})",
            now["calls_per_second"] >= ENQUEUE_MIN_CALLS_PER_SECOND,
        ),
        Target(
            names[1],
            bars[1],
            f"{p99:.2f} ms (lock then arq enqueue: {p99_before:.2f} ms)",
            p99 < ENQUEUE_P99_MAX_MS,
        ),
    ]
