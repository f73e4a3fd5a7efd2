"""`cancel_premix`: a queued premix is taken out of the queue (nothing sent, the user free at
once); a running one stops at its next safe point (standard: after the transfer in flight,
fast: after the round, earlier: at the next phase boundary) and reports exactly what landed,
asserted per wallet on the chain; a finished one is left alone; a cancelled run may be retried
and then funds only the rest, once. On both stores."""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms
from pydantic import SecretStr
from redis.asyncio import Redis
from solders.pubkey import Pubkey

from premix import execution
from premix.amounts import format_sol
from premix.cancellation import CancelResult, cancel_request_key
from premix.ledger import Ledger, RunStatus
from premix.localnet import Localnet
from premix.mixer import Payout
from premix.progress import ProgressStatus, latest_progress
from premix.queue import cancel_premix, enqueue_premix_funds, get_premix_result, retry_premix
from premix.rpc import AccountInfo, SendResult
from premix.settings import Settings
from premix.store import Store
from premix.user_lock import user_lock_holder
from tests.worker.helpers import (
    BOT_TOKEN,
    TestRpc,
    User,
    assert_paid_exactly_once,
    collect_events,
    create_user,
    expire_in_progress_marker,
    fake_telegram,
    job_result,
    run_worker,
)

SOL = 10**9
FEE = 5_000


class CancellingRpc(TestRpc):
    """`TestRpc` that awaits `action` right after the `at`-th call of `method` reached the
    node, in the worker's own event loop: a cancel arriving at a known moment of the run."""

    __test__ = False

    def __init__(
        self, url: str, method: str, at: int, action: Callable[[], Awaitable[Any]]
    ) -> None:
        super().__init__(url)
        self.method, self.at, self.action = method, at, action
        self.outcomes: list[Any] = []

    async def _maybe_act(self, method: str) -> None:
        if method == self.method and self.seen.get(method) == self.at:
            self.outcomes.append(await self.action())

    async def send_raw(self, wire: bytes) -> SendResult:
        result = await super().send_raw(wire)
        await self._maybe_act("send")
        return result

    async def balance(self, pubkey: Pubkey, *, min_context_slot: int | None = None) -> int:
        result = await super().balance(pubkey, min_context_slot=min_context_slot)
        await self._maybe_act("balance")
        return result

    async def accounts(
        self, pubkeys: Sequence[Pubkey], *, min_context_slot: int | None = None
    ) -> list[AccountInfo | None]:
        result = await super().accounts(pubkeys, min_context_slot=min_context_slot)
        self.seen["accounts"] = self.seen.get("accounts", 0) + 1
        await self._maybe_act("accounts")
        return result


def cancelling(settings: Settings, net: Localnet, job_id: str, method: str, at: int) -> Any:
    return CancellingRpc(net.url, method, at, lambda: cancel_premix(job_id, settings=settings))


def cancelled_message(plan: list[int], funded: int, transactions: int) -> str:
    return (
        f"Premix cancelled: sent {format_sol(sum(plan[:funded]))} to {funded} of {len(plan)} "
        f"wallets in {transactions} transaction(s), fees {format_sol(FEE * transactions)}; "
        f"{len(plan) - funded} wallets were not funded"
    )


