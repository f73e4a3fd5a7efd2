"""Notifications: Telegram sendMessage over httpx, tested against a local HTTP server."""

import io
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from premix.logs import configure_logging, reset_logging
from premix.notify import Notifier, completion_message, failure_message
from premix.settings import Settings

BOT_TOKEN = "987654321:AAF-telegram-test-token_abcdefghijklmnopqrstu"


@dataclass
class FakeTelegram:
    """A loopback HTTP server that records requests and answers with `status`."""

    url: str = ""
    status: int = 200
    requests: list[tuple[str, dict[str, object]]] = field(default_factory=list)


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            fake.requests.append((self.path, json.loads(self.rfile.read(length))))
            ok = fake.status < 400
            body = {"ok": ok, "result": {}} if ok else {"ok": False, "description": "Server broke"}
            payload = json.dumps(body).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def all_logs(
    caplog: pytest.LogCaptureFixture,
) -> Iterator[tuple[io.StringIO, pytest.LogCaptureFixture]]:
    """Rendered log lines (after redaction) and the raw records (before it), at DEBUG."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    rendered = io.StringIO()
    configure_logging(Settings(log_level="DEBUG", log_json=True), stream=rendered)
    caplog.set_level(logging.DEBUG)
    yield rendered, caplog
    reset_logging()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def settings_for(api_url: str, token: str | None = BOT_TOKEN) -> Settings:
    return Settings(
        telegram_api_url=api_url,
        telegram_bot_token=SecretStr(token) if token is not None else None,
    )


def assert_token_never_logged(logs: tuple[io.StringIO, pytest.LogCaptureFixture]) -> None:
    rendered, caplog = logs
    raw = "\n".join(f"{r.getMessage()} {r.msg!r} {r.args!r}" for r in caplog.records)
    assert BOT_TOKEN not in raw
    assert BOT_TOKEN not in rendered.getvalue()
    assert "AAF-telegram-test-token" not in raw + rendered.getvalue()


async def test_completion_message_is_posted_to_send_message(
    telegram: FakeTelegram, all_logs: tuple[io.StringIO, pytest.LogCaptureFixture]
) -> None:
    async with Notifier(settings_for(telegram.url)) as notifier:
        accepted = await notifier.notify_completed(
            -100123,
            job_id="premix-u1-1",
            amount_lamports=500_000_000,
            wallets_funded=12,
            mode="fast",
            transactions=1,
            fee_lamports=5_000,
        )
    assert accepted is True
    assert telegram.requests == [
        (
            f"/bot{BOT_TOKEN}/sendMessage",
            {
                "chat_id": -100123,
                "text": "✅ Premix complete\nSent 0.5 SOL to 12 buyer wallet(s) (fast mode).\n"
                "1 transaction(s), fees 0.000005 SOL.\nJob premix-u1-1",
            },
        )
    ]
    assert_token_never_logged(all_logs)


async def test_failure_message_names_the_reason_and_what_was_sent(telegram: FakeTelegram) -> None:
    async with Notifier(settings_for(telegram.url)) as notifier:
        await notifier.notify_failed(
            42,
            job_id="premix-u1-2",
            reason="Mixer operation failed: transfer 3 failed on chain",
            amount_lamports=1_000_000_000,
            funded=[("Wallet1", 100_000_000), ("Wallet2", 150_000_000)],
        )
    ((_, body),) = telegram.requests
    assert body["text"] == (
        "❌ Premix failed\nRequested 1 SOL.\nMixer operation failed: transfer 3 failed on chain\n"
        "Already sent 0.25 SOL to 2 wallet(s):\n• Wallet1: 0.1 SOL\n• Wallet2: 0.15 SOL\n"
        "Job premix-u1-2"
    )


def test_failure_message_says_when_nothing_was_sent() -> None:
    text = failure_message(job_id="premix-u1-3", reason="No buyer wallets found")
    assert text == "❌ Premix failed\nNo buyer wallets found\nNothing was sent.\nJob premix-u1-3"


def test_completion_message_shows_amount_wallets_mode_and_fees() -> None:
    text = completion_message(
        job_id="j",
        amount_lamports=1_000_000_000,
        wallets_funded=20,
        mode="standard",
        transactions=20,
        fee_lamports=100_000,
    )
    assert "Sent 1 SOL to 20 buyer wallet(s) (standard mode)." in text
    assert "20 transaction(s), fees 0.0001 SOL." in text


async def test_server_error_is_logged_without_the_token_and_does_not_raise(
    telegram: FakeTelegram, all_logs: tuple[io.StringIO, pytest.LogCaptureFixture]
) -> None:
    telegram.status = 500
    async with Notifier(settings_for(telegram.url)) as notifier:
        accepted = await notifier.send(42, "hello")
    assert accepted is False
    assert len(telegram.requests) == 1
    rendered, _ = all_logs
    (line,) = [json.loads(x) for x in rendered.getvalue().splitlines() if "telegram" in x]
    assert line["event"] == "telegram_rejected_message"
    assert (line["status_code"], line["description"]) == (500, "Server broke")
    assert_token_never_logged(all_logs)


async def test_unreachable_telegram_is_logged_without_the_token_and_does_not_raise(
    unreachable_redis_url: str, all_logs: tuple[io.StringIO, pytest.LogCaptureFixture]
) -> None:
    closed_port_url = unreachable_redis_url.replace("redis://", "http://").removesuffix("/0")
    async with Notifier(settings_for(closed_port_url)) as notifier:
        accepted = await notifier.send(42, "hello")
    assert accepted is False
    rendered, _ = all_logs
    assert '"event": "telegram_unreachable"' in rendered.getvalue()
    assert '"error": "ConnectError"' in rendered.getvalue()
    assert_token_never_logged(all_logs)


async def test_without_a_token_the_message_is_only_logged(
    telegram: FakeTelegram, all_logs: tuple[io.StringIO, pytest.LogCaptureFixture]
) -> None:
    async with Notifier(settings_for(telegram.url, token=None)) as notifier:
        assert notifier.enabled is False
        accepted = await notifier.send(42, "Premix complete")
    assert accepted is False
    assert telegram.requests == []
    rendered, _ = all_logs
    (line,) = [json.loads(x) for x in rendered.getvalue().splitlines() if "telegram" in x]
    assert (line["event"], line["chat_id"], line["text"]) == (
        "telegram_disabled_message_logged",
        42,
        "Premix complete",
    )


async def test_overlong_text_is_cut_to_telegrams_limit(telegram: FakeTelegram) -> None:
    async with Notifier(settings_for(telegram.url)) as notifier:
        await notifier.send(42, "x" * 5000)
    ((_, body),) = telegram.requests
    assert len(str(body["text"])) == 4096


def test_failure_message_never_says_nothing_was_sent_while_transfers_may_still_land() -> None:
    text = failure_message(
        job_id="premix-u1-4",
        reason="Mixer operation failed: the job stopped 1 time(s) before finishing",
        funded=[("Wallet1", 100_000_000)],
        pending=[("Wallet2", 200_000_000), ("Wallet3", 300_000_000)],
    )

    assert text == (
        "❌ Premix failed\nMixer operation failed: the job stopped 1 time(s) before finishing\n"
        "Already sent 0.1 SOL to 1 wallet(s):\n• Wallet1: 0.1 SOL\n"
        "Sent and not settled yet (may still land): 0.5 SOL to 2 wallet(s):\n"
        "• Wallet2: 0.2 SOL\n• Wallet3: 0.3 SOL\n"
        "Job premix-u1-4"
    )


def test_a_top_up_completion_message_says_what_it_sent_of_what_was_missing() -> None:
    said = "Top-up of 2 SOL: all 4 wallets already hold their planned amounts; nothing was sent"
    text = completion_message(
        job_id="j",
        amount_lamports=0,
        wallets_funded=0,
        mode="standard",
        transactions=0,
        fee_lamports=0,
        top_up=said,
    )
    assert text == f"✅ Top-up complete\n{said}.\nJob j"
