"""Progress of a premix job: the six phases, the event, its emitter and its readers.

Each event goes out in one Redis round trip (one Lua script): published on the job's channel
(`PROGRESS_CHANNEL_PREFIX + job_id`) and on the all-jobs channel (`PROGRESS_ALL_CHANNEL`, or
`settings.progress_all_channel`) for
live listeners, and stored as the job's latest state (`PROGRESS_STATE_PREFIX + job_id`, TTL
`settings.progress_ttl_seconds`) for late readers; an emitter given an execution's `TryGuard`
publishes nothing once a newer try of the job began (it raises `Superseded`). Events are JSON
with camelCase keys, like the job payload the bot already speaks.

A `completed` or `failed` event is terminal: the job has ended and no retry follows. A
`retrying` event is not: a try ended with a transient failure and arq runs the job again.
"""

from collections.abc import AsyncIterator, Awaitable, Mapping
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, Final, cast

from arq.constants import result_key_prefix
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from premix.constants import (
    JOB_TYPE,
    PROGRESS_CHANNEL_PREFIX,
    PROGRESS_STATE_PREFIX,
    TOTAL_PHASES,
)
from premix.jobs import PremixFundsJob
from premix.logs import get_logger, redact_text, redact_value
from premix.settings import Settings
from premix.tries import Superseded, TryGuard

log = get_logger(__name__)


class Phase(IntEnum):
    """The six phases of a premix job (SPEC section 3), in order."""

    JOB_STARTED = 1  # job accepted, ledger entry opened (or resumed)
    VALIDATING_PARAMETERS = 2  # funding and buyer wallets exist and decrypt; options valid
    CALCULATING_DISTRIBUTION = 3  # the wallet plan is computed
    CHECKING_BALANCES = 4  # funding balance covers amount + fees + buffer
    INITIALIZING_MIXER = 5  # the transfer engine runs; sub-progress between 70 and 99
    PREMIX_COMPLETE = 6  # balances verified on chain; user notified

    @property
    def title(self) -> str:
        """The phase's title as the user sees it ("Checking Balances")."""
        return PHASE_TITLES[self]

    @property
    def percent(self) -> int:
        """The progress percentage reached when the phase starts."""
        return PHASE_PERCENTS[self]


PHASE_TITLES: Final[Mapping[Phase, str]] = {
    Phase.JOB_STARTED: "Job Started",
    Phase.VALIDATING_PARAMETERS: "Validating Parameters",
    Phase.CALCULATING_DISTRIBUTION: "Calculating Distribution",
    Phase.CHECKING_BALANCES: "Checking Balances",
    Phase.INITIALIZING_MIXER: "Initializing Mixer",
    Phase.PREMIX_COMPLETE: "Premix Complete",
}
PHASE_PERCENTS: Final[Mapping[Phase, int]] = {
    Phase.JOB_STARTED: 10,
    Phase.VALIDATING_PARAMETERS: 20,
    Phase.CALCULATING_DISTRIBUTION: 35,
    Phase.CHECKING_BALANCES: 50,
    Phase.INITIALIZING_MIXER: 70,
    Phase.PREMIX_COMPLETE: 100,
}
MIXER_LAST_PERCENT: Final = 99  # phase 5 sub-progress stays below "complete"


class ProgressStatus(StrEnum):
    """Where a job stands in the event's phase."""

    STARTED = "started"  # the job has just been picked up (phase 1)
    IN_PROGRESS = "in_progress"  # a phase is running
    RETRYING = "retrying"  # a try ended with a transient failure; arq runs the job again
    COMPLETED = "completed"  # terminal: the premix finished (phase 6)
    FAILED = "failed"  # terminal: the job ended with an error and will not be retried
    CANCELLED = "cancelled"  # terminal: `cancel_premix` stopped it (queued, or at a safe point)


TERMINAL_STATUSES: Final = frozenset(
    {ProgressStatus.COMPLETED, ProgressStatus.FAILED, ProgressStatus.CANCELLED}
)


class ProgressEvent(BaseModel):
    """One progress event. JSON keys are camelCase (`jobId`, `totalPhases`, `socketUserId`).

    `sequence` increases by one per event of a job (also across retries of the job), so a
    reader can order events and drop ones it has already seen. `percent` never decreases over
    a job's events, across retries too. `started_at` is when the job began: the timestamp of
    its first try's first event, the same on every event of the job.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    job_id: str
    job_type: str = JOB_TYPE
    user_id: str
    chat_id: int
    socket_user_id: str | None = None
    phase: int = Field(ge=1, le=TOTAL_PHASES)
    total_phases: int = TOTAL_PHASES
    title: str
    description: str = ""
    percent: int = Field(ge=0, le=100)
    status: ProgressStatus
    timestamp: datetime
    sequence: int = Field(default=0, ge=0)
    details: dict[str, JsonValue] | None = None
    started_at: datetime | None = None  # None only on events stored by an earlier premix

    @property
    def is_terminal(self) -> bool:
        """True for `completed`, `failed` and `cancelled`: no further event follows."""
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> str:
        """Return the event as compact camelCase JSON (what Redis carries)."""
        return self.model_dump_json(by_alias=True)


def progress_channel(job_id: str) -> str:
    """Return the pub/sub channel carrying one job's events."""
    return PROGRESS_CHANNEL_PREFIX + job_id


