"""`premix demo`: the whole pipeline in one process (`premix.demo`), rendered live."""

from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from premix.amounts import format_sol, sol_text
from premix.cli.base import (
    MODE,
    SOL,
    WALLET_COUNT,
    CliState,
    CommandFailed,
    json_option,
    pass_state,
    print_json,
    run_async,
    stdout_console,
)
from premix.cli.jobs import progress_bar, update_bar
from premix.constants import DEMO_AMOUNT_SOL, DEMO_SLOT_MS, MAX_BUYER_WALLETS
from premix.demo import DemoOptions, DemoReport, run_demo
from premix.distribution import format_plan
from premix.jobs import Mode
from premix.progress import ProgressEvent
from premix.readiness import NEVER_FUNDED
from premix.settings import Settings, display_url


@click.command()
@click.option(
    "--mode",
    type=MODE,
    default="standard",
    show_default=True,
    help="Transfer engine.",
)
@click.option(
    "--amount",
    "amount_lamports",
    type=SOL,
    default=DEMO_AMOUNT_SOL,
    show_default=True,
    help="SOL to distribute.",
)
@click.option(
    "--max-wallets", type=WALLET_COUNT, default=None, help="Use at most this many buyer wallets."
)
@click.option(
    "--slot-ms",
    type=click.IntRange(min=1),
    default=DEMO_SLOT_MS,
    show_default=True,
    help="Localnet slot length (a validator's is 400).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Give up when the job has not ended after this many seconds.",
)
@click.option(
    "--redis-url",
    metavar="URL",
    default=None,
    help="Use this Redis (with a queue private to the run) instead of a private Valkey.",
)
@json_option
@pass_state
def demo(
    state: CliState,
    mode: Mode,
    amount_lamports: int,
    max_wallets: int | None,
    slot_ms: int,
    timeout: float,
    redis_url: str | None,
    as_json: bool,
) -> None:
    """Run the whole pipeline in this process, on a local chain, in a few seconds.

    Starts a localnet (LiteSVM, short slots) and a private Valkey (stopped afterwards), uses
    the in-memory store and a throwaway encryption key, creates a user with a funding wallet and
    73 buyer wallets, airdrops the amount plus fees, enqueues a premix, runs a worker
    in-process, shows its progress through the six phases and then every wallet, amount and
    signature. Needs no Redis and never touches a real queue (PREMIX_REDIS_URL is not used);
    with --redis-url it uses that Redis, on a queue of its own.
    """
    options = DemoOptions(
        mode=mode,
        amount_lamports=amount_lamports,
        max_wallets=max_wallets,
        slot_ms=slot_ms,
        timeout_seconds=timeout,
        redis_url=redis_url,
    )
    settings = state.settings
    if as_json:
        report = run_async(run_demo(options, settings))
        print_json(report.to_json())
    else:
        report = run_async(render_demo(options, settings, stdout_console()))
    if not report.succeeded:
        raise CommandFailed(f"job {report.job_id} failed: {report.message}")


FULL_DEMO_TABLE_WIDTH = 190  # columns the demo table needs with whole signatures


async def render_demo(options: DemoOptions, settings: Settings, console: Console) -> DemoReport:
    """Run the demo showing its plan, a live progress bar and the final table on `console`."""
    console.print(
        f"premix demo: {format_sol(options.amount_lamports)}, {options.mode} mode, on a local "
        f"chain with {options.slot_ms} ms slots (a validator's are 400 ms), the in-memory store "
        + (
            "and a private Valkey"
            if options.redis_url is None
            else f"and Redis at {display_url(options.redis_url)} (a queue of its own)"
        )
    )
    bar = progress_bar(console)
    task = bar.add_task("waiting for the worker", total=100, start=False)

    def show_plan(amounts: Sequence[int], public_keys: Sequence[object]) -> None:
        console.print(
            f"\nCreated a user with a funding wallet and {MAX_BUYER_WALLETS} buyer wallets. "
            f"Plan: {len(amounts)} of them, the fewest whose caps hold the amount:"
        )
        console.print(format_plan(amounts, [str(key) for key in public_keys]))
        console.print()
        bar.start()

    def show_event(event: ProgressEvent) -> None:
        bar.start_task(task)
        update_bar(bar, task, event)

    try:
        report = await run_demo(options, settings, on_plan=show_plan, on_event=show_event)
    finally:
        bar.stop()
    console.print()
    console.print(demo_table(report, console.width))
    console.print(
        f"Sent {format_sol(report.sent_lamports)} to {report.funded_wallets} of "
        f"{len(report.wallets)} wallet(s) in {report.transactions} transaction(s); fees "
        f"{format_sol(report.fee_lamports)}; wall time {report.wall_seconds:.2f} s "
        f"(enqueue to the final event)."
    )
    console.print(f"Job {report.job_id}: {report.message}")
    if report.readiness is not None:
        console.print(readiness_line(report.readiness))
    return report


def readiness_line(readiness: dict[str, Any]) -> str:
    """'Readiness (premix wallets status): 5 of 73 buyer wallets ready, holding 1 SOL of the 1 SOL
    planned; 68 never funded by a premix'."""
    totals = readiness["totals"]
    never = sum(1 for wallet in readiness["wallets"] if wallet["reason"] == NEVER_FUNDED)
    line = (
        f"Readiness (premix wallets status): {totals['ready']} of {totals['wallets']} buyer "
        f"wallets ready, holding {totals['balanceSol']} SOL of the {totals['plannedSol']} SOL "
        "planned"
    )
    return f"{line}; {never} {NEVER_FUNDED}" if never else line


def demo_table(report: DemoReport, width: int) -> Table:
    """Every wallet of the plan: position, public key, amount, status, signature, balance.

    Signatures are shortened when `width` cannot hold them (`--json` always has them whole).
    """
    short = width < FULL_DEMO_TABLE_WIDTH

    def signature_text(signature: str | None) -> str:
        if signature is None:
            return "-"
        return f"{signature[:12]}…{signature[-12:]}" if short else signature

    table = Table(title=f"Buyer wallets funded by job {report.job_id}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("wallet", no_wrap=True)
    table.add_column("amount (SOL)", justify="right")
    table.add_column("on chain (SOL)", justify="right")
    table.add_column("status")
    table.add_column("signature", no_wrap=True)
    for wallet in report.wallets:
        table.add_row(
            str(wallet.position),
            wallet.public_key,
            sol_text(wallet.lamports),
            sol_text(wallet.balance_lamports),
            wallet.status,
            signature_text(wallet.signature),
        )
    table.add_section()
    table.add_row(
        "",
        "total",
        sol_text(sum(wallet.lamports for wallet in report.wallets)),
        sol_text(report.balance_total_lamports),
        "",
        "",
    )
    return table