async def assert_cancelled_after(
    settings: Settings,
    store: Store,
    redis: Redis,
    net: Localnet,
    user: User,
    job_id: str,
    plan: list[int],
    funded: int,
    transactions: int,
    message: str,
) -> None:
    """On chain exactly the first `funded` wallets got their amounts, the rest nothing; the
    funding wallet paid exactly that plus the fees; the result, the ledger, the receipt and
    the final event say so; the user is free."""
    expected = plan[:funded] + [0] * (len(user.buyers) - funded)
    assert user.buyer_balances(net) == expected
    sent = sum(plan[:funded])
    assert net.balance(user.funding.pubkey()) == user.funding_lamports - sent - FEE * transactions
    result = (await job_result(settings, job_id)).result
    assert (result["success"], result["status"], result["message"]) == (False, "cancelled", message)
    assert result["totals"]["sentLamports"] == sent
    assert result["totals"]["walletsFunded"] == funded
    assert [w["funded"] for w in result["wallets"]] == [i < funded for i in range(len(plan))]
    run = await Ledger(store).get(job_id)
    assert run is not None
    assert (run.status, run.error) == (RunStatus.CANCELLED, message)
    assert (run.totals.sent_lamports, run.totals.fee_lamports) == (sent, FEE * transactions)
    receipt = await get_premix_result(job_id, settings=settings)
    assert receipt is not None
    assert (receipt["status"], receipt["success"], receipt["message"]) == (
        "cancelled",
        False,
        message,
    )
    assert [w["lamports"] if w["status"] == "funded" else 0 for w in receipt["wallets"]] == (
        expected[: len(plan)]
    )
    latest = await latest_progress(redis, job_id)
    assert latest is not None
    assert (latest.status, latest.description) == (ProgressStatus.CANCELLED, message)
    assert await user_lock_holder(redis, user.user_id) is None
    assert await redis.zcard(settings.queue_name) == 0


