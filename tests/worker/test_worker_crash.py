"""A worker that dies mid-run: a new worker runs the same job id (same ledger run) to completion
and nothing is paid twice - every recipient holds exactly its amount and the funding wallet paid
exactly the plan plus the fees of the transactions that landed, one per transaction needed."""

from typing import Any

import pytest
from redis.asyncio import Redis

from premix.constants import USER_LOCK_PREFIX
from premix.ledger import Ledger, RunStatus
from premix.localnet import Localnet
from premix.notify import Notifier
from premix.progress import latest_progress
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from premix.user_lock import user_lock_holder
from tests.worker.helpers import (
    TestRpc,
    WorkerKilled,
    assert_paid_exactly_once,
    collect_events,
    create_user,
    drain,
    expire_in_progress_marker,
    job_result,
    make_settings,
    open_store,
    run_worker,
)

SOL = 10**9
FEE = 5_000


# mode, amount in SOL, where the worker dies (after the n-th call of an RPC method reached the
# node), transactions the run needs, and how many wallets the chain shows funded at death (a
# range where fast mode's concurrent sends may or may not have reached the node).
KILL_POINTS = [
    pytest.param("standard", 2, "balance", 1, 4, (0, 0), id="standard-phase-3-to-4"),
    pytest.param("standard", 2, "latest_blockhash", 1, 4, (0, 0), id="standard-before-first-send"),
    pytest.param("standard", 2, "send", 2, 4, (2, 2), id="standard-after-second-send"),
    pytest.param("standard", 2, "balance", 3, 4, (2, 2), id="standard-after-second-confirm"),
    pytest.param("standard", 2, "balance", 5, 4, (4, 4), id="standard-after-the-last-check"),
    pytest.param("fast", 20, "balance", 1, 2, (0, 0), id="fast-phase-3-to-4"),
    pytest.param("fast", 20, "latest_blockhash", 1, 2, (0, 0), id="fast-after-signing"),
    pytest.param("fast", 20, "send", 1, 2, (21, 31), id="fast-after-first-send"),
]


