"""What `retry_premix` decides from a ledger run (pure): which runs may be tried again, the job
that continues one, and the message."""

from datetime import UTC, datetime

from premix.retry import retry_job, retry_queued_message, retry_refusal
from premix.runs import Attempt, AttemptState, RunRecord, RunStatus, TopUpEntry

NOW = datetime(2026, 12, 1, tzinfo=UTC)
REQUEST = {"userId": "u1", "userChatId": 42, "mixAmount": "0.3", "mode": "fast", "maxWallets": 3}


def failed_run(*, error: str = "Insufficient balance", request: dict | None = REQUEST) -> RunRecord:
    run = RunRecord("premix-u1-5", "u1", "fast", 300, NOW, NOW, request=request)
    run.set_plan(["A", "B", "C"], [100, 100, 100], now=NOW)
    run.add_transaction([0], Attempt("sig-0", "hash", 10, "wire", NOW))
    run.settle("sig-0", AttemptState.LANDED_OK, now=NOW, slot=3)
    run.finish(RunStatus.FAILED, now=NOW, error=error)
    return run


def test_a_failed_run_may_be_retried_by_a_job_naming_it() -> None:
    run = failed_run()

    assert retry_refusal("premix-u1-5", run) is None
    job = retry_job(run)
    assert (job.run_id, job.user_id, job.mode, job.max_wallets) == ("premix-u1-5", "u1", "fast", 3)
    assert job.amount_lamports == 300_000_000
    assert retry_queued_message(run, "premix-u1-9") == (
        "Retry of premix premix-u1-5 queued as job premix-u1-9: 2 of 3 wallet(s) still to fund "
        "(0.0000002 SOL); the 1 funded are not paid again"
    )


def test_a_run_that_needs_review_or_kept_no_request_is_not_retried() -> None:
    review = failed_run(error="needs review: transaction 2 is not found on chain.")
    assert retry_refusal("premix-u1-5", review) == (
        "Premix premix-u1-5 needs review and is not retried: needs review: transaction 2 is not "
        "found on chain. Nothing was enqueued"
    )
    old = failed_run(request=None)
    assert retry_refusal("premix-u1-5", old) == (
        "Premix premix-u1-5 cannot be retried: it was queued before premix kept the job's "
        "request; enqueue a new premix instead. Nothing was enqueued"
    )


def test_a_completed_top_up_is_not_retried_and_a_failed_one_keeps_its_plan() -> None:
    run = RunRecord("premix-u1-5", "u1", "fast", 300, NOW, NOW, request=REQUEST)
    run.set_top_up(
        [TopUpEntry(0, "A", 100, 100), TopUpEntry(1, "B", 200, 50)], now=NOW
    )  # A holds its amount: only B's 150 lamports are planned
    run.finish(RunStatus.FAILED, now=NOW, error="Insufficient balance")
    assert retry_queued_message(run, "premix-u1-9") == (
        "Retry of premix premix-u1-5 queued as job premix-u1-9: 1 of 1 wallet(s) still to fund "
        "(0.00000015 SOL); the 0 funded are not paid again"
    )
    done = RunRecord("premix-u1-6", "u1", "fast", 300, NOW, NOW, request=REQUEST)
    done.set_top_up([TopUpEntry(0, "A", 100, 100)], now=NOW)
    done.finish(RunStatus.COMPLETED, now=NOW)
    assert retry_refusal("premix-u1-6", done) == (
        "Top-up premix-u1-6 completed: all 1 wallet(s) hold their planned amounts; nothing to retry"
    )


def test_a_retry_of_a_scheduled_idempotent_premix_is_due_now_and_carries_no_key() -> None:
    scheduled = {**REQUEST, "runAt": "2026-12-24T18:00:00Z", "idempotencyKey": "tg-update-1"}
    delayed = {**REQUEST, "delaySeconds": 600}

    for request in (scheduled, delayed):
        job = retry_job(failed_run(request=request))

        assert (job.run_at, job.delay_seconds, job.idempotency_key) == (None, None, None)
        assert job.to_wire() == {
            "userId": "u1",
            "userChatId": 42,
            "mixAmount": "0.3",
            "maxWallets": 3,
            "mode": "fast",
            "socketUserId": None,
            "runId": "premix-u1-5",
        }