def progress_state_key(job_id: str) -> str:
    """Return the key holding one job's latest event."""
    return PROGRESS_STATE_PREFIX + job_id


def _utc_now() -> datetime:
    return datetime.now(UTC)


# KEYS: arq's try counter and result (`TryGuard.keys`), the latest-state key. ARGV: the try
# ("" = unguarded), the event, its TTL, the job's channel, the all-jobs channel.
_PUBLISH_SCRIPT: Final = (
    TryGuard.LUA
    + """
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return 1
"""
)


class ProgressEmitter:
    """Publishes one job's progress events; one emitter per execution of a job.

    Emitting is best-effort: a Redis error is logged and the event is returned anyway, because a
    progress display must never abort a run that is moving money. With `guard`, an event is
    never published once a newer try of the job began: `Superseded` is raised instead.
    """

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        job_id: str,
        job: PremixFundsJob,
        *,
        guard: TryGuard | None = None,
    ) -> None:
        self._redis = redis
        self._guard = guard
        self._all_channel = settings.progress_all_channel
        self._ttl_seconds = settings.progress_ttl_seconds
        self._job_id = job_id
        self._job = job
        self._sequence: int | None = None  # None until the job's previous event was read
        self._started_at: datetime | None = None
        self._last_phase = Phase.JOB_STARTED
        self._last_percent = 0  # also the floor of the next event's percent
        self._log = log.bind(job_id=job_id, user_id=job.user_id)

    @property
    def last_percent(self) -> int:
        """The percentage of the most recent event (this try's, or the job's previous try's
        once the first event went out; 0 before)."""
        return self._last_percent

    async def started(
        self, description: str = "Premix job accepted", **details: Any
    ) -> ProgressEvent:
        """Emit phase 1, status `started`."""
        return await self.phase(
            Phase.JOB_STARTED, ProgressStatus.STARTED, description, details=details or None
        )

    async def phase(
        self,
        phase: Phase | int,
        status: ProgressStatus | str = ProgressStatus.IN_PROGRESS,
        description: str = "",
        *,
        percent: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> ProgressEvent:
        """Emit an event for `phase` and return it. Its percent is `percent` (default: the
        phase's own), raised to the job's previous event's: the percent never goes back."""
        phase = Phase(phase)
        sequence = await self._next_sequence()
        wanted = phase.percent if percent is None else percent
        timestamp = _utc_now()
        if self._started_at is None:
            self._started_at = timestamp  # the job's first event: the job begins now
        event = ProgressEvent(
            job_id=self._job_id,
            user_id=self._job.user_id,
            chat_id=self._job.user_chat_id,
            socket_user_id=self._job.socket_user_id,
            phase=phase,
            title=phase.title,
            description=redact_text(description),
            percent=max(wanted, self._last_percent),
            status=ProgressStatus(status),
            timestamp=timestamp,
            sequence=sequence,
            details=redact_value(dict(details)) if details else None,
            started_at=self._started_at,
        )
        await self._publish(event)
        self._last_phase, self._last_percent = phase, event.percent
        return event

    async def mixer_progress(
        self, done: int, total: int, note: str = "", **details: Any
    ) -> ProgressEvent:
        """Emit phase-5 progress, "`done` of `total` wallets funded (`note`)": its percent
        maps `done` of `total` onto 70..99; `details` carry `done` and `total`."""
        start = Phase.INITIALIZING_MIXER.percent
        fraction_span = (MIXER_LAST_PERCENT - start) * max(0, min(done, total))
        percent = start + (fraction_span // total if total > 0 else 0)
        description = f"{done} of {total} wallets funded"
        return await self.phase(
            Phase.INITIALIZING_MIXER,
            ProgressStatus.IN_PROGRESS,
            f"{description} ({note})" if note else description,
            percent=percent,
            details={"done": done, "total": total, **details},
        )

    async def completed(
        self, description: str = "Premix complete", **details: Any
    ) -> ProgressEvent:
        """Emit the terminal phase-6 event, status `completed`, 100 percent."""
        return await self.phase(
            Phase.PREMIX_COMPLETE,
            ProgressStatus.COMPLETED,
            description,
            details=details or None,
        )

    async def failed(
        self, phase: Phase | int | None, message: str, **details: Any
    ) -> ProgressEvent:
        """Emit the terminal `failed` event for `phase` (default: the last phase reached).

        The percentage stays where the job stopped. Emit it only when no retry follows.
        """
        await self._continue_previous_try()
        return await self.phase(
            self._last_phase if phase is None else phase,
            ProgressStatus.FAILED,
            message,
            percent=self._last_percent,
            details=details or None,
        )

    async def cancelled(
        self, phase: Phase | int | None, message: str, **details: Any
    ) -> ProgressEvent:
        """Emit the terminal `cancelled` event for `phase` (default: the last phase reached);
        the percentage stays where the job stopped."""
        await self._continue_previous_try()
        return await self.phase(
            self._last_phase if phase is None else phase,
            ProgressStatus.CANCELLED,
            message,
            percent=self._last_percent,
            details=details or None,
        )

    async def retrying(
        self,
        phase: Phase | int | None,
        *,
        job_try: int,
        max_tries: int,
        next_try_at: datetime,
        reason: str,
    ) -> ProgressEvent:
        """Emit a `retrying` event for `phase` (default: the last phase reached): try
        `job_try` of `max_tries` ended with a transient failure, `reason` (a message the user
        may see), and the job runs again at `next_try_at`. The percentage stays where the try
        stopped."""
        at = next_try_at.astimezone(UTC)
        await self._continue_previous_try()
        return await self.phase(
            self._last_phase if phase is None else phase,
            ProgressStatus.RETRYING,
            f"Try {job_try} of {max_tries} ended ({reason}); next try at {at:%H:%M:%S} UTC",
            percent=self._last_percent,
            details={
                "jobTry": job_try,
                "maxTries": max_tries,
                "nextTryAt": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            },
        )

    async def _continue_previous_try(self) -> None:
        """Read the job's latest event once, before this emitter's first: a job's next try
        continues its numbering, its percent (the floor), its phase (the default of `failed`
        and `retrying`) and when the job began (an event stored without it lends its
        timestamp)."""
        if self._sequence is not None:
            return
        previous = await self._latest_or_none()
        self._sequence = 0
        if previous is not None:
            self._sequence = previous.sequence
            self._last_phase = Phase(previous.phase)
            self._last_percent = previous.percent
            self._started_at = previous.started_at or previous.timestamp

    async def _next_sequence(self) -> int:
        await self._continue_previous_try()
        assert self._sequence is not None
        self._sequence += 1
        return self._sequence

    async def _latest_or_none(self) -> ProgressEvent | None:
        try:
            return await latest_progress(self._redis, self._job_id)
        except (RedisError, OSError, ValueError) as e:
            self._log.warning("progress_state_unreadable", error=type(e).__name__)
            return None

    async def _publish(self, event: ProgressEvent) -> None:
        payload = event.to_json()
        state_key = progress_state_key(self._job_id)
        guard_keys = self._guard.keys if self._guard is not None else (state_key, state_key)
        try:
            published = await cast(
                Awaitable[int],
                self._redis.eval(
                    _PUBLISH_SCRIPT,
                    3,
                    *guard_keys,
                    state_key,
                    self._guard.argument if self._guard is not None else "",
                    payload,
                    str(self._ttl_seconds),
                    progress_channel(self._job_id),
                    self._all_channel,
                ),
            )
        except (RedisError, OSError) as e:
            self._log.warning(
                "progress_not_published",
                phase=event.phase,
                status=event.status,
                error=type(e).__name__,
            )
            return
        if int(published) == -1:
            raise Superseded(self._job_id)


async def latest_progress(redis: Redis, job_id: str) -> ProgressEvent | None:
    """Return the job's latest event, or None when there is none (unknown job or expired).

    Raises pydantic `ValidationError` if the stored state is not a progress event.
    """
    raw = await redis.get(progress_state_key(job_id))
    if raw is None:
        return None
    return ProgressEvent.model_validate_json(raw)


async def subscribe_progress(
    redis: Redis, job_id: str, *, poll_interval_seconds: float = 1.0
) -> AsyncIterator[ProgressEvent]:
    """Yield the job's events in order, starting with its latest state; end after a terminal one.
    A `retrying` event is not terminal: the job's next try goes on with the same stream.

    Subscribes first, then reads the latest state, so an event published in between is not
    lost and a job that already finished yields its final event and ends. Events already seen
    (by `sequence`) are skipped, a terminal one never. Also ends, after every
    `poll_interval_seconds` without an event, once arq holds a result for the job but no
    terminal event came (arq refused or dropped the job before premix could report). Otherwise
    this waits as long as the job takes; wrap it in `asyncio.timeout` to bound it.
    """
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(progress_channel(job_id))
        last_sequence = 0
        latest = await latest_progress(redis, job_id)
        if latest is not None:
            yield latest
            if latest.is_terminal:
                return
            last_sequence = latest.sequence
        while True:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=poll_interval_seconds
            )
            if message is None:
                if await redis.exists(result_key_prefix + job_id):
                    # The job has ended; its terminal event, if any, is the latest state.
                    latest = await latest_progress(redis, job_id)
                    if latest is not None and latest.is_terminal:
                        yield latest
                    return
                continue
            if message.get("type") != "message":
                continue
            event = ProgressEvent.model_validate_json(message["data"])
            if event.sequence <= last_sequence and not event.is_terminal:
                continue
            last_sequence = event.sequence
            yield event
            if event.is_terminal:
                return
