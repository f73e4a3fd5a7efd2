"""Top-ups (option `topUp`, issue 14), by real arq workers on localnet, on both stores: each
wallet receives only what it lacks of its planned amount, straight from the funding wallet; a
top-up of wallets that hold their amounts sends nothing (no transaction, no fee) and says so;
a re-run after a crash keeps its first plan; a top-up plans only once the user's earlier runs
can no longer land anything (what they sent is not sent again); the funding wallet needs only
what is missing; the result and the receipt show per wallet the
planned amount and what was sent (readiness after top-ups: test_worker_readiness.py)."""

import asyncio
import base64
from typing import Any

import pytest
from arq.constants import result_key_prefix
from redis.asyncio import Redis
from solders.transaction import VersionedTransaction

from premix.amounts import format_sol
from premix.constants import RUNS_COLLECTION
from premix.ledger import Ledger, RunStatus
from premix.localnet import Localnet
from premix.progress import latest_progress
from premix.queue import enqueue_premix_funds, get_premix_result
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import (
    TestRpc,
    User,
    collect_events,
    create_user,
    drain,
    expire_in_progress_marker,
    job_result,
    make_settings,
    open_store,
    run_worker,
)
from tests.worker.test_worker_crash import DiesWhenNotifying, RecordingNotifier
from tests.worker.test_worker_earlier_runs import (
    an_earlier_premix_that_failed_with_a_transfer_in_flight,
)

SOL = 10**9
FEE = 5_000  # per signature: these settings pin priority_fee=0


async def run_premix(settings: Settings, user: User, amount: object, **options: Any) -> str:
    """Enqueue one premix of `amount` for `user` and run a worker until the queue is empty."""
    queued = await enqueue_premix_funds(
        user.user_id, 42, amount, options or None, settings=settings
    )
    assert queued.success, queued.message
    assert queued.job_id is not None
    await run_worker(settings)
    return queued.job_id


