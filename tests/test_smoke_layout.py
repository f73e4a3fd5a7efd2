"""The package installs and exposes the public names other code imports."""

from premix.jobs import EnqueueResult, PremixFundsJob, PremixOptions


def test_public_job_names_import_and_round_trip_through_json() -> None:
    job = PremixFundsJob.from_request("user-1", 42, 0.5, PremixOptions(mode="fast"))
    assert PremixFundsJob.model_validate(job.to_wire()) == job
    assert job.amount_lamports == 500_000_000
    assert EnqueueResult(success=False, message="x").job_id is None
