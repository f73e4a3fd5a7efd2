"""Sweeps (SPEC section 13): a real arq worker moves the buyer wallets' SOL straight back to the
funding wallet, packed into the fewest transactions that fit; every assertion is on the chain."""

import base64
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction

from premix.constants import QUEUE_NAME, RUNS_COLLECTION
from premix.ledger import Ledger, RunRecord, RunStatus
from premix.localnet import Localnet
from premix.metrics import REGISTRY
from premix.mixer.packing import PACKET_DATA_SIZE, FeePolicy
from premix.mixer.sweep_packing import pack_sweep, sweep_size
from premix.queue import cancel_premix, enqueue_premix_funds, enqueue_sweep, get_premix_result
from premix.settings import Settings
from premix.store import Store
from premix.user_lock import user_lock_holder
from tests.worker.helpers import (
    BOT_TOKEN,
    FakeTelegram,
    TestRpc,
    User,
    collect_events,
    create_user,
    drain,
    expire_in_progress_marker,
    fake_telegram,
    job_result,
    run_worker,
)
from tests.worker.test_worker_cancel import CancellingRpc

METRICS = (
    "premix_lamports_swept_total",
    "premix_lamports_sent_total",
    "premix_fees_lamports_total",
)
SOL = 10**9
RENT_EXEMPT = 890_880


async def premix(settings: Settings, user_id: str, sol: int) -> str:
    queued = await enqueue_premix_funds(user_id, 42, sol, {"mode": "fast"}, settings=settings)
    assert queued.job_id is not None, queued.message
    assert await run_worker(settings)
    return queued.job_id


async def sweep(settings: Settings, user_id: str, options: dict[str, Any] | None = None) -> str:
    queued = await enqueue_sweep(user_id, 42, options, settings=settings)
    assert queued.success and queued.job_id is not None, queued.message
    return queued.job_id


def with_telegram(settings: Settings, telegram: FakeTelegram) -> Settings:
    return settings.model_copy(
        update={"telegram_api_url": telegram.url, "telegram_bot_token": SecretStr(BOT_TOKEN)}
    )


def sweep_fees(groups: list[list[int]]) -> int:
    """5,000 lamports per signature: the funding wallet's and one per buyer wallet."""
    return sum(5_000 * (1 + len(group)) for group in groups)


def holding(user: User, net: Localnet) -> list[list[int]]:
    """The packing of the user's buyer wallets that hold anything (what a sweep moves)."""
    held = [(b.pubkey(), lamports) for b in user.buyers if (lamports := net.balance(b.pubkey()))]
    return pack_sweep(user.funding.pubkey(), held)


async def completed_sweep(store: Store, job_id: str) -> RunRecord:
    run = await Ledger(store).get(job_id)
    assert run is not None
    assert (run.kind, run.status) == ("sweep", RunStatus.COMPLETED)
    return run


def assert_packed_tightly(run: RunRecord, funding: Pubkey) -> None:
    """Every transaction fits one packet and all but the last could not take one more
    transfer; there are as few as the transfers need."""
    sizes = []
    for tx in run.transactions:
        [attempt] = tx.attempts
        wire = base64.b64decode(attempt.wire)
        signed = Transaction.from_bytes(wire)
        assert len(signed.signatures) == 1 + len(tx.transfers)  # every buyer wallet signs
        assert signed.message.account_keys[0] == funding  # the fee payer
        sizes.append(len(wire))
        transfers = [
            (Pubkey.from_string(run.plan[p].watched), run.plan[p].lamports) for p in tx.transfers
        ]
        assert sweep_size(funding, transfers, FeePolicy()) == len(wire)
        if tx is not run.transactions[-1]:
            one_more = [*transfers, (Pubkey.new_unique(), 1)]
            assert sweep_size(funding, one_more, FeePolicy()) > PACKET_DATA_SIZE
    assert all(size <= PACKET_DATA_SIZE for size in sizes)


