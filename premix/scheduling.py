"""When a premix may start: the `runAt` and `delaySeconds` options (SPEC section 13). Pure.

`runAt` is an ISO-8601 time naming its zone ("2026-12-24T18:00:00Z", "...+01:00"), an aware
`datetime`, or epoch milliseconds (an int); it is kept as epoch milliseconds and written back as
UTC ISO-8601. `delaySeconds` is a positive int or float (sub-second delays allowed; the run
time is rounded up to the next millisecond). Enqueue resolves either into the job's run time in
epoch milliseconds: arq's queue score, so no worker starts the job before it
(`premix.queue._lock_and_enqueue` defers the job as `ArqRedis.enqueue_job(_defer_until=...)`).
"""

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

MAX_AHEAD_SECONDS: Final = 30 * 86_400  # the furthest ahead a premix may be scheduled
# A runAt at most this far in the past is queued to run now (the bot's clock, the network).
PAST_GRACE_SECONDS: Final = 60
RUN_AT_RULE: Final = (
    "must be an ISO-8601 time with a time zone (e.g. 2026-12-24T18:00:00Z) or epoch milliseconds"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_LAST_MS: Final = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - _EPOCH) // _MS
_MAX_TEXT: Final = 64  # longer is no time; never echoed


def parse_run_at(value: object) -> int | None:
    """`runAt` as epoch milliseconds (rounded up); raises `ValueError` (the rule) otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(RUN_AT_RULE)
    if isinstance(value, int):
        moment_ms = value
    elif isinstance(value, str | datetime):
        moment_ms = _datetime_ms(_parse_time(value))
    else:
        raise ValueError(RUN_AT_RULE)
    if not 0 < moment_ms <= _LAST_MS:
        raise ValueError(RUN_AT_RULE)
    return moment_ms


def _parse_time(value: str | datetime) -> datetime:
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise ValueError(RUN_AT_RULE)
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(RUN_AT_RULE) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "must name its time zone (e.g. 2026-12-24T18:00:00Z or 2026-12-24T19:00:00+01:00)"
        )
    return value


def _datetime_ms(moment: datetime) -> int:
    return -((_EPOCH - moment) // _MS)  # rounded up: never before the time asked for


def check_delay_seconds(value: object) -> int | float | None:
    """`delaySeconds` as given (a positive int or float, at most 30 days); raises `ValueError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number of seconds (an int or a float)")
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be more than 0 seconds")
    if value > MAX_AHEAD_SECONDS:
        raise ValueError(f"must be at most {MAX_AHEAD_SECONDS} (30 days)")
    return value


def delay_ms(delay_seconds: int | float) -> int:
    """A delay in whole milliseconds, rounded up (exact: through `Decimal`, not float math)."""
    return math.ceil(Decimal(str(delay_seconds)) * 1000)


def format_run_time(moment_ms: int) -> str:
    """'2026-12-24T18:00:00Z' (with milliseconds, '...00.250Z', only when it has some)."""
    moment = _EPOCH + moment_ms * _MS
    if moment_ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment_ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _format_second(moment_ms: int) -> str:
    return format_run_time(moment_ms - moment_ms % 1000)


def schedule_refusal(run_at_ms: int | None, now_ms: int) -> str | None:
    """Why `runAt` cannot be scheduled from `now_ms` (more than `PAST_GRACE_SECONDS` in the
    past, more than 30 days ahead), or None. A `delaySeconds` is checked by its validator."""
    if run_at_ms is None:
        return None
    if run_at_ms < now_ms - PAST_GRACE_SECONDS * 1000:
        return f"runAt: must not be in the past (it is {_format_second(now_ms)} now)"
    latest_ms = now_ms + MAX_AHEAD_SECONDS * 1000
    if run_at_ms > latest_ms:
        return f"runAt: must be at most 30 days ahead ({_format_second(latest_ms)})"
    return None


def run_time_ms(
    run_at_ms: int | None, delay_seconds: int | float | None, now_ms: int
) -> int | None:
    """The epoch milliseconds the job must not start before, or None when it is due now."""
    if delay_seconds is not None:
        return now_ms + delay_ms(delay_seconds)
    if run_at_ms is not None and run_at_ms > now_ms:
        return run_at_ms
    return None
