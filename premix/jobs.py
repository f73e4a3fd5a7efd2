"""The job's shape: what the bot asks for (`PremixFundsJob`, `PremixOptions`) and gets back.

This module is the single source of validation for a premix request; everything downstream
trusts a `PremixFundsJob`.
"""

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

from premix.amounts import parse_sol, sol_to_lamports
from premix.constants import MAX_BUYER_WALLETS
from premix.scheduling import check_delay_seconds, format_run_time, parse_run_at

Mode = Literal["standard", "fast"]

USER_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
USER_ID_RULE = "must be 1 to 128 letters, digits or _.:@- characters"  # USER_ID_PATTERN in words
_USER_ID_RE = re.compile(USER_ID_PATTERN)
_FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,23}")  # how an unknown key may be echoed
JOB_ID_PATTERN = r"^premix-[A-Za-z0-9_.:@-]{1,128}-[0-9]{1,16}$"  # `premix.queue.new_job_id`
IDEMPOTENCY_KEY_RULE = "must be 1 to 128 printable ASCII characters, not only spaces"
_IDEMPOTENCY_KEY_RE = re.compile(r"[\x20-\x7e]{1,128}")
_CHAT_ID_MIN, _CHAT_ID_MAX = -(2**63), 2**63 - 1  # stored as a BSON int64


def _parse_amount(value: object) -> Decimal:
    # AmountError is a ValueError: pydantic reports it against the field with our sentence.
    return parse_sol(value)


def _check_user_id(value: object) -> str:
    # Telegram ids are ints; they are stored and keyed as strings. Anything else must be a str
    # (a dict such as {"$ne": None} never reaches MongoDB).
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _USER_ID_RE.fullmatch(value):
        raise ValueError(USER_ID_RULE)
    return value


def _check_chat_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer Telegram chat id")
    if not _CHAT_ID_MIN <= value <= _CHAT_ID_MAX:
        raise ValueError("must be a Telegram chat id (a 64-bit integer)")
    return value


