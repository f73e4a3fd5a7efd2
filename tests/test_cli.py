"""The `premix` command line: results on stdout (tables or `--json`), one error line on stderr.

Most tests run the command as a subprocess (`python -m premix.cli`), exactly as a person would.
Commands whose state lives in the store (wallets, keys) run in-process through
`premix.cli.run` against the session's MongoDB-wire server (SecantusDB), a fresh database each.
"""

import asyncio
import contextlib
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import redis as redis_sync
from arq.worker import Worker
from pydantic import SecretStr
from redis.asyncio import Redis
from solders.keypair import Keypair

from premix.cli import run
from premix.constants import (
    PROGRESS_ALL_CHANNEL,
    PROGRESS_CHANNEL_PREFIX,
    PROGRESS_STATE_PREFIX,
    QUEUE_NAME,
    USER_LOCK_PREFIX,
)
from premix.jobs import PremixFundsJob
from premix.keys import KeyRing
from premix.progress import Phase, ProgressEmitter, ProgressEvent, ProgressStatus
from premix.scheduling import format_run_time
from premix.settings import Settings
from premix.store import Store
from premix.worker import worker_settings
from tests.fixtures.store import secret_forms
from tests.worker.helpers import create_user, make_settings, open_store

# Variables the commands read; removed from the subprocess environment unless a test sets them.
_PREMIX_VARIABLES = [name for name in os.environ if name.startswith("PREMIX_")]


@dataclass(frozen=True)
class Completed:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("premix: error:")]


def premix(*args: str, env: Mapping[str, str] | None = None, stdin: str = "") -> Completed:
    """Run `python -m premix.cli ARGS` with only the given PREMIX_* variables."""
    environment = {k: v for k, v in os.environ.items() if k not in _PREMIX_VARIABLES}
    environment.update(env or {})
    process = subprocess.run(
        [sys.executable, "-m", "premix.cli", *args],
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Completed(process.returncode, process.stdout, process.stderr)


def assert_one_error_line(result: Completed, expected: str, status: int = 1) -> None:
    assert result.status == status, result
    assert "Traceback" not in result.stderr
    assert result.error_lines == [f"premix: error: {expected}"], result.stderr


# --- plan ---


def test_plan_prints_the_tier_table_and_the_exact_total() -> None:
    result = premix("plan", "--amount", "2.5")

    assert result.status == 0, result
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == "Plan for 2.5 SOL: 5 of 73 buyer wallet(s), the fewest whose caps hold the amount"
    )
    assert lines[-1].split() == ["total", "5", "buyer", "wallets", "2.500000000"]
    assert [line.split()[2] for line in lines[2:-1]] == ["0.500000000"] * 5


def test_plan_json_has_lamports_sol_strings_and_wallets_used() -> None:
    result = premix("plan", "--amount", "20", "--json")

    assert result.status == 0, result
    plan = result.json()
    assert plan["amountLamports"] == 20_000_000_000
    assert plan["amountSol"] == "20"
    assert plan["walletsUsed"] == len(plan["wallets"]) == 31  # 10 x 0.5 + 20 x 0.7 = 19 SOL
    assert plan["totalLamports"] == sum(w["lamports"] for w in plan["wallets"]) == 20_000_000_000
    assert [w["position"] for w in plan["wallets"]] == list(range(1, 32))
    assert all(w["lamports"] <= w["capLamports"] for w in plan["wallets"])
    assert [w["sol"] for w in plan["wallets"][9:11]] == ["0.5", "0.7"]


def test_plan_max_wallets_and_available_wallets_limit_the_plan() -> None:
    limited = premix("plan", "--amount", "2", "--max-wallets", "3", "--json")
    too_few = premix("plan", "--amount", "2", "--wallets", "3")

    assert limited.status == 1
    assert_one_error_line(
        limited, "Amount 2 SOL is more than 3 buyer wallets can hold (at most 1.5 SOL)"
    )
    assert limited.stdout == ""
    assert_one_error_line(
        too_few, "Amount 2 SOL is more than 3 buyer wallets can hold (at most 1.5 SOL)"
    )
    assert premix("plan", "--amount", "1.5", "--wallets", "3", "--json").json()["walletsUsed"] == 3


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("-1", "Invalid value for '--amount': must be greater than 0 SOL"),
        ("0", "Invalid value for '--amount': must be greater than 0 SOL"),
        ("abc", "Invalid value for '--amount': must be a number of SOL, got 'abc'"),
        (
            "0.0000000001",
            "Invalid value for '--amount': has more than 9 decimals (1 lamport = 0.000000001 SOL)",
        ),
    ],
)
def test_plan_refuses_a_bad_amount_with_one_usage_line(amount: str, message: str) -> None:
    result = premix("plan", "--amount", amount)

    assert_one_error_line(result, f"{message} (see 'premix plan --help')", status=2)
    assert result.stdout == ""


def test_plan_amount_below_the_minimum_or_above_the_table_is_a_failure_line() -> None:
    assert_one_error_line(
        premix("plan", "--amount", "0.001"),
        "Amount 0.001 SOL is below the per-wallet minimum of 0.01 SOL",
    )
    assert_one_error_line(
        premix("plan", "--amount", "86"),
        "Amount 86 SOL is more than 73 buyer wallets can hold (at most 85 SOL)",
    )


def test_plan_uses_the_tier_caps_from_settings() -> None:
    result = premix("plan", "--amount", "3", "--json", env={"PREMIX_TIER_CAPS_SOL": "1,1,1,1"})

    assert result.json()["walletsUsed"] == 3
    assert [w["lamports"] for w in result.json()["wallets"]] == [1_000_000_000] * 3


def test_invalid_configuration_is_one_line_naming_the_variable() -> None:
    result = premix("plan", "--amount", "1", env={"PREMIX_MAX_WALLETS": "100"})

    assert_one_error_line(
        result,
        "invalid configuration: PREMIX_MAX_WALLETS: Input should be less than or equal to 73",
    )


def test_usage_mistakes_exit_2_with_one_line() -> None:
    assert_one_error_line(
        premix("plan"), "Missing option '--amount'. (see 'premix plan --help')", status=2
    )
    assert_one_error_line(
        premix("frobnicate"), "No such command 'frobnicate'. (see 'premix --help')", status=2
    )


