"""Sweeps (SPEC section 13): the buyer wallets' SOL straight back to the funding wallet.

    result = await enqueue_sweep(user_id, chat_id, {"keepSol": 0})   # also premix.queue

The request (`SweepJob`, `SweepOptions`: `keepSol`, SOL left in each wallet, default 0), its
pure planning (`plan_sweep`: what each wallet moves, read from its balance at plan time) and the
enqueue side. A sweep holds the same user lock as a premix (one Lua script takes it and queues
the job: `premix.enqueueing`), so a sweep and a premix of one user never overlap. The worker
side is `premix.sweep_execution`; the transfers are `premix.mixer.sweeping`.

A wallet must end at 0 or at least the rent-exempt minimum (an account between the two cannot
exist on chain), so a `keepSol` between 0 and 0.00089088 SOL is refused; a wallet holding no
more than `keepSol` is skipped.
"""

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from premix.amounts import format_sol, lamports_to_sol, sol_to_lamports
from premix.distribution import RENT_EXEMPT_MINIMUM_LAMPORTS
from premix.enqueueing import (
    ENQUEUED,
    JOB_EXISTS,
    QUEUE_MISCONFIGURED,
    USER_BUSY,
    job_exists_message,
    lock_and_enqueue,
    queue_error_message,
    undo_enqueue,
)
from premix.jobs import (
    ChatId,
    EnqueueResult,
    PremixFundsJob,
    SocketUserId,
    UserId,
    describe_validation_error,
)
from premix.logs import get_logger
from premix.queue_pool import queue_client
from premix.settings import Settings, SettingsInvalid, describe_settings_error, get_settings
from premix.wallet_check import wallet_check_refusal

log = get_logger(__name__)

SWEEP_FUNCTION: Final = "premix_sweep"  # the arq function a sweep job runs (`premix.worker`)
SWEEP_JOB_TYPE: Final = "sweep"  # `jobType` of a sweep's progress events
SWEEP_JOB_ID_PATTERN: Final = r"^sweep-[A-Za-z0-9_.:@-]{1,128}-[0-9]{1,16}$"


def _parse_keep(value: object) -> Decimal:
    # an AmountError is a ValueError: pydantic reports it against `keepSol` with our sentence
    return lamports_to_sol(sol_to_lamports(value, allow_zero=True))


KeepSol = Annotated[
    Decimal,
    BeforeValidator(_parse_keep),
    PlainSerializer(lambda amount: f"{amount:f}", return_type=str, when_used="json"),
]
_MODEL_CONFIG = ConfigDict(
    alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
)


class SweepOptions(BaseModel):
    """Options of a sweep. Accepts camelCase (`keepSol`) and snake_case (`keep_sol`)."""

    model_config = _MODEL_CONFIG

    keep_sol: KeepSol = Decimal(0)  # SOL left in each buyer wallet (0: empty it)
    socket_user_id: SocketUserId = None


class SweepJob(BaseModel):
    """One sweep request as it travels through the queue (JSON, camelCase on the wire)."""

    model_config = _MODEL_CONFIG

    user_id: UserId
    user_chat_id: ChatId
    keep_sol: KeepSol = Decimal(0)
    socket_user_id: SocketUserId = None

    @property
    def keep_lamports(self) -> int:
        """What each buyer wallet keeps, in integer lamports (exact)."""
        return sol_to_lamports(self.keep_sol, allow_zero=True)

    @classmethod
    def from_request(
        cls,
        user_id: object,
        user_chat_id: object,
        options: "SweepOptions | dict[str, Any] | None" = None,
    ) -> "SweepJob":
        """Build a job from `enqueue_sweep` arguments; raises pydantic `ValidationError`, or
        `TypeError` for options that are neither a `SweepOptions` nor a dict."""
        if options is None:
            fields: dict[str, Any] = {}
        elif isinstance(options, SweepOptions | dict):
            parsed = (
                options
                if isinstance(options, SweepOptions)
                else SweepOptions.model_validate(options)
            )
            fields = parsed.model_dump(by_alias=True, exclude_unset=True)
        else:
            raise TypeError(
                f"options must be a SweepOptions or a dict, not {type(options).__name__}"
            )
        return cls.model_validate({"userId": user_id, "userChatId": user_chat_id, **fields})

    def to_wire(self) -> dict[str, Any]:
        """The JSON-safe camelCase payload put on the queue."""
        return self.model_dump(mode="json", by_alias=True)

    def as_premix_job(self) -> PremixFundsJob:
        """What the machinery a sweep shares with a premix reads of a job (user, chat, socket;
        every buyer wallet); its amount is 0: a sweep moves what the wallets hold."""
        return _SweepStandIn.model_construct(
            user_id=self.user_id,
            user_chat_id=self.user_chat_id,
            mix_amount=Decimal(0),
            max_wallets=None,
            mode="fast",
            socket_user_id=self.socket_user_id,
            top_up=False,
            run_id=None,
        )


