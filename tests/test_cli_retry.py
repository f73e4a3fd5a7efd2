"""`premix retry JOB` as a subprocess: a failed premix (its funding wallet was short) is queued
again as a new job that continues its ledger run; a real worker then funds every wallet once
(asserted on the chain); an unknown or completed premix is one error line and exit 1."""

from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from tests.test_cli import assert_one_error_line, premix
from tests.test_cli_result import env_of, settings, store  # noqa: F401 (fixtures)
from tests.worker.helpers import create_user
from tests.worker.helpers import run_worker as run_arq_worker

SOL = 10**9


async def test_retry_queues_a_new_job_that_funds_what_the_failed_premix_did_not(
    settings: Settings,  # noqa: F811
    store: Store,  # noqa: F811
    fast_localnet: Localnet,
) -> None:
    net = fast_localnet
    user = await create_user(store, net, "u1", buyers=3, funding_lamports=SOL // 2)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert queued.job_id is not None
    await run_arq_worker(settings)
    net.airdrop(user.funding.pubkey(), 2 * SOL)

    result = premix("retry", queued.job_id, "--json", env=env_of(settings))

    assert result.status == 0, result
    answer = result.json()
    assert answer["success"] is True and answer["jobId"] != queued.job_id
    assert answer["message"].startswith(f"Retry of premix {queued.job_id} queued as job ")
    await run_arq_worker(settings)
    plan = user.plan(SOL)
    assert user.buyer_balances(net) == plan + [0] * (3 - len(plan))
    again = premix("retry", answer["jobId"], env=env_of(settings))
    assert_one_error_line(
        again,
        f"Premix {queued.job_id} completed: all {len(plan)} wallet(s) were funded; "
        "nothing to retry",
    )


def test_retry_of_an_unknown_job_is_one_error_line(
    settings: Settings,  # noqa: F811
) -> None:
    result = premix("retry", "premix-u9-1", env=env_of(settings))

    assert_one_error_line(
        result,
        "Unknown premix premix-u9-1: the ledger has no run for it (it never started, so "
        "nothing was sent); nothing was enqueued",
    )
