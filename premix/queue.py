"""The bot's face: `enqueue_premix_funds`, `retry_premix`, `cancel_premix`, and (re-exported)
`get_premix_result` (`premix.job_results`), `enqueue_sweep` (`premix.sweep`), `queue_pool` and
`close_queue` (`premix.queue_pool`).

One premix per user at a time: enqueueing takes the user lock (`premix.user_lock`) for as long
as arq keeps the job waiting (`QUEUED_JOB_EXPIRY_SECONDS`, plus a scheduled job's wait), so a
long backlog never lets a second premix in; the worker's execution shortens, keeps alive and
releases it. The lock, arq's job record and queue entry (and an idempotency key,
`premix.idempotency`) are written by one Lua script (`premix.enqueueing`, which a sweep's
enqueue shares): one Redis round trip.

Before Redis, the user's stored wallets are checked (`premix.wallet_check`: one store read).
The Redis pool (`premix.queue_pool`) and that store are created on first use and reused (one
per URL and event loop); `close_queue()` closes them.
"""

import re
import time
from typing import Any, Final

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.utils import timestamp_ms
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from premix.amounts import format_sol
from premix.cancellation import CancelResult, CancelState, request_cancel
from premix.constants import JOB_FUNCTION
from premix.distribution import DistributionError, wallets_needed
from premix.enqueueing import (
    ENQUEUED,
    JOB_EXISTS,
    KEY_USED,
    USER_BUSY,
    job_exists_message,
    lock_and_enqueue,
    queue_error_message,
    undo_enqueue,
)
from premix.enqueueing import QUEUE_MISCONFIGURED as QUEUE_MISCONFIGURED
from premix.enqueueing import QUEUE_UNAVAILABLE as QUEUE_UNAVAILABLE
from premix.enqueueing import QUEUED_JOB_EXPIRY_SECONDS as QUEUED_JOB_EXPIRY_SECONDS
from premix.idempotency import IdempotencyClaim, earlier_answer
from premix.job_results import get_premix_result as get_premix_result
from premix.jobs import (
    JOB_ID_PATTERN,
    EnqueueResult,
    PremixFundsJob,
    PremixOptions,
    describe_validation_error,
)
from premix.ledger import Ledger
from premix.logs import get_logger
from premix.queue_pool import close_queue as close_queue
from premix.queue_pool import queue_client
from premix.queue_pool import queue_pool as queue_pool
from premix.retry import retry_job, retry_queued_message, retry_refusal
from premix.scheduling import format_run_time, run_time_ms, schedule_refusal
from premix.settings import Settings, SettingsInvalid, describe_settings_error, get_settings
from premix.store import Store, StoreConfigError
from premix.sweep import SWEEP_JOB_ID_PATTERN
from premix.sweep import enqueue_sweep as enqueue_sweep
from premix.user_lock import user_lock_holder
from premix.wallet_check import STORE_UNAVAILABLE as STORE_UNAVAILABLE
from premix.wallet_check import enqueue_store, wallet_check_refusal

log = get_logger(__name__)

LEDGER_UNAVAILABLE: Final = "Queue unavailable: could not read the ledger; nothing was enqueued"
CANCEL_UNAVAILABLE: Final = "Cancel unavailable: could not reach Redis; nothing was cancelled"
CANCEL_MISCONFIGURED: Final = "Cancel unavailable: premix is misconfigured; nothing was cancelled"
CANCEL_LEDGER_UNAVAILABLE: Final = (
    "Cancel unavailable: could not read the ledger; nothing was cancelled"
)


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
    `socketUserId`/`socket_user_id`, `topUp`, `runAt` or `delaySeconds`: start no earlier,
    `premix.scheduling`; `idempotencyKey`: `premix.idempotency`). Refused, with nothing
    enqueued: invalid parameters, a runAt in the past or more than 30 days ahead, an amount the
    allowed wallets cannot hold, a user with no funding wallet, no buyer wallets or too few for
    the amount (one read of the store, `premix.wallet_check`), a premix already queued or
    running for the user, an unreachable Redis or store. An idempotency key already used by
    the user in the last 24 h answers first: the first call's job id (success, nothing new
    queued), or a refusal when the parameters differ. `settings` defaults to `get_settings()`;
    `redis` defaults to the shared pool for `settings.redis_url`.
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
    claim = IdempotencyClaim.of(job)
    if claim is not None:  # a retried call is answered as the first was, before anything else
        try:
            answer = await earlier_answer(arq_redis, claim)
        except (RedisError, OSError) as e:
            bound_log.warning("enqueue_failed", error=type(e).__name__)
            return EnqueueResult(False, queue_error_message(e))
        if answer is not None:
            return answer
    now_ms = timestamp_ms()
    problem = schedule_refusal(job.run_at, now_ms)
    if problem is not None:
        return EnqueueResult(False, f"Invalid parameters: {problem}")
    run_at_ms = run_time_ms(job.run_at, job.delay_seconds, now_ms)
    refusal = await wallet_check_refusal(job, settings)  # after the checks that need no I/O
    if refusal is not None:
        return EnqueueResult(False, refusal)

    try:
        outcome, holder = await _lock_and_enqueue(
            arq_redis, settings.queue_name, job, job_id, run_at_ms=run_at_ms, claim=claim
        )
    except (RedisError, OSError) as e:
        bound_log.warning("enqueue_failed", error=type(e).__name__)
        if await undo_enqueue(arq_redis, settings.queue_name, job.user_id, job_id, claim):
            return EnqueueResult(False, queue_error_message(e))
        outcome, holder = ENQUEUED, None  # its reply was lost, but a worker already runs it
    except BaseException:
        await undo_enqueue(arq_redis, settings.queue_name, job.user_id, job_id, claim)
        raise
    if outcome == KEY_USED and claim is not None:
        return claim.answer(holder or "")  # a call with the same key queued its job meanwhile
    if outcome == USER_BUSY:
        bound_log.info("premix_refused_user_busy", running_job_id=holder)
        return EnqueueResult(False, _user_busy_message(holder))
    if outcome == JOB_EXISTS:  # arq refuses a job id it already knows
        return EnqueueResult(False, job_exists_message(job_id))

    bound_log.info(
        "premix_enqueued",
        amount_lamports=job.amount_lamports,
        mode=job.mode,
        max_wallets=job.max_wallets,
        run_at_ms=run_at_ms,
    )
    when = "queued" if run_at_ms is None else f"scheduled for {format_run_time(run_at_ms)}"
    return EnqueueResult(
        True, f"Premix of {format_sol(job.amount_lamports)} {when} as job {job_id}", job_id
    )


