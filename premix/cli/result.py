"""`premix result JOB [--json|--csv]`: the receipt of a premix (`get_premix_result`): every
planned wallet with its position, address, amount, signature, slot and status, and the totals;
as a table, JSON, or CSV for an accountant."""

from typing import Any

import click
from rich.table import Table

from premix.amounts import format_sol
from premix.cli.base import (
    CliState,
    CommandFailed,
    pass_state,
    print_json,
    run_async,
    stdout_console,
)
from premix.queue import close_queue, get_premix_result
from premix.receipts import receipt_csv


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--json", "as_json", is_flag=True, help="Print the receipt as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the receipt as CSV (a spreadsheet).")
@pass_state
def result(state: CliState, job_id: str, as_json: bool, as_csv: bool) -> None:
    """Show the receipt of job JOB: every wallet it planned and what landed, from the ledger.

    Exit 1 when neither the ledger nor the queue knows JOB.
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be used together")
    settings = state.settings

    async def read() -> dict[str, Any] | None:
        try:
            return await get_premix_result(job_id, settings=settings)
        finally:
            await close_queue()

    receipt = run_async(read())
    if receipt is None:
        raise CommandFailed(
            f"unknown job {job_id}: no ledger run and no queued or finished job with that id "
            "(check PREMIX_REDIS_URL and PREMIX_MONGODB_URI)"
        )
    if as_json:
        print_json(receipt)
    elif as_csv:
        click.echo(receipt_csv(receipt), nl=False)
    else:
        print_receipt(receipt)


def print_receipt(receipt: dict[str, Any]) -> None:
    """The receipt for people: a status line, the wallet table, the totals."""
    click.echo(f"job {receipt['jobId']}: {receipt['status']} - {receipt['message']}")
    totals = receipt["totals"]
    if not receipt["wallets"]:
        return
    top_up = bool(receipt.get("topUp"))  # a top-up: each wallet's planned and sent amounts
    amounts = ("planned SOL", "sent SOL") if top_up else ("SOL",)
    table = Table()
    for name in ("#", "address", *amounts, "status", "signature", "slot"):
        right = name in ("#", "slot") or name.endswith("SOL")
        table.add_column(name, justify="right" if right else "left")
    for w in receipt["wallets"]:
        slot = "" if w["slot"] is None else str(w["slot"])
        sol = (w["plannedSol"], w["sentSol"]) if top_up else (w["sol"],)
        table.add_row(
            str(w["position"]), w["publicKey"], *sol, w["status"], w["signature"] or "", slot
        )
    stdout_console().print(table)
    click.echo(
        f"funded {totals['walletsFunded']} of {totals['walletsPlanned']} wallets: "
        f"{format_sol(totals['fundedLamports'])} in {totals['transactions']} transaction(s), "
        f"fees {format_sol(totals['feeLamports'])} (priority fees "
        f"{format_sol(totals['priorityFeeLamports'])}), total cost "
        f"{format_sol(totals['costLamports'])}"
    )
