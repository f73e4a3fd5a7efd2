"""`premix sweep` as a subprocess (SecantusDB store): a sweep is queued for a user after their
premix, a real worker moves every buyer wallet's SOL back to the funding wallet (asserted on the
chain); a --keep below the rent-exempt minimum, or a sweep while one is queued, is one error
line and exit 1."""

from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from tests.test_cli import assert_one_error_line, premix
from tests.test_cli_result import env_of, settings, store  # noqa: F401 (fixtures)
from tests.worker.helpers import create_user
from tests.worker.helpers import run_worker as run_arq_worker

SOL = 10**9


async def test_sweep_queues_a_job_that_returns_the_buyer_wallets_sol_to_the_funding_wallet(
    settings: Settings,  # noqa: F811
    store: Store,  # noqa: F811
    fast_localnet: Localnet,
) -> None:
    net = fast_localnet
    user = await create_user(store, net, "u1", buyers=3)
    queued = await enqueue_premix_funds("u1", 42, 1, {"mode": "fast"}, settings=settings)
    assert queued.job_id is not None
    await run_arq_worker(settings)
    held = user.buyer_balances(net)
    funded = sum(1 for lamports in held if lamports)
    funding_before = net.balance(user.funding.pubkey())

    result = premix("sweep", "--user", "u1", "--chat-id", "42", "--json", env=env_of(settings))

    assert result.status == 0, result
    answer = result.json()
    assert answer["success"] is True and answer["jobId"].startswith("sweep-u1-")
    again = premix("sweep", "--user", "u1", "--chat-id", "42", env=env_of(settings))
    assert_one_error_line(
        again,
        "A premix or sweep is already queued or running for this user "
        f"(job {answer['jobId']}); wait for it to finish",
    )
    await run_arq_worker(settings)
    assert user.buyer_balances(net) == [0, 0, 0]
    fee = 5_000 * (1 + funded)  # one transaction: the funding wallet and each wallet sign
    assert net.balance(user.funding.pubkey()) == funding_before + sum(held) - fee


def test_sweep_keeping_less_than_rent_exempt_is_one_error_line(
    settings: Settings,  # noqa: F811
) -> None:
    result = premix(
        "sweep", "--user", "u1", "--chat-id", "42", "--keep", "0.0001", env=env_of(settings)
    )

    assert_one_error_line(
        result,
        "Invalid parameters: keepSol: 0.0001 SOL would leave each wallet below the rent-exempt "
        "minimum of 0.00089088 SOL; keep 0 (empty the wallets) or at least 0.00089088 SOL",
    )
