"""`premix retry JOB`: queue a new try of a failed premix (`retry_premix`): the same ledger
run, funding only the wallets it did not fund."""

import click

from premix.cli.base import CliState, CommandFailed, json_option, pass_state, print_json, run_async
from premix.jobs import EnqueueResult
from premix.queue import close_queue, retry_premix


@click.command()
@click.argument("job_id", metavar="JOB")
@json_option
@pass_state
def retry(state: CliState, job_id: str, as_json: bool) -> None:
    """Queue a new try of premix JOB: it settles JOB's open transactions first and sends only
    what did not land (nothing is paid twice); prints the new job's id.

    Refused (exit 1) for an unknown or completed premix, or while a premix of the same user is
    queued or running. Follow the new job with `premix watch`.
    """
    settings = state.settings

    async def submit() -> EnqueueResult:
        try:
            return await retry_premix(job_id, settings=settings)
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
