"""`premix sweep --user U [--keep SOL]`: queue a sweep of a user's buyer wallets back into
their funding wallet (`enqueue_sweep`), as the bot does."""

from typing import Any

import click

from premix.cli.base import (
    USER_ID,
    CliState,
    CommandFailed,
    json_option,
    pass_state,
    print_json,
    run_async,
)
from premix.jobs import EnqueueResult
from premix.queue import close_queue, enqueue_sweep


@click.command()
@click.option("--user", "user_id", type=USER_ID, required=True, help="The user's id.")
@click.option("--chat-id", type=int, required=True, help="The user's Telegram chat id.")
@click.option(
    "--keep",
    "keep_sol",
    default=None,
    metavar="SOL",
    help="SOL left in each buyer wallet (default 0: empty them; else at least 0.00089088).",
)
@click.option("--socket-user-id", default=None, help="Passed through to progress events.")
@json_option
@pass_state
def sweep(
    state: CliState,
    user_id: str,
    chat_id: int,
    keep_sol: str | None,
    socket_user_id: str | None,
    as_json: bool,
) -> None:
    """Queue a sweep: every buyer wallet's SOL (all but --keep) goes straight back to the
    funding wallet, which pays the fees; prints the job id. Follow it with `premix watch JOB`.

    Refused (exit 1) while a premix or sweep of the user is queued or running, and for a
    --keep between 0 and the rent-exempt minimum.
    """
    settings = state.settings
    options: dict[str, Any] = {}
    if keep_sol is not None:
        options["keepSol"] = keep_sol  # parsed exactly (Decimal) by the request model
    if socket_user_id is not None:
        options["socketUserId"] = socket_user_id

    async def submit() -> EnqueueResult:
        try:
            return await enqueue_sweep(user_id, chat_id, options, settings=settings)
        finally:
            await close_queue()

    outcome = run_async(submit())
    if as_json:
        print_json(
            {"success": outcome.success, "message": outcome.message, "jobId": outcome.job_id}
        )
    elif outcome.success:
        click.echo(outcome.message)
    if not outcome.success:
        raise CommandFailed(outcome.message)
