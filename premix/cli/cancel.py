"""`premix cancel JOB`: cancel a premix (`cancel_premix`): a queued one is taken out of the
queue, a running one stops at its next safe point and reports exactly what was sent."""

import click

from premix.cancellation import CancelResult
from premix.cli.base import CliState, CommandFailed, json_option, pass_state, print_json, run_async
from premix.queue import cancel_premix, close_queue


@click.command()
@click.argument("job_id", metavar="JOB")
@json_option
@pass_state
def cancel(state: CliState, job_id: str, as_json: bool) -> None:
    """Cancel premix JOB: queued, it never runs (nothing is sent); running, it stops once the
    transfer (standard mode) or round (fast mode) in flight has settled, and its report says
    exactly what was sent. Exit 0 when it was cancelled or will stop, 1 when nothing was
    cancelled (finished, unknown, or Redis unreachable). `premix retry JOB` funds the rest.
    """
    settings = state.settings

    async def submit() -> CancelResult:
        try:
            return await cancel_premix(job_id, settings=settings)
        finally:
            await close_queue()

    outcome = run_async(submit())
    if as_json:
        print_json(
            {
                "success": outcome.success,
                "message": outcome.message,
                "state": outcome.state,
                "jobId": job_id,
            }
        )
    elif outcome.success:
        click.echo(outcome.message)
    if not outcome.success:
        raise CommandFailed(outcome.message)