def test_version_prints_the_installed_version() -> None:
    result = premix("--version")

    assert result.status == 0, result
    assert result.stdout == f"premix {importlib.metadata.version('premix')}\n"
    assert re.fullmatch(r"premix \d+\.\d+\.\d+\S*\n", result.stdout)


def test_help_lists_every_command() -> None:
    result = premix("--help")

    assert result.status == 0
    for command in (
        "demo",
        "enqueue",
        "keys",
        "localnet",
        "plan",
        "result",
        "retry",
        "status",
        "wallets",
        "watch",
    ):
        assert f"  {command} " in result.stdout


# --- wallets and keys (in-process, on the session's MongoDB-wire server) ---


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch, mongodb_url: str) -> Iterator[Settings]:
    """PREMIX_* for in-process runs: a fresh database on the test MongoDB and one encryption
    key; yields the settings naming that database (the database is dropped afterwards)."""
    for name in _PREMIX_VARIABLES:
        monkeypatch.delenv(name)
    database = f"premix_cli_{uuid4().hex[:10]}"
    monkeypatch.setenv("PREMIX_MONGODB_URI", mongodb_url)
    monkeypatch.setenv("PREMIX_MONGODB_DATABASE", database)
    monkeypatch.setenv("PREMIX_ENCRYPTION_KEYS", KeyRing.generate_key("old"))
    settings = Settings(mongodb_uri=mongodb_url, mongodb_database=database)
    yield settings
    asyncio.run(_drop_database(settings))


async def _drop_database(settings: Settings) -> None:
    store = await Store.open(settings)
    await store.drop_database()
    await store.close()


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> Completed:
    status = run(list(args))
    captured = capsys.readouterr()
    return Completed(status, captured.out, captured.err)


