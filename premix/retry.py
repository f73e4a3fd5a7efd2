"""What `premix.queue.retry_premix` decides from a ledger run (pure: no I/O): whether the run
may be tried again, the job that continues it, and what the user is told.

A retry is a new job (new id, so arq's record of the old one and any stalled execution of it
stay apart) whose payload names the run (`runId`). Its execution opens no new run: it resumes
that one as any re-run does (settles open attempts first, keeps the first plan, sends only what
did not land), so nothing is paid twice.
"""

from premix.amounts import format_sol
from premix.jobs import PremixFundsJob
from premix.runs import RunRecord, RunStatus

_NOT_RETRIED = ("runAt", "delaySeconds", "idempotencyKey")
NEEDS_REVIEW = "needs review"  # what the engine says when only a person can settle a transfer


def retry_refusal(job_id: str, run: RunRecord | None) -> str | None:
    """Why the run of `job_id` may not be retried, or None when it may."""
    if run is None:
        return (
            f"Unknown premix {job_id}: the ledger has no run for it (it never started, so "
            "nothing was sent); nothing was enqueued"
        )
    if run.status is RunStatus.COMPLETED and run.top_up is not None:
        return (
            f"Top-up {run.run_id} completed: all {len(run.top_up)} wallet(s) hold their "
            "planned amounts; nothing to retry"
        )
    if run.status is RunStatus.COMPLETED:
        return (
            f"Premix {run.run_id} completed: all {len(run.plan)} wallet(s) were funded; "
            "nothing to retry"
        )
    if run.error is not None and NEEDS_REVIEW in run.error:
        return (
            f"Premix {run.run_id} needs review and is not retried: {run.error.rstrip('.')}. "
            "Nothing was "
            "enqueued"
        )
    if run.request is None:
        return (
            f"Premix {run.run_id} cannot be retried: it was queued before premix kept the job's "
            "request; enqueue a new premix instead. Nothing was enqueued"
        )
    return None


def retry_job(run: RunRecord) -> PremixFundsJob:
    """The job that continues `run` (its request as queued, naming the run; due now, and not
    the request its idempotency key stands for: no `runAt`, `delaySeconds`, `idempotencyKey`)."""
    if run.request is None:
        raise ValueError(f"run {run.run_id} holds no request")
    request = {k: v for k, v in run.request.items() if k not in _NOT_RETRIED}
    return PremixFundsJob.model_validate({**request, "runId": run.run_id})


def retry_queued_message(run: RunRecord, retry_id: str) -> str:
    """'Retry of premix X queued as job Y: 27 of 73 wallet(s) still to fund (1.2 SOL); the 46
    funded are not paid again'."""
    queued = f"Retry of premix {run.run_id} queued as job {retry_id}"
    if not run.planned:
        return f"{queued}: nothing was sent yet; it plans and sends the whole premix"
    funded = set(run.funded_positions())
    missing = [entry for entry in run.plan if entry.position not in funded]
    lamports = sum(entry.lamports for entry in missing)
    return (
        f"{queued}: {len(missing)} of {len(run.plan)} wallet(s) still to fund "
        f"({format_sol(lamports)}); the {len(funded)} funded are not paid again"
    )
