"""`wallet_readiness`: each buyer wallet's balance read from the chain against what the last
premix that funded it planned, on both stores, after real premixes on localnet: a funded wallet
is ready, a wallet spent after funding is not, a wallet never funded is not (and says why), the
later of two premixes is the last; a user with no buyer wallets raises `NoBuyerWallets`."""

import pytest
from solders.keypair import Keypair

from premix.errors import NoBuyerWallets
from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds, get_premix_result
from premix.readiness import NEVER_FUNDED, wallet_readiness
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import User, create_user, drain, job_result, run_worker

SOL = 10**9


async def premix(
    settings: Settings, user: User, amount_sol: float, *, top_up: bool = False
) -> tuple[str, list[int]]:
    """Run one premix of `amount_sol` to the end; its job id and per-wallet planned lamports."""
    options = {"topUp": True} if top_up else None
    queued = await enqueue_premix_funds(user.user_id, 42, amount_sol, options, settings=settings)
    assert queued.job_id is not None
    await run_worker(settings)
    receipt = await get_premix_result(queued.job_id, settings=settings)
    assert receipt is not None and receipt["status"] == "completed"
    return queued.job_id, [w["plannedLamports"] for w in receipt["wallets"]]


async def test_every_wallet_funded_by_a_premix_is_ready_and_its_balance_is_the_chains(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    job_id, planned = await premix(settings, user, 2)
    assert len(planned) == 4  # 2 SOL fills 4 wallets

    report = await wallet_readiness("u1", settings=settings)

    wallets = report["wallets"]
    assert report["userId"] == "u1"
    assert [w["position"] for w in wallets] == list(range(4))
    assert [w["publicKey"] for w in wallets] == [str(b.pubkey()) for b in user.buyers]
    assert [w["balanceLamports"] for w in wallets] == user.buyer_balances(net)
    assert [w["plannedLamports"] for w in wallets] == planned
    assert {w["lastPremix"]["jobId"] for w in wallets} == {job_id}
    assert all(w["ready"] and w["reason"] is None for w in wallets)
    assert report["totals"] == {
        "wallets": 4,
        "ready": 4,
        "balanceLamports": sum(user.buyer_balances(net)),
        "balanceSol": "2",
        "plannedLamports": 2 * SOL,
        "plannedSol": "2",
    }


async def test_a_wallet_spent_after_funding_is_not_ready(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    job_id, planned = await premix(settings, user, 2)
    drain(net, user.buyers[1], keep_lamports=planned[1] // 2)

    report = await wallet_readiness("u1", settings=settings)

    spent = report["wallets"][1]
    assert spent["balanceLamports"] == net.balance(user.buyers[1].pubkey()) == planned[1] // 2
    assert spent["ready"] is False
    assert spent["lastPremix"]["jobId"] == job_id and spent["plannedLamports"] == planned[1]
    assert "below" in spent["reason"] and job_id in spent["reason"]
    assert [w["ready"] for w in report["wallets"]] == [True, False, True, True]
    assert report["totals"]["ready"] == 3
    assert report["totals"]["balanceLamports"] == sum(user.buyer_balances(net))


async def test_a_wallet_never_funded_is_not_ready_and_says_so(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=2)
    _, planned = await premix(settings, user, 1)
    assert len(planned) == 2
    [late] = await store.wallets.add_buyer_wallets("u1", [Keypair()])

    report = await wallet_readiness("u1", settings=settings)

    never = report["wallets"][late]
    assert never["position"] == late == 2
    assert never["balanceLamports"] == 0
    assert never["lastPremix"] is None and never["plannedLamports"] is None
    assert never["ready"] is False and never["reason"] == NEVER_FUNDED
    assert report["totals"]["wallets"] == 3 and report["totals"]["ready"] == 2
    assert report["totals"]["plannedLamports"] == sum(planned) == SOL


async def test_the_later_of_two_premixes_is_the_last(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    first, _ = await premix(settings, user, 1)
    second, planned = await premix(settings, user, 2)
    assert first != second

    report = await wallet_readiness("u1", settings=settings)

    assert {w["lastPremix"]["jobId"] for w in report["wallets"]} == {second}
    assert [w["plannedLamports"] for w in report["wallets"]] == planned
    assert [w["balanceLamports"] for w in report["wallets"]] == user.buyer_balances(net)
    assert report["totals"]["balanceLamports"] == 3 * SOL
    assert report["totals"]["ready"] == 4


async def test_readiness_after_a_top_up_is_ready_for_every_wallet(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    first = (await premix(settings, user, 1))[0]  # wallets 0 and 1
    drain(net, user.buyers[0], keep_lamports=SOL // 100)
    plan = user.plan(2 * SOL)
    top_up, _ = await premix(settings, user, 2, top_up=True)  # wallet 1 already holds enough

    report = await wallet_readiness("u1", settings=settings)

    wallets = report["wallets"]
    assert [w["balanceLamports"] for w in wallets] == user.buyer_balances(net) == plan
    assert [w["plannedLamports"] for w in wallets] == plan  # its target, not its transfer
    assert all(w["ready"] and w["reason"] is None for w in wallets)
    assert report["totals"]["ready"] == 4 and report["totals"]["plannedLamports"] == 2 * SOL
    # the last premix that credited each wallet: the top-up sent wallet 1 nothing
    assert [w["lastPremix"]["jobId"] for w in wallets] == [top_up, first, top_up, top_up]

    # a top-up that sends nothing sets the target of its wallets, and credits none of them
    smaller, _ = await premix(settings, user, 1, top_up=True)
    assert (await job_result(settings, smaller)).result["totals"]["sentLamports"] == 0
    drain(net, user.buyers[1], keep_lamports=SOL // 10)

    report = await wallet_readiness("u1", settings=settings)

    wallets = report["wallets"]
    assert [w["plannedLamports"] for w in wallets] == user.plan(SOL) + plan[2:]
    assert [w["ready"] for w in wallets] == [True, False, True, True]
    assert wallets[1]["reason"] == (
        f"holds 0.1 SOL, below the 0.5 SOL top-up {smaller} planned for it"
    )
    assert [w["lastPremix"]["jobId"] for w in wallets] == [top_up, first, top_up, top_up]


async def test_a_user_with_no_buyer_wallets_raises_no_buyer_wallets(
    settings: Settings, store: Store, net: Localnet
) -> None:
    await create_user(store, net, "u2", buyers=0)

    for user_id in ("u2", "nobody"):
        with pytest.raises(NoBuyerWallets, match=f"user {user_id} has no buyer wallets"):
            await wallet_readiness(user_id, settings=settings)