async def test_a_queued_premix_is_removed_and_nothing_is_sent(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    events = await collect_events(redis_client, job_id)

    cancelled = await cancel_premix(job_id, settings=settings)

    message = "Premix cancelled before it started: nothing was sent"
    assert cancelled == CancelResult(True, message, "cancelled")
    assert await redis_client.zcard(settings.queue_name) == 0
    assert not await redis_client.exists(job_key_prefix + job_id)
    assert await user_lock_holder(redis_client, "u1") is None
    [event] = await events.wait()
    assert (event.status, event.description, event.is_terminal) == (
        ProgressStatus.CANCELLED,
        message,
        True,
    )
    receipt = await get_premix_result(job_id, settings=settings)
    assert receipt is not None
    assert (receipt["status"], receipt["success"], receipt["message"]) == (
        "cancelled",
        False,
        message,
    )
    assert receipt["wallets"] == [] and receipt["userId"] == "u1"

    await run_worker(settings)  # nothing left to run
    assert net.balance(user.funding.pubkey()) == user.funding_lamports
    assert user.buyer_balances(net) == [0] * 4
    assert await Ledger(store).get(job_id) is None
    latest = await latest_progress(redis_client, job_id)
    assert latest is not None and latest.status is ProgressStatus.CANCELLED
    again = await cancel_premix(job_id, settings=settings)
    assert again == CancelResult(
        False, f"Premix {job_id} already cancelled; nothing was cancelled", "cancelled"
    )
    # the user is free at once
    assert (await enqueue_premix_funds("u1", 42, 2, settings=settings)).success is True


async def test_a_deferred_premix_is_removed_too(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    # as arq leaves a job it deferred (the user-busy defer, a retry's backoff): its try counted,
    # its queue entry due later, no in-progress key
    user = await create_user(store, net, "u1", buyers=2)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    await redis_client.zadd(settings.queue_name, {job_id: timestamp_ms() + 60_000})
    await redis_client.incr(retry_key_prefix + job_id)

    cancelled = await cancel_premix(job_id, settings=settings)

    assert (cancelled.success, cancelled.state) == (True, "cancelled")
    assert await redis_client.zcard(settings.queue_name) == 0
    assert not await redis_client.exists(job_key_prefix + job_id, retry_key_prefix + job_id)
    assert await user_lock_holder(redis_client, "u1") is None
    assert net.balance(user.funding.pubkey()) == user.funding_lamports


async def test_a_cancel_as_arq_picks_the_job_up_stops_it_before_phase_two(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=3)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    # arq has marked it in progress: the script asks the execution to stop instead
    await redis_client.set(in_progress_key_prefix + job_id, b"1", px=60_000)
    cancelled = await cancel_premix(job_id, settings=settings)
    assert (cancelled.success, cancelled.state) == (True, "cancelling")
    assert "next safe point" in cancelled.message
    assert await redis_client.exists(cancel_request_key(job_id))
    await redis_client.delete(in_progress_key_prefix + job_id)

    await run_worker(settings)

    message = "Premix cancelled: nothing was sent"
    await assert_cancelled_after(
        settings, store, redis_client, net, user, job_id, [], 0, 0, message
    )
    latest = await latest_progress(redis_client, job_id)
    assert latest is not None and latest.phase == 1


async def test_standard_mode_cancelled_mid_payout_stops_after_the_transfer_in_flight(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=8)
    queued = await enqueue_premix_funds("u1", 42, 3, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    plan = user.plan(3 * SOL)
    assert len(plan) == 6
    rpc = cancelling(settings, net, job_id, "send", 3)  # the third transfer is in flight

    with fake_telegram() as telegram:
        told = {"telegram_api_url": telegram.url, "telegram_bot_token": SecretStr(BOT_TOKEN)}
        await run_worker(settings.model_copy(update=told), rpc=rpc)

    [answer] = rpc.outcomes
    assert (answer.success, answer.state) == (True, "cancelling")
    assert telegram.texts == [
        f"⏹ Premix cancelled\nS{cancelled_message(plan, 3, 3).removeprefix('Premix cancelled: s')}"
        f".\nJob {job_id}"
    ]
    await assert_cancelled_after(
        settings,
        store,
        redis_client,
        net,
        user,
        job_id,
        plan,
        3,
        3,
        cancelled_message(plan, 3, 3),
    )


async def test_fast_mode_cancelled_stops_after_the_round_in_flight(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=73)
    queued = await enqueue_premix_funds("u1", 42, 80, {"mode": "fast"}, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    plan = user.plan(80 * SOL)
    assert len(plan) > 63  # four transactions of at most 21 transfers
    # one of the round's four transactions never lands (its first send and every rebroadcast
    # are dropped) and expires: without the cancel, a second round would re-sign it
    net.faults.inject("drop_send", method="sendTransaction", count=1)

    async def cancel_and_drop_rebroadcasts() -> Any:
        net.faults.inject("drop_send", method="sendTransaction")
        return await cancel_premix(job_id, settings=settings)

    rpc = CancellingRpc(net.url, "send", 4, cancel_and_drop_rebroadcasts)

    await run_worker(settings, rpc=rpc)

    run = await Ledger(store).get(job_id)
    assert run is not None
    landed = [tx for tx in run.transactions if tx.state.value == "landed_ok"]
    funded = sorted(p for tx in landed for p in tx.transfers)
    assert len(landed) == 3 and len(funded) < len(plan)
    assert rpc.seen["send"] == 4  # the round's four, nothing re-signed after the cancel
    balances = user.buyer_balances(net)
    assert balances == [plan[p] if p in funded else 0 for p in range(len(plan))] + [0] * (
        73 - len(plan)
    )
    sent = sum(plan[p] for p in funded)
    assert net.balance(user.funding.pubkey()) == user.funding_lamports - sent - 3 * FEE
    message = (
        f"Premix cancelled: sent {format_sol(sent)} to {len(funded)} of {len(plan)} wallets in 3 "
        f"transaction(s), fees {format_sol(3 * FEE)}; {len(plan) - len(funded)} wallets were "
        "not funded"
    )
    result = (await job_result(settings, job_id)).result
    assert (result["success"], result["status"], result["message"]) == (False, "cancelled", message)
    assert (run.status, run.totals.sent_lamports) == (RunStatus.CANCELLED, sent)
    assert await user_lock_holder(redis_client, "u1") is None


async def test_a_cancel_in_phase_three_stops_at_phase_four_and_sends_nothing(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    rpc = cancelling(settings, net, job_id, "accounts", 1)  # phase 3 checks the recipients

    await run_worker(settings, rpc=rpc)

    plan = user.plan(SOL)
    message = "Premix cancelled: nothing was sent"
    await assert_cancelled_after(
        settings, store, redis_client, net, user, job_id, plan, 0, 0, message
    )
    latest = await latest_progress(redis_client, job_id)
    assert latest is not None and latest.phase == 3
    assert rpc.seen.get("balance", 0) == 0  # phase 4 never began


async def test_a_cancel_in_phase_four_signs_nothing(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    rpc = cancelling(settings, net, job_id, "balance", 1)  # the funding balance check

    await run_worker(settings, rpc=rpc)

    message = "Premix cancelled: nothing was sent"
    await assert_cancelled_after(
        settings, store, redis_client, net, user, job_id, user.plan(SOL), 0, 0, message
    )
    assert rpc.seen.get("send", 0) == 0


async def test_a_cancel_during_the_last_transfer_is_too_late_the_premix_completes(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=3)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    plan = user.plan(SOL)
    rpc = cancelling(settings, net, job_id, "send", len(plan))

    await run_worker(settings, rpc=rpc)

    [answer] = rpc.outcomes
    assert answer.state == "cancelling"
    assert (await job_result(settings, job_id)).result["success"] is True
    await assert_paid_exactly_once(store, net, user, job_id, SOL, len(plan))
    latest = await latest_progress(redis_client, job_id)
    assert latest is not None and latest.status is ProgressStatus.COMPLETED


async def test_a_finished_premix_is_not_changed(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=2)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    await run_worker(settings)

    answer = await cancel_premix(job_id, settings=settings)

    assert answer == CancelResult(
        False, f"Premix {job_id} already completed; nothing was cancelled", "completed"
    )
    await assert_paid_exactly_once(store, net, user, job_id, SOL, len(user.plan(SOL)))
    unknown = await cancel_premix("premix-u1-123", settings=settings)
    assert (unknown.success, unknown.state) == (False, "unknown")
    assert unknown.message == (
        "Unknown premix premix-u1-123: no queued, running or finished job has that id; "
        "nothing was cancelled"
    )
    invalid = await cancel_premix("job 1", settings=settings)
    assert invalid == CancelResult(
        False,
        "Invalid job id: expected premix-<userId>-<unix ms>; nothing was cancelled",
        "invalid",
    )


async def test_a_failed_premix_is_not_changed(
    settings: Settings, store: Store, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=2, funding_lamports=SOL // 10)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    await run_worker(settings)

    answer = await cancel_premix(job_id, settings=settings)

    assert answer == CancelResult(
        False, f"Premix {job_id} already failed; nothing was cancelled", "failed"
    )


async def test_cancel_with_redis_unreachable_says_so_and_never_raises(
    settings: Settings, unreachable_redis_url: str
) -> None:
    down = settings.model_copy(update={"redis_url": unreachable_redis_url})
    answer = await cancel_premix("premix-u1-1", settings=down)
    assert answer == CancelResult(
        False, "Cancel unavailable: could not reach Redis; nothing was cancelled", "unavailable"
    )


async def test_a_cancel_under_rpc_faults_stops_with_exact_accounting(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=8)
    queued = await enqueue_premix_funds("u1", 42, 3, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    plan = user.plan(3 * SOL)
    net.faults.inject("drop_send", method="sendTransaction", count=1)
    net.faults.inject("lose_response", method="sendTransaction", count=2)
    net.faults.inject("no_history")
    rpc = cancelling(settings, net, job_id, "send", 3)

    await run_worker(settings, rpc=rpc)
    net.faults.clear()

    run = await Ledger(store).get(job_id)
    assert run is not None
    assert run.status is RunStatus.CANCELLED and not run.open_attempts()
    funded = sorted(run.funded_positions())
    assert 0 < len(funded) < len(plan)
    assert funded == list(range(len(funded)))  # standard mode: in order, nothing skipped
    balances = user.buyer_balances(net)
    assert balances == [plan[p] if p in funded else 0 for p in range(len(user.buyers))]
    landed = run.totals.transactions
    assert landed == len(funded)
    sent = sum(plan[p] for p in funded)
    assert net.balance(user.funding.pubkey()) == user.funding_lamports - sent - FEE * landed
    result = (await job_result(settings, job_id)).result
    assert result["message"] == cancelled_message(plan, len(funded), landed)
    assert result["totals"]["sentLamports"] == sent


async def test_a_cancelled_run_retried_funds_the_rest_exactly_once(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=6)
    queued = await enqueue_premix_funds("u1", 42, 3, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    plan = user.plan(3 * SOL)
    await run_worker(settings, rpc=cancelling(settings, net, job_id, "send", 2))
    run = await Ledger(store).get(job_id)
    assert run is not None and run.status is RunStatus.CANCELLED
    assert len(run.funded_positions()) == 2

    # a retry cancelled while queued leaves the run as it was
    dropped = await retry_premix(job_id, settings=settings)
    assert dropped.job_id is not None
    assert await cancel_premix(dropped.job_id, settings=settings) == CancelResult(
        True,
        f"Premix cancelled before it started: nothing more was sent for {job_id}",
        "cancelled",
    )
    unchanged = await Ledger(store).get(job_id)
    assert unchanged is not None and unchanged.status is RunStatus.CANCELLED
    assert unchanged.totals == run.totals

    retried = await retry_premix(job_id, settings=settings)

    assert retried.success is True, retried.message
    assert retried.message.endswith(
        f"{len(plan) - 2} of {len(plan)} wallet(s) still to fund "
        f"({format_sol(sum(plan[2:]))}); the 2 funded are not paid again"
    )
    await run_worker(settings)
    assert retried.job_id is not None
    assert (await job_result(settings, retried.job_id)).result["success"] is True
    await assert_paid_exactly_once(store, net, user, job_id, 3 * SOL, len(plan))


async def test_a_cancel_after_the_worker_died_mid_send_settles_what_it_sent_and_pays_nothing_twice(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=6)
    queued = await enqueue_premix_funds("u1", 42, 3, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    plan = user.plan(3 * SOL)
    # the worker dies right after its second send reached the node: that transfer is open
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send", kill_at=2)) is False
    await expire_in_progress_marker(redis_client, job_id)  # queued again, its run open

    answer = await cancel_premix(job_id, settings=settings)

    # only a worker can settle the open transfer: the job is made due and stops there
    assert (answer.success, answer.state) == (True, "cancelling")
    await run_worker(settings)
    await assert_cancelled_after(
        settings,
        store,
        redis_client,
        net,
        user,
        job_id,
        plan,
        2,
        2,
        cancelled_message(plan, 2, 2),
    )


async def test_a_cancel_while_a_dead_workers_job_is_in_progress_stops_its_rerun(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=6)
    queued = await enqueue_premix_funds("u1", 42, 3, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    plan = user.plan(3 * SOL)
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send", kill_at=3)) is False

    answer = await cancel_premix(job_id, settings=settings)  # arq still holds it in progress

    assert (answer.success, answer.state) == (True, "cancelling")
    await expire_in_progress_marker(redis_client, job_id)
    await run_worker(settings)
    await assert_cancelled_after(
        settings,
        store,
        redis_client,
        net,
        user,
        job_id,
        plan,
        3,
        3,
        cancelled_message(plan, 3, 3),
    )


async def test_cancels_racing_a_running_worker_leave_every_report_equal_to_the_chain(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    users = [await create_user(store, net, f"u{i}", buyers=4) for i in range(5)]
    job_ids = []
    for user in users:
        queued = await enqueue_premix_funds(user.user_id, 42, 2, settings=settings)
        assert queued.job_id is not None
        job_ids.append(queued.job_id)
    worker = asyncio.create_task(run_worker(settings))
    answers: dict[str, CancelResult] = {}
    for index in (0, 4, 3, 1, 2):  # the first while it runs, later ones mostly still queued
        await asyncio.sleep(0.02)
        answers[job_ids[index]] = await cancel_premix(job_ids[index], settings=settings)
    await asyncio.wait_for(worker, 60)

    assert all(answer.success for answer in answers.values()), answers
    for user, job_id in zip(users, job_ids, strict=True):
        answer = answers[job_id]
        receipt = await get_premix_result(job_id, settings=settings)
        assert receipt is not None
        balances = user.buyer_balances(net)
        funded = [w["lamports"] for w in receipt["wallets"] if w["status"] == "funded"]
        assert balances == funded + [0] * (4 - len(funded))
        landed = receipt["totals"]["transactions"]
        assert net.balance(user.funding.pubkey()) == (
            user.funding_lamports - sum(funded) - FEE * landed
        )
        if answer.state == "cancelled":  # taken out of the queue: never ran
            assert funded == [] and await Ledger(store).get(job_id) is None
        assert receipt["status"] in ("cancelled", "completed")
        latest = await latest_progress(redis_client, job_id)
        assert latest is not None and latest.is_terminal
        assert await user_lock_holder(redis_client, user.user_id) is None
    assert await redis_client.zcard(settings.queue_name) == 0


async def test_a_job_queued_again_with_nothing_open_is_removed_and_its_run_marked_cancelled(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=6)
    queued = await enqueue_premix_funds("u1", 42, 3, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    plan = user.plan(3 * SOL)
    # the worker dies as it checks the first transfer's recipient: that transfer is settled
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="balance", kill_at=2)) is False
    await expire_in_progress_marker(redis_client, job_id)  # queued again, nothing open
    events = await collect_events(redis_client, job_id)

    answer = await cancel_premix(job_id, settings=settings)

    message = cancelled_message(plan, 1, 1)
    assert answer == CancelResult(True, message, "cancelled")
    [*_, last] = await events.wait()
    assert (last.status, last.description) == (ProgressStatus.CANCELLED, message)
    assert last.details == {"sentLamports": plan[0], "walletsFunded": 1}
    await run_worker(settings)  # nothing left to run
    assert user.buyer_balances(net) == plan[:1] + [0] * 5
    assert net.balance(user.funding.pubkey()) == user.funding_lamports - plan[0] - FEE
    run = await Ledger(store).get(job_id)
    assert run is not None and (run.status, run.error) == (RunStatus.CANCELLED, message)
    receipt = await get_premix_result(job_id, settings=settings)
    assert receipt is not None
    assert (receipt["status"], receipt["message"]) == ("cancelled", message)
    assert await user_lock_holder(redis_client, "u1") is None


async def test_a_cancel_in_phase_two_stops_at_phase_three_and_reads_nothing_on_chain(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    net: Localnet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = await create_user(store, net, "u1", buyers=4)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    answers: list[CancelResult] = []
    real_load_wallets = execution.load_wallets

    async def cancelled_while_loading(*args: Any) -> Any:  # phase 2: the wallets are read
        answers.append(await cancel_premix(job_id, settings=settings))
        return await real_load_wallets(*args)

    monkeypatch.setattr(execution, "load_wallets", cancelled_while_loading)
    rpc = TestRpc(net.url)

    await run_worker(settings, rpc=rpc)

    [answer] = answers
    assert (answer.success, answer.state) == (True, "cancelling")
    await assert_cancelled_after(
        settings, store, redis_client, net, user, job_id, [], 0, 0,
        "Premix cancelled: nothing was sent",
    )  # fmt: skip
    latest = await latest_progress(redis_client, job_id)
    assert latest is not None and latest.phase == 2
    assert rpc.seen.get("accounts", 0) == 0  # phase 3 never read the recipients


async def test_a_cancel_in_phase_six_is_too_late_the_premix_completes(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    net: Localnet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = await create_user(store, net, "u1", buyers=3)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    answers: list[CancelResult] = []
    real_verify = Payout.verify

    async def cancelled_while_verifying(payout: Payout) -> list[int]:  # phase 6
        answers.append(await cancel_premix(job_id, settings=settings))
        return await real_verify(payout)

    monkeypatch.setattr(Payout, "verify", cancelled_while_verifying)

    await run_worker(settings)

    [answer] = answers
    assert answer.state == "cancelling"  # asked in time for no safe point: every transfer landed
    assert (await job_result(settings, job_id)).result["success"] is True
    await assert_paid_exactly_once(store, net, user, job_id, SOL, len(user.plan(SOL)))
    latest = await latest_progress(redis_client, job_id)
    assert latest is not None and latest.status is ProgressStatus.COMPLETED