@pytest.mark.parametrize(
    ("mode", "sol", "kill_on", "kill_at", "transactions", "funded_at_death"), KILL_POINTS
)
async def test_worker_killed_mid_run_does_not_pay_twice(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    net: Localnet,
    mode: str,
    sol: int,
    kill_on: str,
    kill_at: int,
    transactions: int,
    funded_at_death: tuple[int, int],
) -> None:
    user = await create_user(store, net, "u1")
    queued = await enqueue_premix_funds("u1", 42, sol, {"mode": mode}, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    dying = TestRpc(net.url, kill_on=kill_on, kill_at=kill_at)

    assert await run_worker(settings, rpc=dying) is False  # the worker died
    assert dying.seen[kill_on] == kill_at
    funded = sum(1 for balance in user.buyer_balances(net) if balance)
    assert funded_at_death[0] <= funded <= funded_at_death[1]
    assert await user_lock_holder(redis_client, "u1") == job_id  # nothing released it
    # the user still cannot start another premix while this one waits to be run again
    assert (await enqueue_premix_funds("u1", 42, 1, settings=settings)).success is False

    await expire_in_progress_marker(redis_client, job_id)
    events = await collect_events(redis_client, job_id)
    assert await run_worker(settings, rpc=TestRpc(net.url)) is True

    info = await job_result(settings, job_id)
    assert (info.result["success"], info.job_try) == (True, 2)
    await assert_paid_exactly_once(store, net, user, job_id, sol * SOL, transactions)
    received = await events.wait()
    assert received[-1].status == "completed"
    assert "Resuming premix job" in [e.description for e in received if e.phase == 1]
    assert await user_lock_holder(redis_client, "u1") is None


class DiesWhenNotifying(Notifier):
    """The worker dies right after the run completed and its event went out."""

    async def notify_completed(self, chat_id: int, **kwargs: Any) -> bool:
        raise WorkerKilled("while notifying")


class RecordingNotifier(Notifier):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.completed: list[dict[str, Any]] = []

    async def notify_completed(self, chat_id: int, **kwargs: Any) -> bool:
        self.completed.append({"chat_id": chat_id, **kwargs})
        return True


async def test_redelivery_of_a_completed_run_sends_nothing_and_completes(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1")
    queued = await enqueue_premix_funds("u1", 42, 2, {"mode": "fast"}, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    assert await run_worker(settings, notifier=DiesWhenNotifying(settings)) is False
    first_completed = await latest_progress(redis_client, job_id)
    assert first_completed is not None and first_completed.status == "completed"
    sends_before = net.stats.calls["sendTransaction"]

    await expire_in_progress_marker(redis_client, job_id)
    notifier = RecordingNotifier(settings)
    await run_worker(settings, notifier=notifier)

    assert net.stats.calls["sendTransaction"] == sends_before
    info = await job_result(settings, job_id)
    assert (info.result["success"], info.job_try) == (True, 2)
    assert info.result["totals"]["transactions"] == 1
    await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 1)
    assert [n["wallets_funded"] for n in notifier.completed] == [4]  # the user is told once
    again = await latest_progress(redis_client, job_id)
    assert again is not None
    assert (again.phase, again.status) == (6, "completed")
    assert again.sequence == first_completed.sequence + 2  # phase 1 (resuming), then phase 6


async def test_a_job_killed_once_completes_on_its_last_allowed_try(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    settings = make_settings(redis_url, net.url, job_max_tries=2)
    async with open_store(settings) as store:
        user = await create_user(store, net, "u1")
        queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
        job_id = queued.job_id
        assert job_id is not None
        assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send", kill_at=1)) is False
        await expire_in_progress_marker(redis_client, job_id)

        await run_worker(settings, rpc=TestRpc(net.url))

        info = await job_result(settings, job_id)
        assert (info.result["success"], info.job_try) == (True, 2)
        await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)


async def test_a_resumed_run_needs_only_what_was_not_sent_yet(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    # exactly enough for the whole run: 2 SOL, four fees and the 0.01 SOL buffer
    user = await create_user(store, net, "u1", funding_lamports=2 * SOL + 4 * FEE + SOL // 100)
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send", kill_at=2)) is False
    net.advance(5)  # both landed transfers are confirmed: the balance shows them gone
    assert net.balance(user.funding.pubkey()) == SOL + 2 * FEE + SOL // 100

    await expire_in_progress_marker(redis_client, job_id)
    await run_worker(settings, rpc=TestRpc(net.url))

    info = await job_result(settings, job_id)
    assert info.result["success"] is True, info.result["message"]
    await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)
    assert net.balance(user.funding.pubkey()) == SOL // 100


async def test_a_resumed_run_short_of_funds_says_what_is_still_needed_and_what_was_sent(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1")
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send", kill_at=2)) is False
    net.advance(5)
    drain(net, user.funding, keep_lamports=SOL // 2)

    await expire_in_progress_marker(redis_client, job_id)
    await run_worker(settings, rpc=TestRpc(net.url))

    info = await job_result(settings, job_id)
    assert info.job_try == 2
    assert info.result["message"] == (
        "Insufficient funding wallet balance: needed 1.01001 SOL, available 0.5 SOL "
        "(1 SOL to 2 wallet(s) + 0.00001 SOL fees for 2 transaction(s) + 0.01 SOL buffer; "
        "1 SOL already sent)"
    )
    assert [w["status"] for w in info.result["wallets"]] == [
        "funded",
        "funded",
        "not_sent",
        "not_sent",
    ]
    assert info.result["totals"]["sentLamports"] == SOL
    assert user.buyer_balances(net)[:4] == [SOL // 2, SOL // 2, 0, 0]
    assert await user_lock_holder(redis_client, "u1") is None


async def test_a_job_that_keeps_dying_is_failed_with_a_report_after_its_last_try(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    settings = make_settings(redis_url, net.url, job_max_tries=2)
    async with open_store(settings) as store:
        user = await create_user(store, net, "u1")
        queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
        job_id = queued.job_id
        assert job_id is not None
        for _ in range(2):  # each try dies right after sending one more transfer
            assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send")) is False
            await expire_in_progress_marker(redis_client, job_id)
        net.advance(5)
        sends_before = net.stats.calls["sendTransaction"]

        await run_worker(settings, rpc=TestRpc(net.url))

        assert net.stats.calls["sendTransaction"] == sends_before
        info = await job_result(settings, job_id)
        assert info.job_try == 3
        message = (
            "Mixer operation failed: the job stopped 2 time(s) before finishing; it is not run "
            "again. Sent 1 SOL to 2 wallet(s); 2 wallet(s) not funded"
        )
        assert info.result["message"] == message
        assert user.buyer_balances(net)[:4] == [SOL // 2, SOL // 2, 0, 0]
        event = await latest_progress(redis_client, job_id)
        assert event is not None
        assert (event.phase, event.status, event.description) == (5, "failed", message)
        run = await Ledger(store).get(job_id)
        assert run is not None and run.status is RunStatus.FAILED
        assert await user_lock_holder(redis_client, "u1") is None


async def test_a_completed_run_redelivered_after_its_last_try_is_reported_completed(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    # The worker died after the money went out but before the job's end was recorded, on the
    # job's last allowed try: the user must hear "complete", not "failed".
    settings = make_settings(redis_url, net.url, job_max_tries=1)
    async with open_store(settings) as store:
        user = await create_user(store, net, "u1")
        queued = await enqueue_premix_funds("u1", 42, 2, {"mode": "fast"}, settings=settings)
        job_id = queued.job_id
        assert job_id is not None
        assert await run_worker(settings, notifier=DiesWhenNotifying(settings)) is False
        await expire_in_progress_marker(redis_client, job_id)
        sends_before = net.stats.calls["sendTransaction"]
        notifier = RecordingNotifier(settings)

        await run_worker(settings, notifier=notifier)

        assert net.stats.calls["sendTransaction"] == sends_before
        info = await job_result(settings, job_id)
        assert (info.result["success"], info.job_try) == (True, 2)
        assert [n["wallets_funded"] for n in notifier.completed] == [4]
        await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 1)
        assert await user_lock_holder(redis_client, "u1") is None


async def test_a_job_that_never_started_says_nothing_was_sent_after_its_last_try(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    settings = make_settings(redis_url, net.url, job_max_tries=1, user_busy_retry_seconds=0.01)
    async with open_store(settings) as store:
        user = await create_user(store, net, "u1")
        queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
        job_id = queued.job_id
        assert job_id is not None
        # Another premix of the user holds the lock through the job's only try.
        await redis_client.set(USER_LOCK_PREFIX + "u1", "premix-u1-1")

        await run_worker(settings)

        info = await job_result(settings, job_id)
        assert (info.result["success"], info.job_try) == (False, 2)
        assert info.result["message"] == (
            "Premix failed: the job could not start in 1 try (another premix of this user "
            "was running, or its worker stopped); nothing was sent"
        )
        assert user.buyer_balances(net) == [0] * len(user.buyers)
        assert await Ledger(store).get(job_id) is None
        assert await user_lock_holder(redis_client, "u1") == "premix-u1-1"  # not ours to free


async def test_a_completed_run_redelivered_after_a_buyer_spent_is_still_reported_complete(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    # The worker died after the run completed; by the time arq delivers the job again the
    # user is buying with wallet 1 at the launch. Its transfer landed: the premix is complete.
    user = await create_user(store, net, "u1")
    queued = await enqueue_premix_funds("u1", 42, 2, {"mode": "fast"}, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    assert await run_worker(settings, notifier=DiesWhenNotifying(settings)) is False
    drain(net, user.buyers[0], keep_lamports=1_000_000)
    await expire_in_progress_marker(redis_client, job_id)
    told = RecordingNotifier(settings)

    assert await run_worker(settings, notifier=told) is True

    info = await job_result(settings, job_id)
    assert info.result["success"] is True, info.result["message"]
    assert info.result["message"].endswith(
        f"(wallet {user.buyers[0].pubkey()} now holds 0.001 SOL, less than it received: "
        "spent since it was funded)"
    )
    assert info.result["totals"]["walletsFunded"] == 4
    assert [c["chat_id"] for c in told.completed] == [42]
    final = await latest_progress(redis_client, job_id)
    assert final is not None and final.status == "completed"
    run = await Ledger(store).get(job_id)
    assert run is not None and run.status is RunStatus.COMPLETED
