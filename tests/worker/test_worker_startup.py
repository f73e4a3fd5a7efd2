"""`arq premix.worker.WorkerSettings` as an operator starts it: a worker that cannot run refuses
to start with one line naming the variable to fix and a non-zero exit, and never prints any
part of a secret; importing premix.worker never fails, whatever the environment holds."""

import base64
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from premix.servers import free_port

ARQ = str(Path(sys.executable).parent / "arq")
REPO = Path(__file__).resolve().parents[2]
# A key whose every character is distinctive, to search the output for any piece of it.
SECRET_KEY_B64 = base64.b64encode(bytes(range(200, 232))).decode()
SECRET_KEYS = f"qx:{SECRET_KEY_B64}"


@dataclass(frozen=True)
class Exited:
    status: int
    stdout: str
    stderr: str

    @property
    def refusals(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "refusing to start" in line]


def start_worker(env: Mapping[str, str], *args: str, timeout: float = 60) -> Exited:
    """Run `arq premix.worker.WorkerSettings ARGS` with only these PREMIX_* variables."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREMIX_")}
    environment.update(env)
    done = subprocess.run(
        [ARQ, "premix.worker.WorkerSettings", *args],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Exited(done.returncode, done.stdout, done.stderr)


def assert_refused(exited: Exited, reason: str) -> None:
    assert exited.status == 1, exited
    assert "Traceback" not in exited.stderr, exited.stderr
    assert exited.refusals == [f"premix worker: refusing to start: {reason}"], exited.stderr


def assert_no_piece_of_the_secret(exited: Exited) -> None:
    output = exited.stdout + exited.stderr
    assert "input_value" not in output
    pieces = {SECRET_KEY_B64[i : i + 4] for i in range(len(SECRET_KEY_B64) - 3)}
    assert not [piece for piece in pieces if piece in output], output


@pytest.fixture
def env(redis_url: str, mongodb_url: str) -> dict[str, str]:
    """A worker environment that starts: the test Redis and MongoDB, valid keys."""
    return {
        "PREMIX_REDIS_URL": redis_url,
        "PREMIX_MONGODB_URI": mongodb_url,
        "PREMIX_MONGODB_DATABASE": "premix_startup_test",
        "PREMIX_ENCRYPTION_KEYS": SECRET_KEYS,
        "PREMIX_RPC_URL": "http://127.0.0.1:1",
    }


def test_a_configured_worker_starts_and_stops_in_burst_mode(env: dict[str, str]) -> None:
    exited = start_worker(env, "--burst")

    assert exited.status == 0, exited
    assert exited.refusals == []
    assert_no_piece_of_the_secret(exited)


def test_unreachable_mongodb_is_refused_within_the_timeout_naming_the_variable(
    env: dict[str, str],
) -> None:
    env["PREMIX_MONGODB_URI"] = f"mongodb://127.0.0.1:{free_port()}"
    env["PREMIX_MONGODB_TIMEOUT_SECONDS"] = "1"

    exited = start_worker(env, timeout=20)

    assert_refused(
        exited,
        "MongoDB at PREMIX_MONGODB_URI did not answer within 1 s (PREMIX_MONGODB_TIMEOUT_SECONDS)",
    )


def test_missing_encryption_keys_are_refused(env: dict[str, str]) -> None:
    del env["PREMIX_ENCRYPTION_KEYS"]

    assert_refused(
        start_worker(env),
        "PREMIX_ENCRYPTION_KEYS is not set; the worker needs the keys the wallets are "
        "encrypted with (comma-separated key_id:base64, see `premix keys generate`)",
    )


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        (SECRET_KEY_B64, "PREMIX_ENCRYPTION_KEYS: entry 1 is not 'key_id:base64'"),
        (f"qx:{SECRET_KEY_B64[:-8]}", "PREMIX_ENCRYPTION_KEYS: key 'qx' is not 32 bytes of base64"),
        (f"{SECRET_KEY_B64}:{SECRET_KEY_B64}", "PREMIX_ENCRYPTION_KEYS: key ids are 1-32 "
         "characters of letters, digits, '_', '.', '-'"),
    ],
    ids=["no-key-id", "short-key", "key-as-id"],
)  # fmt: skip
def test_malformed_encryption_keys_are_refused_without_echoing_them(
    env: dict[str, str], keys: str, reason: str
) -> None:
    env["PREMIX_ENCRYPTION_KEYS"] = keys

    exited = start_worker(env)

    assert_refused(exited, reason)
    assert_no_piece_of_the_secret(exited)


def test_the_memory_store_is_refused_unless_allowed(env: dict[str, str]) -> None:
    env["PREMIX_MONGODB_URI"] = "memory://"

    refused = start_worker(env)
    env["PREMIX_ALLOW_MEMORY_STORE"] = "1"
    allowed = start_worker(env, "--burst")

    assert_refused(
        refused,
        "PREMIX_MONGODB_URI is memory://, an in-process store: a worker process sees no wallet "
        "created by another process; point it at MongoDB (or set PREMIX_ALLOW_MEMORY_STORE=1 "
        "where one process creates the wallets and runs the jobs)",
    )
    assert allowed.status == 0, allowed


def test_an_invalid_setting_is_one_line_naming_it_and_never_any_part_of_a_secret(
    env: dict[str, str],
) -> None:
    # A check across settings: pydantic's own text would quote the start of every value,
    # PREMIX_ENCRYPTION_KEYS included.
    env["PREMIX_JOB_TIMEOUT_SECONDS"] = "5000"
    env["PREMIX_FEE_BUFFER_SOL"] = "lots"

    exited = start_worker(env)

    assert_refused(
        exited,
        "invalid configuration: PREMIX_FEE_BUFFER_SOL: Input should be a valid decimal",
    )
    assert_no_piece_of_the_secret(exited)


def test_importing_the_worker_with_a_broken_environment_does_not_fail() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREMIX_")}
    environment.update({"PREMIX_FEE_BUFFER_SOL": "lots", "PREMIX_ENCRYPTION_KEYS": SECRET_KEYS})

    done = subprocess.run(
        [sys.executable, "-c", "import premix.worker, premix.cli, premix.demo; print('ok')"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )

    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_a_compute_unit_limit_too_small_for_any_transaction_is_refused(
    env: dict[str, str],
) -> None:
    env["PREMIX_PRIORITY_FEE"] = "1000"
    env["PREMIX_COMPUTE_UNIT_LIMIT"] = "100"

    assert_refused(
        start_worker(env),
        "PREMIX_COMPUTE_UNIT_LIMIT (100) is below the 3,300 compute units the largest "
        "transaction premix builds (20 transfers) uses; leave it 0 to compute it",
    )


def test_a_redis_url_that_does_not_parse_is_refused_without_showing_it(
    env: dict[str, str],
) -> None:
    env["PREMIX_REDIS_URL"] = "redis://:s3cr3t/pw@127.0.0.1:6379/0"

    exited = start_worker(env)

    assert_refused(
        exited,
        "invalid configuration: PREMIX_REDIS_URL: is not a usable Redis URL (percent-encode "
        "any '/', '#', '?' or '@' in the password); it is not shown here",
    )
    assert "s3cr3t" not in exited.stdout + exited.stderr


def test_a_redis_that_does_not_answer_is_refused_within_seconds_naming_the_variable(
    env: dict[str, str], unreachable_redis_url: str
) -> None:
    env["PREMIX_REDIS_URL"] = unreachable_redis_url
    del env["PREMIX_ENCRYPTION_KEYS"]  # a configuration error is told even with Redis down

    missing_keys = start_worker(env, timeout=20)
    env["PREMIX_ENCRYPTION_KEYS"] = SECRET_KEYS
    redis_down = start_worker(env, timeout=20)

    assert_refused(
        missing_keys,
        "PREMIX_ENCRYPTION_KEYS is not set; the worker needs the keys the wallets are "
        "encrypted with (comma-separated key_id:base64, see `premix keys generate`)",
    )
    assert_refused(
        redis_down,
        "Redis at PREMIX_REDIS_URL did not answer within 3 s (ConnectionError)",
    )


def test_an_unknown_log_level_is_refused_naming_the_variable(env: dict[str, str]) -> None:
    env["PREMIX_LOG_LEVEL"] = "LOUD"

    assert_refused(
        start_worker(env),
        "invalid configuration: PREMIX_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, "
        "CRITICAL",
    )
