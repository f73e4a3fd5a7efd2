"""The service under stress: the same job run by two workers at once, locks that expire in a
backlog, services failing mid-run, hand-written payloads, readers of a job that died, and
secrets in every failure path. Each test states what the user and the money must see."""

import asyncio
import base64
import json
from typing import Any

import pytest
import redis as redis_sync
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from pydantic import SecretStr
from pymongo.errors import AutoReconnect
from redis.asyncio import Redis
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix.constants import JOB_FUNCTION, PROGRESS_ALL_CHANNEL, QUEUE_NAME, RUNS_COLLECTION
from premix.errors import PremixError
from premix.localnet import Localnet
from premix.memory_store import MemoryCollection
from premix.notify import Notifier
from premix.progress import ProgressEvent, latest_progress
from premix.queue import enqueue_premix_funds, queue_pool
from premix.rpc import SendResult
from premix.settings import Settings
from premix.store import Store
from premix.user_lock import user_lock_holder, user_lock_key
from tests.fixtures.store import secret_forms
from tests.worker.helpers import (
    BOT_TOKEN,
    ENCRYPTION_KEYS,
    TestRpc,
    assert_paid_exactly_once,
    collect_events,
    create_user,
    drain,
    expire_in_progress_marker,
    fake_telegram,
    give_funding_a_buyers_ciphertext,
    job_result,
    make_settings,
    open_store,
    run_worker,
)
from tests.worker.test_e2e import redis_strings

SOL = 10**9


class StallingRpc(TestRpc):
    """Stands for a worker whose process stalls (frozen, swapped out) right after the
    `stall_at`-th call of `stall_on` reached the node, until the test calls `resume()`."""

    __test__ = False

    def __init__(self, url: str, *, stall_on: str, stall_at: int = 1) -> None:
        super().__init__(url)
        self.stall_on, self.stall_at = stall_on, stall_at
        self.stalled = asyncio.Event()
        self._resume = asyncio.Event()

    def resume(self) -> None:
        self._resume.set()

    async def _stall_here(self, method: str) -> None:
        if method == self.stall_on and self.seen.get(method) == self.stall_at:
            self.stalled.set()
            await self._resume.wait()

    async def send_raw(self, wire: bytes) -> SendResult:
        result = await super().send_raw(wire)
        await self._stall_here("send")
        return result

    async def balance(self, pubkey: Pubkey, *, min_context_slot: int | None = None) -> int:
        result = await super().balance(pubkey, min_context_slot=min_context_slot)
        await self._stall_here("balance")
        return result


