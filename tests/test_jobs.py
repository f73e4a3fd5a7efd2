"""The job model (SPEC section 2): every bad input is refused naming its field; both key styles."""

import json
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from premix.jobs import EnqueueResult, PremixFundsJob, PremixOptions, describe_validation_error

VALID: dict[str, Any] = {"userId": "user-1", "userChatId": 42, "mixAmount": "1.5"}
USER_ID_RULE = "userId: must be 1 to 128 letters, digits or _.:@- characters"
MAX_WALLETS_RULE = "maxWallets: must be a whole number from 1 to 73"
MODE_RULE = "mode: Input should be 'standard' or 'fast'"


def refusal(payload: dict[str, Any]) -> str:
    """Validate `payload` as a job and return the user-facing message of its refusal."""
    with pytest.raises(ValidationError) as refused:
        PremixFundsJob.model_validate(payload)
    return describe_validation_error(refused.value)


def with_field(name: str, value: object) -> dict[str, Any]:
    return {**VALID, name: value}


# --- each bad input is refused with a message naming the field ----------------------------


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (0, "mixAmount: must be greater than 0 SOL"),
        (-1, "mixAmount: must be greater than 0 SOL"),
        (float("nan"), "mixAmount: must be a finite number of SOL"),
        (float("inf"), "mixAmount: must be a finite number of SOL"),
        ("abc", "mixAmount: must be a number of SOL, got 'abc'"),
        (True, "mixAmount: must be a number of SOL, not a boolean"),
        (1e-10, "mixAmount: has more than 9 decimals (1 lamport = 0.000000001 SOL)"),
        ("0.0000000001", "mixAmount: has more than 9 decimals (1 lamport = 0.000000001 SOL)"),
        (
            10**30,
            "mixAmount: is larger than the most a wallet can hold (18446744073.709551615 SOL)",
        ),
        (None, "mixAmount: must be a number of SOL, got NoneType"),
        ([1], "mixAmount: must be a number of SOL, got list"),
    ],
)
def test_bad_mix_amount_is_refused_naming_mix_amount(amount: object, message: str) -> None:
    assert refusal(with_field("mixAmount", amount)) == message


@pytest.mark.parametrize("max_wallets", [0, -1, 74, 2.5, "3", True])
def test_bad_max_wallets_is_refused_naming_max_wallets(max_wallets: object) -> None:
    assert refusal(with_field("maxWallets", max_wallets)) == MAX_WALLETS_RULE
    with pytest.raises(ValidationError) as refused:
        PremixOptions.model_validate({"maxWallets": max_wallets})
    assert describe_validation_error(refused.value) == MAX_WALLETS_RULE


@pytest.mark.parametrize("mode", ["turbo", "", None, "FAST"])
def test_bad_mode_is_refused_naming_mode(mode: object) -> None:
    assert refusal(with_field("mode", mode)) == MODE_RULE


@pytest.mark.parametrize(
    "user_id", ["", "x" * 10_240, {"$ne": None}, None, True, "a b", "user\n", "ü"]
)
def test_bad_user_id_is_refused_naming_user_id(user_id: object) -> None:
    # The message never echoes the input (a 10 kB id or an operator dict stays out of logs).
    assert refusal(with_field("userId", user_id)) == USER_ID_RULE


@pytest.mark.parametrize(
    ("chat_id", "message"),
    [
        ("x", "userChatId: must be an integer Telegram chat id"),
        (1.5, "userChatId: must be an integer Telegram chat id"),
        ("42", "userChatId: must be an integer Telegram chat id"),
        (True, "userChatId: must be an integer Telegram chat id"),
        (None, "userChatId: must be an integer Telegram chat id"),
        (2**63, "userChatId: must be a Telegram chat id (a 64-bit integer)"),
    ],
)
def test_bad_user_chat_id_is_refused_naming_user_chat_id(chat_id: object, message: str) -> None:
    assert refusal(with_field("userChatId", chat_id)) == message


@pytest.mark.parametrize(
    ("socket_user_id", "message"),
    [
        ("", "socketUserId: String should have at least 1 character"),
        ("s" * 129, "socketUserId: String should have at most 128 characters"),
        (5, "socketUserId: Input should be a valid string"),
    ],
)
def test_bad_socket_user_id_is_refused_naming_socket_user_id(
    socket_user_id: object, message: str
) -> None:
    assert refusal(with_field("socketUserId", socket_user_id)) == message


