"""Logging: structlog configuration and the processor that keeps secrets out of every log line.

Secrets are redacted by `SecretRedactor`, which runs last before rendering on every record,
premix's own (structlog) and foreign ones (arq, httpx) alike, so no call site has to remember:
- by key name: `private_key`, `secret_key`, `encryption_keys`, `bot_token`, `keypair`, anything
  containing `secret`, `private`, `password` or `token`;
- by value: a base58 64-byte Solana secret key (checked with solders, so signatures survive),
  a 64-number JSON keypair, a Telegram bot token, a base64 32-byte key, a URL's password or
  query-string credential (`?api-key=...`), and the literal secrets of the `Settings` given
  to `configure_logging`;
- by type: pydantic `SecretStr`/`SecretBytes`, solders `Keypair` (shown by public key only).

Use it as `log = get_logger(__name__).bind(job_id=..., user_id=...)`; log events, not sentences.
"""

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

import structlog
from pydantic import SecretBytes, SecretStr
from solders.keypair import Keypair

from premix.settings import Settings

REDACTED: Final = "[REDACTED]"

# Key names whose values are never logged, whatever they hold.
SECRET_KEY_NAMES: Final = frozenset(
    {
        "private_key",
        "secret",
        "secret_key",
        "encryption_key",
        "encryption_keys",
        "token",
        "bot_token",
        "telegram_bot_token",
        "keypair",
        "seed",
        "mnemonic",
        "password",
        "authorization",
        "api_key",
    }
)
_SECRET_KEY_FRAGMENTS: Final = ("secret", "private", "password", "token", "keypair")

# A Telegram bot token: "<bot id>:<35 url-safe characters>".
_BOT_TOKEN = re.compile(r"\d{3,}:[A-Za-z0-9_-]{30,}")
# A base58 string long enough to be 64 bytes: a secret key, or a (harmless) signature.
_BASE58_64_BYTES = re.compile(
    r"(?<![1-9A-HJ-NP-Za-km-z])[1-9A-HJ-NP-Za-km-z]{85,90}(?![1-9A-HJ-NP-Za-km-z])"
)
# A keypair file's content: a JSON array of 64 byte values.
_BYTE_ARRAY_64 = re.compile(r"\[\s*(?:\d{1,3}\s*,\s*){63}\d{1,3}\s*\]")
# 32 bytes in base64 (standard or url-safe) is 43 characters and one "=".
_BASE64_32_BYTES = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{43}=")
# A credential in a URL's query string (hosted RPC endpoints: "?api-key=...").
_URL_QUERY_CREDENTIAL = re.compile(
    r"(?P<name>[?&](?:api[-_]?key|apikey|key|token|access[-_]?token|secret|auth)=)[^&\s#\"']+",
    re.IGNORECASE,
)
# The password part of "scheme://user:password@host".
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", re.IGNORECASE)

_literal_secrets: set[str] = set()
_MIN_LITERAL_LENGTH = 6  # shorter "secrets" would redact ordinary words


def register_secret(value: str) -> None:
    """Add a literal string that is redacted wherever it appears in a log line."""
    if len(value) >= _MIN_LITERAL_LENGTH:
        _literal_secrets.add(value)


def register_settings_secrets(settings: Settings) -> None:
    """Register every secret held by `settings`: bot token, encryption keys (each key too)."""
    if settings.telegram_bot_token is not None:
        register_secret(settings.telegram_bot_token.get_secret_value())
    keys = settings.encryption_keys.get_secret_value()
    if keys:
        register_secret(keys)
        for entry in keys.split(","):
            _, _, key = entry.strip().partition(":")
            register_secret(key.strip() or entry.strip())


def _is_secret_key_name(name: str) -> bool:
    lowered = name.lower()
    if lowered in SECRET_KEY_NAMES:
        return True
    if lowered.endswith(("public_key", "pubkey", "_public")):
        return False
    return any(fragment in lowered for fragment in _SECRET_KEY_FRAGMENTS)


def _redact_base58_candidate(match: re.Match[str]) -> str:
    # A 64-byte base58 string is a keypair only if its second half is the first half's public
    # key; solders checks that, so transaction signatures (also 64 bytes) stay readable.
    try:
        Keypair.from_base58_string(match.group(0))
    except ValueError:
        return match.group(0)
    return REDACTED


def redact_text(text: str) -> str:
    """Return `text` with every secret-looking value and registered secret replaced."""
    for secret in sorted(_literal_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _BOT_TOKEN.sub(REDACTED, text)
    text = _BYTE_ARRAY_64.sub(REDACTED, text)
    text = _BASE64_32_BYTES.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('prefix')}{REDACTED}@", text)
    text = _URL_QUERY_CREDENTIAL.sub(lambda m: f"{m.group('name')}{REDACTED}", text)
    return _BASE58_64_BYTES.sub(_redact_base58_candidate, text)


def redact_value(value: Any) -> Any:
    """Return `value` with secrets redacted, recursing into mappings and sequences."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, Keypair):
        return f"Keypair({value.pubkey()})"
    if isinstance(value, bytes | bytearray | memoryview):
        return REDACTED if len(value) in (32, 64) else f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and _is_secret_key_name(key) else redact_value(v)
            for key, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        if len(value) == 64 and all(isinstance(item, int) and 0 <= item < 256 for item in value):
            return REDACTED  # a keypair as a list of byte values
        return [redact_value(item) for item in value]
    return value


class SecretRedactor:
    """structlog processor: redacts secrets by key name, by value pattern and by type."""

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            value = event_dict[key]
            if key.startswith("_"):
                continue  # structlog's own bookkeeping (_record, _from_structlog)
            if _is_secret_key_name(key):
                event_dict[key] = REDACTED
            else:
                event_dict[key] = redact_value(value)
        return event_dict


# Libraries whose INFO/DEBUG records carry URLs with credentials (the Telegram URL holds the
# bot token); they log at WARNING and above only, and the redactor still scrubs those.
_NOISY_LOGGERS: Final = ("httpx", "httpcore", "httpx2", "httpcore2")  # solana-py uses httpx2
_HANDLER_MARK: Final = "_premix_handler"
# Libraries that install their own handlers (arq's CLI does): routed to the root handler
# instead, so their records are redacted and rendered like premix's own.
_ROUTED_LOGGERS: Final = ("arq",)


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process (idempotent).

    Every record, premix's and the libraries', goes through `SecretRedactor` and is rendered as
    JSON (`settings.log_json`) or as a console line, to `stream` (default: stderr).
    """
    register_settings_secrets(settings)
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str)
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            SecretRedactor(),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in _ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        routed.handlers.clear()
        routed.propagate = True

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str, **context: Any) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger named `name`, bound to `context` (job_id=..., user_id=...)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**context) if context else logger


def reset_logging() -> None:
    """Undo `configure_logging`: remove its handler; structlog's defaults, still redacting."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
    structlog.reset_defaults()
    _redact_by_default()


def _redact_by_default() -> None:
    # Until `configure_logging` runs (scripts, tests), structlog's defaults still redact.
    if structlog.is_configured():
        return
    *processors, renderer = structlog.get_config()["processors"]
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, SecretRedactor(), renderer]
    )


_redact_by_default()