class RecordingNotifier(Notifier):
    """Records what the user would be told instead of calling Telegram."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.told: list[str] = []

    async def notify_completed(self, chat_id: int, **kwargs: Any) -> bool:
        self.told.append("completed")
        return True

    async def notify_failed(self, chat_id: int, **kwargs: Any) -> bool:
        self.told.append(f"failed: {kwargs['reason']}")
        return True


async def enqueue(settings: Settings, user_id: str, amount: object, **options: Any) -> str:
    queued = await enqueue_premix_funds(user_id, 42, amount, options or None, settings=settings)
    assert queued.success, queued.message
    assert queued.job_id is not None
    return queued.job_id


# --- the same job run by two workers at once ---


@pytest.mark.parametrize(
    ("stall_on", "where"),
    [
        pytest.param("send", "mixer", id="stalled-after-its-first-send"),
        pytest.param("balance", "phase-4", id="stalled-checking-the-balance"),
    ],
)
async def test_a_stalled_worker_waking_after_a_redelivery_completed_the_job_stays_silent(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    net: Localnet,
    stall_on: str,
    where: str,
) -> None:
    # arq redelivers a job whose in-progress marker expired; the first worker was only stalled
    # and wakes after the redelivery finished. Money goes out once, the user hears once, and
    # the job's result and progress keep saying what happened.
    user = await create_user(store, net, "u1")
    job_id = await enqueue(settings, "u1", 2)
    events = await collect_events(redis_client, job_id)
    stalling = StallingRpc(net.url, stall_on=stall_on)
    first_told = RecordingNotifier(settings)
    first = asyncio.create_task(run_worker(settings, rpc=stalling, notifier=first_told))
    await asyncio.wait_for(stalling.stalled.wait(), 10)

    await expire_in_progress_marker(redis_client, job_id)
    second_told = RecordingNotifier(settings)
    assert await run_worker(settings, rpc=TestRpc(net.url), notifier=second_told)
    completed = await latest_progress(redis_client, job_id)
    assert completed is not None and completed.status == "completed"
    stalling.resume()
    assert await asyncio.wait_for(first, 20)

    await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)
    assert (first_told.told, second_told.told) == ([], ["completed"])
    assert await latest_progress(redis_client, job_id) == completed  # nothing after the end
    received = await events.wait()
    assert [e.status for e in received].count("completed") == 1
    assert received[-1] == completed
    # nothing of the job is left in the queue to fail it later as "expired"
    assert await redis_client.zcard(QUEUE_NAME) == 0
    await run_worker(settings)
    info = await job_result(settings, job_id)
    assert (info.success, info.result["success"]) == (True, True), info.result
    assert await user_lock_holder(redis_client, "u1") is None


async def test_a_stalled_worker_waking_while_the_redelivery_runs_leaves_the_job_to_it(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1")
    job_id = await enqueue(settings, "u1", 2)
    events = await collect_events(redis_client, job_id)
    first_rpc = StallingRpc(net.url, stall_on="balance")
    first_told = RecordingNotifier(settings)
    first = asyncio.create_task(run_worker(settings, rpc=first_rpc, notifier=first_told))
    await asyncio.wait_for(first_rpc.stalled.wait(), 10)
    await expire_in_progress_marker(redis_client, job_id)
    second_rpc = StallingRpc(net.url, stall_on="send")
    second_told = RecordingNotifier(settings)
    second = asyncio.create_task(run_worker(settings, rpc=second_rpc, notifier=second_told))
    await asyncio.wait_for(second_rpc.stalled.wait(), 10)

    score = await redis_client.zscore(QUEUE_NAME, job_id)
    first_rpc.resume()  # wakes in phase 4 while the redelivery is sending
    await asyncio.sleep(1.0)
    # it left the job to the redelivery: sent nothing, moved no queue entry, and waits for the
    # job to end before arq's bookkeeping of its own end could touch the redelivery's
    assert first_rpc.seen.get("send") is None
    assert not first.done()
    assert await redis_client.zscore(QUEUE_NAME, job_id) == score
    second_rpc.resume()
    assert await asyncio.wait_for(second, 20)
    assert await asyncio.wait_for(first, 20)

    await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)
    assert (first_told.told, second_told.told) == ([], ["completed"])
    received = await events.wait()
    assert received[-1].status == "completed"
    assert [e.status for e in received].count("completed") == 1
    assert await redis_client.zcard(QUEUE_NAME) == 0
    info = await job_result(settings, job_id)
    assert (info.job_try, info.result["success"]) == (2, True)  # the redelivery's result
    assert await user_lock_holder(redis_client, "u1") is None


async def test_a_run_whose_queue_redis_lost_mid_run_still_finishes_and_tells_the_user(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    # Redis restarted without persistence: arq's records of the job are gone. The running
    # execution is all that is left of the job; it must finish, not take itself for a copy.
    user = await create_user(store, net, "u1")
    job_id = await enqueue(settings, "u1", 2)
    flush = redis_sync.Redis.from_url(settings.redis_url)

    def lose_redis_data(method: str, count: int) -> None:
        if (method, count) == ("send", 1):
            flush.flushdb()

    told = RecordingNotifier(settings)
    assert await run_worker(settings, rpc=TestRpc(net.url, on_call=lose_redis_data), notifier=told)
    flush.close()

    await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)
    assert told.told == ["completed"]
    event = await latest_progress(redis_client, job_id)
    assert event is not None and event.status == "completed"
    assert (await job_result(settings, job_id)).result["success"] is True


# --- payloads written to Redis by hand ---

HAND_JOB_ID = "premix-u1-1700000000000"
VALID_PAYLOAD: dict[str, Any] = {"userId": "u1", "userChatId": 42, "mixAmount": "1"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(
            {**VALID_PAYLOAD, "isAdmin": True},
            "Invalid parameters: isAdmin: unknown field",
            id="extra-field",
        ),
        pytest.param(
            {"userId": ["u1"], "userChatId": "42", "mixAmount": True, "mode": "turbo"},
            "Invalid parameters: userId: must be 1 to 128 letters, digits or _.:@- characters; "
            "userChatId: must be an integer Telegram chat id; mixAmount: must be a number of "
            "SOL, not a boolean; mode: Input should be 'standard' or 'fast'",
            id="wrong-types",
        ),
        pytest.param(
            {**VALID_PAYLOAD, "mixAmount": "NaN", "maxWallets": 74},
            "Invalid parameters: mixAmount: must be a finite number of SOL; maxWallets: must be "
            "a whole number from 1 to 73",
            id="nan-amount",
        ),
        pytest.param(
            {**VALID_PAYLOAD, "userId": "u2"},
            f"Invalid parameters: userId: u2 is not the user of job {HAND_JOB_ID}",
            id="another-users-payload",
        ),
    ],
)
async def test_a_hand_written_payload_is_refused_naming_what_is_wrong_and_changes_nothing(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    payload: dict[str, Any],
    message: str,
) -> None:
    await redis_client.set(user_lock_key("u1"), HAND_JOB_ID)  # as enqueueing would
    await redis_client.set(user_lock_key("u2"), "premix-u2-1")  # another premix, running
    told = RecordingNotifier(settings)
    await queue_pool(settings.redis_url).enqueue_job(
        JOB_FUNCTION, payload, _job_id=HAND_JOB_ID, _queue_name=QUEUE_NAME
    )

    await run_worker(settings, notifier=told)

    info = await job_result(settings, HAND_JOB_ID)
    assert (info.job_try, info.result["success"], info.result["message"]) == (1, False, message)
    event = await latest_progress(redis_client, HAND_JOB_ID)
    assert event is not None
    assert (event.phase, event.status, event.description) == (2, "failed", message)
    assert await user_lock_holder(redis_client, "u1") is None
    assert await user_lock_holder(redis_client, "u2") == "premix-u2-1"
    assert await store.collection(RUNS_COLLECTION).count_documents({}) == 0
    chat_named = isinstance(payload["userChatId"], int)
    assert told.told == ([f"failed: {message}"] if chat_named else [])


async def test_a_payload_with_thousands_of_bad_fields_gets_a_bounded_message(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    payload = {**VALID_PAYLOAD, **{f"field{i}": i for i in range(20_000)}}
    await queue_pool(settings.redis_url).enqueue_job(
        JOB_FUNCTION, payload, _job_id=HAND_JOB_ID, _queue_name=QUEUE_NAME
    )

    await run_worker(settings)

    message = (await job_result(settings, HAND_JOB_ID)).result["message"]
    assert message.startswith("Invalid parameters: field0: unknown field; field1: unknown")
    assert len(message) == 500 and message.endswith("…")
    event = await latest_progress(redis_client, HAND_JOB_ID)
    assert event is not None and event.description == message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"t":1,"f":"premix_funds","a":[{"mixAmount":NaN}],"k":{},"et":1}', id="nan"),
        pytest.param(b'{"t":1,"f":"premix_funds","a":[{"userId":"\xff\xfe"}],"k":{}}', id="utf8"),
        pytest.param(b'["premix_funds"]', id="json-list"),
    ],
)
async def test_job_bytes_that_are_not_premix_json_are_refused_and_readers_are_let_go(
    settings: Settings, store: Store, redis_client: Redis, raw: bytes
) -> None:
    await redis_client.set(job_key_prefix + HAND_JOB_ID, raw)
    await redis_client.zadd(QUEUE_NAME, {HAND_JOB_ID: 1})
    events = await collect_events(redis_client, HAND_JOB_ID)

    await run_worker(settings)

    info = await job_result(settings, HAND_JOB_ID)
    assert (info.success, info.result) == (
        False,
        {"error": "DeserializationError", "message": "unable to deserialize job"},
    )
    assert await events.wait(5) == []  # the reader is not left waiting for a final event
    assert await store.collection(RUNS_COLLECTION).count_documents({}) == 0


# --- secrets in every failure path ---


async def test_no_failure_path_leaks_a_private_key_the_encryption_key_or_the_bot_token(
    redis_url: str,
    redis_client: Redis,
    net: Localnet,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fake_telegram() as telegram:
        settings = make_settings(
            redis_url,
            net.url,
            telegram_api_url=telegram.url,
            telegram_bot_token=SecretStr(BOT_TOKEN),
        )
        async with open_store(settings) as store:
            # 1. a funding wallet whose ciphertext does not decrypt (moved from a buyer)
            broken = await create_user(store, net, "broken", buyers=3)
            await give_funding_a_buyers_ciphertext(store, "broken")
            broken_job = await enqueue(settings, "broken", "0.5")
            # 2. a run that fails in the mixer after sending (its funding drained mid-run)
            drained = await create_user(store, net, "drained", buyers=10, funding_lamports=3 * SOL)
            drained_job = await enqueue(settings, "drained", 2)
            # 3. a hand-written payload carrying a secret key, by name and as a field name
            leaked = str(Keypair())  # someone's secret key, pasted by mistake
            await queue_pool(settings.redis_url).enqueue_job(
                JOB_FUNCTION,
                {**VALID_PAYLOAD, "privateKey": leaked, leaked: 1, "secretKey": leaked},
                _job_id=HAND_JOB_ID,
                _queue_name=QUEUE_NAME,
            )

            def drain_after_first_send(method: str, count: int) -> None:
                if (method, count) == ("send", 1):
                    drain(net, drained.funding, keep_lamports=SOL // 10)

            await run_worker(settings, rpc=TestRpc(net.url, on_call=drain_after_first_send))
            # 4. a worker whose encryption key is not the one the wallets were sealed with
            wrong_key = "k1:" + base64.b64encode(bytes(range(32))).decode()
            wrong = make_settings(
                redis_url,
                net.url,
                mongodb_uri=settings.mongodb_uri,
                encryption_keys=SecretStr(wrong_key),
                telegram_api_url=telegram.url,
                telegram_bot_token=SecretStr(BOT_TOKEN),
            )
            wrong_job = await enqueue(wrong, "broken", "0.5")  # the first job freed the lock
            await run_worker(wrong)
            # 5. a worker whose encryption keys do not parse
            bad_config = make_settings(
                redis_url, net.url, encryption_keys=SecretStr("k1:" + wrong_key[3:40])
            )
            with pytest.raises(PremixError, match="is not 32 bytes of base64"):
                await run_worker(bad_config)

            results = {
                job_id: (await job_result(settings, job_id)).result
                for job_id in (broken_job, drained_job, HAND_JOB_ID, wrong_job)
            }
            ledger = await store.collection(RUNS_COLLECTION).find({}).to_list()
            captured = capsys.readouterr()

    # the user is told premix is misconfigured; which key or variable is wrong is the log's
    misconfigured = "Wallet key could not be decrypted: premix is misconfigured; nothing was sent"
    assert results[broken_job]["message"] == misconfigured
    assert results[drained_job]["message"].startswith("Mixer operation failed")
    assert results[HAND_JOB_ID]["message"].startswith("Invalid parameters")
    assert results[wrong_job]["message"] == misconfigured
    events = [await latest_progress(redis_client, job_id) for job_id in results]
    places = {
        "logs": captured.err + captured.out,
        "results": json.dumps(results),
        "events": "\n".join(event.to_json() for event in events if event is not None),
        "telegram": json.dumps([body for _, body in telegram.requests]),
        "ledger": "\n".join(str(document) for document in ledger),
    }
    assert "job_failed" in places["logs"] and len(telegram.requests) == 4
    for place in ("results", "events", "telegram", "ledger"):
        for operator_detail in ("PREMIX_ENCRYPTION_KEYS", "'k1'", "authentication failed"):
            assert operator_detail not in places[place], f"{operator_detail} reached {place}"
    assert "authentication failed under key" in places["logs"]
    assert len(events) == 4 and all(event is not None for event in events)
    # premix repeats no part of a secret pasted into a payload (arq itself keeps the payload
    # it was given in its result record, as it stored it in the job record)
    for place, text in places.items():
        assert leaked[:24] not in text, f"the pasted secret key leaked into {place}"
    places["redis"] = await redis_strings(redis_client)
    secrets = [ENCRYPTION_KEYS, ENCRYPTION_KEYS[3:], wrong_key, wrong_key[3:], BOT_TOKEN]
    for user in (broken, drained):
        for keypair in (user.funding, *user.buyers):
            secrets += secret_forms(keypair)
    for place, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {place}: {secret[:6]}..."


# --- services failing mid-run ---


@pytest.mark.parametrize("settings", ["memory"], indirect=True)  # patches the memory adapter
async def test_a_store_write_that_lands_but_reports_an_error_is_resumed_without_paying_twice(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    net: Localnet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MongoDB applied the write of the first signed attempt, then the connection dropped.
    settings = settings.model_copy(update={"retry_backoff_seconds": (0.01,)})
    user = await create_user(store, net, "u1")
    job_id = await enqueue(settings, "u1", 2)
    replace_one = MemoryCollection.replace_one
    writes = 0

    async def flaky_replace_one(self: MemoryCollection, *args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        result = await replace_one(self, *args, **kwargs)
        writes += 1
        if writes == 2:  # the plan, then the first signed attempt
            raise AutoReconnect("connection closed")
        return result

    monkeypatch.setattr(MemoryCollection, "replace_one", flaky_replace_one)
    told = RecordingNotifier(settings)

    await run_worker(settings, rpc=TestRpc(net.url), notifier=told)

    info = await job_result(settings, job_id)
    # the ledger reads the run back, finds its own write and goes on in the same try
    assert (info.result["success"], info.job_try) == (True, 1)
    await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)
    assert told.told == ["completed"]
    assert await user_lock_holder(redis_client, "u1") is None


async def test_rpc_down_for_the_final_check_on_the_last_try_still_reports_the_premix_complete(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    settings = make_settings(redis_url, net.url, job_max_tries=2)
    async with open_store(settings) as store:
        user = await create_user(store, net, "u1")
        job_id = await enqueue(settings, "u1", 2)
        # The first try dies right after the last transfer's check (phase 4, then one check per
        # transfer); the last try has only phase 6 left, and the RPC fails its balance read.
        assert (
            await run_worker(settings, rpc=TestRpc(net.url, kill_on="balance", kill_at=5)) is False
        )
        await expire_in_progress_marker(redis_client, job_id)
        net.faults.inject("http_5xx", method="getMultipleAccounts")

        told = RecordingNotifier(settings)
        await run_worker(settings, rpc=TestRpc(net.url), notifier=told)

        # every transfer was confirmed (and its balance checked) during the run: it is complete
        info = await job_result(settings, job_id)
        assert (info.result["success"], info.result["message"]) == (
            True,
            "Premix complete: sent 2 SOL to 4 wallet(s) in 4 transaction(s) (standard mode), "
            "fees 0.00002 SOL (every transfer confirmed on chain; the final balance check could "
            "not run: Temporary failure: Solana RPC getMultipleAccounts failed 3 times; last "
            "error: HTTP 503)",
        )
        assert told.told == ["completed"]
        event = await latest_progress(redis_client, job_id)
        assert event is not None
        assert (event.status, event.description) == ("completed", info.result["message"])
        await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)
        assert await user_lock_holder(redis_client, "u1") is None


async def test_a_run_past_its_deadline_with_tries_left_keeps_the_user_and_resumes(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    settings = make_settings(
        redis_url, net.url, job_timeout_seconds=1, retry_backoff_seconds=(0.3,)
    )  # deadline 0.9 s
    async with open_store(settings) as store:
        user = await create_user(store, net, "u1")
        job_id = await enqueue(settings, "u1", 2)
        net.faults.inject("latency", method="getBalance", count=1, ms=1_500)
        events = await collect_events(redis_client, job_id)
        worker = asyncio.create_task(run_worker(settings, rpc=TestRpc(net.url)))
        tries, in_progress = retry_key_prefix + job_id, in_progress_key_prefix + job_id
        async with asyncio.timeout(10):
            while await redis_client.get(tries) != b"1" or await redis_client.exists(in_progress):
                await asyncio.sleep(0.01)  # until the first try has handed the job back

        # between the tries the user still has a premix queued: another one is refused
        refused = await enqueue_premix_funds("u1", 42, 1, settings=settings)
        assert refused.message == (
            f"A premix is already queued or running for this user (job {job_id}); "
            "wait for it to finish"
        )
        assert await asyncio.wait_for(worker, 20)

        info = await job_result(settings, job_id)
        assert (info.result["success"], info.job_try) == (True, 2)
        await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)
        assert "failed" not in [e.status for e in await events.wait()]
        assert await user_lock_holder(redis_client, "u1") is None


async def test_a_user_lock_lost_in_a_long_backlog_never_lets_two_runs_overlap(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    # The queue waited longer than PREMIX_USER_LOCK_TTL_SECONDS: the first job's lock expired,
    # so the bot's second premix for the user was accepted. The worker runs them one by one.
    settings = make_settings(
        redis_url, net.url, job_max_tries=1_000, user_busy_retry_seconds=0.05
    )  # wait as long as needed
    async with open_store(settings) as store:
        await _two_premixes_after_a_lost_lock(settings, store, redis_client, net)


async def _two_premixes_after_a_lost_lock(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1")
    first = await enqueue(settings, "u1", 1)
    await redis_client.delete(user_lock_key("u1"))  # expired while queued
    second = await enqueue(settings, "u1", 2)
    async with redis_client.pubsub() as all_jobs:
        await all_jobs.subscribe(PROGRESS_ALL_CHANNEL)

        await run_worker(settings)

        order = []
        while (message := await all_jobs.get_message(timeout=0.1)) is not None:
            if message["type"] == "message":
                event = ProgressEvent.model_validate_json(message["data"])
                order.append((event.job_id, event.status))

    # the first job found the second holding the user and waited: no event of it in between
    jobs = [job_id for job_id, _ in order]
    switch = jobs.index(first)
    assert set(jobs[:switch]) == {second} and set(jobs[switch:]) == {first}
    assert (order[switch - 1], order[-1]) == ((second, "completed"), (first, "completed"))
    for job_id in (first, second):
        assert (await job_result(settings, job_id)).result["success"] is True
    plans = [user.plan(SOL), user.plan(2 * SOL)]
    funded = [sum(plan[i] for plan in plans if i < len(plan)) for i in range(len(user.buyers))]
    assert user.buyer_balances(net) == funded
    assert await user_lock_holder(redis_client, "u1") is None
