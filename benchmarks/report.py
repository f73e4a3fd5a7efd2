"""The benchmark document as tables: rich for the terminal, Markdown for RESULTS.md/README.

Both renderings come from the same `Section` rows, built from the JSON document only, so a
saved JSON file can be rendered again (`python -m benchmarks.run --render results.json`).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from benchmarks.capacity_report import capacity_sections
from benchmarks.measure import Section
from benchmarks.targets import evaluate

DESIGN_NAMES = {
    "premix-fast": "premix fast (fee 0)",
    "premix-fast-auto": "premix fast (auto fee)",
    "premix-standard": "premix standard (fee 0)",
    "premix-standard-auto": "premix standard (auto fee)",
    "sequential": "reference: sequential, 1 transfer/tx",
    "ts-estimate-fast": "TS premix estimate, fast",
    "ts-estimate-standard": "TS premix estimate, standard",
}


def _spread(values: dict[str, float], digits: int = 2, scale: float = 1.0) -> str:
    """'median [min-max]' (one value when they are all equal)."""
    median, low, high = (values[k] * scale for k in ("median", "minimum", "maximum"))
    if low == high:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def _exact(value: int | list[int]) -> str:
    return f"{value:,}" if isinstance(value, int) else ", ".join(f"{v:,}" for v in value)


def sections(document: dict[str, Any]) -> list[Section]:
    """Every table of the document, in reading order."""
    result = [_header(document)]
    if document.get("engines") is not None:
        result += _engine_sections(document["engines"])
    if document.get("congestion") is not None:
        result.append(_congestion_section(document["congestion"]))
    if document.get("queue") is not None:
        result.append(_queue_section(document["queue"]))
    if document.get("planner") is not None:
        result.append(_planner_section(document["planner"]))
    if document.get("capacity") is not None:
        result += capacity_sections(document["capacity"])
    result.append(_targets_section(document))
    return result


def _header(document: dict[str, Any]) -> Section:
    machine = document["machine"]
    section = Section("Run", ["", ""])
    section.rows = [
        ["date (UTC)", document["date"]],
        ["command", document["command"]],
        ["machine", f"{machine['nproc']} CPUs, {machine['processor']}, {machine['platform']}"],
        ["python", f"{machine['implementation']} {machine['python']}"],
        ["repeat", str(document["config"]["repeat"])],
    ]
    return section


def _engine_sections(engines: dict[str, Any]) -> list[Section]:
    slot_ms = engines["slot_ms"]
    repeat = engines["cases"][0]["repeat"] if engines["cases"] else 0
    table = Section(
        f"Transfer engines on localnet ({slot_ms} ms slots, {repeat} run(s) each; "
        "median [min-max])",
        [
            "wallets",
            "design",
            "transactions",
            "fees (lamports)",
            "RPC round trips",
            "per transfer",
            "wall time (s)",
            "slots elapsed",
            "confirmed, slots after send (max)",
        ],
    )
    estimates = {(e["design"], e["wallets"]): e for e in engines["estimates"]}
    for wallets in sorted({c["wallets"] for c in engines["cases"]}):
        for case in (c for c in engines["cases"] if c["wallets"] == wallets):
            table.rows.append(
                [
                    f"{wallets} ({case['amount_sol']} SOL)",
                    DESIGN_NAMES[case["design"]],
                    _exact(case["transactions"]),
                    _exact(case["fee_lamports"]),
                    _spread(case["rpc_round_trips"], 0),
                    f"{case['rpc_round_trips']['median'] / wallets:.2f}",
                    _spread(case["wall_seconds"]),
                    _spread(case["slots_elapsed"], 0),
                    f"{case['confirm_slots_after_send']['maximum']:.0f}",
                ]
            )
        for mode in ("fast", "standard"):
            estimate = estimates[(f"ts-estimate-{mode}", wallets)]
            table.rows.append(
                [
                    f"{wallets} ({estimate['amount_sol']} SOL)",
                    DESIGN_NAMES[estimate["design"]],
                    "-",
                    "-",
                    "-",
                    "-",
                    f"{estimate['seconds']:g} (estimate)",
                    "-",
                    "-",
                ]
            )
    table.notes = [
        "Wall time: from calling the engine until it returned (every transfer confirmed and the "
        "recipients' balances checked). RPC round trips: HTTP requests the localnet received; "
        "per transfer: their median over the wallets. Not counted, done before as a worker does: "
        "the slot-clock sync at worker startup and the plan's balances-before read (phase 3).",
        "Before issue 13 (2026-12-01, 400 ms slots, balances before read by the engine): "
        "standard 7.8 calls per transfer, fast 10 calls and 0.42 s (median).",
        "Confirmed, slots after send: the slot premix saw each transaction confirmed minus the "
        "slot the node received it; a transaction lands in that slot and is confirmed one later.",
        "Reference, sequential: one transfer per transaction, each confirmed before the next, "
        "without premix's ledger writes and balance checks (the design standard mode follows, "
        "as solana-tokens does); same inputs, same poll interval, measured in the same run.",
        "TS premix estimate: the previous TypeScript system's own formula, computed not measured: "
        "standard max(15, min(120, 5n + 2a)) s, fast max(3, min(15, n + 0.5a)) s.",
        f"Status polls every {engines['confirm_poll_seconds']} s (premix's default setting).",
    ]
    ratios = Section(
        "Ratios measured in the same run (wall time; paired run by run, median [min-max])",
        [
            "wallets",
            "standard / fast",
            "standard / sequential reference",
            "TS estimate / premix fast",
            "TS estimate / premix standard",
        ],
    )
    for row in engines["ratios"]:
        ratios.rows.append(
            [
                str(row["wallets"]),
                _spread(row["standard_over_fast"], 1),
                _spread(row["standard_over_sequential"], 2),
                f"{row['ts_estimate_fast_over_fast']:.1f}",
                f"{row['ts_estimate_standard_over_standard']:.1f}",
            ]
        )
    return [table, ratios]


def _congestion_section(congestion: dict[str, Any]) -> Section:
    section = Section(
        f"Priority fees under congestion ({congestion['wallets']} wallets, "
        f"{congestion['slot_ms']} ms slots, 1 run each)",
        [
            "mode",
            "priority fee",
            "slots",
            "fee (lamports)",
            "of which priority",
            "re-signs",
            "getRecentPrioritizationFees",
            "RPC calls",
            "completed within the deadline",
            "outcome",
        ],
    )
    for case in congestion["cases"]:
        calls = case["rpc_calls"]
        section.rows.append(
            [
                case["mode"],
                case["priority_fee"],
                f"{case['slots']:,}",
                f"{case['fee_lamports']:,}",
                f"{case['priority_fee_lamports']:,}",
                str(case["re_signs"]),
                str(calls.get("getRecentPrioritizationFees", 0)),
                f"{sum(calls.values()):,}",
                "yes" if case["within_deadline"] else "no",
                case["outcome"],
            ]
        )
    section.notes = [
        f"localnet `congestion`: below {congestion['threshold_micro_lamports']:,} micro-lamports "
        f"per compute unit a transaction lands with probability {congestion['land_probability']}"
        " per slot; at or above it, at once.",
        f"Job deadline: {congestion['deadline_slots']:,} slots of 400 ms (890 s); a case still "
        f"running after {congestion['budget_slots']:,} slots is stopped. Counted in slots, so "
        "the short slots only shorten the run; polls scale with the slot.",
        "A hand-back ends one execution: the job would be retried (PREMIX_JOB_MAX_TRIES), each "
        "try alike while the congestion lasts.",
    ]
    return section


def _queue_section(queue: dict[str, Any]) -> Section:
    section = Section(
        f"Queue (private Valkey on loopback; localnet {queue['slot_ms']} ms slots)",
        ["measure", "median", "p99", "p10-p90", "min-max", "samples"],
    )

    def row(name: str, values: dict[str, float], unit: str, digits: int = 2) -> list[str]:
        return [
            f"{name} ({unit})",
            f"{values['median']:.{digits}f}",
            f"{values['p99']:.{digits}f}",
            f"{values['p10']:.{digits}f}-{values['p90']:.{digits}f}",
            f"{values['minimum']:.{digits}f}-{values['maximum']:.{digits}f}",
            str(int(values["count"])),
        ]

    section.rows.append(row("enqueue latency", queue["enqueue"]["milliseconds"], "ms"))
    section.rows.append(
        row("pickup: enqueue to phase-1 event", queue["pickup"]["milliseconds"], "ms", 1)
    )
    throughput = queue["throughput"]
    runs = [run for run in (throughput["processes"], throughput["in_process"]) if run is not None]
    for run in runs:
        for entry in run["by_workers"]:
            section.rows.append(
                row(
                    f"throughput, {entry['workers']} x {run['measured_in']}, {entry['jobs']} jobs",
                    entry["jobs_per_second"],
                    "jobs/s",
                )
            )
    rss = queue["worker_rss"]
    section.rows.append(
        ["worker peak RSS (MB)", f"{rss['peak_rss_bytes'] / 10**6:.1f}", "-", "-", "-", "1"]
    )
    speedups = "; ".join(
        f"{run['measured_in']} ({run['store']}): "
        + ", ".join(
            f"{e['workers']}: x{speedup:.2f}"
            for e, speedup in zip(run["by_workers"], run["speedup_over_one_worker"], strict=True)
        )
        for run in runs
    )
    jobs = "; ".join(f"{j['mode']} {j['amount_sol']} SOL: {j['status']}" for j in rss["jobs"])
    enqueue = queue["enqueue"]
    section.notes = [
        f"Enqueue: distinct users, one call at a time, each user's funding and "
        f"{enqueue.get('buyer_wallets_per_user', '?')} buyer wallets in "
        f"{enqueue.get('store', 'the store')}; every call includes enqueue's one store read "
        + (
            f"(alone: median {enqueue['store_read_milliseconds']['median']:.2f} ms, "
            f"p99 {enqueue['store_read_milliseconds']['p99']:.2f} ms)."
            if "store_read_milliseconds" in enqueue
            else "."
        ),
        f"Throughput: {throughput['wallets_per_job']}-wallet {throughput['mode']} premixes for "
        f"distinct users. Speed-up over one worker: {speedups}.",
        f"Pickup: an idle worker process polling every {queue['worker_poll_delay_seconds']} s "
        "(premix's default); jobs enqueued one at a time, each after the previous ended, at "
        "offsets spread evenly over one poll period.",
        f"Worker RSS: {rss['measured_in']}, after the pickup jobs and these premixes: {jobs}; "
        f"{rss['baseline_rss_bytes'] / 10**6:.1f} MB already after imports and wallet setup.",
    ]
    return section


def _planner_section(planner: dict[str, Any]) -> Section:
    section = Section(
        "Planner",
        ["measure", "median", "min-max", "samples"],
    )
    values = planner["microseconds_per_plan"]
    section.rows.append(
        [
            f"plan_distribution, {planner['wallets']} wallets (us per plan)",
            f"{values['median']:.1f}",
            f"{values['minimum']:.1f}-{values['maximum']:.1f}",
            f"{planner['repeat']} x {planner['number']} plans",
        ]
    )
    return section


def _targets_section(document: dict[str, Any]) -> Section:
    section = Section("Targets (SPEC section 9)", ["bar", "target", "measured", "result"])
    for target in evaluate(document):
        result = {True: "pass", False: "MISS", None: "not measured"}[target.passed]
        section.rows.append([target.name, target.target, target.measured, result])
    return section


def print_rich(document: dict[str, Any], console: Console) -> None:
    """Print every section as a rich table with its notes."""
    for section in sections(document):
        # Text, not markup: "[min-max]" is data here
        table = Table(
            title=Text(section.title), title_justify="left", show_header=section.headers != ["", ""]
        )
        for header in section.headers:
            table.add_column(Text(header))
        for row in section.rows:
            style = "bold red" if row[-1] == "MISS" else None
            table.add_row(*(Text(cell) for cell in row), style=style)
        console.print(table)
        for note in section.notes:
            console.print(Text(f"  {note}", style="dim"))
        console.print()


def markdown(document: dict[str, Any]) -> str:
    """Every section as a Markdown table with its notes."""
    lines: list[str] = []
    for section in sections(document):
        lines.append(f"### {section.title}")
        lines.append("")
        headers = section.headers if section.headers != ["", ""] else ["", ""]
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        for row in section.rows:
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        if section.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in section.notes)
        lines.append("")
    return "\n".join(lines)