def _user_busy_message(holder: str | None) -> str:
    running = f" (job {holder})" if holder else ""
    return f"A premix is already queued or running for this user{running}; wait for it to finish"


async def _lock_and_enqueue(
    redis: Redis,
    queue_name: str,
    job: PremixFundsJob,
    job_id: str,
    *,
    run_at_ms: int | None = None,
    claim: IdempotencyClaim | None = None,
) -> tuple[int, str | None]:
    """Take the user lock and queue the premix job in one round trip (`lock_and_enqueue`)."""
    return await lock_and_enqueue(
        redis,
        queue_name,
        user_id=job.user_id,
        job_id=job_id,
        function=JOB_FUNCTION,
        payload=job.to_wire(),
        run_at_ms=run_at_ms,
        claim=claim,
    )


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
        store = await enqueue_store(settings)  # shared per process, not closed here
        return await _retry_run(arq_redis, store, settings, job_id)
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
        return EnqueueResult(False, _user_busy_message(holder))
    for earlier in (run.run_id, *run.retry_jobs):  # its lock may have expired while it waits
        if await redis.exists(job_key_prefix + earlier, in_progress_key_prefix + earlier):
            return EnqueueResult(
                False,
                f"Premix {run.run_id} is still queued or running as job {earlier}; nothing "
                "was enqueued",
            )
    retry_id = new_job_id(job.user_id)
    await ledger.add_retry_job(run.run_id, retry_id)  # before the job can start
    try:
        outcome, holder = await _lock_and_enqueue(redis, settings.queue_name, job, retry_id)
    except (RedisError, OSError):
        if await undo_enqueue(redis, settings.queue_name, job.user_id, retry_id):
            raise
        outcome, holder = ENQUEUED, None  # its reply was lost, but a worker already runs it
    except BaseException:
        await undo_enqueue(redis, settings.queue_name, job.user_id, retry_id)
        raise
    if outcome == USER_BUSY:
        return EnqueueResult(False, _user_busy_message(holder))
    if outcome == JOB_EXISTS:
        return EnqueueResult(False, job_exists_message(retry_id))
    log.info("premix_retry_enqueued", job_id=retry_id, run_id=run.run_id)
    return EnqueueResult(True, retry_queued_message(run, retry_id), retry_id)


async def cancel_premix(
    job_id: str, *, settings: Settings | None = None, redis: Redis | None = None
) -> CancelResult:
    """Cancel premix (or sweep) `job_id`; report the outcome (`CancelResult(success, message,
    state)`), never raise (`premix.cancellation` has the rules).

    A queued or deferred job is taken out of the queue (state `cancelled`; its user may enqueue
    at once); a running one is asked to stop at its next safe point and this returns at once
    (state `cancelling`; the job then ends `cancelled`, reporting exactly what was sent). A
    finished job is not changed (success False, state `completed`, `failed` or `cancelled`);
    an unknown id is state `unknown`, an invalid one `invalid`, an unreachable Redis or store
    `unavailable`.
    """
    try:
        settings = settings if settings is not None else get_settings()
    except SettingsInvalid as e:
        log.error("cancel_settings_invalid", error=describe_settings_error(e))
        return CancelResult(False, CANCEL_MISCONFIGURED, CancelState.UNAVAILABLE)
    if not isinstance(job_id, str) or not (
        re.fullmatch(JOB_ID_PATTERN, job_id) or re.fullmatch(SWEEP_JOB_ID_PATTERN, job_id)
    ):
        return CancelResult(
            False,
            "Invalid job id: expected premix-<userId>-<unix ms>; nothing was cancelled",
            CancelState.INVALID,
        )
    bound_log = log.bind(job_id=job_id)
    try:
        arq_redis = queue_client(settings, redis)
        store = await Store.open(settings)
        try:
            return await request_cancel(arq_redis, store, settings, job_id)
        finally:
            await store.close()
    except ValueError as e:  # not a redis:// URL
        bound_log.error("cancel_redis_url_invalid", error=str(e))
        return CancelResult(False, CANCEL_MISCONFIGURED, CancelState.UNAVAILABLE)
    except (RedisError, OSError) as e:
        bound_log.warning("cancel_failed", error=type(e).__name__)
        return CancelResult(False, CANCEL_UNAVAILABLE, CancelState.UNAVAILABLE)
    except (PyMongoError, StoreConfigError) as e:
        bound_log.warning("cancel_store_unavailable", error=type(e).__name__)
        return CancelResult(False, CANCEL_LEDGER_UNAVAILABLE, CancelState.UNAVAILABLE)
