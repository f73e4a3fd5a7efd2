"""Telling the user how a premix ended: Telegram Bot API `sendMessage` over httpx.

With `settings.telegram_bot_token` unset the message is only logged. Talking to Telegram never
fails a job: errors are logged by type and status only, because the request URL carries the bot
token (`{api_url}/bot{token}/sendMessage`) and httpx errors may quote it.
"""

from collections.abc import Sequence
from types import TracebackType
from typing import Final, Self

import httpx

from premix.amounts import format_sol
from premix.logs import get_logger
from premix.settings import Settings

log = get_logger(__name__)

TELEGRAM_MESSAGE_LIMIT: Final = 4096  # characters per sendMessage text
DEFAULT_TIMEOUT_SECONDS: Final = 10.0


def completion_message(
    *,
    job_id: str,
    amount_lamports: int,
    wallets_funded: int,
    mode: str,
    transactions: int,
    fee_lamports: int,
    top_up: str | None = None,
) -> str:
    """Return the completion message: SOL sent, wallets funded, mode, transactions and fees;
    for a top-up, `top_up` says what it sent of what was missing (maybe nothing)."""
    if top_up is not None:
        return f"✅ Top-up complete\n{top_up}.\nJob {job_id}"
    return (
        "✅ Premix complete\n"
        f"Sent {format_sol(amount_lamports)} to {wallets_funded} buyer wallet(s) "
        f"({mode} mode).\n"
        f"{transactions} transaction(s), fees {format_sol(fee_lamports)}.\n"
        f"Job {job_id}"
    )


_PENDING_HEADING = "Sent and not settled yet (may still land):"


def failure_message(
    *,
    job_id: str,
    reason: str,
    amount_lamports: int | None = None,
    funded: Sequence[tuple[str, int]] = (),
    pending: Sequence[tuple[str, int]] = (),
) -> str:
    """Return the failure message: the reason, exactly what was already sent, and what was sent
    but may still land (`pending`); "Nothing was sent." only when neither."""
    lines = ["❌ Premix failed"]
    if amount_lamports is not None:
        lines.append(f"Requested {format_sol(amount_lamports)}.")
    lines.append(reason)
    for wallets, heading in ((funded, "Already sent"), (pending, _PENDING_HEADING)):
        if wallets:
            total = sum(lamports for _, lamports in wallets)
            lines.append(f"{heading} {format_sol(total)} to {len(wallets)} wallet(s):")
            lines.extend(f"• {wallet}: {format_sol(lamports)}" for wallet, lamports in wallets)
    if not funded and not pending:
        lines.append("Nothing was sent.")
    lines.append(f"Job {job_id}")
    return "\n".join(lines)


def cancelled_message(*, job_id: str, message: str) -> str:
    """Return the message of a premix `cancel_premix` stopped: exactly what was sent."""
    detail = message.removeprefix("Premix cancelled").lstrip(": ")
    return f"⏹ Premix cancelled\n{detail[:1].upper()}{detail[1:]}.\nJob {job_id}"


def _fit(text: str) -> str:
    if len(text) <= TELEGRAM_MESSAGE_LIMIT:
        return text
    return text[: TELEGRAM_MESSAGE_LIMIT - 1] + "…"


class Notifier:
    """Sends messages to a Telegram chat; one per process, closed with `aclose()`.

    `send` returns True when Telegram accepted the message and False otherwise (no token,
    network error, non-2xx answer); it never raises.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        token = settings.telegram_bot_token
        self._token = token.get_secret_value() if token is not None else ""
        self._api_url = settings.telegram_api_url.rstrip("/")
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout_seconds)

    @property
    def enabled(self) -> bool:
        """True when a bot token is configured (messages go to Telegram, not only to the log)."""
        return bool(self._token)

    async def send(self, chat_id: int, text: str) -> bool:
        """Send `text` to `chat_id`; return True if Telegram accepted it. Never raises."""
        text = _fit(text)
        if not self.enabled:
            log.info("telegram_disabled_message_logged", chat_id=chat_id, text=text)
            return False
        # The URL holds the token: it is built here and never logged.
        url = f"{self._api_url}/bot{self._token}/sendMessage"
        try:
            response = await self._client.post(url, json={"chat_id": chat_id, "text": text})
        except httpx.HTTPError as e:
            log.warning("telegram_unreachable", chat_id=chat_id, error=type(e).__name__)
            return False
        if response.is_success:
            log.info("telegram_message_sent", chat_id=chat_id)
            return True
        log.warning(
            "telegram_rejected_message",
            chat_id=chat_id,
            status_code=response.status_code,
            description=_telegram_description(response),
        )
        return False

    async def notify_completed(
        self,
        chat_id: int,
        *,
        job_id: str,
        amount_lamports: int,
        wallets_funded: int,
        mode: str,
        transactions: int,
        fee_lamports: int,
        top_up: str | None = None,
    ) -> bool:
        """Send the completion message (see `completion_message`)."""
        return await self.send(
            chat_id,
            completion_message(
                job_id=job_id,
                amount_lamports=amount_lamports,
                wallets_funded=wallets_funded,
                mode=mode,
                transactions=transactions,
                fee_lamports=fee_lamports,
                top_up=top_up,
            ),
        )

    async def notify_failed(
        self,
        chat_id: int,
        *,
        job_id: str,
        reason: str,
        amount_lamports: int | None = None,
        funded: Sequence[tuple[str, int]] = (),
        pending: Sequence[tuple[str, int]] = (),
    ) -> bool:
        """Send the failure message (see `failure_message`)."""
        return await self.send(
            chat_id,
            failure_message(
                job_id=job_id,
                reason=reason,
                amount_lamports=amount_lamports,
                funded=funded,
                pending=pending,
            ),
        )

    async def notify_cancelled(self, chat_id: int, *, job_id: str, message: str) -> bool:
        """Send the cancellation message (see `cancelled_message`)."""
        return await self.send(chat_id, cancelled_message(job_id=job_id, message=message))

    async def aclose(self) -> None:
        """Close the HTTP client if this notifier created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _telegram_description(response: httpx.Response) -> str:
    # Telegram answers errors as {"ok": false, "error_code": 400, "description": "..."}.
    try:
        body = response.json()
    except ValueError:
        return ""
    description = body.get("description") if isinstance(body, dict) else None
    return str(description)[:200] if description is not None else ""
