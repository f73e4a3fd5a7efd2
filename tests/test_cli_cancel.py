"""`premix cancel JOB` as a subprocess on a SecantusDB store: a queued premix is cancelled
(its message, exit 0; a worker then sends nothing, asserted on the chain); a finished or
unknown one is one error line and exit 1."""

from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from tests.test_cli import assert_one_error_line, premix
from tests.test_cli_result import env_of, settings, store  # noqa: F401 (fixtures)
from tests.worker.helpers import create_user
from tests.worker.helpers import run_worker as run_arq_worker

SOL = 10**9


async def test_cancel_of_a_queued_premix_prints_the_message_and_nothing_is_sent(
    settings: Settings,  # noqa: F811
    store: Store,  # noqa: F811
    fast_localnet: Localnet,
) -> None:
    net = fast_localnet
    user = await create_user(store, net, "u1", buyers=3)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert queued.job_id is not None

    result = premix("cancel", queued.job_id, env=env_of(settings))

    assert result.status == 0, result
    assert result.stdout.strip() == "Premix cancelled before it started: nothing was sent"
    await run_arq_worker(settings)
    assert net.balance(user.funding.pubkey()) == user.funding_lamports
    assert user.buyer_balances(net) == [0, 0, 0]
    again = premix("cancel", queued.job_id, "--json", env=env_of(settings))
    assert again.status == 1, again
    assert again.json() == {
        "success": False,
        "message": f"Premix {queued.job_id} already cancelled; nothing was cancelled",
        "state": "cancelled",
        "jobId": queued.job_id,
    }
    receipt = premix("result", queued.job_id, "--json", env=env_of(settings))
    assert receipt.status == 0, receipt
    assert (receipt.json()["status"], receipt.json()["wallets"]) == ("cancelled", [])
    watched = premix("watch", queued.job_id, env=env_of(settings))
    assert_one_error_line(
        watched,
        f"job {queued.job_id} cancelled: Premix cancelled before it started: nothing was sent",
    )


def test_cancel_of_an_unknown_job_is_one_error_line(
    settings: Settings,  # noqa: F811
) -> None:
    result = premix("cancel", "premix-u9-1", env=env_of(settings))

    assert_one_error_line(
        result,
        "Unknown premix premix-u9-1: no queued, running or finished job has that id; "
        "nothing was cancelled",
    )