class _SweepStandIn(PremixFundsJob):
    """A `PremixFundsJob` standing for a sweep (never queued): it has no mix amount."""

    @property
    def amount_lamports(self) -> int:
        return 0


def keep_refusal(
    keep_lamports: int, rent_exempt_lamports: int = RENT_EXEMPT_MINIMUM_LAMPORTS
) -> str | None:
    """Why a sweep keeping `keep_lamports` per wallet is refused (a balance no account can
    have: above 0, below the rent-exempt minimum), or None."""
    if 0 < keep_lamports < rent_exempt_lamports:
        return (
            f"keepSol: {format_sol(keep_lamports)} would leave each wallet below the rent-exempt "
            f"minimum of {format_sol(rent_exempt_lamports)}; keep 0 (empty the wallets) or at "
            f"least {format_sol(rent_exempt_lamports)}"
        )
    return None


def plan_sweep(balances: Sequence[int], keep_lamports: int) -> list[int]:
    """What each wallet moves to the funding wallet, in the order of `balances` (lamports held
    at plan time): all but `keep_lamports`; 0 for a wallet holding no more than that (skipped)."""
    if keep_lamports < 0:
        raise ValueError("a sweep keeps 0 lamports or more")
    return [balance - keep_lamports if balance > keep_lamports else 0 for balance in balances]


def new_sweep_job_id(user_id: str) -> str:
    """Return a job id `sweep-{userId}-{unix_ms}`."""
    return f"sweep-{user_id}-{time.time_ns() // 1_000_000}"


def user_busy_message(holder: str | None) -> str:
    running = f" (job {holder})" if holder else ""
    return (
        f"A premix or sweep is already queued or running for this user{running}; "
        "wait for it to finish"
    )


async def enqueue_sweep(
    user_id: object,
    user_chat_id: object,
    options: SweepOptions | dict[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    redis: Redis | None = None,
) -> EnqueueResult:
    """Queue a sweep of `user_id`'s buyer wallets into their funding wallet; report the
    outcome, never raise.

    `options`: `SweepOptions` or a dict (`keepSol`/`keep_sol`: SOL left in each wallet,
    default 0; `socketUserId`/`socket_user_id`). Refused, with nothing enqueued: invalid
    parameters (a `keepSol` between 0 and the rent-exempt minimum among them), a user with no
    funding or no buyer wallets, a premix or sweep already queued or running for the user, an
    unreachable Redis or store. `settings` defaults to
    `get_settings()`; `redis` to the shared pool for `settings.redis_url`.
    """
    try:
        settings = settings if settings is not None else get_settings()
    except SettingsInvalid as e:
        log.error("enqueue_settings_invalid", error=describe_settings_error(e))
        return EnqueueResult(False, QUEUE_MISCONFIGURED)
    try:
        job = SweepJob.from_request(user_id, user_chat_id, options)
    except ValidationError as e:
        return EnqueueResult(False, f"Invalid parameters: {describe_validation_error(e)}")
    except TypeError as e:
        return EnqueueResult(False, f"Invalid parameters: {e}")
    problem = keep_refusal(job.keep_lamports)
    if problem is not None:
        return EnqueueResult(False, f"Invalid parameters: {problem}")
    refusal = await wallet_check_refusal(job.as_premix_job(), settings)  # one store read
    if refusal is not None:  # no funding wallet, no buyer wallets, or the store unreachable
        return EnqueueResult(False, refusal)

    job_id = new_sweep_job_id(job.user_id)
    bound_log = log.bind(job_id=job_id, user_id=job.user_id)
    try:
        arq_redis = queue_client(settings, redis)
    except ValueError as e:  # not a redis:// URL
        bound_log.error("enqueue_redis_url_invalid", error=str(e))
        return EnqueueResult(False, QUEUE_MISCONFIGURED)
    try:
        outcome, holder = await lock_and_enqueue(
            arq_redis,
            settings.queue_name,
            user_id=job.user_id,
            job_id=job_id,
            function=SWEEP_FUNCTION,
            payload=job.to_wire(),
        )
    except (RedisError, OSError) as e:
        bound_log.warning("enqueue_failed", error=type(e).__name__)
        if await undo_enqueue(arq_redis, settings.queue_name, job.user_id, job_id):
            return EnqueueResult(False, queue_error_message(e))
        outcome, holder = ENQUEUED, None  # its reply was lost, but a worker already runs it
    except BaseException:
        await undo_enqueue(arq_redis, settings.queue_name, job.user_id, job_id)
        raise
    if outcome == USER_BUSY:
        bound_log.info("sweep_refused_user_busy", running_job_id=holder)
        return EnqueueResult(False, user_busy_message(holder))
    if outcome == JOB_EXISTS:
        return EnqueueResult(False, job_exists_message(job_id))
    bound_log.info("sweep_enqueued", keep_lamports=job.keep_lamports)
    keep = f", keeping {format_sol(job.keep_lamports)} per wallet" if job.keep_lamports else ""
    return EnqueueResult(
        True,
        f"Sweep of the buyer wallets into the funding wallet{keep} queued as job {job_id}",
        job_id,
    )
