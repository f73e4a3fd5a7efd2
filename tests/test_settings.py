"""Settings are checked when they are read: a bad combination fails at start-up with a message
naming the variables, never in the middle of a job."""

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from premix.settings import Settings, describe_settings_error, display_url


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings()
    assert settings.fee_buffer_lamports == 10_000_000  # 0.01 SOL
    assert (settings.max_wallets, settings.min_wallet_sol) == (73, Decimal("0.01"))
    assert settings.redis_url == "redis://127.0.0.1:6379/0"


def test_a_job_uses_at_most_max_wallets_whatever_it_asks_for() -> None:
    settings = Settings(max_wallets=30)
    assert settings.wallet_limit() == 30
    assert settings.wallet_limit(10) == 10
    assert settings.wallet_limit(73) == 30


def test_the_smallest_fee_buffer_is_the_rent_exempt_minimum_in_lamports() -> None:
    assert Settings(fee_buffer_sol=Decimal("0.00089088")).fee_buffer_lamports == 890_880


def test_a_fee_buffer_finer_than_a_lamport_is_refused() -> None:
    with pytest.raises(ValidationError, match="whole number of lamports"):
        Settings(fee_buffer_sol=Decimal("0.0000000001"))


def test_a_minimum_below_the_rent_exempt_minimum_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREMIX_MIN_WALLET_SOL", "0.0001")
    with pytest.raises(ValidationError, match="below the rent-exempt minimum"):
        Settings()


def test_the_user_lock_must_outlive_arqs_redelivery_of_a_crashed_job() -> None:
    with pytest.raises(ValidationError) as error:
        Settings(user_lock_ttl_seconds=900, job_timeout_seconds=900)
    assert "PREMIX_USER_LOCK_TTL_SECONDS (900) must be more than PREMIX_JOB_TIMEOUT_SECONDS" in (
        str(error.value)
    )
    assert Settings(user_lock_ttl_seconds=911, job_timeout_seconds=900).user_lock_ttl_seconds == 911


def test_tier_caps_from_the_environment_as_a_list_or_a_single_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREMIX_TIER_CAPS_SOL", "0.5,1")
    assert Settings().tier_caps_sol == (Decimal("0.5"), Decimal(1))
    monkeypatch.setenv("PREMIX_TIER_CAPS_SOL", "0.5")
    assert Settings().tier_caps_sol == (Decimal("0.5"),)


def test_an_empty_bot_token_means_no_bot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREMIX_TELEGRAM_BOT_TOKEN", "")
    assert Settings().telegram_bot_token is None


SECRET = "s3cr3t"


@pytest.mark.parametrize(
    "url",
    [f"redis://:{SECRET}/pw@127.0.0.1:6379/0", f"redis://:{SECRET}#x@127.0.0.1:6379/0",
     f"redis://:{SECRET}?x@127.0.0.1:6379/0", f"redis://:{SECRET}@127.0.0.1:port/0",
     f"http://:{SECRET}@127.0.0.1:6379/0", f"redis://:{SECRET}@127.0.0.1:6379/zero"],
)  # fmt: skip
def test_an_unusable_redis_url_is_refused_without_repeating_any_of_it(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(redis_url=url)

    message = describe_settings_error(refused.value)
    assert message.startswith("PREMIX_REDIS_URL: ")
    assert SECRET not in message and "127.0.0.1" not in message


def test_a_url_is_shown_without_its_credentials() -> None:
    assert display_url(f"redis://user:{SECRET}@cache.example:6380/2?x=1") == (
        "redis://cache.example:6380/2"
    )
    assert SECRET not in display_url(f"redis://:{SECRET}/pw@127.0.0.1:6379/0")


def test_a_percent_encoded_redis_password_reaches_redis_decoded() -> None:
    from premix.worker import arq_redis_settings

    assert arq_redis_settings("redis://:p%2Fw%231@cache.example:6380/2").password == "p/w#1"


def test_settings_read_a_dot_env_file_in_the_working_directory_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "# what docker compose also reads\n"
        "PREMIX_REDIS_URL=redis://cache.internal:6380/2\n"
        "PREMIX_WORKER_MAX_JOBS=4\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREMIX_REDIS_URL", raising=False)
    monkeypatch.setenv("PREMIX_WORKER_MAX_JOBS", "2")  # the environment wins over the file

    settings = Settings()

    assert settings.redis_url == "redis://cache.internal:6380/2"
    assert settings.worker_max_jobs == 2
