"""The scheduling and idempotency options of a premix (issue 15, SPEC section 13) as the job
model checks them: runAt, delaySeconds and idempotencyKey, each refused naming its field, on
the wire only when set. The time window (past, 30 days) is enqueue's check
(tests/test_queue_schedule.py)."""

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from premix.jobs import PremixFundsJob, PremixOptions, describe_validation_error
from premix.scheduling import delay_ms, format_run_time, schedule_refusal

CHRISTMAS_MS = 1_798_135_200_000  # 2026-12-24T18:00:00Z
RUN_AT_RULE = (
    "runAt: must be an ISO-8601 time with a time zone (e.g. 2026-12-24T18:00:00Z) or epoch "
    "milliseconds"
)
KEY_RULE = "idempotencyKey: must be 1 to 128 printable ASCII characters, not only spaces"


def refusal(options: dict[str, Any]) -> str:
    """The user-facing refusal of `options`, the same from the options and the job model."""
    with pytest.raises(ValidationError) as refused:
        PremixOptions.model_validate(options)
    message = describe_validation_error(refused.value)
    with pytest.raises(ValidationError) as refused_job:
        PremixFundsJob.from_request("u1", 42, 2.5, {k: v for k, v in options.items()})
    assert describe_validation_error(refused_job.value) == message
    return message


