"""Worker: a real arq Worker runs queued premix jobs; every failure the user can see ends the job
with its exact message, a failed event on Redis and no retry; transient ones are retried."""

import asyncio
import pickle
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from arq.connections import ArqRedis
from redis.asyncio import Redis
from solders.account import Account
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix.amounts import format_sol
from premix.constants import (
    JOB_FUNCTION,
    PROGRESS_CHANNEL_PREFIX,
    QUEUE_NAME,
    RUNS_COLLECTION,
    USER_LOCK_PREFIX,
)
from premix.jobs import EnqueueResult
from premix.ledger import AttemptState, Ledger, RunStatus, utc_now
from premix.localnet import Localnet
from premix.mixer import PriorityFees, balance_needed
from premix.progress import ProgressEvent, latest_progress, subscribe_progress
from premix.queue import enqueue_premix_funds, queue_pool
from premix.rpc import SolanaRpc
from premix.serialization import job_deserializer, job_serializer
from premix.settings import Settings
from premix.store import Store
from premix.sweep import SWEEP_FUNCTION
from premix.user_lock import user_lock_holder
from premix.worker import WorkerSettings, shutdown, startup, worker_settings
from tests.test_mixer_helpers import run_with_plan, signed_attempt
from tests.worker.helpers import (
    TestRpc,
    collect_events,
    create_user,
    delete_wallets,
    drain,
    give_funding_a_buyers_ciphertext,
    job_result,
    make_settings,
    open_store,
    run_worker,
)

SOL = 10**9


async def latest(redis: Redis, job_id: str) -> ProgressEvent:
    event = await latest_progress(redis, job_id)
    assert event is not None
    return event


async def enqueue(settings: Settings, user_id: str, amount: object, **options: Any) -> str:
    queued = await enqueue_premix_funds(user_id, 42, amount, options or None, settings=settings)
    assert queued.success, queued.message
    assert queued.job_id is not None
    return queued.job_id


def test_worker_settings_run_one_json_job_at_a_time_on_the_premix_queue() -> None:
    options = worker_settings(Settings())  # what WorkerSettings holds for the environment
    assert options["max_jobs"] == 1
    assert options["queue_name"] == QUEUE_NAME
    assert options["job_serializer"] is job_serializer
    assert options["job_deserializer"] is job_deserializer
    assert [f.name for f in options["functions"]] == [JOB_FUNCTION, SWEEP_FUNCTION]
    assert options["poll_delay"] <= 0.1
    # deliveries beyond premix's own limit: the first only reports and fails the job
    assert options["max_tries"] == Settings().job_max_tries + 3
    assert isinstance(WorkerSettings, dict)  # arq reads a dict as worker settings
    assert not hasattr(WorkerSettings, "_mock_name")  # probing it loads nothing


async def test_startup_opens_the_rpc_client_once_and_shutdown_closes_it(
    settings: Settings, redis_client: Redis
) -> None:
    ctx: dict[str, Any] = {"settings": settings, "redis": redis_client}
    await startup(ctx)
    rpc = ctx["rpc"]
    assert isinstance(rpc, SolanaRpc)
    assert rpc.url == settings.rpc_url
    assert await rpc.block_height() >= 0
    session = rpc.client._provider.session
    await shutdown(ctx)
    assert session.is_closed


async def test_startup_learns_when_the_node_slots_begin_and_starts_without_the_node(
    settings: Settings, redis_client: Redis, fast_localnet: Localnet
) -> None:
    timed = settings.model_copy(update={"slot_seconds": 0.02, "rpc_url": fast_localnet.url})
    ctx: dict[str, Any] = {"settings": timed, "redis": redis_client}
    await startup(ctx)
    assert fast_localnet.stats.calls["getSlot"] == 11  # 8 over one slot, 3 to narrow it down
    assert ctx["rpc"].slots.highest("processed") is not None
    await shutdown(ctx)
    # the sync is best effort and bounded: a node that does not answer delays nothing much
    ctx = {
        "settings": timed.model_copy(update={"rpc_url": "http://127.0.0.1:9"}),
        "redis": redis_client,
    }
    await startup(ctx)
    assert ctx["rpc"].slots.highest("processed") is None
    await shutdown(ctx)