def test_wallets_create_then_list_shows_public_keys_in_order(
    store_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    created = run_in_process(
        capsys, "wallets", "create", "--user", "alice", "--funding", "--buyers", "3", "--json"
    )
    listed = run_in_process(capsys, "wallets", "list", "--user", "alice", "--json")

    assert created.status == 0, created
    rows = created.json()["created"]
    assert [(row["role"], row["position"]) for row in rows] == [
        ("funding", 0),
        ("buyer", 1),
        ("buyer", 2),
        ("buyer", 3),
    ]
    assert listed.json() == {
        "userId": "alice",
        "funding": rows[0]["publicKey"],
        "buyers": rows[1:],
    }
    assert created.stderr == ""


def test_wallets_create_refuses_a_second_funding_wallet_and_a_74th_buyer(
    store_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    run_in_process(capsys, "wallets", "create", "--user", "bob", "--funding", "--buyers", "70")

    again = run_in_process(capsys, "wallets", "create", "--user", "bob", "--funding")
    too_many = run_in_process(capsys, "wallets", "create", "--user", "bob", "--buyers", "4")
    listed = run_in_process(capsys, "wallets", "list", "--user", "bob", "--json").json()

    assert again.status == 1
    assert again.error_lines == [
        f"premix: error: user bob already has a funding wallet ({listed['funding']}); "
        "nothing was created"
    ]
    assert too_many.error_lines == [
        "premix: error: Too many buyer wallets: user bob has 70 buyer wallet(s); adding 4 "
        "would exceed the maximum of 73. Nothing was added"
    ]
    assert len(listed["buyers"]) == 70


def test_wallets_create_without_encryption_keys_writes_nothing(
    store_env: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREMIX_ENCRYPTION_KEYS")

    result = run_in_process(capsys, "wallets", "create", "--user", "carol", "--buyers", "2")
    listed = run_in_process(capsys, "wallets", "list", "--user", "carol", "--json")

    assert result.error_lines == [
        "premix: error: Encryption keys misconfigured: PREMIX_ENCRYPTION_KEYS is not set; the "
        "wallet store needs at least one key"
    ]
    assert listed.json()["buyers"] == []


def test_wallets_import_reads_solana_cli_json_and_base58_from_stdin_without_echoing(
    store_env: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    funding, buyer = Keypair(), Keypair()
    keypair_file = tmp_path / "funding.json"
    keypair_file.write_text(json.dumps(list(bytes(funding))))
    monkeypatch.setattr("sys.stdin", _StringStdin(str(buyer)))

    imported_funding = run_in_process(
        capsys,
        "wallets", "import", "--user", "dave", "--funding", "--secret-file", str(keypair_file),
    )  # fmt: skip
    imported_buyer = run_in_process(
        capsys, "wallets", "import", "--user", "dave", "--buyer", "--secret-file", "-", "--json"
    )
    listed = run_in_process(capsys, "wallets", "list", "--user", "dave", "--json").json()

    assert imported_funding.stdout == (
        f"imported {funding.pubkey()} as the funding wallet of user dave\n"
    )
    assert imported_buyer.json()["imported"] == {
        "role": "buyer",
        "position": 1,
        "publicKey": str(buyer.pubkey()),
    }
    assert listed["funding"] == str(funding.pubkey())
    output = "".join(r.stdout + r.stderr for r in (imported_funding, imported_buyer))
    for secret in secret_forms(funding) + secret_forms(buyer):
        assert secret not in output


def test_wallets_import_replaces_a_funding_wallet_only_with_replace(
    store_env: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    first, second = Keypair(), Keypair()
    (tmp_path / "first").write_text(str(first))
    (tmp_path / "second").write_text(str(second))
    args = ["wallets", "import", "--user", "erin", "--funding", "--secret-file"]
    run_in_process(capsys, *args, str(tmp_path / "first"))

    refused = run_in_process(capsys, *args, str(tmp_path / "second"))
    replaced = run_in_process(capsys, *args, str(tmp_path / "second"), "--replace")
    listed = run_in_process(capsys, "wallets", "list", "--user", "erin", "--json").json()

    assert refused.status == 1
    assert "already has a funding wallet" in refused.error_lines[0]
    assert replaced.status == 0
    assert listed["funding"] == str(second.pubkey())


def test_wallets_import_of_a_bad_file_names_the_path_never_the_content(tmp_path: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]")

    result = premix(
        "wallets", "import", "--user", "u", "--buyer", "--secret-file", str(bad),
        env={"PREMIX_MONGODB_URI": "memory://", "PREMIX_ENCRYPTION_KEYS": KeyRing.generate_key()},
    )  # fmt: skip
    missing = premix("wallets", "import", "--user", "u", "--buyer", "--secret-file", "/no/such")

    assert_one_error_line(
        result,
        f"Invalid secret key: keypair file {bad}: the JSON array does not hold 64 items; "
        "expected base58 of a 64-byte secret key or a JSON array of 64 integers 0-255",
    )
    assert_one_error_line(
        missing,
        "Invalid secret key: cannot read keypair file /no/such: No such file or directory",
    )


def test_wallets_list_with_mongodb_down_is_one_line_naming_the_setting() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    uri = f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300"

    result = premix("wallets", "list", "--user", "u1", env={"PREMIX_MONGODB_URI": uri})

    assert_one_error_line(
        result,
        "Temporary failure: MongoDB did not answer (ServerSelectionTimeoutError) "
        "(check PREMIX_MONGODB_URI)",
    )


def test_keys_generate_prints_one_usable_entry_on_stdout() -> None:
    result = premix("keys", "generate", "--key-id", "k2026")

    assert result.status == 0
    entry = result.stdout.strip()
    assert entry.startswith("k2026:")
    assert KeyRing.parse(entry).key_ids == ("k2026",)
    assert result.stderr == ""


def test_keys_rotate_reencrypts_every_wallet_under_the_newest_key(
    store_env: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = os.environ["PREMIX_ENCRYPTION_KEYS"]
    run_in_process(capsys, "wallets", "create", "--user", "frank", "--funding", "--buyers", "4")
    monkeypatch.setenv("PREMIX_ENCRYPTION_KEYS", f"{KeyRing.generate_key('new')},{old}")

    rotated = run_in_process(capsys, "keys", "rotate", "--json")
    again = run_in_process(capsys, "keys", "rotate")
    new_only = store_env.model_copy(
        update={"encryption_keys": SecretStr(os.environ["PREMIX_ENCRYPTION_KEYS"].split(",")[0])}
    )

    assert rotated.json() == {"reencrypted": 5, "keyId": "new"}
    assert again.stdout == "re-encrypted 0 wallet key(s) under key 'new'\n"
    assert asyncio.run(_decryptable_wallets(new_only, "frank")) == 5


async def _decryptable_wallets(settings: Settings, user_id: str) -> int:
    store = await Store.open(settings)
    try:
        funding = await store.wallets.funding_wallet(user_id)
        buyers = await store.wallets.buyer_wallets(user_id)
    finally:
        await store.close()
    return (funding is not None) + len(buyers)


@pytest.mark.parametrize(
    "args",
    [
        ("wallets", "create", "--user", "u1", "--funding", "--buyers", "3"),
        ("wallets", "import", "--user", "u1", "--buyer", "--secret-file", "-"),
    ],
    ids=["create", "import"],
)
def test_wallets_create_and_import_on_the_memory_store_refuse_instead_of_losing_keys(
    args: tuple[str, ...],
) -> None:
    env = {"PREMIX_MONGODB_URI": "memory://", "PREMIX_ENCRYPTION_KEYS": KeyRing.generate_key()}

    result = premix(*args, env=env, stdin=str(Keypair()))

    assert_one_error_line(
        result,
        "PREMIX_MONGODB_URI is memory://, an in-process store that is gone when this command "
        "exits: the wallet keys would be lost; set it to a MongoDB URI. Nothing was stored",
    )
    assert result.stdout == ""


class _StringStdin:
    def __init__(self, text: str) -> None:
        self._text = text

    def read(self) -> str:
        return self._text


# --- localnet ---


def test_localnet_serves_json_rpc_until_sigterm_and_frees_its_port() -> None:
    environment = {k: v for k, v in os.environ.items() if k not in _PREMIX_VARIABLES}
    process = subprocess.Popen(
        [sys.executable, "-m", "premix.cli", "localnet", "--port", "0", "--slot-ms", "20"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        url = first_line.split()[3]
        health = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"})
        slot = httpx.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "getSlot"})
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=10)
    finally:
        process.kill()
    stderr = process.stderr.read() if process.stderr else ""

    assert first_line == f"localnet listening on {url} (20 ms slots); Ctrl-C to stop\n"
    assert health.json()["result"] == "ok"
    assert isinstance(slot.json()["result"], int)
    assert status == 0
    assert stderr == "premix: localnet stopped\n"
    with pytest.raises(httpx.ConnectError):
        httpx.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "getHealth"})


def test_localnet_on_a_busy_port_is_one_error_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = premix("localnet", "--port", str(port))

    assert_one_error_line(result, f"cannot listen on 127.0.0.1:{port}: Address already in use")


PROCESSED = {"commitment": "processed"}


def rpc(url: str, *calls: tuple[str, list[Any]]) -> list[Any]:
    """JSON-RPC calls in one HTTP request (a batch); their results, in order."""
    batch = [
        {"jsonrpc": "2.0", "id": index, "method": method, "params": params}
        for index, (method, params) in enumerate(calls)
    ]
    replies = sorted(httpx.post(url, json=batch).json(), key=lambda reply: reply["id"])
    return [reply["result"] for reply in replies]


def test_localnet_with_faults_serves_a_lagging_node_without_history() -> None:
    environment = {k: v for k, v in os.environ.items() if k not in _PREMIX_VARIABLES}
    process = subprocess.Popen(
        [sys.executable, "-m", "premix.cli", "localnet", "--port", "0", "--slot-ms", "10",
         "--fault", "stale_read:slots=5,method=getSlot", "--fault", "no_history"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        url = process.stdout.readline().split()[3]
        notes = [process.stderr.readline(), process.stderr.readline()]
        [signature] = rpc(url, ("requestAirdrop", [str(Keypair().pubkey()), 1_000_000_000]))
        [fresh] = rpc(url, ("getSignatureStatuses", [[signature]]))
        while rpc(url, ("getBlockHeight", [PROCESSED]))[0] < 6:
            time.sleep(0.01)
        # the slot may tick between the two calls of a batch: then the lag looks one more
        lags = [
            height - slot
            for slot, height in (
                rpc(url, ("getSlot", [PROCESSED]), ("getBlockHeight", [PROCESSED]))
                for _ in range(20)
            )
        ]
        while rpc(url, ("getBlockHeight", [PROCESSED]))[0] <= 151:
            time.sleep(0.05)
        [searched] = rpc(
            url, ("getSignatureStatuses", [[signature], {"searchTransactionHistory": True}])
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()

    assert notes == [
        "premix: fault on: stale_read (slots=5, method=getSlot)\n",
        "premix: fault on: no_history\n",
    ]
    assert 5 in lags and set(lags) <= {5, 6}
    assert fresh["value"][0] is not None  # in its last 150 slots: found
    assert searched["value"] == [None]  # older: a node with history would still find it


def test_localnet_with_a_bad_fault_spec_is_one_usage_error_line() -> None:
    kinds = (
        "latency, http_429, http_5xx, drop_send, lose_response, expire_blockhash, stale_read, "
        "no_history, congestion"
    )
    for spec, message in [
        ("stale_read", "stale_read needs parameter(s): ['slots']"),
        ("stale_read:slots", "expected KIND[:param=value,...], got 'slots'"),
        ("quake:ms=1", f"unknown fault kind 'quake' (kinds: {kinds})"),
    ]:
        result = premix("localnet", "--port", "0", "--fault", spec)

        assert_one_error_line(
            result,
            f"Invalid value for '--fault': '{spec}': {message} (see 'premix localnet --help')",
            status=2,
        )


# --- enqueue, status, watch (Redis: the session's test server) ---

JOB_ID_PATTERN = re.compile(r"^premix-u1-\d+$")


@pytest.fixture
async def enqueue_env(redis_url: str, mongodb_url: str) -> AsyncIterator[dict[str, str]]:
    """The environment of `premix enqueue`: the test Redis, and a fresh database on the
    session's SecantusDB where users u1 and someone have a funding wallet and 5 buyer wallets
    (enqueue refuses a user without them). No encryption keys: enqueue decrypts nothing."""
    settings = make_settings(
        redis_url, mongodb_uri=mongodb_url, mongodb_database=f"premix_cli_{uuid4().hex[:12]}"
    )
    async with open_store(settings) as store:
        for user_id in ("u1", "someone"):
            await create_user(store, None, user_id, buyers=5)
        yield {
            "PREMIX_REDIS_URL": redis_url,
            "PREMIX_MONGODB_URI": mongodb_url,
            "PREMIX_MONGODB_DATABASE": settings.mongodb_database,
        }


def test_enqueue_queues_a_json_job_and_prints_its_id(
    redis_url: str, enqueue_env: dict[str, str]
) -> None:
    result = premix(
        "enqueue", "--user", "u1", "--chat-id", "42", "--amount", "1.5", "--mode", "fast",
        "--max-wallets", "5", "--json",
        env=enqueue_env,
    )  # fmt: skip

    assert result.status == 0, result
    answer = result.json()
    assert answer["success"] is True
    assert JOB_ID_PATTERN.match(answer["jobId"])
    assert answer["message"] == f"Premix of 1.5 SOL queued as job {answer['jobId']}"
    client = redis_sync.Redis.from_url(redis_url)
    stored = json.loads(client.get(f"arq:job:{answer['jobId']}"))
    client.close()
    assert stored["a"] == [
        {
            "userId": "u1",
            "userChatId": 42,
            "mixAmount": "1.5",
            "maxWallets": 5,
            "mode": "fast",
            "socketUserId": None,
        }
    ]


def test_enqueue_top_up_puts_top_up_true_in_the_queued_job(
    enqueue_env: dict[str, str],
) -> None:
    result = premix(
        "enqueue", "--user", "u1", "--chat-id", "42", "--amount", "2.5", "--top-up", "--json",
        env=enqueue_env,
    )  # fmt: skip

    assert result.status == 0, result
    answer = result.json()
    client = redis_sync.Redis.from_url(enqueue_env["PREMIX_REDIS_URL"])
    stored = json.loads(client.get(f"arq:job:{answer['jobId']}"))
    client.close()
    assert stored["a"][0]["topUp"] is True
    assert stored["a"][0]["mixAmount"] == "2.5"


def test_enqueue_twice_for_one_user_is_refused_with_the_running_job(
    enqueue_env: dict[str, str],
) -> None:
    args = ["enqueue", "--user", "u1", "--chat-id", "42", "--amount", "1"]
    first = premix(*args, env=enqueue_env)
    second = premix(*args, env=enqueue_env)

    job_id = first.stdout.split()[-1]
    assert first.status == 0 and JOB_ID_PATTERN.match(job_id)
    assert_one_error_line(
        second,
        f"A premix is already queued or running for this user (job {job_id}); "
        "wait for it to finish",
    )


def test_enqueue_with_redis_down_is_one_line_and_exit_1(
    unreachable_redis_url: str, enqueue_env: dict[str, str]
) -> None:
    result = premix(
        "enqueue", "--user", "u1", "--chat-id", "42", "--amount", "1",
        env={**enqueue_env, "PREMIX_REDIS_URL": unreachable_redis_url},
    )  # fmt: skip

    assert_one_error_line(result, "Queue unavailable: could not reach Redis; nothing was enqueued")
    assert result.stderr.count("\n") == 1  # no log lines either
    assert result.stdout == ""


def test_enqueue_of_more_than_the_wallets_hold_is_refused_before_redis(
    unreachable_redis_url: str,
) -> None:
    result = premix(
        "enqueue", "--user", "u1", "--chat-id", "42", "--amount", "2", "--max-wallets", "3",
        "--json",
        env={"PREMIX_REDIS_URL": unreachable_redis_url},
    )  # fmt: skip

    message = (
        "Invalid parameters: mixAmount: Amount 2 SOL is more than 3 buyer wallets can hold "
        "(at most 1.5 SOL)"
    )
    assert_one_error_line(result, message)
    assert result.json() == {"success": False, "message": message, "jobId": None}


@pytest.mark.parametrize(
    ("user_id", "amount", "message"),
    [
        (
            "nobody",
            "1",
            "Funding wallet not found: user nobody has no funding wallet; create a funding "
            "wallet first; nothing was enqueued",
        ),
        (
            "u1",
            "3",
            "Invalid parameters: mixAmount: 3 SOL needs at least 6 buyer wallets; user u1 has 5 "
            "buyer wallets, which can hold at most 2.5 SOL; nothing was enqueued",
        ),
    ],
)
async def test_enqueue_refused_for_the_users_stored_wallets_is_one_line_and_exit_1(
    enqueue_env: dict[str, str], redis_client: Redis, user_id: str, amount: str, message: str
) -> None:
    args = ["enqueue", "--user", user_id, "--chat-id", "42", "--amount", amount]
    human = await asyncio.to_thread(premix, *args, env=enqueue_env)
    machine = await asyncio.to_thread(premix, *args, "--json", env=enqueue_env)

    assert_one_error_line(human, message)
    assert human.stdout == ""
    assert_one_error_line(machine, message)
    assert machine.json() == {"success": False, "message": message, "jobId": None}
    assert await redis_client.dbsize() == 0  # no job, no queue entry, no user lock


def test_enqueue_with_the_store_down_is_one_line_and_exit_1(redis_url: str) -> None:
    result = premix(
        "enqueue", "--user", "u1", "--chat-id", "42", "--amount", "1",
        env={"PREMIX_REDIS_URL": redis_url, "PREMIX_MONGODB_URI": "mongodb://127.0.0.1:9"},
    )  # fmt: skip

    assert_one_error_line(
        result, "Queue unavailable: could not reach the wallet store; nothing was enqueued"
    )
    assert result.stdout == ""


def test_status_of_an_unknown_job_is_one_line_and_exit_1(redis_url: str) -> None:
    result = premix("status", "premix-nobody-1", env={"PREMIX_REDIS_URL": redis_url})

    assert_one_error_line(
        result,
        "unknown job premix-nobody-1: no progress and no queued job with that id (progress is "
        "kept for 86400 s; check PREMIX_REDIS_URL)",
    )


def test_status_with_redis_down_names_redis(unreachable_redis_url: str) -> None:
    result = premix("status", "premix-u1-1", env={"PREMIX_REDIS_URL": unreachable_redis_url})

    assert result.status == 1
    assert "Traceback" not in result.stderr
    assert result.error_lines[0].startswith("premix: error: Redis unavailable: ")
    assert result.error_lines[0].endswith("(check PREMIX_REDIS_URL)")


def test_status_of_a_queued_job_without_progress_says_so(enqueue_env: dict[str, str]) -> None:
    env = enqueue_env
    job_id = premix("enqueue", "--user", "u1", "--chat-id", "1", "--amount", "1", env=env)
    job_id_text = job_id.stdout.split()[-1]

    human = premix("status", job_id_text, env=env)
    machine = premix("status", job_id_text, "--json", env=env)

    assert human.stdout == f"job {job_id_text}: queued, no progress yet (is a worker running?)\n"
    assert machine.json() == {"jobId": job_id_text, "status": "queued"}


def test_enqueue_with_a_delay_and_status_says_when_the_job_is_scheduled(
    redis_url: str, enqueue_env: dict[str, str]
) -> None:
    env = enqueue_env
    before_ms = int(time.time() * 1000)
    queued = premix(
        "enqueue", "--user", "u1", "--chat-id", "1", "--amount", "2.5", "--delay", "60", "--json",
        env=env,
    )  # fmt: skip

    assert queued.status == 0, queued
    job_id = queued.json()["jobId"]
    client = redis_sync.Redis.from_url(redis_url)
    score = int(client.zscore("premix:queue", job_id))
    stored = json.loads(client.get(f"arq:job:{job_id}"))
    client.close()
    assert before_ms + 60_000 <= score <= int(time.time() * 1000) + 60_000
    assert stored["a"][0]["delaySeconds"] == 60  # an int, as given
    due = format_run_time(score)
    assert queued.json()["message"] == f"Premix of 2.5 SOL scheduled for {due} as job {job_id}"

    human = premix("status", job_id, env=env)
    machine = premix("status", job_id, "--json", env=env)

    assert human.stdout == f"job {job_id}: scheduled for {due}, no progress yet\n"
    assert machine.json() == {"jobId": job_id, "status": "deferred", "scheduledFor": due}


def test_enqueue_run_at_and_idempotency_key_options(enqueue_env: dict[str, str]) -> None:
    args = (
        "enqueue", "--user", "u1", "--chat-id", "1", "--amount", "1",
        "--run-at", "2099-12-24T18:00:00Z", "--idempotency-key", "cli-1",
    )  # fmt: skip
    too_late = premix(*args, env=enqueue_env)
    assert too_late.status == 1, too_late
    assert too_late.error_lines[0].startswith(
        "premix: error: Invalid parameters: runAt: must be at most 30 days ahead ("
    )

    soon = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    first = premix(*args[:-3], soon, *args[-2:], env=enqueue_env)
    again = premix(*args[:-3], soon, *args[-2:], env=enqueue_env)

    assert first.status == 0 and again.status == 0, (first, again)
    job_id = first.stdout.split()[-1]
    assert first.stdout.startswith(f"Premix of 1 SOL scheduled for {soon[:19]}Z as job")
    assert again.stdout == f"Premix already accepted as job {job_id}; nothing new was queued\n"


@pytest.fixture
def progress_job() -> PremixFundsJob:
    return PremixFundsJob.from_request("u1", 42, "2", {"socketUserId": "sock-9"})


async def test_status_prints_the_latest_progress_event(
    redis_url: str, redis_client: Redis, progress_job: PremixFundsJob
) -> None:
    emitter = ProgressEmitter(redis_client, Settings(redis_url=redis_url), "job-7", progress_job)
    await emitter.started()
    latest = await emitter.phase(Phase.CHECKING_BALANCES, description="Funding balance is enough")

    human = premix("status", "job-7", env={"PREMIX_REDIS_URL": redis_url})
    machine = premix("status", "job-7", "--json", env={"PREMIX_REDIS_URL": redis_url})

    assert human.stdout == (
        "job job-7: phase 4/6 Checking Balances: 50% (in_progress) - Funding balance is enough\n"
    )
    assert ProgressEvent.model_validate(machine.json()) == latest
    assert machine.json()["socketUserId"] == "sock-9"


async def test_status_of_a_failed_job_prints_it_and_exits_1(
    redis_url: str, redis_client: Redis, progress_job: PremixFundsJob
) -> None:
    emitter = ProgressEmitter(redis_client, Settings(redis_url=redis_url), "job-8", progress_job)
    await emitter.started()
    await emitter.failed(Phase.CHECKING_BALANCES, "Insufficient balance: needs 2 SOL")

    human = premix("status", "job-8", env={"PREMIX_REDIS_URL": redis_url})
    machine = premix("status", "job-8", "--json", env={"PREMIX_REDIS_URL": redis_url})

    assert human.stdout.startswith("job job-8: phase 4/6 Checking Balances: ")
    assert "(failed) - Insufficient balance: needs 2 SOL" in human.stdout
    assert_one_error_line(human, "job job-8 failed: Insufficient balance: needs 2 SOL")
    assert machine.status == 1 and machine.json()["status"] == "failed"


async def start_watch(redis_url: str, *args: str) -> asyncio.subprocess.Process:
    environment = {k: v for k, v in os.environ.items() if k not in _PREMIX_VARIABLES}
    environment["PREMIX_REDIS_URL"] = redis_url
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "premix.cli", "watch", *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_watch_follows_the_six_phases_and_exits_0_on_completed(
    redis_url: str, redis_client: Redis, progress_job: PremixFundsJob
) -> None:
    emitter = ProgressEmitter(redis_client, Settings(redis_url=redis_url), "job-ok", progress_job)
    await emitter.started()
    process = await start_watch(redis_url, "job-ok", "--json", "--timeout", "60")
    assert process.stdout is not None
    # The watcher prints the latest state once subscribed: every later event reaches it.
    first_line = await asyncio.wait_for(process.stdout.readline(), 60)
    for phase in list(Phase)[1:-1]:
        await emitter.phase(phase)
    await emitter.mixer_progress(3, 4)
    await emitter.completed("Funded 4 wallets")
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)

    lines = [first_line.decode(), *stdout.decode().splitlines()]
    events = [ProgressEvent.model_validate_json(line) for line in lines]
    assert process.returncode == 0, stderr
    assert [(e.phase, e.percent, e.status.value) for e in events] == [
        (1, 10, "started"),
        (2, 20, "in_progress"),
        (3, 35, "in_progress"),
        (4, 50, "in_progress"),
        (5, 70, "in_progress"),
        (5, 91, "in_progress"),
        (6, 100, "completed"),
    ]
    assert stderr == b""


async def test_watch_exits_1_with_the_failure_when_the_job_fails(
    redis_url: str, redis_client: Redis, progress_job: PremixFundsJob
) -> None:
    emitter = ProgressEmitter(redis_client, Settings(redis_url=redis_url), "job-bad", progress_job)
    await emitter.started()
    process = await start_watch(redis_url, "job-bad", "--json", "--timeout", "60")
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), 60)  # subscribed, latest state printed
    await emitter.failed(
        Phase.CHECKING_BALANCES,
        "Insufficient funding wallet balance: needed 2.01 SOL, available 1 SOL",
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 1
    final = ProgressEvent.model_validate_json(stdout)
    assert (final.phase, final.status.value) == (4, "failed")
    assert stderr.decode() == (
        "premix: error: job job-bad failed: Insufficient funding wallet balance: needed "
        "2.01 SOL, available 1 SOL\n"
    )


async def test_watch_of_a_finished_job_prints_its_outcome_at_once(
    redis_url: str, redis_client: Redis, progress_job: PremixFundsJob
) -> None:
    emitter = ProgressEmitter(redis_client, Settings(redis_url=redis_url), "job-done", progress_job)
    await emitter.completed("Funded 4 wallets")

    result = premix("watch", "job-done", env={"PREMIX_REDIS_URL": redis_url})

    assert result.status == 0
    assert result.stdout.splitlines()[-1] == "job job-done completed: Funded 4 wallets"


def elapsed_seconds_shown(output: str) -> list[int]:
    """Every H:MM:SS the bar's elapsed column printed, in seconds."""
    return [
        int(h) * 3600 + int(m) * 60 + int(s)
        for h, m, s in re.findall(r"\b(\d+):(\d\d):(\d\d)\b", output)
    ]


async def store_a_job_that_began_90_s_ago_in_phase_5(redis: Redis, job_id: str) -> ProgressEvent:
    began = datetime.now(UTC) - timedelta(seconds=90)
    event = ProgressEvent(
        job_id=job_id,
        user_id="u1",
        chat_id=42,
        phase=5,
        title="Initializing Mixer",
        description="1 of 4 wallets funded (transaction 1 confirmed)",
        percent=77,
        status=ProgressStatus.IN_PROGRESS,
        timestamp=began + timedelta(seconds=60),
        sequence=8,
        details={"done": 1, "total": 4},
        started_at=began,
    )
    await redis.set(PROGRESS_STATE_PREFIX + job_id, event.to_json())
    return event


async def test_watch_shows_wallets_funded_and_the_time_since_the_job_began(
    redis_url: str, redis_client: Redis
) -> None:
    await store_a_job_that_began_90_s_ago_in_phase_5(redis_client, "job-long")

    result = premix("watch", "job-long", "--timeout", "1", env={"PREMIX_REDIS_URL": redis_url})

    assert_one_error_line(result, "job job-long did not end within 1 s")
    [bar] = [line for line in result.stdout.splitlines() if "[5/6]" in line]
    assert "[5/6] Initializing Mixer: 1 of 4 wallets funded" in bar
    # measured from the job's startedAt, not from when the watch began
    [elapsed] = elapsed_seconds_shown(bar)
    assert 90 <= elapsed < 120, bar


async def test_watch_prints_a_retry_and_follows_the_job_to_its_end(
    redis_url: str, redis_client: Redis, progress_job: PremixFundsJob
) -> None:
    settings = Settings(redis_url=redis_url)
    await store_a_job_that_began_90_s_ago_in_phase_5(redis_client, "job-retried")
    process = await start_watch(redis_url, "job-retried", "--timeout", "60")
    channel = PROGRESS_CHANNEL_PREFIX + "job-retried"
    async with asyncio.timeout(60):
        while dict(await redis_client.pubsub_numsub(channel)).get(channel.encode(), 0) < 1:
            await asyncio.sleep(0.01)
    first_try = ProgressEmitter(redis_client, settings, "job-retried", progress_job)
    next_try_at = datetime.now(UTC) + timedelta(seconds=2)
    await first_try.retrying(
        Phase.INITIALIZING_MIXER,
        job_try=1,
        max_tries=3,
        next_try_at=next_try_at,
        reason="Temporary failure: Solana RPC getSignatureStatuses failed 3 times",
    )
    second_try = ProgressEmitter(redis_client, settings, "job-retried", progress_job)
    await second_try.started("Resuming premix job")
    await second_try.mixer_progress(3, 4, "transaction 3 confirmed")
    await second_try.completed("Funded 4 wallets")
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)

    out = stdout.decode()
    assert process.returncode == 0, stderr
    assert (
        "job job-retried: phase 5/6 Initializing Mixer: 77% (retrying) - Try 1 of 3 ended ("
        "Temporary "
        "failure: Solana RPC getSignatureStatuses failed 3 times); next try at "
        f"{next_try_at:%H:%M:%S} UTC"
    ) in out
    assert out.splitlines()[-1] == "job job-retried completed: Funded 4 wallets"
    [bar] = [line for line in out.splitlines() if "[6/6] Premix Complete" in line]
    [elapsed] = elapsed_seconds_shown(bar)  # the job took 90 s and more, across both tries
    assert 90 <= elapsed < 120, bar


def test_watch_of_an_unknown_job_is_one_line_and_exit_1(redis_url: str) -> None:
    result = premix("watch", "premix-nobody-1", env={"PREMIX_REDIS_URL": redis_url})

    assert_one_error_line(
        result,
        "unknown job premix-nobody-1: no progress and no queued job with that id (progress is "
        "kept for 86400 s; check PREMIX_REDIS_URL)",
    )


# --- demo: the whole pipeline in one process (localnet, memory store, its own Valkey) ---


def run_demo_json(*args: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    result = premix("demo", "--json", *args, env=env)
    assert result.status == 0, result
    assert "Traceback" not in result.stderr
    report: dict[str, Any] = result.json()
    return report


def test_demo_fast_mode_funds_73_wallets_in_4_transactions_exactly() -> None:
    report = run_demo_json("--mode", "fast", "--amount", "85", "--slot-ms", "20")

    wallets = report["wallets"]
    assert report["success"] is True
    assert report["buyerWallets"] == 73
    assert len(wallets) == 73
    assert [w["position"] for w in wallets] == list(range(1, 74))
    assert sum(w["balanceLamports"] for w in wallets) == 85 * 10**9 == report["amountLamports"]
    assert all(w["balanceLamports"] == w["lamports"] for w in wallets)
    assert all(w["status"] == "funded" for w in wallets)
    assert len({w["publicKey"] for w in wallets}) == 73
    assert len({w["signature"] for w in wallets}) == 4  # 20 transfers per priced transaction
    totals = report["totals"]
    assert totals["transactions"] == 4
    # the default priority fee, auto, on a quiet chain: the floor, 10,000 micro-lamports per
    # compute unit, x 6,600 units (20 transfers) three times and 4,500 (13 transfers) once
    assert totals["feeLamports"] == 4 * 5_000 + 3 * 66 + 45
    assert totals["sentLamports"] == totals["balanceLamports"] == 85 * 10**9
    funding = report["funding"]
    assert funding["balanceLamports"] == (
        funding["airdropLamports"] - 85 * 10**9 - totals["feeLamports"]
    )
    assert [(p["phase"], p["status"]) for p in report["phases"]][-1] == (6, "completed")
    assert {p["phase"] for p in report["phases"]} == {1, 2, 3, 4, 5, 6}


def test_demo_standard_mode_with_max_wallets_sends_one_transaction_per_wallet() -> None:
    report = run_demo_json(
        "--mode", "standard", "--amount", "1.2", "--max-wallets", "3", "--slot-ms", "20"
    )

    wallets = report["wallets"]
    assert report["mode"] == "standard"
    assert [w["lamports"] for w in wallets] == [400_000_000] * 3
    assert sum(w["balanceLamports"] for w in wallets) == 1_200_000_000
    assert len({w["signature"] for w in wallets}) == 3
    assert report["totals"]["transactions"] == 3
    assert report["totals"]["feeLamports"] == 3 * (5_000 + 9)  # auto: 10,000 x 900 units
    assert report["message"].startswith("Premix complete")
    # what `premix wallets status` says after the run: the 3 funded are ready, 70 never funded
    assert report["readiness"] == {
        "wallets": 73,
        "ready": 3,
        "balanceLamports": 1_200_000_000,
        "balanceSol": "1.2",
        "plannedLamports": 1_200_000_000,
        "plannedSol": "1.2",
    }


def test_demo_prints_the_plan_the_progress_and_the_wallet_table() -> None:
    result = premix("demo", "--mode", "fast", "--amount", "1", "--slot-ms", "20")

    assert result.status == 0, result
    out = result.stdout
    assert "20 ms slots" in out and "a private Valkey" in out
    assert "Plan: 2 of them, the fewest whose caps hold the amount" in out
    assert "[6/6] Premix Complete" in out and "100%" in out
    assert "Sent 1 SOL to 2 of 2 wallet(s) in 1 transaction(s); fees 0.000005012 SOL" in out
    assert out.count("│ funded │") == 2
    assert (
        "Readiness (premix wallets status): 2 of 73 buyer wallets ready, holding 1 SOL of the "
        "1 SOL planned; 71 never funded by a premix"
    ) in out


def test_demo_refuses_an_amount_the_wallets_cannot_hold_before_starting() -> None:
    result = premix("demo", "--amount", "2", "--max-wallets", "3")

    assert_one_error_line(
        result, "Amount 2 SOL is more than 3 buyer wallets can hold (at most 1.5 SOL)"
    )


def test_demo_runs_with_no_redis_anywhere(unreachable_redis_url: str, tmp_path: Any) -> None:
    # A bare machine: PREMIX_REDIS_URL answers nothing and no redis-server is on PATH.
    env = {"PREMIX_REDIS_URL": unreachable_redis_url, "PATH": str(tmp_path)}

    report = run_demo_json("--amount", "1", "--slot-ms", "20", env=env)

    assert report["success"] is True
    assert report["totals"]["sentLamports"] == 10**9


def test_demo_with_redis_url_down_is_one_line(unreachable_redis_url: str) -> None:
    result = premix("demo", "--amount", "1", "--redis-url", unreachable_redis_url)

    assert_one_error_line(
        result, "Demo failed: Redis at --redis-url did not answer (ConnectionError)"
    )


async def test_demo_with_redis_url_leaves_jobs_queued_by_others_alone(
    redis_url: str, redis_client: Redis, enqueue_env: dict[str, str]
) -> None:
    queued = premix(
        "enqueue", "--user", "someone", "--chat-id", "7", "--amount", "1", "--json",
        env=enqueue_env,
    )  # fmt: skip
    assert queued.status == 0, queued
    job_id = queued.json()["jobId"]

    async with redis_client.pubsub() as all_jobs:
        await all_jobs.subscribe(PROGRESS_ALL_CHANNEL)  # where the bot hears every job
        await all_jobs.get_message(timeout=1)  # the subscription's confirmation
        report = await asyncio.to_thread(
            run_demo_json, "--amount", "1", "--slot-ms", "20", "--redis-url", redis_url
        )
        heard = await all_jobs.get_message(ignore_subscribe_messages=True, timeout=0.5)

    assert report["success"] is True
    assert heard is None  # the demo's events stayed on a channel of its own
    assert await redis_client.zrange(QUEUE_NAME, 0, -1) == [job_id.encode()]
    assert await redis_client.exists(f"arq:job:{job_id}") == 1
    assert await redis_client.get(USER_LOCK_PREFIX + "someone") == job_id.encode()
    demo_job = report["jobId"]
    left = [key async for key in redis_client.scan_iter("*demo*")]
    assert left == [], f"the demo left {left} (job {demo_job})"


async def test_demo_with_redis_url_is_never_taken_by_a_worker_running_there(
    redis_url: str,
) -> None:
    # A worker of the real queue, whose store has none of the demo's wallets: had it taken the
    # demo's job, it would have failed it ("Funding wallet not found").
    worker = Worker(
        **worker_settings(make_settings(redis_url)),
        handle_signals=False,
        ctx={"settings": make_settings(redis_url)},
    )
    running = asyncio.create_task(worker.async_run())
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "premix.cli", "demo", "--json", "--amount", "1",
            "--slot-ms", "20", "--redis-url", redis_url,
            env={k: v for k, v in os.environ.items() if k not in _PREMIX_VARIABLES},
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await worker.close()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    assert process.returncode == 0
    assert json.loads(stdout)["success"] is True
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (0, 0, 0)


async def test_demo_interrupted_mid_run_exits_130_and_leaves_no_job_behind(
    redis_url: str, redis_client: Redis
) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in _PREMIX_VARIABLES}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "premix.cli", "demo", "--json", "--amount", "85", "--slot-ms", "200",
        "--redis-url", redis_url,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):  # wait until the mixer is sending (phase 5)
        while True:
            states = [await redis_client.get(key) async for key in redis_client.scan_iter(
                f"{PROGRESS_STATE_PREFIX}*"
            )]  # fmt: skip
            if any(ProgressEvent.model_validate_json(s).phase == 5 for s in states if s):
                break
            await asyncio.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 130
    assert stderr.decode() == "premix: error: interrupted\n"
    assert stdout == b""
    assert await redis_client.zcard(QUEUE_NAME) == 0
    assert [key async for key in redis_client.scan_iter("premix:demo-*")] == []
    assert [key async for key in redis_client.scan_iter(f"{USER_LOCK_PREFIX}*")] == []
    assert [key async for key in redis_client.scan_iter("arq:job:*")] == []


BAD_REDIS_URL = "redis://:s3cr3t/pw@127.0.0.1:6379/0"  # an unescaped '/' in the password


def test_a_redis_url_that_does_not_parse_is_one_line_that_never_shows_it() -> None:
    status = premix("status", "premix-u1-1", env={"PREMIX_REDIS_URL": BAD_REDIS_URL})
    demo = premix("demo", "--amount", "1", "--redis-url", BAD_REDIS_URL)

    assert_one_error_line(
        status,
        "invalid configuration: PREMIX_REDIS_URL: is not a usable Redis URL (percent-encode "
        "any '/', '#', '?' or '@' in the password); it is not shown here",
    )
    assert_one_error_line(
        demo,
        "Demo failed: --redis-url is not a usable Redis URL (percent-encode any '/', '#', '?' "
        "or '@' in the password); it is not shown here",
    )
    for result in (status, demo):
        assert "s3cr3t" not in result.stdout + result.stderr


def children_named(pid: int, name: str) -> list[int]:
    """Process ids of `pid`'s children whose command is `name` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            command = fields[0].split("(", 1)[1]
            parent = int(fields[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and command == name:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_demo_stopped_by_a_signal_leaves_no_valkey_running(signum: int) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in _PREMIX_VARIABLES}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "premix.cli", "demo", "--json", "--amount", "85", "--slot-ms", "200",
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        while not (valkeys := children_named(process.pid, "valkey-server")):
            await asyncio.sleep(0.05)

    process.send_signal(signum)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)

    if signum == signal.SIGTERM:
        assert process.returncode == 130
        assert stderr.decode() == "premix: error: interrupted\n"
    async with asyncio.timeout(10):
        while any(Path(f"/proc/{pid}").exists() for pid in valkeys):
            await asyncio.sleep(0.05)
