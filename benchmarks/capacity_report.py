"""The capacity section (`benchmarks.capacity`) as report tables."""

from __future__ import annotations

from typing import Any

from benchmarks.measure import Section


def capacity_sections(capacity: dict[str, Any]) -> list[Section]:
    """The budget, per-process concurrency and concurrent-enqueue tables (parts measured)."""
    sections = []
    if capacity["budget"] is not None:
        sections.append(_budget_section(capacity["budget"], capacity["slot_ms"]))
    if capacity["concurrency"] is not None:
        sections.append(_concurrency_section(capacity["concurrency"], capacity["slot_ms"]))
    sections.append(_enqueue_section(capacity["enqueue"]))
    return sections


def _backlog_row(name: str, run: dict[str, Any]) -> list[str]:
    return [
        name,
        f"{run['completed']}/{run['jobs']}",
        f"{run['seconds']:.2f}",
        f"{run['jobs_per_second']:.2f}",
        str(run["rpc_requests"]),
        str(run["busiest_second_requests"]),
        f"{run['peak_rss_bytes'] / 10**6:.1f}",
        "yes" if run["paid_exactly_once"] else "NO",
    ]


BACKLOG_HEADERS = [
    "run",
    "completed",
    "drain (s)",
    "jobs/s",
    "RPC requests",
    "busiest 1 s window",
    "peak RSS (MB)",
    "paid exactly once",
]


def _budget_section(budget: dict[str, Any], slot_ms: int) -> Section:
    rate = budget["requests_per_second"]
    section = Section(
        f"RPC budget: {budget['workers']} worker processes, 10-wallet fast premixes "
        f"(localnet {slot_ms} ms slots)",
        BACKLOG_HEADERS,
    )
    section.rows.append(_backlog_row(f"budget {rate:g} requests/s", budget["budgeted"]))
    section.rows.append(_backlog_row("no budget", budget["unbudgeted"]))
    section.notes = [
        "Requests counted at the localnet by arrival time; the busiest 1 s window is the most "
        "that arrived in any second. Peak RSS: the largest of the processes.",
    ]
    return section


def _concurrency_section(concurrency: dict[str, Any], slot_ms: int) -> Section:
    section = Section(
        f"One worker process, PREMIX_WORKER_MAX_JOBS: {concurrency['wallets_per_job']}-wallet "
        f"{concurrency['mode']} premixes for distinct users (localnet {slot_ms} ms slots)",
        BACKLOG_HEADERS,
    )
    for run in concurrency["runs"]:
        section.rows.append(_backlog_row(f"max_jobs={run['max_jobs']}", run))
    section.notes = ["Jobs per second from the first enqueue to the last terminal event."]
    return section


def _enqueue_section(enqueue: dict[str, Any]) -> Section:
    section = Section(
        f"Enqueue, {enqueue['callers']} concurrent callers (private Valkey on loopback)",
        ["enqueue", "calls", "refused", "calls/s", "median (ms)", "p99 (ms)", "max (ms)"],
    )
    for name, key in (
        ("one Lua script (lock + arq's job and queue entry)", "one_script"),
        ("SET NX lock, then arq's enqueue_job (as before)", "lock_then_arq_enqueue"),
    ):
        run = enqueue[key]
        ms = run["milliseconds"]
        section.rows.append(
            [
                name,
                str(run["calls"]),
                str(run["refused"]),
                f"{run['calls_per_second']:,.0f}",
                f"{ms['median']:.2f}",
                f"{ms['p99']:.2f}",
                f"{ms['maximum']:.2f}",
            ]
        )
    before = enqueue["before_issue_13"]
    section.rows.append(
        [
            "before (issue 13's figure)",
            "-",
            "-",
            f"{before['calls_per_second']:,}",
            "-",
            f"{before['p99_ms']:.2f}",
            "-",
        ]
    )
    return section