def test_unknown_keys_are_refused_by_the_name_given() -> None:
    assert refusal(with_field("priority", "high")) == "priority: unknown field"
    assert refusal(with_field("user_id", "user-2")) == "user_id: unknown field"  # given twice


def test_missing_fields_are_named() -> None:
    assert refusal({}) == (
        "userId: Field required; userChatId: Field required; mixAmount: Field required"
    )


def test_every_bad_field_is_reported_in_one_line() -> None:
    message = refusal({**VALID, "mixAmount": 0, "mode": "turbo", "extra": 1})
    assert message == (f"mixAmount: must be greater than 0 SOL; {MODE_RULE}; extra: unknown field")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"maxWallets": 74}, MAX_WALLETS_RULE),
        ({"max_wallets": 0}, MAX_WALLETS_RULE),
        ({"mode": "turbo"}, MODE_RULE),
        ({"turbo": True}, "turbo: unknown field"),
        # Options cannot smuggle in the request's own fields.
        ({"userId": "someone-else"}, "userId: unknown field"),
        ({"mixAmount": 80}, "mixAmount: unknown field"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        PremixFundsJob.from_request("user-1", 42, 1, options)
    assert describe_validation_error(refused.value) == message


def test_options_of_another_type_are_refused() -> None:
    with pytest.raises(TypeError, match="options must be a PremixOptions or a dict, not list"):
        PremixFundsJob.from_request("user-1", 42, 1, [("mode", "fast")])  # type: ignore[arg-type]


# --- valid forms give equal jobs -----------------------------------------------------------


def test_camel_case_and_snake_case_keys_give_equal_jobs() -> None:
    camel = PremixFundsJob.model_validate(
        {
            "userId": "user-1",
            "userChatId": 42,
            "mixAmount": "1.5",
            "maxWallets": 20,
            "mode": "fast",
            "socketUserId": "socket123",
        }
    )
    snake = PremixFundsJob.model_validate(
        {
            "user_id": "user-1",
            "user_chat_id": 42,
            "mix_amount": "1.5",
            "max_wallets": 20,
            "mode": "fast",
            "socket_user_id": "socket123",
        }
    )
    assert camel == snake
    assert (camel.max_wallets, camel.mode, camel.socket_user_id) == (20, "fast", "socket123")


def test_option_dicts_in_either_case_and_premix_options_give_equal_jobs() -> None:
    forms: list[PremixOptions | dict[str, Any]] = [
        {"maxWallets": 20, "mode": "fast", "socketUserId": "socket123"},
        {"max_wallets": 20, "mode": "fast", "socket_user_id": "socket123"},
        PremixOptions(max_wallets=20, mode="fast", socket_user_id="socket123"),
        PremixOptions.model_validate(
            {"maxWallets": 20, "mode": "fast", "socketUserId": "socket123"}
        ),
    ]
    jobs = [PremixFundsJob.from_request("user-1", 42, 1.0, options) for options in forms]
    assert all(job == jobs[0] for job in jobs)
    assert jobs[0].max_wallets == 20
    assert jobs[0].socket_user_id == "socket123"


def test_defaults_without_options() -> None:
    job = PremixFundsJob.from_request("user-1", 42, 0.5)
    assert (job.max_wallets, job.mode, job.socket_user_id) == (None, "standard", None)
    assert job == PremixFundsJob.from_request("user-1", 42, 0.5, {})


@pytest.mark.parametrize("amount", [1.5, "1.5", Decimal("1.5"), "1.500000000", Decimal("15E-1")])
def test_every_spelling_of_an_amount_gives_the_same_job(amount: object) -> None:
    job = PremixFundsJob.from_request("user-1", 42, amount)
    assert job == PremixFundsJob.from_request("user-1", 42, "1.5")
    assert job.amount_lamports == 1_500_000_000


@pytest.mark.parametrize(
    ("amount", "lamports"),
    [(0.1, 100_000_000), ("0.000000001", 1), (1, 1_000_000_000), ("85", 85_000_000_000)],
)
def test_amounts_become_exact_lamports(amount: object, lamports: int) -> None:
    assert PremixFundsJob.from_request("user-1", 42, amount).amount_lamports == lamports


def test_integer_user_id_is_kept_as_a_string() -> None:
    job = PremixFundsJob.from_request(123456789, 42, 1)
    assert job.user_id == "123456789"
    assert job == PremixFundsJob.from_request("123456789", 42, 1)


def test_negative_chat_ids_of_groups_are_accepted() -> None:
    assert PremixFundsJob.from_request("user-1", -1001234567890, 1).user_chat_id == -1001234567890


# --- the JSON wire form -------------------------------------------------------------------


def test_job_round_trips_through_json_on_the_wire() -> None:
    job = PremixFundsJob.from_request(
        "user-1", 42, "0.000000001", {"maxWallets": 3, "mode": "fast", "socketUserId": "s1"}
    )
    wire = json.dumps(job.to_wire())
    assert json.loads(wire) == {
        "userId": "user-1",
        "userChatId": 42,
        "mixAmount": "0.000000001",
        "maxWallets": 3,
        "mode": "fast",
        "socketUserId": "s1",
    }
    back = PremixFundsJob.model_validate_json(wire)
    assert back == job
    assert back.amount_lamports == 1


def test_large_amounts_keep_every_lamport_on_the_wire() -> None:
    job = PremixFundsJob.from_request("user-1", 42, "18446744073.709551615")
    assert job.to_wire()["mixAmount"] == "18446744073.709551615"
    assert PremixFundsJob.model_validate(job.to_wire()).amount_lamports == 2**64 - 1


def test_jobs_are_immutable() -> None:
    job = PremixFundsJob.from_request("user-1", 42, 1)
    with pytest.raises(ValidationError, match="frozen"):
        job.mode = "fast"  # type: ignore[misc]


def test_enqueue_result_defaults_to_no_job_id() -> None:
    assert EnqueueResult(success=False, message="Invalid parameters: x") == EnqueueResult(
        False, "Invalid parameters: x", None
    )


def test_a_request_cannot_name_the_run_it_continues() -> None:
    # only `retry_premix` sets `runId`: an option of that name is an unknown field
    with pytest.raises(ValidationError, match="runId"):
        PremixFundsJob.from_request("user-1", 42, 1, {"runId": "premix-user-1-1"})
    retry = PremixFundsJob.model_validate(
        {"userId": "u1", "userChatId": 1, "mixAmount": "1", "runId": "premix-u1-17"}
    )
    assert retry.to_wire()["runId"] == "premix-u1-17"
    assert "runId" not in PremixFundsJob.from_request("u1", 1, 1).to_wire()


# --- topUp (issue 14) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"topUp": True},
        {"top_up": True},
        PremixOptions(top_up=True),
        PremixOptions.model_validate({"topUp": True}),
    ],
)
def test_top_up_is_accepted_in_either_case_and_travels_on_the_wire(
    options: PremixOptions | dict[str, Any],
) -> None:
    job = PremixFundsJob.from_request("user-1", 42, 2.5, options)
    assert job.top_up is True
    wire = job.to_wire()
    assert wire["topUp"] is True
    assert PremixFundsJob.model_validate_json(json.dumps(wire)) == job


def test_a_premix_is_no_top_up_by_default_and_its_wire_form_has_no_top_up_key() -> None:
    job = PremixFundsJob.from_request("user-1", 42, 2.5)
    assert job.top_up is False
    assert "topUp" not in job.to_wire()  # a worker that predates the option reads it
    assert PremixFundsJob.from_request("user-1", 42, 2.5, {"topUp": False}) == job


@pytest.mark.parametrize("top_up", [1, 0, "true", "yes", None, [True]])
def test_a_top_up_that_is_not_a_bool_is_refused_naming_top_up(top_up: object) -> None:
    assert refusal(with_field("topUp", top_up)) == "topUp: must be true or false"
    with pytest.raises(ValidationError) as refused:
        PremixOptions.model_validate({"top_up": top_up})
    assert describe_validation_error(refused.value) == "topUp: must be true or false"