async def test_job_without_a_funding_wallet_fails_in_phase_2_and_frees_the_user(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    await create_user(store, None, "u1", buyers=2)
    job_id = await enqueue(settings, "u1", 0.5)
    await delete_wallets(store, "u1", "funding")  # after enqueue, which would refuse the job

    await run_worker(settings)

    info = await job_result(settings, job_id)
    assert (info.success, info.job_try) == (True, 1)  # the job ended once, not retried
    result = info.result
    assert result["success"] is False
    assert result["message"] == (
        "Funding wallet not found: user u1 has no funding wallet; create a funding wallet first"
    )
    assert result["wallets"] == []
    assert result["totals"]["sentLamports"] == 0
    event = await latest(redis_client, job_id)
    assert (event.phase, event.title, event.status, event.percent) == (
        2,
        "Validating Parameters",
        "failed",
        20,
    )
    assert event.description == result["message"]
    run = await Ledger(store).get(job_id)
    assert run is not None
    assert (run.status, run.error, run.plan) == (RunStatus.FAILED, result["message"], [])
    assert await user_lock_holder(redis_client, "u1") is None
    await store.wallets.set_funding_wallet("u1", Keypair())
    again = await enqueue_premix_funds("u1", 42, 0.5, settings=settings)
    assert again.success is True


async def test_job_without_buyer_wallets_fails_with_the_spec_message(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=1)
    job_id = await enqueue(settings, "u1", 0.5)
    await delete_wallets(store, "u1", "buyer")  # after enqueue, which would refuse the job

    await run_worker(settings)

    info = await job_result(settings, job_id)
    assert info.job_try == 1
    assert info.result["message"] == (
        "No buyer wallets found: user u1 has no buyer wallets; create buyer wallets first"
    )
    event = await latest(redis_client, job_id)
    assert (event.phase, event.status, event.description) == (2, "failed", info.result["message"])


async def test_amount_larger_than_the_users_wallets_hold_is_invalid_in_phase_3(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=4)
    job_id = await enqueue(settings, "u1", 2)
    await delete_wallets(store, "u1", "buyer", keep=2)  # enqueue saw 4, which hold 2 SOL

    await run_worker(settings)

    info = await job_result(settings, job_id)
    assert info.job_try == 1
    assert info.result["message"] == (
        "Invalid parameters: mixAmount: Amount 2 SOL is more than 2 buyer wallets can hold "
        "(at most 1 SOL)"
    )
    event = await latest(redis_client, job_id)
    assert (event.phase, event.title, event.status) == (3, "Calculating Distribution", "failed")


async def test_insufficient_balance_shows_needed_and_available_in_sol(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=5, funding_lamports=SOL // 2)
    job_id = await enqueue(settings, "u1", "0.5")

    await run_worker(settings)

    info = await job_result(settings, job_id)
    assert info.job_try == 1
    message = info.result["message"]
    # 0.5 SOL to one wallet + one 5,000-lamport fee + the 0.01 SOL buffer
    assert message == (
        "Insufficient funding wallet balance: needed 0.510005 SOL, available 0.5 SOL "
        "(0.5 SOL to 1 wallet(s) + 0.000005 SOL fees for 1 transaction(s) + 0.01 SOL buffer)"
    )
    event = await latest(redis_client, job_id)
    assert (event.phase, event.title, event.status, event.percent) == (
        4,
        "Checking Balances",
        "failed",
        50,
    )
    assert event.description == message
    assert info.result["wallets"][0]["status"] == "not_sent"
    assert net.balance(user.funding.pubkey()) == SOL // 2  # nothing was sent
    assert user.buyer_balances(net) == [0] * 5
    assert await user_lock_holder(redis_client, "u1") is None


async def test_the_smallest_fee_buffer_lets_the_funding_wallet_send_all_but_its_rent(
    redis_url: str, net: Localnet
) -> None:
    rent = 890_880  # the rent-exempt minimum of the funding wallet: the smallest buffer
    settings = make_settings(redis_url, net.url, fee_buffer_sol=Decimal("0.00089088"))
    async with open_store(settings) as store:
        user = await create_user(
            store, net, "u1", buyers=2, funding_lamports=SOL + 2 * 5_000 + rent
        )
        job_id = await enqueue(settings, "u1", 1)

        await run_worker(settings)

        result = (await job_result(settings, job_id)).result
        assert result["success"] is True, result["message"]
        assert user.buyer_balances(net) == [SOL // 2, SOL // 2]
        assert net.balance(user.funding.pubkey()) == rent


async def test_fast_mode_needs_fewer_fees_than_standard_mode(
    settings: Settings, store: Store, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=73, funding_lamports=SOL)
    job_id = await enqueue(settings, "u1", 20, mode="fast")

    await run_worker(settings)

    # 20 SOL over 31 wallets: 2 fast transactions
    assert (await job_result(settings, job_id)).result["message"] == (
        "Insufficient funding wallet balance: needed 20.01001 SOL, available 1 SOL "
        "(20 SOL to 31 wallet(s) + 0.00001 SOL fees for 2 transaction(s) + 0.01 SOL buffer)"
    )


@pytest.mark.parametrize(
    ("skip_preflight", "failure"),
    [
        (False, "transaction 2 was refused by the RPC node"),
        (True, "transaction 2 failed on chain"),
    ],
)
async def test_mixer_failure_lists_what_was_sent_and_is_not_retried(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    net: Localnet,
    skip_preflight: bool,
    failure: str,
) -> None:
    user = await create_user(store, net, "u1", buyers=10, funding_lamports=3 * SOL)
    job_id = await enqueue(settings, "u1", 2)  # 4 wallets, standard mode

    def drain_after_first_send(method: str, count: int) -> None:
        if (method, count) == ("send", 1):
            drain(net, user.funding, keep_lamports=SOL // 10)

    rpc = TestRpc(net.url, on_call=drain_after_first_send, skip_preflight=skip_preflight)
    await run_worker(settings, rpc=rpc)

    info = await job_result(settings, job_id)
    assert info.job_try == 1
    plan = user.plan(2 * SOL)
    first = str(user.buyers[0].pubkey())
    assert info.result["message"] == (
        f"Mixer operation failed: {failure}: instruction 0 failed: insufficient lamports for "
        f"the transfer. Sent {format_sol(plan[0])} to 1 wallet(s); 3 wallet(s) not funded"
    )
    assert [w["status"] for w in info.result["wallets"]] == [
        "funded",
        "failed",
        "not_sent",
        "not_sent",
    ]
    assert info.result["wallets"][0]["publicKey"] == first
    assert info.result["totals"]["sentLamports"] == plan[0]
    assert user.buyer_balances(net) == [plan[0]] + [0] * 9
    event = await latest(redis_client, job_id)
    assert (event.phase, event.title, event.status) == (5, "Initializing Mixer", "failed")
    assert event.description == info.result["message"]
    run = await Ledger(store).get(job_id)
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert await user_lock_holder(redis_client, "u1") is None


async def test_transient_rpc_failure_is_retried_and_resumes_the_same_run(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    net: Localnet,
) -> None:
    settings = settings.model_copy(update={"retry_backoff_seconds": (0.01,)})
    user = await create_user(store, net, "u1", buyers=10)
    job_id = await enqueue(settings, "u1", 2)
    events = await collect_events(redis_client, job_id)
    # the phase-4 balance read fails three times: the RPC client gives up, the job is retried
    net.faults.inject("http_5xx", method="getBalance", count=3)

    await run_worker(settings, rpc=TestRpc(net.url))

    info = await job_result(settings, job_id)
    assert (info.result["success"], info.job_try) == (True, 2)
    received = await events.wait()
    assert "failed" not in [e.status for e in received]
    assert [(e.phase, e.description) for e in received if e.phase == 1] == [
        (1, "Premix job accepted"),
        (1, "Resuming premix job"),
    ]
    assert await store.collection(RUNS_COLLECTION).count_documents({}) == 1
    assert user.buyer_balances(net)[:4] == user.plan(2 * SOL)


async def test_transient_failure_on_the_last_try_ends_the_job(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    settings = make_settings(redis_url, net.url, job_max_tries=1)
    async with open_store(settings) as store:
        await create_user(store, net, "u1", buyers=10)
        job_id = await enqueue(settings, "u1", 2)
        net.faults.inject("http_5xx", method="getBalance")

        await run_worker(settings, rpc=TestRpc(net.url))

        info = await job_result(settings, job_id)
        assert info.job_try == 1
        assert info.result["message"] == (
            "Temporary failure: Solana RPC getBalance failed 3 times; last error: HTTP 503"
        )
        event = await latest(redis_client, job_id)
        assert (event.phase, event.status) == (4, "failed")
        assert await user_lock_holder(redis_client, "u1") is None


async def test_a_run_that_outlives_the_job_timeout_ends_through_premix_not_arq(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    # arq would cancel the job at its timeout and drop it without an event or lock release;
    # premix's own deadline (a little earlier) fails it cleanly, or retries while tries remain.
    settings = make_settings(redis_url, net.url, job_max_tries=1, job_timeout_seconds=3)
    async with open_store(settings) as store:
        await create_user(store, net, "u1", buyers=2)
        job_id = await enqueue(settings, "u1", 1)
        net.faults.inject("latency", method="getBalance", count=1, ms=4_000)

        await run_worker(settings)

        info = await job_result(settings, job_id)
        assert info.result["message"] == "Temporary failure: the run took longer than 2.7 s"
        event = await latest(redis_client, job_id)
        assert (event.phase, event.status) == (4, "failed")
        assert await user_lock_holder(redis_client, "u1") is None
        buyers = await store.wallets.buyer_public_keys("u1")
        assert [net.balance(key) for key in buyers] == [0, 0]


async def test_a_second_premix_for_the_user_is_refused_while_one_runs(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=10)
    job_id = await enqueue(settings, "u1", 2)
    second_send = asyncio.Event()

    def on_call(method: str, count: int) -> None:
        if (method, count) == ("send", 2):
            second_send.set()

    async def enqueue_while_running() -> EnqueueResult:
        await second_send.wait()
        return await enqueue_premix_funds("u1", 42, 1, settings=settings)

    refused_task = asyncio.create_task(enqueue_while_running())
    await run_worker(settings, rpc=TestRpc(net.url, on_call=on_call))
    refused = await refused_task

    assert refused.success is False
    assert refused.message == (
        f"A premix is already queued or running for this user (job {job_id}); wait for it to finish"
    )
    assert (await job_result(settings, job_id)).result["success"] is True
    assert await user_lock_holder(redis_client, "u1") is None
    accepted = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert accepted.success is True


async def test_a_running_job_holds_its_user_for_the_lock_ttl_not_the_queue_expiry(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=2)
    job_id = await enqueue(settings, "u1", 1)
    assert await redis_client.ttl(USER_LOCK_PREFIX + "u1") > settings.user_lock_ttl_seconds
    lock_while_sending: list[tuple[bytes | None, int]] = []
    sync_redis = redis_sync.Redis.from_url(settings.redis_url)

    def on_call(method: str, count: int) -> None:
        if (method, count) == ("send", 1):
            key = USER_LOCK_PREFIX + "u1"
            lock_while_sending.append((sync_redis.get(key), sync_redis.ttl(key)))

    try:
        await run_worker(settings, rpc=TestRpc(net.url, on_call=on_call))
    finally:
        sync_redis.close()

    [(holder, ttl)] = lock_while_sending
    assert holder == job_id.encode()
    assert 0 < ttl <= settings.user_lock_ttl_seconds
    assert await user_lock_holder(redis_client, "u1") is None


async def test_the_user_is_free_for_the_next_premix_when_the_final_event_arrives(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=2)
    job_id = await enqueue(settings, "u1", "0.5")
    holders_at_final_event: list[str | None] = []

    async def watch() -> None:
        async for event in subscribe_progress(redis_client, job_id, poll_interval_seconds=0.01):
            if event.status in ("completed", "failed"):
                holders_at_final_event.append(await user_lock_holder(redis_client, "u1"))

    watcher = asyncio.create_task(watch())
    for _ in range(500):
        [(_, subscribers)] = await redis_client.pubsub_numsub(PROGRESS_CHANNEL_PREFIX + job_id)
        if subscribers:
            break
        await asyncio.sleep(0.005)
    await run_worker(settings)
    await asyncio.wait_for(watcher, 10)

    assert holders_at_final_event == [None]


async def test_payload_with_bad_fields_written_by_hand_fails_cleanly(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    pool: ArqRedis = queue_pool(settings.redis_url)
    job_id = "premix-u1-1"
    await redis_client.set("premix:user-lock:u1", job_id)
    await pool.enqueue_job(
        JOB_FUNCTION,
        {"userId": "u1", "userChatId": "not a chat", "mixAmount": "-3"},
        _job_id=job_id,
        _queue_name=QUEUE_NAME,
    )

    await run_worker(settings)

    info = await job_result(settings, job_id)
    assert info.job_try == 1
    result = info.result
    assert result["success"] is False
    assert result["message"] == (
        "Invalid parameters: userChatId: must be an integer Telegram chat id; "
        "mixAmount: must be greater than 0 SOL"
    )
    event = await latest(redis_client, job_id)
    assert (event.phase, event.status, event.user_id, event.description) == (
        2,
        "failed",
        "u1",
        result["message"],
    )
    assert await user_lock_holder(redis_client, "u1") is None
    assert await store.collection(RUNS_COLLECTION).count_documents({}) == 0


async def test_payload_that_is_not_one_object_fails_cleanly_under_the_job_ids_user(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    pool: ArqRedis = queue_pool(settings.redis_url)
    job_id = "premix-u2-1700000000000"
    await redis_client.set("premix:user-lock:u2", job_id)
    await pool.enqueue_job(JOB_FUNCTION, "u2", 42, _job_id=job_id, _queue_name=QUEUE_NAME)

    await run_worker(settings)

    info = await job_result(settings, job_id)
    assert info.result["message"] == (
        "Invalid parameters: request: a premix job carries exactly one payload object"
    )
    event = await latest(redis_client, job_id)
    assert (event.status, event.user_id) == ("failed", "u2")
    assert await user_lock_holder(redis_client, "u2") is None
    assert await store.collection(RUNS_COLLECTION).count_documents({}) == 0


class _CreatesFileWhenUnpickled:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Path.touch, (str(self.path),))  # type: ignore[return-value]


async def test_pickle_job_payload_is_refused_not_executed(
    settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    job_id = "premix-attacker-1"
    payload = {
        "t": 1,
        "f": JOB_FUNCTION,
        "a": [_CreatesFileWhenUnpickled(marker)],
        "k": {},
        "et": 1,
    }
    await redis_client.set(f"arq:job:{job_id}", pickle.dumps(payload))
    await redis_client.zadd(QUEUE_NAME, {job_id: 1})

    await run_worker(settings)

    assert not marker.exists()
    info = await job_result(settings, job_id)
    assert info.success is False
    assert info.result == {"error": "DeserializationError", "message": "unable to deserialize job"}


async def test_a_funding_wallet_that_cannot_be_decrypted_fails_in_phase_2(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=3)
    # a ciphertext moved to another wallet does not decrypt (the public key is authenticated)
    await give_funding_a_buyers_ciphertext(store, "u1")
    job_id = await enqueue(settings, "u1", "0.5")

    await run_worker(settings)

    info = await job_result(settings, job_id)
    assert info.job_try == 1
    assert info.result["message"].startswith("Wallet key could not be decrypted")
    event = await latest(redis_client, job_id)
    assert (event.phase, event.status) == (2, "failed")


def test_balance_needed_for_a_new_run_is_amount_fees_and_buffer() -> None:
    run = run_with_plan([SOL] * 22)
    need = balance_needed(run, "fast", PriorityFees(), SOL // 100)
    assert (need.transfer_lamports, need.fee_lamports, need.transactions) == (22 * SOL, 10_000, 2)
    assert need.total_lamports == 22 * SOL + 10_000 + SOL // 100
    standard = balance_needed(run, "standard", PriorityFees(), 0)
    assert (standard.fee_lamports, standard.transactions) == (22 * 5_000, 22)


def test_balance_needed_on_resume_leaves_out_what_landed() -> None:
    run = run_with_plan([SOL] * 22)
    landed = run.add_transaction(list(range(21)), signed_attempt("sig-1"))
    run.settle("sig-1", AttemptState.LANDED_OK, now=utc_now(), fee_lamports=5_000)
    need = balance_needed(run, "fast", PriorityFees(), SOL // 100)
    assert landed.state == "landed_ok"
    assert (need.transfer_lamports, need.wallets, need.transactions) == (SOL, 1, 1)
    assert need.already_sent_lamports == 21 * SOL
    assert need.describe() == (
        "1 SOL to 1 wallet(s) + 0.000005 SOL fees for 1 transaction(s) + 0.01 SOL buffer; "
        "21 SOL already sent"
    )


def test_balance_needed_counts_an_open_attempt_seen_on_chain_as_sent() -> None:
    run = run_with_plan([SOL] * 22)
    run.add_transaction(list(range(21)), signed_attempt("sig-1"))
    unseen = balance_needed(run, "fast", PriorityFees(), 0)
    seen = balance_needed(run, "fast", PriorityFees(), 0, landed_ok={"sig-1"})
    assert (unseen.transfer_lamports, unseen.transactions) == (22 * SOL, 2)
    assert (seen.transfer_lamports, seen.transactions) == (SOL, 1)


def test_nothing_is_needed_when_every_transfer_landed() -> None:
    run = run_with_plan([SOL])
    run.add_transaction([0], signed_attempt("sig-1"))
    run.settle("sig-1", AttemptState.LANDED_OK, now=utc_now(), fee_lamports=5_000)
    assert balance_needed(run, "standard", PriorityFees(), SOL // 100).total_lamports == 0


@pytest.mark.parametrize("kind", ["program-owned", "executable"])
async def test_a_buyer_wallet_that_is_not_a_plain_wallet_is_refused_before_anything_is_sent(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet, kind: str
) -> None:
    user = await create_user(store, net, "u1", buyers=3)
    odd = user.buyers[1].pubkey()
    owner = Pubkey.new_unique()
    if kind == "program-owned":
        net.set_account(odd, Account(lamports=SOL, data=b"state", owner=owner))
    else:
        net.set_account(odd, _program_account(net))
    net.advance(2)
    job_id = await enqueue(settings, "u1", 1)

    await run_worker(settings)

    result = (await job_result(settings, job_id)).result
    expected = (
        f"Invalid parameters: buyer wallet {odd} (position 2) is owned by program {owner}, not "
        "the System Program: premix pays plain wallets only; nothing was sent"
        if kind == "program-owned"
        else f"Invalid parameters: buyer wallet {odd} (position 2) is an executable program "
        "account, not a wallet; nothing was sent"
    )
    assert (result["success"], result["message"]) == (False, expected)
    assert net.balance(user.funding.pubkey()) == user.funding_lamports  # nothing was sent
    assert await user_lock_holder(redis_client, "u1") is None


def _program_account(net: Localnet) -> Account:
    """A copy of a deployed program's account (executable, owned by a loader)."""
    program = net.chain.account(Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"))
    assert program is not None and program.executable
    return program
