"""The enqueue side: `enqueue_premix_funds`, called by the bot backend, and
`get_premix_result`, the receipt of a job (built in `premix.receipts`).

One premix per user at a time: enqueueing takes the user lock (`premix.user_lock`) for as long
as arq keeps the job waiting (`QUEUED_JOB_EXPIRY_SECONDS`), so a long backlog never lets a
second premix in; the worker's execution shortens, keeps alive and releases it. The lock and
arq's job record and queue entry are written by one Lua script: one Redis round trip
(`premix.enqueueing`, which also holds the shared Redis pools: `queue_pool`, `close_queue`).
"""

import re
import time
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import DeserializationError, Job, JobDef, JobResult
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from premix.amounts import format_sol
from premix.constants import JOB_FUNCTION
from premix.distribution import DistributionError, wallets_needed
from premix.enqueueing import (
    JOB_EXISTS,
    LEDGER_UNAVAILABLE,
    QUEUE_MISCONFIGURED,
    QUEUE_UNAVAILABLE,
    QUEUED_JOB_EXPIRY_SECONDS,
    USER_BUSY,
    close_queue,
    job_exists_message,
    lock_and_enqueue,
    queue_client,
    queue_error_message,
    queue_pool,
    undo_enqueue,
    user_busy_message,
)
from premix.jobs import (
    JOB_ID_PATTERN,
    EnqueueResult,
    PremixFundsJob,
    PremixOptions,
    describe_validation_error,
)
from premix.ledger import Ledger
from premix.logs import get_logger
from premix.receipts import JobRecordUnreadable, receipt_from_arq, receipt_from_run
from premix.retry import retry_job, retry_queued_message, retry_refusal
from premix.serialization import job_deserializer
from premix.settings import Settings, SettingsInvalid, describe_settings_error, get_settings
from premix.store import Store, StoreConfigError
from premix.sweep import enqueue_sweep
from premix.user_lock import user_lock_holder

__all__ = [  # the enqueue side's names, wherever they live
    "LEDGER_UNAVAILABLE",
    "QUEUED_JOB_EXPIRY_SECONDS",
    "QUEUE_MISCONFIGURED",
    "QUEUE_UNAVAILABLE",
    "close_queue",
    "enqueue_premix_funds",
    "enqueue_sweep",
    "get_premix_result",
    "new_job_id",
    "queue_pool",
    "retry_premix",
]

log = get_logger(__name__)


def new_job_id(user_id: str) -> str:
    """Return a job id `premix-{userId}-{unix_ms}`."""
    return f"premix-{user_id}-{time.time_ns() // 1_000_000}"


def _wallets_needed_error(job: PremixFundsJob, settings: Settings) -> str | None:
    """Return why no plan can hold the amount for the wallets allowed, or None if one can."""
    wallet_limit = settings.wallet_limit(job.max_wallets)
    try:
        wallets_needed(job.amount_lamports, wallet_limit, settings.tier_table())
    except DistributionError as e:
        return f"mixAmount: {e}"
    return None


