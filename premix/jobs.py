"""The job's shape: what the bot asks for (`PremixFundsJob`, `PremixOptions`) and gets back.

This module is the single source of validation for a premix request; everything downstream
trusts a `PremixFundsJob`.
"""

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
    field_validator,
)
from pydantic.alias_generators import to_camel

from premix.amounts import parse_sol
from premix.constants import LAMPORTS_PER_SOL, MAX_BUYER_WALLETS

Mode = Literal["standard", "fast"]

USER_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"


def _parse_amount(value: object) -> Decimal:
    try:
        return parse_sol(value)
    except ValueError as e:
        # pydantic turns a ValueError into a validation error naming the field.
        raise ValueError(str(e)) from e


def _user_id_to_str(value: object) -> object:
    # Telegram ids are ints; they are stored and keyed as strings. Anything else must be a str.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


SolAmount = Annotated[
    Decimal,
    BeforeValidator(_parse_amount),
    PlainSerializer(lambda amount: str(amount), return_type=str, when_used="json"),
]
UserId = Annotated[
    str, BeforeValidator(_user_id_to_str), Field(strict=True, pattern=USER_ID_PATTERN)
]

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

    max_wallets: int | None = Field(default=None, ge=1, le=MAX_BUYER_WALLETS, strict=True)
    mode: Mode = "standard"
    socket_user_id: str | None = Field(default=None, min_length=1, max_length=128, strict=True)


class PremixFundsJob(BaseModel):
    """One premix request as it travels through the queue (JSON, camelCase on the wire)."""

    model_config = _MODEL_CONFIG

    user_id: UserId
    user_chat_id: int = Field(strict=True)
    mix_amount: SolAmount
    max_wallets: int | None = Field(default=None, ge=1, le=MAX_BUYER_WALLETS, strict=True)
    mode: Mode = "standard"
    socket_user_id: str | None = Field(default=None, min_length=1, max_length=128, strict=True)

    @field_validator("user_chat_id", mode="before")
    @classmethod
    def _chat_id_not_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be an integer chat id, not a boolean")
        return value

    @property
    def amount_lamports(self) -> int:
        """The mix amount in integer lamports (exact)."""
        return int(self.mix_amount * LAMPORTS_PER_SOL)

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
        """Return the JSON-safe camelCase payload put on the queue."""
        return self.model_dump(mode="json", by_alias=True)


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
        field = ".".join(
            to_camel(str(loc)) if isinstance(loc, str) else str(loc) for loc in item["loc"]
        )
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{field or 'request'}: {message}")
    return "; ".join(parts)
