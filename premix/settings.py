"""All configuration, read once from `PREMIX_*` environment variables and passed down."""

import json
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from premix.amounts import format_sol
from premix.constants import (
    LAMPORTS_PER_SOL,
    MAX_BUYER_WALLETS,
    MAX_COMPUTE_UNIT_LIMIT,
    PROGRESS_ALL_CHANNEL,
    QUEUE_NAME,
)
from premix.distribution import RENT_EXEMPT_MINIMUM_LAMPORTS, TierTable

MEMORY_STORE_URI = "memory://"
AUTO: Final = "auto"  # PREMIX_PRIORITY_FEE: priced from the recent fees (premix/mixer/fees.py)
_MAX_U64: Final = 2**64 - 1
MAX_WORKER_JOBS = 64
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    """premix configuration. Every field is `PREMIX_<FIELD NAME IN CAPITALS>` in the environment."""

    # `PREMIX_*` environment variables, then a `.env` file in the working directory (what
    # docker compose also reads; see .env.example); the environment wins over the file.
    model_config = SettingsConfigDict(
        env_prefix="PREMIX_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    # The arq queue (a sorted set in Redis); the demo uses a private one on a shared Redis.
    queue_name: str = Field(default=QUEUE_NAME, min_length=1)
    # The channel every job's progress events also go to (the demo uses a private one).
    progress_all_channel: str = Field(default=PROGRESS_ALL_CHANNEL, min_length=1)
    # "memory://" selects the embedded in-process store (tests and demo only).
    mongodb_uri: str = "mongodb://127.0.0.1:27017"
    mongodb_database: str = "premix"
    # How long a MongoDB operation waits for a reachable server (PyMongo's server selection);
    # a worker that cannot reach MongoDB at start-up refuses to start after this long.
    mongodb_timeout_seconds: float = Field(default=5.0, gt=0)
    # A worker process on "memory://" sees no wallet another process created: refused unless set.
    allow_memory_store: bool = False
    rpc_url: str = "http://127.0.0.1:8899"
    rpc_timeout_seconds: float = Field(default=10.0, gt=0)
    # Comma-separated "key_id:base64(32 bytes)"; the first key encrypts, every key decrypts.
    encryption_keys: SecretStr = SecretStr("")
    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    # Kept in the funding wallet; at least its rent-exempt minimum, so it stays rent exempt.
    fee_buffer_sol: Decimal = Field(default=Decimal("0.01"), ge=0)
    max_wallets: int = Field(default=MAX_BUYER_WALLETS, ge=1, le=MAX_BUYER_WALLETS)
    min_wallet_sol: Decimal = Field(default=Decimal("0.01"), gt=0)
    # Per-position caps in SOL overriding the default tier table (comma-separated or JSON list).
    tier_caps_sol: tuple[Decimal, ...] | None = None
    # Compute-unit price of every transaction: "auto" (a percentile of the recent
    # prioritization fees, at least the floor, raised on each re-sign, never above the cap per
    # transaction; see premix/mixer/fees.py) or a fixed micro-lamports per compute unit
    # (0: no ComputeBudget instructions).
    priority_fee: int | Literal["auto"] = AUTO
    priority_fee_percentile: int = Field(default=75, ge=1, le=100)
    priority_fee_floor_micro_lamports: int = Field(default=10_000, ge=1, le=_MAX_U64)
    # Each re-sign of a transaction bids at least this many percent more (100: doubles).
    priority_fee_raise_percent: int = Field(default=100, ge=1, le=1_000)
    # The most priority fee (price x compute-unit limit / 10^6) one transaction may pay.
    max_priority_fee_lamports: int = Field(default=100_000, ge=1, le=LAMPORTS_PER_SOL)
    # 0: computed from the transaction's instructions; the runtime charges for at most 1.4M.
    compute_unit_limit: int = Field(default=0, ge=0, le=MAX_COMPUTE_UNIT_LIMIT)
    # Seconds between signature-status polls while a transfer is in flight (fast mode backs off).
    confirm_poll_seconds: float = Field(default=0.1, gt=0)
    # The cluster's slot length. A transaction sent in a slot is confirmed once the slot passed,
    # so the first status poll after a send comes right after it, as timed from the slots the
    # node reports (polling earlier only costs round trips). 0: first poll after one interval.
    slot_seconds: float = Field(default=0.4, ge=0)
    progress_ttl_seconds: int = Field(default=86_400, gt=0)
    job_timeout_seconds: int = Field(default=900, gt=0)
    job_max_tries: int = Field(default=5, ge=1)
    # Seconds before try n + 1 of a job whose try n failed transiently; the last value repeats.
    retry_backoff_seconds: Annotated[tuple[float, ...], NoDecode] = Field(
        default=(1, 2, 5, 10, 30), min_length=1
    )
    # A job finding another premix of its user running waits this long and tries again.
    user_busy_retry_seconds: float = Field(default=5, gt=0)
    # One RPC call: tries in all, then exponential backoff from the base delay up to the cap;
    # a 429's Retry-After is honoured up to its own cap.
    rpc_max_tries: int = Field(default=6, ge=1)
    rpc_retry_base_delay_seconds: float = Field(default=0.1, ge=0)
    rpc_retry_max_delay_seconds: float = Field(default=2.0, ge=0)
    rpc_retry_after_max_seconds: float = Field(default=10.0, ge=0)
    user_lock_ttl_seconds: int = Field(default=1_200, gt=0)
    worker_poll_delay_seconds: float = Field(default=0.05, gt=0)
    # --- RPC budget and worker concurrency ---
    # Requests per second to the RPC endpoint for all workers on the Redis database together
    # (a token bucket in Redis, `premix.rpc_budget`); 0: no limit (no Redis round trip per call).
    rpc_max_requests_per_second: float = Field(default=0, ge=0)
    # With Redis unreachable each worker allows itself N / the live workers it last saw, never
    # fewer than this many (also what is assumed when it never saw any).
    rpc_budget_workers: int = Field(default=1, ge=1)
    # Premixes (of different users) one worker process runs at once: arq's max_jobs.
    worker_max_jobs: int = Field(default=1, ge=1, le=MAX_WORKER_JOBS)
    # Serve Prometheus metrics from each worker on this TCP port (all interfaces); None or 0:
    # off. Worker processes sharing a host each need their own port.
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    log_level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR or CRITICAL
    log_json: bool = False

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("priority_fee", mode="before")
    @classmethod
    def _auto_or_price(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_U64:
            return value
        raise ValueError(
            "must be auto or a whole number of micro-lamports per compute unit (0 or more)"
        )

    @field_validator("redis_url")
    @classmethod
    def _usable_redis_url(cls, value: str) -> str:
        problem = redis_url_problem(value)
        if problem is not None:
            raise ValueError(problem)  # never the value: it may hold a password
        return value

    @field_validator("tier_caps_sol", "retry_backoff_seconds", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        # A comma-separated string, a JSON list, or a lone number (pydantic-settings may have
        # decoded "0.5" as JSON already).
        if isinstance(value, str) and value.strip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            return (str(value),)
        return value

    @field_validator("retry_backoff_seconds")
    @classmethod
    def _not_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(seconds < 0 for seconds in value):
            raise ValueError("every backoff must be at least 0 seconds")
        return value

    @field_validator("telegram_bot_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        # docker-compose passes an unset variable as "": that means "no bot".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("fee_buffer_sol")
    @classmethod
    def _whole_lamports_above_rent(cls, value: Decimal) -> Decimal:
        if value != value.quantize(Decimal("0.000000001")):
            raise ValueError("must be a whole number of lamports (at most 9 decimals)")
        if value * LAMPORTS_PER_SOL < RENT_EXEMPT_MINIMUM_LAMPORTS:
            raise ValueError(
                "must be at least the rent-exempt minimum of the funding wallet "
                f"({format_sol(RENT_EXEMPT_MINIMUM_LAMPORTS)}), so that it stays rent exempt "
                "after the premix"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        # Fail when the settings are read, not in the middle of a job.
        self.tier_table()
        arq_redelivery_seconds = self.job_timeout_seconds + 10
        if self.user_lock_ttl_seconds <= arq_redelivery_seconds:
            raise ValueError(
                f"PREMIX_USER_LOCK_TTL_SECONDS ({self.user_lock_ttl_seconds}) must be more than "
                f"PREMIX_JOB_TIMEOUT_SECONDS + 10 ({arq_redelivery_seconds}), so a crashed "
                "job's user lock outlives the wait before arq runs it again"
            )
        return self

    def tier_table(self) -> TierTable:
        """The tier table of `tier_caps_sol` and `min_wallet_sol` (raises `ValueError` naming
        the setting for an invalid one; `Settings()` itself refuses those)."""
        return TierTable.from_sol(self.tier_caps_sol, self.min_wallet_sol)

    def retry_delay_seconds(self, failed_try: int) -> float:
        """Seconds before the next try of a job whose try `failed_try` (1-based) failed."""
        backoffs = self.retry_backoff_seconds
        return backoffs[min(failed_try, len(backoffs)) - 1]

    @property
    def fee_buffer_lamports(self) -> int:
        """`fee_buffer_sol` in lamports (exact; at least the rent-exempt minimum)."""
        return int(self.fee_buffer_sol * LAMPORTS_PER_SOL)

    def wallet_limit(self, requested: int | None = None) -> int:
        """Return how many buyer wallets a premix may use: `requested` (a job's `maxWallets`,
        None: no request) capped at `max_wallets`."""
        return min(requested or self.max_wallets, self.max_wallets)

    @property
    def uses_memory_store(self) -> bool:
        """True when `mongodb_uri` selects the embedded in-process store."""
        return self.mongodb_uri.startswith(MEMORY_STORE_URI)


def redis_url_problem(url: str) -> str | None:
    """Why `url` is not a usable Redis URL (`redis://[:password@]host[:port][/db]` or
    `rediss://...`), or None; the answer never repeats the URL (it may hold a password)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return (
            "is not a usable Redis URL (percent-encode any '/', '#', '?' or '@' in the "
            "password); it is not shown here"
        )
    if parts.scheme not in ("redis", "rediss"):
        return "must be a redis:// or rediss:// URL; it is not shown here"
    if not parts.hostname:
        return "names no host; it is not shown here"
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        return "must end with a database number (/0) if anything; it is not shown here"
    return None


def display_url(url: str) -> str:
    """`url` as it may be shown: scheme, host, port and path, never credentials or query (a
    URL that does not parse is not shown at all)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a URL that does not parse; not shown)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


# What reading the settings raises: a value pydantic refuses, or one pydantic-settings cannot
# decode (a malformed JSON list).
SettingsInvalid = (ValidationError, SettingsError)


def describe_settings_error(error: ValidationError | SettingsError) -> str:
    """One line naming each invalid `PREMIX_*` variable and what is wrong with it; never the
    value given (it may be a secret: pydantic's own text quotes the start of it)."""
    if isinstance(error, SettingsError):  # names the field, never the value
        return str(error)
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        name = "_".join(str(loc) for loc in item["loc"]).upper()
        message = item["msg"].removeprefix("Value error, ")
        # A check across several settings names its variables itself.
        parts.append(f"PREMIX_{name}: {message}" if name else message)
    return "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use."""
    return Settings()
