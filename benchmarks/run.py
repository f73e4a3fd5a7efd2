"""The benchmark command: `python -m benchmarks.run [--quick] [--repeat N] [--json-out PATH]`.

Runs the engine, congestion (priority fees), queue, planner and capacity benchmarks, prints the
tables (rich) and then the JSON document on stdout; progress lines go to stderr. `--json-out` also
writes the JSON, `--markdown-out` the tables as Markdown (what benchmarks/RESULTS.md holds), and
`--render PATH` prints the tables of a saved JSON document without measuring anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.capacity import bench_capacity
from benchmarks.congestion import bench_congestion
from benchmarks.engines import bench_engines
from benchmarks.measure import machine, utc_timestamp
from benchmarks.planner import bench_planner
from benchmarks.queue_bench import bench_queue, throughput_store
from benchmarks.report import markdown, print_rich
from benchmarks.targets import evaluate
from premix.logs import configure_logging
from premix.servers import private_valkey
from premix.settings import Settings

SECTIONS = ("engines", "congestion", "queue", "planner", "capacity")
FULL = {
    "slot_ms": 400,
    "wallets": "1,21,73",
    "repeat": 3,
    "enqueues": 1000,
    "pickups": 200,
    "workers": "1,2,4",
    "throughput_jobs": 16,
    "plan_number": 2000,
    "congestion_wallets": 73,
    "congestion_slot_ms": 20,
    "congestion_budget_slots": None,  # the job deadline
    "budget_rps": 30.0,
    "budget_jobs": 40,
    "concurrent_jobs": 64,
    "concurrent_enqueues": 5000,
}
QUICK = {
    "slot_ms": 50,
    "wallets": "1,21",
    "repeat": 1,
    "enqueues": 100,
    "pickups": 20,
    "workers": "1,2,4",
    "throughput_jobs": 4,
    "plan_number": 200,
    "congestion_wallets": 21,
    "congestion_slot_ms": 20,
    "congestion_budget_slots": 400,
    "budget_rps": 20.0,
    "budget_jobs": 8,
    "concurrent_jobs": 16,
    "concurrent_enqueues": 1000,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Measure premix against the quality bars of SPEC section 9.",
    )
    parser.add_argument("--quick", action="store_true", help="short slots and small sizes")
    parser.add_argument("--repeat", type=int, help="runs per engine case and throughput step")
    parser.add_argument("--slot-ms", type=int, help="localnet slot length (default 400)")
    parser.add_argument("--wallets", help="comma-separated wallet counts (default 1,21,73)")
    parser.add_argument("--enqueues", type=int, help="enqueues timed (default 1000)")
    parser.add_argument("--pickups", type=int, help="jobs whose pickup is timed (default 200)")
    parser.add_argument("--workers", help="comma-separated worker counts (default 1,2,4)")
    parser.add_argument("--throughput-jobs", type=int, help="jobs per throughput run (default 16)")
    parser.add_argument("--plan-number", type=int, help="plans per planner timing (default 2000)")
    parser.add_argument(
        "--budget-rps", type=float, help="the shared RPC budget, requests/s (default 30)"
    )
    parser.add_argument(
        "--budget-jobs", type=int, help="jobs the 4 budgeted worker processes drain (default 40)"
    )
    parser.add_argument(
        "--concurrent-jobs", type=int, help="jobs for the max_jobs=8 process (default 64)"
    )
    parser.add_argument(
        "--concurrent-enqueues", type=int, help="enqueues from 50 callers (default 5000)"
    )
    parser.add_argument(
        "--confirm-poll-seconds",
        type=float,
        help="premix's status poll interval for the engines (default: premix's setting)",
    )
    parser.add_argument(
        "--congestion-wallets", type=int, help="wallets per congestion case (default 73)"
    )
    parser.add_argument(
        "--congestion-slot-ms",
        type=int,
        help="slot length of the congestion cases (default 20: counted in slots, not seconds)",
    )
    parser.add_argument(
        "--congestion-budget-slots",
        type=int,
        help="slots a congestion case may take before it is stopped (default: the job deadline)",
    )
    parser.add_argument(
        "--only", help=f"comma-separated sections to run ({', '.join(SECTIONS)}; default all)"
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON document here")
    parser.add_argument("--markdown-out", type=Path, help="also write the tables as Markdown")
    parser.add_argument("--render", type=Path, help="print the tables of a saved JSON document")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.wallet_counts = _counts(parser, "--wallets", args.wallets)
    args.worker_counts = _counts(parser, "--workers", args.workers)
    args.sections = SECTIONS if args.only is None else tuple(args.only.split(","))
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _counts(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        parser.error(f"{option} takes comma-separated whole numbers, not {text!r}")
    if not counts or any(c < 1 for c in counts):
        parser.error(f"{option} takes numbers of at least 1")
    return counts


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def measure(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run the selected sections; return the JSON document."""
    # The engine section keeps a fixed zero priority fee: its figures compare with earlier runs
    # and with the reference design (no priority fee); `auto` is measured by `congestion`.
    settings = Settings(log_level="WARNING", priority_fee=0)
    if args.confirm_poll_seconds is not None:
        settings = settings.model_copy(update={"confirm_poll_seconds": args.confirm_poll_seconds})
    document: dict[str, Any] = {
        "date": utc_timestamp(),
        "command": command,
        "machine": machine(),
        "config": {
            "quick": args.quick,
            "repeat": args.repeat,
            "slot_ms": args.slot_ms,
            "wallets": args.wallet_counts,
            "enqueues": args.enqueues,
            "pickups": args.pickups,
            "workers": args.worker_counts,
            "throughput_jobs": args.throughput_jobs,
            "budget_rps": args.budget_rps,
            "budget_jobs": args.budget_jobs,
            "concurrent_jobs": args.concurrent_jobs,
            "concurrent_enqueues": args.concurrent_enqueues,
            "sections": list(args.sections),
            "congestion_wallets": args.congestion_wallets,
        },
        "engines": None,
        "congestion": None,
        "queue": None,
        "planner": None,
        "capacity": None,
    }
    if "planner" in args.sections:
        progress("planner")
        document["planner"] = bench_planner(repeat=max(5, args.repeat), number=args.plan_number)
    if "engines" in args.sections:
        document["engines"] = await bench_engines(
            wallet_counts=args.wallet_counts,
            slot_ms=args.slot_ms,
            repeat=args.repeat,
            settings=settings,
            progress=progress,
        )
    if "congestion" in args.sections:
        document["congestion"] = await bench_congestion(
            wallets=args.congestion_wallets,
            slot_ms=args.congestion_slot_ms,
            budget_slots=args.congestion_budget_slots,
            progress=progress,
        )
    if "queue" in args.sections:
        with private_valkey() as valkey:
            document["queue"] = await bench_queue(
                redis_url=valkey.url,
                slot_ms=args.slot_ms,
                enqueues=args.enqueues,
                pickups=args.pickups,
                worker_counts=args.worker_counts,
                throughput_jobs=args.throughput_jobs,
                repeat=args.repeat,
                progress=progress,
            )
    if "capacity" in args.sections:
        with private_valkey() as valkey, contextlib.ExitStack() as services:
            store = throughput_store(services)
            document["capacity"] = await bench_capacity(
                redis_url=valkey.url,
                mongodb_uri=None if store is None else store[0],
                slot_ms=args.slot_ms,
                budget_requests_per_second=args.budget_rps,
                budget_jobs=args.budget_jobs,
                concurrent_jobs=args.concurrent_jobs,
                enqueue_calls=args.concurrent_enqueues,
                progress=progress,
            )
    document["targets"] = [t.to_dict() for t in evaluate(document)]
    return document


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(file=sys.stdout, width=160)
    if args.render is not None:
        document = json.loads(args.render.read_text())
    else:
        configure_logging(Settings(log_level="WARNING"))  # logs to stderr, warnings only
        shown = sys.argv[1:] if argv is None else argv
        command = shlex.join(["python", "-m", "benchmarks.run", *shown])
        document = asyncio.run(measure(args, command))
    print_rich(document, console)
    text = json.dumps(document, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n")
    if args.markdown_out is not None:
        args.markdown_out.write_text(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