async def test_a_sweep_after_a_premix_empties_73_wallets_in_9_transactions(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1")
    await premix(settings, "u1", 85)  # the default tiers' caps: every one of the 73 wallets
    held = user.buyer_balances(net)
    assert sum(held) == 85 * SOL and all(held)
    funding_before = net.balance(user.funding.pubkey())
    counted = {name: REGISTRY.get_sample_value(name) or 0.0 for name in METRICS}

    job_id = await sweep(settings, "u1")
    events = await collect_events(redis_client, job_id)
    assert await run_worker(settings)
    moved = {name: (REGISTRY.get_sample_value(name) or 0.0) - counted[name] for name in METRICS}

    assert user.buyer_balances(net) == [0] * 73  # emptied to exactly zero
    groups = pack_sweep(user.funding.pubkey(), [(b.pubkey(), 1) for b in user.buyers])
    assert [len(g) for g in groups] == [9] * 8 + [1]
    fees = sweep_fees(groups)
    assert fees == 8 * 50_000 + 10_000
    assert net.balance(user.funding.pubkey()) == funding_before + 85 * SOL - fees
    # the metrics count a sweep's lamports as swept, never as sent (premix_lamports_sent_total)
    assert moved == {
        "premix_lamports_swept_total": 85 * SOL,
        "premix_lamports_sent_total": 0,
        "premix_fees_lamports_total": fees,
    }
    run = await completed_sweep(store, job_id)
    assert (run.totals.sent_lamports, run.totals.fee_lamports) == (85 * SOL, fees)
    assert len(run.transactions) == 9 == run.totals.transactions
    assert all(e.recipient == str(user.funding.pubkey()) for e in run.plan)
    assert [e.source for e in run.plan] == [str(b.pubkey()) for b in user.buyers]
    assert_packed_tightly(run, user.funding.pubkey())

    result = (await job_result(settings, job_id)).result
    assert result["success"] is True and result["kind"] == "sweep"
    assert [w["publicKey"] for w in result["wallets"]] == [str(b.pubkey()) for b in user.buyers]
    assert [w["lamports"] for w in result["wallets"]] == held
    assert {w["status"] for w in result["wallets"]} == {"funded"}
    assert all(w["balanceLamports"] == 0 for w in result["wallets"])
    assert result["totals"]["sentLamports"] == 85 * SOL
    assert result["totals"]["feeLamports"] == fees
    assert result["totals"]["fundingGainedLamports"] == 85 * SOL - fees
    assert result["totals"]["transactions"] == 9
    assert "Sweep complete: moved 85 SOL from 73 wallet(s)" in result["message"]

    receipt = await get_premix_result(job_id, settings)
    assert receipt is not None and (receipt["kind"], receipt["status"]) == ("sweep", "completed")
    assert receipt["amountLamports"] == 85 * SOL
    assert [(w["publicKey"], w["lamports"], w["status"]) for w in receipt["wallets"]] == [
        (str(b.pubkey()), lamports, "funded") for b, lamports in zip(user.buyers, held, strict=True)
    ]
    assert receipt["totals"]["feeLamports"] == fees

    seen = await events.wait()
    assert [e.phase for e in seen if e.status != "in_progress" or e.phase != 5][:1] == [1]
    assert {e.job_type for e in seen} == {"sweep"}
    assert seen[-1].status == "completed" and seen[-1].percent == 100
    assert sorted({e.phase for e in seen}) == [1, 2, 3, 4, 5, 6]
    assert await user_lock_holder(redis_client, "u1") is None


async def test_keep_sol_leaves_exactly_keep_and_skips_wallets_holding_no_more(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=5)
    keep = 2_000_000  # 0.002 SOL, above the rent-exempt minimum
    airdrops = [SOL, keep, RENT_EXEMPT, 0, 3 * keep + 7]
    for buyer, lamports in zip(user.buyers, airdrops, strict=True):
        if lamports:
            net.airdrop(buyer.pubkey(), lamports)
    funding_before = net.balance(user.funding.pubkey())

    job_id = await sweep(settings, "u1", {"keepSol": "0.002"})
    with fake_telegram() as telegram:
        assert await run_worker(with_telegram(settings, telegram))
    [text] = telegram.texts
    assert text.startswith("✅ Sweep complete\nMoved 1.002000007 SOL from 2 wallet(s) to")
    assert text.endswith(f"3 wallet(s) skipped (holding no more than 0.002 SOL).\nJob {job_id}")

    assert user.buyer_balances(net) == [keep, keep, RENT_EXEMPT, 0, keep]
    moved = (SOL - keep) + (2 * keep + 7)
    fees = 5_000 * 3  # one transaction: the funding wallet and two buyer wallets sign
    assert net.balance(user.funding.pubkey()) == funding_before + moved - fees
    run = await completed_sweep(store, job_id)
    assert [e.source for e in run.plan] == [
        str(user.buyers[0].pubkey()),
        str(user.buyers[4].pubkey()),
    ]
    result = (await job_result(settings, job_id)).result
    assert result["keepLamports"] == keep
    assert "3 wallet(s) skipped" in result["message"]


async def test_keep_sol_below_rent_exempt_is_refused_at_enqueue(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    for keep in ("0.0005", "0.00089087", 1e-9):
        queued = await enqueue_sweep("u1", 42, {"keep_sol": keep}, settings=settings)
        assert queued.success is False and queued.job_id is None
        assert "rent-exempt minimum of 0.00089088 SOL" in queued.message, queued.message
        assert queued.message.startswith("Invalid parameters: keepSol:")
    for bad in (-1, "abc", True, "0.0000000001"):
        queued = await enqueue_sweep("u1", 42, {"keepSol": bad}, settings=settings)
        assert queued.success is False and "keepSol" in queued.message, queued.message
    assert await redis_client.zcard(QUEUE_NAME) == 0
    assert await user_lock_holder(redis_client, "u1") is None
    await create_user(store, None, "u1", buyers=1)
    assert (await enqueue_sweep("u1", 42, {"keepSol": "0.00089088"}, settings=settings)).success


async def test_a_sweep_and_a_premix_of_one_user_never_overlap(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=3)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert queued.job_id is not None
    refused = await enqueue_sweep("u1", 42, settings=settings)
    assert refused.success is False
    assert f"already queued or running for this user (job {queued.job_id})" in refused.message
    assert await run_worker(settings)

    swept = await sweep(settings, "u1")
    queued_receipt = await get_premix_result(swept, settings)
    assert queued_receipt is not None and queued_receipt["status"] == "queued"
    refused = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert refused.success is False and swept in refused.message
    assert (await enqueue_sweep("u1", 42, settings=settings)).success is False
    assert await run_worker(settings)
    assert (await job_result(settings, swept)).result["success"] is True
    assert (await enqueue_premix_funds("u1", 42, 1, settings=settings)).success


async def test_a_sweep_killed_after_its_send_moves_nothing_twice(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=40)
    await premix(settings, "u1", 20)
    groups = holding(user, net)
    assert len(groups) >= 3
    funding_before = net.balance(user.funding.pubkey())
    job_id = await sweep(settings, "u1")
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send", kill_at=2)) is False
    assert await user_lock_holder(redis_client, "u1") == job_id  # still held: no premix now
    assert (await enqueue_premix_funds("u1", 42, 1, settings=settings)).success is False
    await expire_in_progress_marker(redis_client, job_id)
    assert await run_worker(settings, rpc=TestRpc(net.url))

    assert (await job_result(settings, job_id)).result["success"] is True
    assert user.buyer_balances(net) == [0] * 40
    fees = sweep_fees(groups)
    assert net.balance(user.funding.pubkey()) == funding_before + 20 * SOL - fees
    run = await completed_sweep(store, job_id)
    assert [len(tx.attempts) for tx in run.transactions] == [1] * len(groups)  # none re-signed
    assert run.totals.fee_lamports == fees
    assert await store.collection(RUNS_COLLECTION).count_documents({}) == 2


async def test_a_sweep_under_localnet_faults_is_still_exact(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=40)
    await premix(settings, "u1", 20)
    groups = holding(user, net)
    funding_before = net.balance(user.funding.pubkey())
    job_id = await sweep(settings, "u1")
    net.faults.inject("drop_send", count=1)
    net.faults.inject("lose_response", method="sendTransaction", count=1)
    net.faults.inject("stale_read", probability=0.3, slots=3)
    net.faults.inject("no_history", probability=0.5)
    try:
        assert await run_worker(settings)
    finally:
        net.faults.clear()

    assert (await job_result(settings, job_id)).result["success"] is True
    assert user.buyer_balances(net) == [0] * 40
    run = await completed_sweep(store, job_id)
    fees = run.totals.fee_lamports
    landed = [a for tx in run.transactions for a in tx.attempts if a.landed]
    assert len(landed) == len(run.transactions) == len(groups)  # each landed exactly once
    assert fees == sweep_fees(groups)
    assert net.balance(user.funding.pubkey()) == funding_before + 20 * SOL - fees


async def test_a_wallet_spent_between_planning_and_sending_fails_its_transaction_on_chain(
    settings: Settings, store: Store, net: Localnet, redis_client: Redis
) -> None:
    user = await create_user(store, net, "u1", buyers=2)
    for buyer in user.buyers:
        net.airdrop(buyer.pubkey(), SOL)
    job_id = await sweep(settings, "u1")
    spent = False

    def spend_first_wallet(method: str, count: int) -> None:
        nonlocal spent
        if method == "latest_blockhash" and not spent:  # planned, not signed yet
            spent = True
            drain(net, user.buyers[0], RENT_EXEMPT)

    funding_before = net.balance(user.funding.pubkey())
    # without preflight, so the node passes it on and it lands failed
    rpc = TestRpc(net.url, on_call=spend_first_wallet, skip_preflight=True)
    with fake_telegram() as telegram:
        assert await run_worker(with_telegram(settings, telegram), rpc=rpc)
    [text] = telegram.texts
    assert text.startswith("❌ Sweep failed\nMixer operation failed: sweep transaction 1 failed")
    assert "Nothing was sent." in text
    result = (await job_result(settings, job_id)).result
    assert result["success"] is False
    assert "failed on chain" in result["message"]
    assert [w["status"] for w in result["wallets"]] == ["failed", "failed"]
    assert user.buyer_balances(net) == [RENT_EXEMPT, SOL]  # nothing moved; not re-planned
    assert net.balance(user.funding.pubkey()) == funding_before - 5_000 * 3  # the fee was paid
    run = await Ledger(store).get(job_id)
    assert run is not None and run.status is RunStatus.FAILED


@pytest.mark.parametrize("priority_fee", [10_000, "auto"])
async def test_a_sweep_with_a_priority_fee_packs_eight_per_transaction_and_charges_it_exactly(
    settings: Settings, store: Store, net: Localnet, priority_fee: int | str
) -> None:
    priced = settings.model_copy(update={"priority_fee": priority_fee})
    user = await create_user(store, net, "u1", buyers=20)
    for buyer in user.buyers:
        net.airdrop(buyer.pubkey(), SOL)
    funding_before = net.balance(user.funding.pubkey())
    job_id = await sweep(priced, "u1")
    assert await run_worker(priced)

    groups = pack_sweep(
        user.funding.pubkey(), [(b.pubkey(), SOL) for b in user.buyers], FeePolicy(1)
    )
    assert [len(g) for g in groups] == [8, 8, 4]
    run = await completed_sweep(store, job_id)
    assert [len(tx.transfers) for tx in run.transactions] == [8, 8, 4]
    for tx in run.transactions:
        [attempt] = tx.attempts
        price = attempt.compute_unit_price
        assert price >= 10_000  # the fixed price, or auto's floor
        policy = FeePolicy(compute_unit_price=price)
        k = len(tx.transfers)
        assert attempt.fee_lamports == 5_000 * (1 + k) + policy.priority_fee_lamports(k)
        assert net.transaction_log[Signature.from_string(attempt.signature)].fee_lamports == (
            attempt.fee_lamports
        )
    fees = run.totals.fee_lamports
    assert user.buyer_balances(net) == [0] * 20
    assert net.balance(user.funding.pubkey()) == funding_before + 20 * SOL - fees


async def test_a_sweep_of_empty_wallets_sends_nothing_and_completes(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=3)
    funding_before = net.balance(user.funding.pubkey())
    job_id = await sweep(settings, "u1")
    assert await run_worker(settings)

    result = (await job_result(settings, job_id)).result
    assert result["success"] is True and result["wallets"] == []
    assert result["totals"]["transactions"] == 0 and result["totals"]["feeLamports"] == 0
    assert "moved 0 SOL from 0 wallet(s)" in result["message"]
    assert "3 wallet(s) skipped" in result["message"]
    assert net.balance(user.funding.pubkey()) == funding_before
    run = await completed_sweep(store, job_id)
    assert (run.plan, run.transactions) == ([], [])


async def test_a_sweep_is_refused_at_enqueue_without_funding_or_buyer_wallets(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    queued = await enqueue_sweep("u1", 42, settings=settings)
    assert queued.success is False and queued.message.startswith("Funding wallet not found")
    await create_user(store, None, "u1", buyers=0)
    queued = await enqueue_sweep("u1", 42, settings=settings)
    assert queued.success is False and queued.message.startswith("No buyer wallets found")
    assert queued.message.endswith("nothing was enqueued")
    assert await redis_client.zcard(QUEUE_NAME) == 0
    assert await user_lock_holder(redis_client, "u1") is None


async def test_a_queued_sweep_is_cancelled_and_nothing_moves(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=3)
    for buyer in user.buyers:
        net.airdrop(buyer.pubkey(), SOL)
    job_id = await sweep(settings, "u1")
    cancelled = await cancel_premix(job_id, settings=settings)
    assert (cancelled.success, cancelled.state) == (True, "cancelled"), cancelled.message
    assert await user_lock_holder(redis_client, "u1") is None
    assert await redis_client.zcard(QUEUE_NAME) == 0
    assert await run_worker(settings)
    assert user.buyer_balances(net) == [SOL] * 3


async def test_a_sweep_cancelled_while_it_plans_stops_before_signing_anything(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=3)
    for buyer in user.buyers:
        net.airdrop(buyer.pubkey(), SOL)
    funding_before = net.balance(user.funding.pubkey())
    job_id = await sweep(settings, "u1")
    rpc = CancellingRpc(net.url, "accounts", 1, lambda: cancel_premix(job_id, settings=settings))
    assert await run_worker(settings, rpc=rpc)

    [answer] = rpc.outcomes
    assert answer.state == "cancelling"
    result = (await job_result(settings, job_id)).result
    assert (result["success"], result["status"]) == (False, "cancelled")
    assert user.buyer_balances(net) == [SOL] * 3
    assert net.balance(user.funding.pubkey()) == funding_before
    run = await Ledger(store).get(job_id)
    assert run is not None and run.status is RunStatus.CANCELLED and run.transactions == []
    assert await user_lock_holder(redis_client, "u1") is None
