"""The enqueue script: one Lua script takes a user's lock and writes arq's job record and
queue entry (and an idempotency key) in one round trip, atomically, for every job that holds
the user lock (a premix, its retry, a sweep: never two at once for one user); its undo and the
messages of its outcomes. Used by `premix.queue` and `premix.sweep`.
"""

from collections.abc import Awaitable
from typing import Any, Final, cast

from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from premix.idempotency import IdempotencyClaim
from premix.logs import get_logger
from premix.serialization import job_serializer
from premix.user_lock import user_lock_key

log = get_logger(__name__)

# arq drops a job not started within this long; the user's marker lasts as long while it waits.
QUEUED_JOB_EXPIRY_SECONDS: Final = 86_400

QUEUE_UNAVAILABLE: Final = "Queue unavailable: could not reach Redis; nothing was enqueued"
# Configuration errors are logged in full; the user sees only this.
QUEUE_MISCONFIGURED: Final = "Queue unavailable: premix is misconfigured; nothing was enqueued"

ENQUEUED, USER_BUSY, JOB_EXISTS, KEY_USED = 1, 0, -1, 2
# The user lock and arq's enqueue in one script (one round trip, atomic), writing exactly what
# `ArqRedis.enqueue_job` writes: the job record (`arq:job:<id>`, PSETEX its expiry) and its
# queue entry (ZADD, score = the time it is due in ms), refused like arq when the job or its
# result exists. KEYS: lock, job, result, queue[, idempotency key]; ARGV: job id, lock ttl s,
# job bytes, job expiry ms, score[, idempotency value, its ttl s]. Returns {2, stored} (the
# idempotency key is taken: checked first, `premix.idempotency`), {0, holder} (user busy), {-1}
# (job id known) or {1} (queued). The ZADD goes first: a queue key of the wrong type fails the
# script before anything is written.
ENQUEUE_SCRIPT: Final = """
if KEYS[5] then
    local accepted = redis.call('GET', KEYS[5])
    if accepted then
        return {2, accepted}
    end
end
local holder = redis.call('GET', KEYS[1])
if holder then
    return {0, holder}
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then
    return {-1}
end
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('PSETEX', KEYS[2], ARGV[4], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if KEYS[5] then
    redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[7])
end
return {1}
"""


def job_exists_message(job_id: str) -> str:
    return f"A job with id {job_id} already exists; nothing was enqueued"


async def lock_and_enqueue(
    redis: Redis,
    queue_name: str,
    *,
    user_id: str,
    job_id: str,
    function: str,
    payload: dict[str, Any],
    run_at_ms: int | None = None,
    claim: IdempotencyClaim | None = None,
) -> tuple[int, str | None]:
    """Take `user_id`'s lock and queue arq job `job_id` (`function` with the one argument
    `payload`) in one round trip; return (outcome, holder or the idempotency key's value):
    `ENQUEUED`, `USER_BUSY`, `JOB_EXISTS` or `KEY_USED`. `run_at_ms`: defer the job until then
    (as arq's `_defer_until`: the job record, the lock and `claim` last the wait longer);
    `claim`: check and set it."""
    enqueue_time_ms = timestamp_ms()
    score = max(run_at_ms or enqueue_time_ms, enqueue_time_ms)
    wait_seconds = -(-(score - enqueue_time_ms) // 1000)
    job_bytes = serialize_job(
        function, (payload,), {}, None, enqueue_time_ms, serializer=job_serializer
    )
    keys = [user_lock_key(user_id), job_key_prefix + job_id, result_key_prefix + job_id]
    arguments: list[Any] = [
        job_id,
        str(wait_seconds + QUEUED_JOB_EXPIRY_SECONDS),
        job_bytes,
        str(score - enqueue_time_ms + QUEUED_JOB_EXPIRY_SECONDS * 1000),  # arq's `_expires`
        str(score),
    ]
    if claim is not None:
        keys.append(claim.redis_key)
        arguments += [claim.value(job_id), str(claim.ttl_seconds(wait_seconds))]
    reply = await cast(
        Awaitable[list[Any]],
        redis.eval(ENQUEUE_SCRIPT, len(keys) + 1, *keys[:3], queue_name, *keys[3:], *arguments),
    )
    holder = reply[1] if len(reply) > 1 else None
    return int(reply[0]), holder.decode() if isinstance(holder, bytes) else holder


def queue_error_message(error: BaseException) -> str:
    if isinstance(error, RedisConnectionError | RedisTimeoutError | OSError):
        return QUEUE_UNAVAILABLE
    return (
        f"Queue unavailable: Redis refused the job ({type(error).__name__}); nothing was enqueued"
    )


# Undo an enqueue whose outcome is unknown (its reply was lost, or the call was cancelled), in
# one script: if a worker has already taken the job (arq's in-progress key or try counter), it
# was queued and is running: nothing is removed. Otherwise its record, queue entry, the user
# lock and the idempotency key are removed where they name this job. KEYS: job record, queue,
# in-progress, try counter, user lock, idempotency key ("" for none); ARGV: job id, the key's
# value for this job ("" for none). Returns 1 when undone, 0 when a worker has the job.
_UNDO_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[3], KEYS[4]) > 0 then
    return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[5]) == ARGV[1] then
    redis.call('DEL', KEYS[5])
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[6]) == ARGV[2] then
    redis.call('DEL', KEYS[6])
end
return 1
"""


async def undo_enqueue(
    redis: Redis,
    queue_name: str,
    user_id: str,
    job_id: str,
    claim: IdempotencyClaim | None = None,
) -> bool:
    """Undo an enqueue whose outcome is unknown; False when a worker has already taken the job
    (it was queued, and is left alone: its lock and idempotency key stay, so a retried call
    cannot queue it twice). Best effort: with Redis unreachable it logs and returns True."""
    keys = (
        job_key_prefix + job_id,
        queue_name,
        in_progress_key_prefix + job_id,
        retry_key_prefix + job_id,
        user_lock_key(user_id),
        claim.redis_key if claim is not None else "",
    )
    value = claim.value(job_id) if claim is not None else ""
    try:
        undone = await cast(
            Awaitable[int], redis.eval(_UNDO_SCRIPT, len(keys), *keys, job_id, value)
        )
    except (RedisError, OSError) as e:
        log.warning("enqueue_not_undone", job_id=job_id, error=type(e).__name__)
        return True
    if not int(undone):
        log.warning("enqueue_outcome_was_queued", job_id=job_id)  # a worker already runs it
    return bool(int(undone))
