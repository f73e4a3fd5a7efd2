"""Logs: structured events with bound context; secrets never reach a rendered line."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from solders.keypair import Keypair

from premix.logs import REDACTED, configure_logging, get_logger, redact_text, reset_logging
from premix.settings import Settings

ENCRYPTION_KEY_B64 = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80="
BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@pytest.fixture
def rendered_logs() -> Iterator[io.StringIO]:
    """Configure logging (JSON, DEBUG) into a buffer; restore the previous logging afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()
    settings = Settings(
        log_json=True,
        log_level="DEBUG",
        encryption_keys=SecretStr(f"k1:{ENCRYPTION_KEY_B64}"),
        telegram_bot_token=SecretStr(BOT_TOKEN),
    )
    configure_logging(settings, stream=buffer)
    yield buffer
    reset_logging()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_events_carry_bound_job_and_user_context(rendered_logs: io.StringIO) -> None:
    log = get_logger("premix.test", job_id="premix-u1-1", user_id="u1")
    log.info("phase_started", phase=2)
    (line,) = lines(rendered_logs)
    assert line["event"] == "phase_started"
    assert (line["job_id"], line["user_id"], line["phase"]) == ("premix-u1-1", "u1", 2)
    assert line["level"] == "info"
    assert str(line["timestamp"]).endswith("Z")


def test_secret_value_under_an_innocent_key_is_redacted(rendered_logs: io.StringIO) -> None:
    keypair = Keypair()
    log = get_logger("premix.test")
    log.info(
        "wallet_loaded",
        note=str(keypair),
        raw=list(bytes(keypair)),
        config=f"token is {BOT_TOKEN}",
        key_material=ENCRYPTION_KEY_B64,
        url="redis://:hunter2-password@127.0.0.1:6379/0",
    )
    output = rendered_logs.getvalue()
    assert str(keypair) not in output
    assert BOT_TOKEN not in output
    assert ENCRYPTION_KEY_B64 not in output
    assert "hunter2-password" not in output
    (line,) = lines(rendered_logs)
    assert line["note"] == REDACTED
    assert line["raw"] == REDACTED
    assert line["config"] == f"token is {REDACTED}"
    assert line["url"] == f"redis://:{REDACTED}@127.0.0.1:6379/0"


def test_secret_key_names_are_redacted_whatever_they_hold(rendered_logs: io.StringIO) -> None:
    log = get_logger("premix.test")
    log.info(
        "settings",
        private_key="abc",
        bot_token="xyz",
        nested={"secret_key": "s3", "public_key": "Pub111"},
        api_secret=SecretStr("plain-secret-value"),
        password="pw",
    )
    (line,) = lines(rendered_logs)
    assert line["private_key"] == REDACTED
    assert line["bot_token"] == REDACTED
    assert line["nested"] == {"secret_key": REDACTED, "public_key": "Pub111"}
    assert line["api_secret"] == REDACTED
    assert line["password"] == REDACTED
    assert "plain-secret-value" not in rendered_logs.getvalue()


def test_secretstr_value_and_keypair_objects_never_leak(rendered_logs: io.StringIO) -> None:
    keypair = Keypair()
    get_logger("premix.test").info("loaded", value=SecretStr("inner-secret"), wallet=keypair)
    (line,) = lines(rendered_logs)
    assert line["value"] == REDACTED
    assert line["wallet"] == f"Keypair({keypair.pubkey()})"
    assert str(keypair) not in rendered_logs.getvalue()


def test_signatures_and_public_keys_stay_readable(rendered_logs: io.StringIO) -> None:
    keypair = Keypair()
    signature = str(keypair.sign_message(b"transfer"))
    get_logger("premix.test").info("sent", signature=signature, recipient=str(keypair.pubkey()))
    (line,) = lines(rendered_logs)
    assert line["signature"] == signature
    assert line["recipient"] == str(keypair.pubkey())


def test_foreign_library_records_and_exceptions_are_redacted(rendered_logs: io.StringIO) -> None:
    keypair = Keypair()
    logging.getLogger("arq.worker").warning("job failed with key %s", str(keypair))
    try:
        raise ValueError(f"bad token {BOT_TOKEN}")
    except ValueError:
        get_logger("premix.test").exception("boom")
    output = rendered_logs.getvalue()
    assert str(keypair) not in output
    assert BOT_TOKEN not in output
    records = lines(rendered_logs)
    assert records[0]["logger"] == "arq.worker"
    assert REDACTED in str(records[1]["exception"])


def test_rpc_api_keys_in_urls_are_redacted_and_http_client_chatter_is_quiet(
    rendered_logs: io.StringIO,
) -> None:
    url = "https://mainnet.example-rpc.com/?api-key=0123456789abcdef"
    logging.getLogger("httpx2").info("HTTP Request: POST %s", url)  # solana-py's client
    logging.getLogger("httpx2").warning("HTTP Request: POST %s failed", url)
    get_logger("premix.test").warning("rpc_unreachable", url=url)
    output = rendered_logs.getvalue()
    assert "0123456789abcdef" not in output
    assert [record["event"] for record in lines(rendered_logs)] == [
        f"HTTP Request: POST {url.replace('0123456789abcdef', REDACTED)} failed",
        "rpc_unreachable",
    ]


def test_registered_literal_secret_is_redacted_even_without_a_known_shape(
    rendered_logs: io.StringIO,
) -> None:
    # The whole encryption_keys setting and each of its keys were registered.
    assert redact_text(f"keys=k1:{ENCRYPTION_KEY_B64}") == f"keys={REDACTED}"


def test_structlog_redacts_before_configure_logging_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reset_logging()
    keypair = Keypair()
    get_logger("premix.test").warning("unconfigured", note=str(keypair))
    captured = capsys.readouterr()
    assert "unconfigured" in captured.out + captured.err
    assert str(keypair) not in captured.out + captured.err


def test_arq_records_are_routed_through_the_redactor_not_arqs_own_handler() -> None:
    arq_logger = logging.getLogger("arq.worker")
    arq_own_output = io.StringIO()
    logging.getLogger("arq").addHandler(logging.StreamHandler(arq_own_output))
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    rendered = io.StringIO()
    try:
        configure_logging(Settings(log_json=True), stream=rendered)
        arq_logger.info("job failed, token %s", BOT_TOKEN)
    finally:
        reset_logging()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert arq_own_output.getvalue() == ""
    assert "job failed, token [REDACTED]" in rendered.getvalue()