def _check_wallet_count(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BUYER_WALLETS:
        raise ValueError(f"must be a whole number from 1 to {MAX_BUYER_WALLETS}")
    return value


def _check_top_up(value: object) -> bool:
    # true or false only: 1, "true" or "yes" are refused rather than guessed at
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _check_idempotency_key(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _IDEMPOTENCY_KEY_RE.fullmatch(value) or value.isspace():
        raise ValueError(IDEMPOTENCY_KEY_RULE)
    return value


def _only_one_schedule(value: object, info: ValidationInfo) -> object:
    # delaySeconds is validated after runAt (field order): both given is refused here.
    if value is not None and info.data.get("run_at") is not None:
        raise ValueError("cannot be combined with runAt; give at most one of them")
    return value


SolAmount = Annotated[
    Decimal,
    BeforeValidator(_parse_amount),
    PlainSerializer(lambda amount: f"{amount:f}", return_type=str, when_used="json"),
]
UserId = Annotated[str, BeforeValidator(_check_user_id)]
ChatId = Annotated[int, BeforeValidator(_check_chat_id)]
WalletCount = Annotated[int | None, BeforeValidator(_check_wallet_count)]
SocketUserId = Annotated[str | None, Field(min_length=1, max_length=128, strict=True)]
RunId = Annotated[str | None, Field(pattern=JOB_ID_PATTERN, strict=True)]
TopUp = Annotated[bool, BeforeValidator(_check_top_up)]
# Epoch milliseconds; UTC ISO-8601 on the wire (`premix.scheduling`).
RunAt = Annotated[
    int | None,
    BeforeValidator(parse_run_at),
    PlainSerializer(lambda ms: None if ms is None else format_run_time(ms), when_used="json"),
]
DelaySeconds = Annotated[int | float | None, BeforeValidator(check_delay_seconds)]
IdempotencyKey = Annotated[str | None, BeforeValidator(_check_idempotency_key)]
# Set only when given, so payloads without them stay as they were.
_WIRE_IF_SET = ("run_at", "delay_seconds", "idempotency_key")

_MODEL_CONFIG = ConfigDict(
    alias_generator=to_camel,
    populate_by_name=True,
    extra="forbid",
    frozen=True,
    str_strip_whitespace=False,
)


class PremixOptions(BaseModel):
    """Options of a premix. Accepts camelCase (`maxWallets`) and snake_case (`max_wallets`)."""

    model_config = _MODEL_CONFIG

    max_wallets: WalletCount = None
    mode: Mode = "standard"
    socket_user_id: SocketUserId = None
    top_up: TopUp = False  # send each wallet only what it lacks of its planned amount
    run_at: RunAt = None  # do not start before (at most one of run_at, delay_seconds)
    delay_seconds: DelaySeconds = None  # do not start before this many seconds from enqueue
    idempotency_key: IdempotencyKey = None  # the same key within 24 h queues nothing new

    _one_schedule = field_validator("delay_seconds")(_only_one_schedule)


class PremixFundsJob(BaseModel):
    """One premix request as it travels through the queue (JSON, camelCase on the wire)."""

    model_config = _MODEL_CONFIG

    user_id: UserId
    user_chat_id: ChatId
    mix_amount: SolAmount
    max_wallets: WalletCount = None
    mode: Mode = "standard"
    socket_user_id: SocketUserId = None
    top_up: TopUp = False  # send each wallet only what it lacks of its planned amount
    run_at: RunAt = None  # do not start before (enqueue checks the time, `premix.scheduling`)
    delay_seconds: DelaySeconds = None  # do not start before this many seconds from enqueue
    idempotency_key: IdempotencyKey = None  # `premix.idempotency`
    # Set only by `retry_premix`: the ledger run this job continues (default: its own job id).
    run_id: RunId = None

    _one_schedule = field_validator("delay_seconds")(_only_one_schedule)

    @property
    def amount_lamports(self) -> int:
        """The mix amount in integer lamports (exact)."""
        return sol_to_lamports(self.mix_amount)

    @classmethod
    def from_request(
        cls,
        user_id: object,
        user_chat_id: object,
        mix_amount: object,
        options: "PremixOptions | dict[str, Any] | None" = None,
    ) -> "PremixFundsJob":
        """Build a job from `enqueue_premix_funds` arguments; raises pydantic `ValidationError`."""
        if options is None:
            option_fields: dict[str, Any] = {}
        elif isinstance(options, PremixOptions):
            option_fields = options.model_dump(by_alias=True, exclude_unset=True)
        elif isinstance(options, dict):
            option_fields = dict(
                PremixOptions.model_validate(options).model_dump(by_alias=True, exclude_unset=True)
            )
        else:
            raise TypeError(
                f"options must be a PremixOptions or a dict, not {type(options).__name__}"
            )
        return cls.model_validate(
            {
                "userId": user_id,
                "userChatId": user_chat_id,
                "mixAmount": mix_amount,
                **option_fields,
            }
        )

    def to_wire(self) -> dict[str, Any]:
        """Return the JSON-safe camelCase payload put on the queue (`runId` only for retries,
        `topUp` only when true, `runAt`, `delaySeconds` and `idempotencyKey` only when set, so a
        worker that predates the options still reads every other job)."""
        exclude = {"run_id"} if self.run_id is None else set()  # only retries carry `runId`
        if not self.top_up:
            exclude.add("top_up")
        exclude.update(name for name in _WIRE_IF_SET if getattr(self, name) is None)
        return self.model_dump(mode="json", by_alias=True, exclude=exclude)


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What `enqueue_premix_funds` returns; `message` is safe to show to the user."""

    success: bool
    message: str
    job_id: str | None = None


def describe_validation_error(error: ValidationError) -> str:
    """Return a one-line, user-safe account of what is wrong, naming each field (camelCase)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            # An unknown key is repeated back only if it looks like a field name: any other key
            # might be pasted secret material (a base58 secret key is a valid JSON key).
            field = ".".join(str(loc) for loc in item["loc"])
            if not _FIELD_NAME_RE.fullmatch(field):
                field = "request"
            message = "unknown field"
        else:
            field = ".".join(
                to_camel(loc) if isinstance(loc, str) else str(loc) for loc in item["loc"]
            )
        parts.append(f"{field or 'request'}: {message}")
    return "; ".join(parts)