async def test_a_second_identical_top_up_sends_nothing_and_says_so(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    plan = user.plan(2 * SOL)
    first = await run_premix(settings, user, 2, topUp=True)  # empty wallets: the whole plan
    assert (await job_result(settings, first)).result["success"] is True
    assert user.buyer_balances(net) == plan
    funding_before = net.balance(user.funding.pubkey())
    transactions_before = len(net.transaction_log)

    queued = await enqueue_premix_funds("u1", 42, 2, {"top_up": True}, settings=settings)
    assert queued.job_id is not None
    events = await collect_events(redis_client, queued.job_id)
    await run_worker(settings)

    message = "Top-up of 2 SOL: all 4 wallets already hold their planned amounts; nothing was sent"
    result = (await job_result(settings, queued.job_id)).result
    assert (result["success"], result["message"], result["topUp"]) == (True, message, True)
    assert net.balance(user.funding.pubkey()) == funding_before  # not even a fee
    assert len(net.transaction_log) == transactions_before
    assert user.buyer_balances(net) == plan
    assert [w["plannedLamports"] for w in result["wallets"]] == plan
    assert [w["heldLamports"] for w in result["wallets"]] == plan
    assert {(w["sentLamports"], w["status"], w["signature"]) for w in result["wallets"]} == {
        (0, "not_needed", None)
    }
    assert result["totals"]["sentLamports"] == result["totals"]["feeLamports"] == 0
    assert result["totals"]["walletsPlanned"] == 4 and result["totals"]["transactions"] == 0
    seen = await events.wait()
    assert [(e.phase, e.status) for e in seen][-1] == (6, "completed")
    descriptions = [e.description for e in seen]
    assert (
        "Planning a top-up of 2 SOL: all 4 wallets already hold their planned amounts"
        in descriptions
    )
    assert "Nothing to send: all 4 wallets already hold their planned amounts" in descriptions
    assert seen[-1].description == message
    run = await Ledger(store).get(queued.job_id)
    assert run is not None and run.status is RunStatus.COMPLETED and run.plan == []
    assert [e.planned_lamports for e in run.top_up or []] == plan
    receipt = await get_premix_result(queued.job_id, settings=settings)
    assert receipt is not None
    assert (receipt["status"], receipt["message"], receipt["topUp"]) == ("completed", message, True)
    assert [(w["plannedLamports"], w["sentLamports"]) for w in receipt["wallets"]] == [
        (planned, 0) for planned in plan
    ]
    assert {w["status"] for w in receipt["wallets"]} == {"not_needed"}
    assert receipt["totals"]["costLamports"] == 0
    await redis_client.delete(result_key_prefix + queued.job_id)  # arq's result expired
    receipt = await get_premix_result(queued.job_id, settings=settings)
    assert receipt is not None and receipt["message"] == message  # said by the ledger run


async def test_a_top_up_after_a_plain_premix_of_the_same_amount_sends_nothing(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=6)
    await run_premix(settings, user, 2, maxWallets=5)
    funding_before = net.balance(user.funding.pubkey())

    job_id = await run_premix(settings, user, 2, maxWallets=5, topUp=True)

    result = (await job_result(settings, job_id)).result
    assert result["message"] == (
        "Top-up of 2 SOL: all 4 wallets already hold their planned amounts; nothing was sent"
    )
    assert net.balance(user.funding.pubkey()) == funding_before
    assert [w["sentLamports"] for w in result["wallets"]] == [0, 0, 0, 0]


@pytest.mark.parametrize(("mode", "transactions"), [("standard", 2), ("fast", 1)])
async def test_a_top_up_sends_each_wallet_exactly_what_it_lacks(
    settings: Settings, store: Store, net: Localnet, mode: str, transactions: int
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    plan = user.plan(2 * SOL)
    net.airdrop(user.buyers[0].pubkey(), plan[0])  # holds its amount
    net.airdrop(user.buyers[1].pubkey(), plan[1] // 3)  # holds a third
    net.airdrop(user.buyers[2].pubkey(), plan[2] + 7)  # holds more
    held = user.buyer_balances(net)  # wallet 3 holds nothing
    missing = [max(0, p - h) for p, h in zip(plan, held, strict=True)]
    assert missing == [0, plan[1] - plan[1] // 3, 0, plan[3]]

    job_id = await run_premix(settings, user, 2, topUp=True, mode=mode)

    result = (await job_result(settings, job_id)).result
    assert result["success"] is True, result["message"]
    assert user.buyer_balances(net) == [plan[0], plan[1], plan[2] + 7, plan[3]]
    spent = user.funding_lamports - net.balance(user.funding.pubkey())
    assert spent == sum(missing) + transactions * FEE
    assert result["message"] == (
        f"Top-up of 2 SOL complete: sent {format_sol(sum(missing))} to 2 of 4 wallet(s) in "
        f"{transactions} transaction(s) ({mode} mode), fees {format_sol(transactions * FEE)}; "
        "2 wallet(s) already held their planned amounts"
    )
    rows = [
        (w["position"], w["plannedLamports"], w["heldLamports"], w["sentLamports"], w["status"])
        for w in result["wallets"]
    ]
    assert rows == [
        (0, plan[0], held[0], 0, "not_needed"),
        (1, plan[1], held[1], missing[1], "funded"),
        (2, plan[2], held[2], 0, "not_needed"),
        (3, plan[3], 0, plan[3], "funded"),
    ]
    assert [w["balanceLamports"] for w in result["wallets"]] == [None, plan[1], None, plan[3]]
    run = await Ledger(store).get(job_id)
    assert run is not None
    assert [(e.recipient, e.lamports) for e in run.plan] == [
        (str(user.buyers[1].pubkey()), missing[1]),
        (str(user.buyers[3].pubkey()), missing[3]),
    ]
    assert run.totals.sent_lamports == sum(missing)
    receipt = await get_premix_result(job_id, settings=settings)
    assert receipt is not None
    assert [(w["plannedLamports"], w["sentLamports"]) for w in receipt["wallets"]] == [
        (p, m) for p, m in zip(plan, missing, strict=True)
    ]
    assert receipt["totals"]["costLamports"] == spent
    assert receipt["totals"]["plannedLamports"] == 2 * SOL


async def test_a_top_up_refills_a_wallet_spent_since_its_premix(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    plan = user.plan(2 * SOL)
    await run_premix(settings, user, 2)
    drain(net, user.buyers[2], keep_lamports=plan[2] // 4)  # the user bought with it
    funding_before = net.balance(user.funding.pubkey())

    job_id = await run_premix(settings, user, 2, topUp=True)

    assert (await job_result(settings, job_id)).result["success"] is True
    assert user.buyer_balances(net) == plan
    assert funding_before - net.balance(user.funding.pubkey()) == plan[2] - plan[2] // 4 + FEE


async def test_a_top_up_killed_after_its_first_send_keeps_its_first_plan_on_try_2(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    plan = user.plan(2 * SOL)
    net.airdrop(user.buyers[0].pubkey(), plan[0] // 2)
    net.airdrop(user.buyers[2].pubkey(), plan[2] // 2)
    held = user.buyer_balances(net)
    missing = [p - h for p, h in zip(plan, held, strict=True)]
    queued = await enqueue_premix_funds("u1", 42, 2, {"topUp": True}, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send", kill_at=1)) is False
    net.advance(5)  # the first transfer landed: wallet 0 now holds its planned amount
    assert net.balance(user.buyers[0].pubkey()) == plan[0]
    first_plan = (await Ledger(store).require(job_id)).plan

    await expire_in_progress_marker(redis_client, job_id)
    await run_worker(settings, rpc=TestRpc(net.url))

    info = await job_result(settings, job_id)
    assert (info.result["success"], info.job_try) == (True, 2), info.result["message"]
    assert user.buyer_balances(net) == plan  # wallet 0 was not topped up a second time
    spent = user.funding_lamports - net.balance(user.funding.pubkey())
    assert spent == sum(missing) + 4 * FEE
    run = await Ledger(store).require(job_id)
    assert run.plan == first_plan and [e.lamports for e in run.plan] == missing
    assert [e.held_lamports for e in run.top_up or []] == held
    assert [w["sentLamports"] for w in info.result["wallets"]] == missing
    assert await store.collection(RUNS_COLLECTION).count_documents({}) == 1


async def test_a_top_up_needs_only_what_is_missing_and_says_both_figures(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    buffer = SOL // 100
    plan = [SOL // 2] * 4  # 2 SOL over 4 wallets
    user = await create_user(store, net, "u1", buyers=4, funding_lamports=plan[3] + FEE + buffer)
    assert user.plan(2 * SOL) == plan
    for buyer, lamports in zip(user.buyers[:3], plan, strict=False):
        net.airdrop(buyer.pubkey(), lamports)
    queued = await enqueue_premix_funds("u1", 42, 2, {"topUp": True}, settings=settings)
    assert queued.job_id is not None
    events = await collect_events(redis_client, queued.job_id)
    await run_worker(settings)

    result = (await job_result(settings, queued.job_id)).result
    assert result["success"] is True, result["message"]
    assert user.buyer_balances(net) == plan
    assert net.balance(user.funding.pubkey()) == buffer  # 2 SOL asked; 0.5 SOL needed
    descriptions = [(e.phase, e.description) for e in await events.wait()]
    assert (3, "Planning a top-up of 2 SOL") in descriptions
    assert (3, "Planning a top-up of 2 SOL: 0.5 SOL missing across 1 of 4 wallets") in descriptions
    assert (
        4,
        "Checking the funding wallet holds the 0.5 SOL missing (top-up of 2 SOL) plus fees",
    ) in descriptions


async def test_a_top_up_plans_only_once_an_earlier_runs_transfer_in_flight_has_landed(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    settings = make_settings(redis_url, net.url, job_max_tries=1)
    async with open_store(settings) as store:
        user = await create_user(store, net, "u1", buyers=2)
        _, wire = await an_earlier_premix_that_failed_with_a_transfer_in_flight(
            settings, store, redis_client, net
        )
        plan = user.plan(SOL)
        queued = await enqueue_premix_funds("u1", 42, 1, {"topUp": True}, settings=settings)
        later = queued.job_id
        assert later is not None
        worker = asyncio.create_task(run_worker(settings, rpc=TestRpc(net.url)))

        waited = None
        async with asyncio.timeout(15):
            while waited is None and not worker.done():
                event = await latest_progress(redis_client, later)
                if event is not None and "earlier premix" in event.description:
                    waited = event
                await asyncio.sleep(0.02)
        assert waited is not None, "the top-up did not wait for the earlier run's transfer"
        assert waited.phase == 3  # before it read any balance to plan from
        assert user.buyer_balances(net) == [0, 0]
        transaction = VersionedTransaction.from_bytes(base64.b64decode(wire))
        net.chain.send_transaction(transaction, skip_preflight=True)  # the earlier copy lands
        assert await asyncio.wait_for(worker, 30)

        result = (await job_result(settings, later)).result
        assert result["message"] == (
            "Top-up of 1 SOL: all 2 wallets already hold their planned amounts; nothing was sent"
        )
        assert user.buyer_balances(net) == plan  # paid once, by the earlier premix
        assert net.balance(user.funding.pubkey()) == user.funding_lamports - SOL - FEE


@pytest.mark.parametrize("held", ["all", "some"])
async def test_redelivery_of_a_completed_top_up_sends_nothing_and_reports_the_same(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet, held: str
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    plan = user.plan(2 * SOL)
    for buyer, lamports in zip(user.buyers, plan if held == "all" else plan[:2], strict=False):
        net.airdrop(buyer.pubkey(), lamports)
    queued = await enqueue_premix_funds("u1", 42, 2, {"topUp": True}, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    assert await run_worker(settings, notifier=DiesWhenNotifying(settings)) is False
    run = await Ledger(store).require(job_id)
    assert run.status is RunStatus.COMPLETED
    funding_after = net.balance(user.funding.pubkey())
    sends_before = net.stats.calls["sendTransaction"]

    await expire_in_progress_marker(redis_client, job_id)
    notifier = RecordingNotifier(settings)
    await run_worker(settings, notifier=notifier)

    assert net.stats.calls["sendTransaction"] == sends_before
    assert net.balance(user.funding.pubkey()) == funding_after
    assert user.buyer_balances(net) == plan
    info = await job_result(settings, job_id)
    assert (info.result["success"], info.job_try) == (True, 2)
    sent = [0, 0, 0, 0] if held == "all" else [0, 0, plan[2], plan[3]]
    assert [w["sentLamports"] for w in info.result["wallets"]] == sent
    assert [w["plannedLamports"] for w in info.result["wallets"]] == plan
    assert info.result["message"].startswith("Top-up of 2 SOL")
    assert [n["top_up"] for n in notifier.completed] == [info.result["message"]]
    assert await Ledger(store).require(job_id) == run  # nothing written again
