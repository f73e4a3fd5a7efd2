"""Worker: a real arq Worker runs queued premix jobs (phases 1-3 so far) from JSON payloads."""

import base64
import logging
import pickle
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from arq.worker import Worker
from pydantic import SecretStr
from redis.asyncio import Redis
from solders.keypair import Keypair

from premix.constants import JOB_FUNCTION, QUEUE_NAME
from premix.ledger import Ledger, RunStatus
from premix.logs import reset_logging
from premix.progress import ProgressEvent, progress_state_key
from premix.queue import close_queue, enqueue_premix_funds, queue_pool, user_lock_holder
from premix.serialization import job_deserializer, job_serializer
from premix.settings import Settings
from premix.store import Store
from premix.worker import WorkerSettings, worker_settings

ENCRYPTION_KEYS = "k1:" + base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        mongodb_uri=f"memory://worker-{uuid.uuid4().hex}",
        encryption_keys=SecretStr(ENCRYPTION_KEYS),
        worker_poll_delay_seconds=0.01,
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    opened = await Store.open(settings)
    await opened.ensure_indexes()
    yield opened
    await opened.close()


@pytest.fixture(autouse=True)
async def restore_logging() -> AsyncIterator[None]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield
    await close_queue()
    reset_logging()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


async def run_worker(settings: Settings) -> None:
    """Run a real arq worker until the queue is empty."""
    worker = Worker(
        **worker_settings(settings), burst=True, handle_signals=False, ctx={"settings": settings}
    )
    try:
        await worker.main()
    finally:
        await worker.close()


async def job_result(settings: Settings, job_id: str) -> tuple[bool, Any]:
    pool = queue_pool(settings.redis_url)
    info = await Job(job_id, pool, _deserializer=job_deserializer).result_info()
    assert info is not None
    return info.success, info.result


async def events_of(redis: Redis, job_id: str) -> ProgressEvent | None:
    raw = await redis.get(progress_state_key(job_id))
    return ProgressEvent.model_validate_json(raw) if raw is not None else None


def test_worker_settings_run_one_json_job_at_a_time_on_the_premix_queue() -> None:
    assert WorkerSettings.max_jobs == 1
    assert WorkerSettings.queue_name == QUEUE_NAME
    assert WorkerSettings.job_serializer is job_serializer
    assert WorkerSettings.job_deserializer is job_deserializer
    assert [f.name for f in WorkerSettings.functions] == [JOB_FUNCTION]
    assert WorkerSettings.poll_delay <= 0.1


async def test_job_without_a_funding_wallet_fails_in_phase_2_and_frees_the_user(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    queued = await enqueue_premix_funds("u1", 42, 0.5, settings=settings)
    assert queued.job_id is not None

    await run_worker(settings)

    success, result = await job_result(settings, queued.job_id)
    assert success is True  # the job function ran to its end and returned a result
    assert result["success"] is False
    assert result["message"] == (
        "Funding wallet not found: user u1 has no funding wallet; create a funding wallet first"
    )
    assert result["totals"] == {"sentLamports": 0, "walletsFunded": 0}
    latest = await events_of(redis_client, queued.job_id)
    assert latest is not None
    assert (latest.phase, latest.title, latest.status, latest.percent) == (
        2,
        "Validating Parameters",
        "failed",
        20,
    )
    assert latest.description == result["message"]
    run = await Ledger(store).get(queued.job_id)
    assert run is not None
    assert (run.status, run.error, run.plan) == (RunStatus.FAILED, result["message"], [])
    assert await user_lock_holder(redis_client, "u1") is None
    again = await enqueue_premix_funds("u1", 42, 0.5, settings=settings)
    assert again.success is True


async def test_job_without_buyer_wallets_fails_with_the_spec_message(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    await store.wallets.set_funding_wallet("u1", Keypair())
    queued = await enqueue_premix_funds("u1", 42, 0.5, settings=settings)
    assert queued.job_id is not None

    await run_worker(settings)

    _, result = await job_result(settings, queued.job_id)
    assert result["message"] == (
        "No buyer wallets found: user u1 has no buyer wallets; create buyer wallets first"
    )


async def test_amount_larger_than_the_users_wallets_hold_fails_in_phase_3(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    await store.wallets.set_funding_wallet("u1", Keypair())
    await store.wallets.add_buyer_wallets("u1", [Keypair() for _ in range(2)])
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    assert queued.job_id is not None

    await run_worker(settings)

    _, result = await job_result(settings, queued.job_id)
    assert result["message"] == (
        "Invalid parameters: mixAmount: Amount 2 SOL is more than 2 buyer wallets can hold "
        "(at most 1 SOL)"
    )
    latest = await events_of(redis_client, queued.job_id)
    assert latest is not None
    assert (latest.phase, latest.status) == (3, "failed")


async def test_payload_with_bad_fields_written_by_hand_fails_cleanly(
    settings: Settings, redis_client: Redis
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

    _, result = await job_result(settings, job_id)
    assert result["success"] is False
    assert result["message"].startswith("Invalid parameters: userChatId: ")
    assert "mixAmount: must be greater than 0 SOL" in result["message"]
    assert await user_lock_holder(redis_client, "u1") is None


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
    success, result = await job_result(settings, job_id)
    assert success is False
    assert result == {"error": "DeserializationError", "message": "unable to deserialize job"}


async def test_job_records_its_plan_in_the_ledger_before_checking_balances(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    buyers = [Keypair() for _ in range(3)]
    await store.wallets.set_funding_wallet("u1", Keypair())
    await store.wallets.add_buyer_wallets("u1", buyers)
    queued = await enqueue_premix_funds("u1", 42, "0.6", settings=settings)
    assert queued.job_id is not None

    await run_worker(settings)

    run = await Ledger(store).get(queued.job_id)
    assert run is not None
    assert [entry.recipient for entry in run.plan] == [str(k.pubkey()) for k in buyers[:2]]
    assert sum(entry.lamports for entry in run.plan) == 600_000_000
    # Phase 4 needs the RPC client, not wired yet: the job ends there, reported as failed.
    latest = await events_of(redis_client, queued.job_id)
    assert latest is not None
    assert (latest.phase, latest.status) == (4, "failed")