async def enqueue_premix_funds(
    user_id: object,
    user_chat_id: object,
    mix_amount: object,
    options: PremixOptions | dict[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    redis: Redis | None = None,
) -> EnqueueResult:
    """Queue a premix of `mix_amount` SOL for `user_id`; report the outcome, never raise.

    `options`: `PremixOptions` or a dict (`maxWallets`/`max_wallets`, `mode`,
    `socketUserId`/`socket_user_id`). Refused, with nothing enqueued: invalid parameters, an
    amount the allowed wallets cannot hold, a premix already queued or running for the user,
    an unreachable Redis. `settings` defaults to `get_settings()`; `redis` defaults to the
    shared pool for `settings.redis_url`.
    """
    try:
        settings = settings if settings is not None else get_settings()
    except SettingsInvalid as e:
        log.error("enqueue_settings_invalid", error=describe_settings_error(e))
        return EnqueueResult(False, QUEUE_MISCONFIGURED)
    try:
        job = PremixFundsJob.from_request(user_id, user_chat_id, mix_amount, options)
    except ValidationError as e:
        return EnqueueResult(False, f"Invalid parameters: {describe_validation_error(e)}")
    except TypeError as e:
        return EnqueueResult(False, f"Invalid parameters: {e}")
    problem = _wallets_needed_error(job, settings)
    if problem is not None:
        return EnqueueResult(False, f"Invalid parameters: {problem}")

    job_id = new_job_id(job.user_id)
    bound_log = log.bind(job_id=job_id, user_id=job.user_id)
    try:
        arq_redis = queue_client(settings, redis)
    except ValueError as e:  # not a redis:// URL
        bound_log.error("enqueue_redis_url_invalid", error=str(e))
        return EnqueueResult(False, QUEUE_MISCONFIGURED)

    try:
        outcome, holder = await _lock_and_enqueue(arq_redis, settings.queue_name, job, job_id)
    except (RedisError, OSError) as e:
        bound_log.warning("enqueue_failed", error=type(e).__name__)
        await undo_enqueue(arq_redis, settings.queue_name, job.user_id, job_id)
        return EnqueueResult(False, queue_error_message(e))
    except BaseException:
        await undo_enqueue(arq_redis, settings.queue_name, job.user_id, job_id)
        raise
    if outcome == USER_BUSY:
        bound_log.info("premix_refused_user_busy", running_job_id=holder)
        return EnqueueResult(False, user_busy_message(holder))
    if outcome == JOB_EXISTS:  # arq refuses a job id it already knows
        return EnqueueResult(False, job_exists_message(job_id))

    bound_log.info(
        "premix_enqueued",
        amount_lamports=job.amount_lamports,
        mode=job.mode,
        max_wallets=job.max_wallets,
    )
    return EnqueueResult(
        True, f"Premix of {format_sol(job.amount_lamports)} queued as job {job_id}", job_id
    )


async def _lock_and_enqueue(
    redis: Redis, queue_name: str, job: PremixFundsJob, job_id: str
) -> tuple[int, str | None]:
    """Take the user lock and queue the premix job in one round trip; return (outcome, holder)."""
    return await lock_and_enqueue(
        redis,
        queue_name,
        user_id=job.user_id,
        job_id=job_id,
        function=JOB_FUNCTION,
        payload=job.to_wire(),
    )


async def get_premix_result(job_id: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """Return the receipt of job `job_id` (`premix.receipts`: every planned wallet with its
    position, address, lamports, signature, slot and status, and the totals), or None when
    neither the ledger nor arq knows the job.

    Read from the ledger run (what equals the chain), with arq's state of the job; a job with
    no run yet is answered from arq (`status` `queued`, no wallets). `settings` defaults to
    `get_settings()`. Raises `JobRecordUnreadable` when there is no run and arq's record of the
    job is not premix JSON; Redis or PyMongo errors when a store is unreachable.
    """
    settings = settings if settings is not None else get_settings()
    redis = queue_pool(settings.redis_url)
    job = Job(job_id, redis, _queue_name=settings.queue_name, _deserializer=job_deserializer)
    job_status = str((await job.status()).value)
    unreadable: DeserializationError | None = None
    try:
        info = await job.info()
    except DeserializationError as e:  # arq's wrap of premix's: not JSON; the ledger answers
        log.warning("premix_result_job_unreadable", job_id=job_id)
        info, unreadable = None, e
    store = await Store.open(settings)
    try:
        run = await Ledger(store).run_of_job(job_id)
    finally:
        await store.close()
    if run is not None:
        latest = run.retry_jobs[-1] if run.retry_jobs else run.run_id
        if latest != job_id:  # the run went on in a retry job: its state and result answer
            job = Job(
                latest, redis, _queue_name=settings.queue_name, _deserializer=job_deserializer
            )
            job_status = str((await job.status()).value)
            info = await _job_info_or_none(job)
        stored = info if isinstance(info, JobResult) else None
        return receipt_from_run(job_id, run, job_status, stored)
    if unreadable is not None:
        raise JobRecordUnreadable(
            f"job {job_id} has no ledger run and its record in Redis is not premix JSON"
        ) from unreadable
    return receipt_from_arq(job_id, job_status, info)


async def retry_premix(
    job_id: str, *, settings: Settings | None = None, redis: Redis | None = None
) -> EnqueueResult:
    """Queue a new try of the ledger run of job `job_id` (a premix that failed or stopped): a
    new job that continues the same run, settling its open attempts first and funding only the
    wallets it did not fund. Reports the outcome, never raises.

    Refused, with nothing enqueued: an unknown job, a run that completed, a premix of the user
    queued or running (this one or another), an unreachable Redis or store. The new job's id is
    in the result; `get_premix_result` answers for either id.
    """
    try:
        settings = settings if settings is not None else get_settings()
    except SettingsInvalid as e:
        log.error("retry_settings_invalid", error=describe_settings_error(e))
        return EnqueueResult(False, QUEUE_MISCONFIGURED)
    if not isinstance(job_id, str) or not re.fullmatch(JOB_ID_PATTERN, job_id):
        return EnqueueResult(False, "Invalid job id: expected premix-<userId>-<unix ms>")
    try:
        arq_redis = queue_client(settings, redis)
    except ValueError as e:
        log.error("retry_redis_url_invalid", error=str(e))
        return EnqueueResult(False, QUEUE_MISCONFIGURED)
    bound_log = log.bind(job_id=job_id)
    try:
        store = await Store.open(settings)
        try:
            return await _retry_run(arq_redis, store, settings, job_id)
        finally:
            await store.close()
    except (RedisError, OSError) as e:
        bound_log.warning("retry_failed", error=type(e).__name__)
        return EnqueueResult(False, queue_error_message(e))
    except (PyMongoError, StoreConfigError) as e:
        bound_log.warning("retry_store_unavailable", error=type(e).__name__)
        return EnqueueResult(False, LEDGER_UNAVAILABLE)


async def _retry_run(
    redis: ArqRedis, store: Store, settings: Settings, job_id: str
) -> EnqueueResult:
    ledger = Ledger(store)
    run = await ledger.run_of_job(job_id)
    refusal = retry_refusal(job_id, run)
    if refusal is not None or run is None:
        return EnqueueResult(False, refusal or f"Unknown premix {job_id}")
    job = retry_job(run)
    holder = await user_lock_holder(redis, job.user_id)
    if holder is not None:
        return EnqueueResult(False, user_busy_message(holder))
    retry_id = new_job_id(job.user_id)
    await ledger.add_retry_job(run.run_id, retry_id)  # before the job can start
    try:
        outcome, holder = await _lock_and_enqueue(redis, settings.queue_name, job, retry_id)
    except BaseException:
        await undo_enqueue(redis, settings.queue_name, job.user_id, retry_id)
        raise
    if outcome == USER_BUSY:
        return EnqueueResult(False, user_busy_message(holder))
    if outcome == JOB_EXISTS:
        return EnqueueResult(False, job_exists_message(retry_id))
    log.info("premix_retry_enqueued", job_id=retry_id, run_id=run.run_id)
    return EnqueueResult(True, retry_queued_message(run, retry_id), retry_id)


async def _job_info_or_none(job: Job) -> JobDef | None:
    try:
        return await job.info()
    except DeserializationError:
        log.warning("premix_result_job_unreadable", job_id=job.job_id)
        return None