@pytest.mark.parametrize(
    "run_at",
    [
        "2026-12-24T18:00:00Z",
        "2026-12-24T19:00:00+01:00",
        "2026-12-24T13:00:00-05:00",
        "2026-12-24T18:00:00.000+00:00",
        CHRISTMAS_MS,
        datetime(2026, 12, 24, 18, tzinfo=UTC),
        datetime(2026, 12, 24, 20, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_run_at_in_any_zone_or_epoch_ms_is_one_instant_written_back_in_utc(run_at: object) -> None:
    for key in ("runAt", "run_at"):
        job = PremixFundsJob.from_request("u1", 42, 2.5, {key: run_at})

        assert job.run_at == CHRISTMAS_MS
        wire = job.to_wire()
        assert wire["runAt"] == "2026-12-24T18:00:00Z"
        assert "delaySeconds" not in wire and "idempotencyKey" not in wire
        assert PremixFundsJob.model_validate_json(json.dumps(wire)) == job


def test_a_run_at_with_milliseconds_keeps_them_and_a_finer_one_is_rounded_up() -> None:
    job = PremixFundsJob.from_request("u1", 42, 2.5, {"runAt": CHRISTMAS_MS + 250})
    assert job.to_wire()["runAt"] == "2026-12-24T18:00:00.250Z"
    finer = PremixFundsJob.from_request("u1", 42, 2.5, {"runAt": "2026-12-24T18:00:00.000001Z"})
    assert finer.run_at == CHRISTMAS_MS + 1  # never before the time asked for


@pytest.mark.parametrize(
    ("run_at", "expected"),
    [
        (
            "2026-12-24T18:00:00",
            "runAt: must name its time zone (e.g. 2026-12-24T18:00:00Z or "
            "2026-12-24T19:00:00+01:00)",
        ),
        (
            "2026-12-24",
            "runAt: must name its time zone (e.g. 2026-12-24T18:00:00Z or "
            "2026-12-24T19:00:00+01:00)",
        ),
        (
            datetime(2026, 12, 24, 18),
            "runAt: must name its time zone (e.g. 2026-12-24T18:00:00Z or "
            "2026-12-24T19:00:00+01:00)",
        ),
        ("tomorrow", RUN_AT_RULE),
        ("", RUN_AT_RULE),
        ("2026-12-24T18:00:00Z" + " " * 60, RUN_AT_RULE),
        (True, RUN_AT_RULE),
        (1.798e12, RUN_AT_RULE),
        (0, RUN_AT_RULE),
        (-5, RUN_AT_RULE),
        (10**20, RUN_AT_RULE),
        ({"$gt": 0}, RUN_AT_RULE),
    ],
)
def test_a_run_at_without_a_zone_or_not_a_time_is_refused_naming_run_at(
    run_at: object, expected: str
) -> None:
    assert refusal({"runAt": run_at}) == expected


@pytest.mark.parametrize("delay", [1, 600, 0.5, 2_592_000])
def test_delay_seconds_is_a_positive_int_or_float_kept_as_given(delay: int | float) -> None:
    for key in ("delaySeconds", "delay_seconds"):
        job = PremixFundsJob.from_request("u1", 42, 2.5, {key: delay})

        assert job.delay_seconds == delay and type(job.delay_seconds) is type(delay)
        wire = job.to_wire()
        assert wire["delaySeconds"] == delay and "runAt" not in wire
        assert PremixFundsJob.model_validate_json(json.dumps(wire)) == job


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (True, "delaySeconds: must be a number of seconds (an int or a float)"),
        ("60", "delaySeconds: must be a number of seconds (an int or a float)"),
        ([60], "delaySeconds: must be a number of seconds (an int or a float)"),
        (0, "delaySeconds: must be more than 0 seconds"),
        (-1, "delaySeconds: must be more than 0 seconds"),
        (float("nan"), "delaySeconds: must be more than 0 seconds"),
        (float("inf"), "delaySeconds: must be more than 0 seconds"),
        (2_592_001, "delaySeconds: must be at most 2592000 (30 days)"),
    ],
)
def test_a_delay_that_is_not_a_positive_number_up_to_30_days_is_refused(
    delay: object, expected: str
) -> None:
    assert refusal({"delaySeconds": delay}) == expected


def test_run_at_and_delay_seconds_together_are_refused() -> None:
    assert refusal({"runAt": "2026-12-24T18:00:00Z", "delaySeconds": 60}) == (
        "delaySeconds: cannot be combined with runAt; give at most one of them"
    )
    assert refusal({"run_at": CHRISTMAS_MS, "delay_seconds": 1}) == (
        "delaySeconds: cannot be combined with runAt; give at most one of them"
    )


@pytest.mark.parametrize("key", ["tg-update-81734", "a", "x" * 128, "a b:c*{}\"'", " padded "])
def test_an_idempotency_key_of_printable_ascii_travels_as_given(key: str) -> None:
    for name in ("idempotencyKey", "idempotency_key"):
        job = PremixFundsJob.from_request("u1", 42, 2.5, {name: key})

        assert job.idempotency_key == key
        assert job.to_wire()["idempotencyKey"] == key


@pytest.mark.parametrize("key", ["", " ", "   ", "x" * 129, "tab\there", "new\nline", "é", 5, b"k"])
def test_an_idempotency_key_that_is_not_1_to_128_printable_ascii_is_refused(key: object) -> None:
    assert refusal({"idempotencyKey": key}) == KEY_RULE


def test_a_premix_without_the_options_has_the_wire_form_it_always_had() -> None:
    assert PremixFundsJob.from_request("u1", 42, 2.5).to_wire() == {
        "userId": "u1",
        "userChatId": 42,
        "mixAmount": "2.5",
        "maxWallets": None,
        "mode": "standard",
        "socketUserId": None,
    }


def test_the_time_window_refuses_the_past_beyond_a_minute_and_more_than_30_days_ahead() -> None:
    now_ms = CHRISTMAS_MS + 123  # 18:00:00.123Z
    assert schedule_refusal(now_ms - 60_000, now_ms) is None  # a minute's grace
    assert schedule_refusal(now_ms - 60_001, now_ms) == (
        "runAt: must not be in the past (it is 2026-12-24T18:00:00Z now)"
    )
    assert schedule_refusal(now_ms + 30 * 86_400_000, now_ms) is None
    assert schedule_refusal(now_ms + 30 * 86_400_000 + 1, now_ms) == (
        "runAt: must be at most 30 days ahead (2027-01-23T18:00:00Z)"
    )


def test_a_delay_becomes_whole_milliseconds_rounded_up_without_float_error() -> None:
    assert [delay_ms(d) for d in (1, 0.1, 0.0011, 600, 1.5)] == [1000, 100, 2, 600_000, 1500]
    assert format_run_time(CHRISTMAS_MS) == "2026-12-24T18:00:00Z"
    assert format_run_time(CHRISTMAS_MS + 5) == "2026-12-24T18:00:00.005Z"
