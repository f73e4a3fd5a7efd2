"""Idempotent enqueue (`idempotencyKey`, SPEC section 13): the same user and key within 24 hours
get the first call's job id back and nothing new is queued, even when the calls race.

The Redis key `premix:idempotency:<userId>:<SHA-256 hex of the key>` (hashed, so any printable
character is safe in it) holds "<job id> <fingerprint>"; the fingerprint is a SHA-256 of the
request's parameters (amount in lamports, chat id, every option but the key itself), so the
same key sent with other parameters is refused rather than answered with a premix that is not
the one asked for. The script that queues the job (`premix.queue`) checks the key first, before
the user-busy check (a bot retrying while its premix is queued or running gets that premix's
id, not "already running"), and sets it only when it queues the job. It lasts 24 hours from the
enqueue plus a scheduled job's wait: it outlives the job, so a call retried after the premix
completed still queues nothing.

When a key is given, enqueue also reads it once before the wallet check and the time checks
(`earlier_answer`, one GET): a retried call is answered from it whatever the stored wallets or
the clock say now (a runAt passed meanwhile). The script checks again: that read is a shortcut,
the script is the guarantee.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from premix.constants import IDEMPOTENCY_PREFIX
from premix.jobs import EnqueueResult, PremixFundsJob
from premix.scheduling import delay_ms

IDEMPOTENCY_KEY_SECONDS: Final = 86_400
# Delete the key only if it still names this job (KEYS[1] = the key, ARGV[1] = its value).
_RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
_SHOWN_JOB_ID_CHARS: Final = 160  # a stored value is ours; cut anyway before it is shown


@dataclass(frozen=True)
class IdempotencyClaim:
    """A request's idempotency key in Redis and the fingerprint of its parameters."""

    redis_key: str
    fingerprint: str

    @classmethod
    def of(cls, job: PremixFundsJob) -> "IdempotencyClaim | None":
        """The claim of `job`, or None when it carries no idempotency key."""
        if job.idempotency_key is None:
            return None
        digest = hashlib.sha256(job.idempotency_key.encode("ascii")).hexdigest()
        return cls(f"{IDEMPOTENCY_PREFIX}{job.user_id}:{digest}", request_fingerprint(job))

    @staticmethod
    def ttl_seconds(wait_seconds: int) -> int:
        """How long the key lasts: 24 h from when its job is due (`wait_seconds` from now)."""
        return wait_seconds + IDEMPOTENCY_KEY_SECONDS

    def value(self, job_id: str) -> str:
        """What the key holds once `job_id` is queued for it."""
        return f"{job_id} {self.fingerprint}"

    def answer(self, stored: bytes | str) -> EnqueueResult:
        """The result for a request whose key already holds `stored`: the first job's id when
        the parameters are the same, a refusal naming that job when they differ."""
        text = stored.decode(errors="replace") if isinstance(stored, bytes) else stored
        job_id, _, fingerprint = text.partition(" ")
        job_id = job_id[:_SHOWN_JOB_ID_CHARS]
        if fingerprint == self.fingerprint:
            return EnqueueResult(
                True, f"Premix already accepted as job {job_id}; nothing new was queued", job_id
            )
        return EnqueueResult(
            False,
            f"Invalid parameters: idempotencyKey was already used with different parameters "
            f"for job {job_id}; nothing was enqueued",
        )


def request_fingerprint(job: PremixFundsJob) -> str:
    """SHA-256 of the request's parameters, the same for the same request however it was
    written (2.5 or "2.50", delaySeconds 1 or 1.0, runAt in any zone)."""
    wire = job.to_wire()
    for name in ("userId", "idempotencyKey", "runId"):  # the key's own parts; retries have none
        wire.pop(name, None)
    wire["mixAmount"] = job.amount_lamports
    wire["runAt"] = job.run_at
    wire["delaySeconds"] = None if job.delay_seconds is None else delay_ms(job.delay_seconds)
    canonical = json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def earlier_answer(redis: Redis, claim: IdempotencyClaim) -> EnqueueResult | None:
    """The answer an earlier call with the same key already settled, or None. Raises
    `RedisError` and `OSError`."""
    stored = await redis.get(claim.redis_key)
    return None if stored is None else claim.answer(stored)


def release_in(pipe: Pipeline, claim: IdempotencyClaim, job_id: str) -> None:
    """Add to `pipe` (a MULTI undoing an enqueue) the deletion of the key if it names `job_id`:
    a retried call must then queue the premix, not be told it was accepted."""
    pipe.eval(_RELEASE_SCRIPT, 1, claim.redis_key, claim.value(job_id))
