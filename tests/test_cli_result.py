"""`premix result JOB [--json|--csv]` as a subprocess: the receipt of a premix a real worker ran
on localnet (stored in the session's MongoDB-wire server), equal to the chain; the CSV read
back with the csv module; an unknown job is one error line and exit 1."""

import csv
import io
import uuid
from collections.abc import AsyncIterator

import pytest
from solders.signature import Signature

from premix.amounts import format_sol
from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from tests.fixtures.store import secret_forms
from tests.test_cli import Completed, assert_one_error_line, premix
from tests.worker.helpers import (
    ENCRYPTION_KEYS,
    User,
    create_user,
    make_settings,
    open_store,
    restored_logging,
)
from tests.worker.helpers import run_worker as run_arq_worker

SOL = 10**9
HEADER = [
    "position",
    "address",
    "amount_sol",
    "amount_lamports",
    "status",
    "signature",
    "slot",
    "error",
    "planned_sol",
    "planned_lamports",
    "sent_sol",
    "sent_lamports",
]


@pytest.fixture
def settings(redis_url: str, mongodb_url: str, fast_localnet: Localnet) -> Settings:
    return make_settings(
        redis_url,
        fast_localnet.url,
        mongodb_uri=mongodb_url,
        mongodb_database=f"premix_result_{uuid.uuid4().hex[:12]}",
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with restored_logging(), open_store(settings) as opened:
        yield opened


def env_of(settings: Settings) -> dict[str, str]:
    """The CLI's environment on the test's services; no PREMIX_ENCRYPTION_KEYS: a receipt and a
    wallet status read public keys only."""
    return {
        "PREMIX_REDIS_URL": settings.redis_url,
        "PREMIX_MONGODB_URI": settings.mongodb_uri,
        "PREMIX_MONGODB_DATABASE": settings.mongodb_database,
        "PREMIX_RPC_URL": settings.rpc_url,
    }


def assert_no_secret(user: User, result: Completed) -> None:
    forms = [ENCRYPTION_KEYS, ENCRYPTION_KEYS.partition(":")[2]]
    for keypair in [user.funding, *user.buyers]:
        forms += secret_forms(keypair)
    leaked = [form for form in forms if form in result.stdout + result.stderr]
    assert leaked == []


async def finished_premix(settings: Settings, store: Store, net: Localnet) -> tuple[User, str]:
    user = await create_user(store, net, "u1", buyers=4)
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    assert queued.job_id is not None
    await run_arq_worker(settings)
    return user, queued.job_id


async def test_result_json_lists_every_wallet_as_the_chain_holds_it(
    settings: Settings, store: Store, fast_localnet: Localnet
) -> None:
    user, job_id = await finished_premix(settings, store, fast_localnet)

    result = premix("result", job_id, "--json", env=env_of(settings))

    assert result.status == 0, result
    receipt = result.json()
    assert receipt["jobId"] == job_id and receipt["status"] == "completed"
    assert [w["publicKey"] for w in receipt["wallets"]] == [str(b.pubkey()) for b in user.buyers]
    assert [w["lamports"] for w in receipt["wallets"]] == user.buyer_balances(fast_localnet)
    for wallet in receipt["wallets"]:
        landed = fast_localnet.transaction_log[Signature.from_string(wallet["signature"])]
        assert wallet["slot"] == landed.landed_slot
    loss = user.funding_lamports - fast_localnet.balance(user.funding.pubkey())
    assert receipt["totals"]["costLamports"] == loss
    assert receipt["totals"]["feeLamports"] == loss - 2 * SOL
    assert_no_secret(user, result)


async def test_result_csv_has_a_header_one_row_per_wallet_and_a_summary(
    settings: Settings, store: Store, fast_localnet: Localnet
) -> None:
    user, job_id = await finished_premix(settings, store, fast_localnet)

    result = premix("result", job_id, "--csv", env=env_of(settings))

    assert result.status == 0, result
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == HEADER
    wallet_rows = rows[1:5]
    assert rows[5] == []
    for position, (row, buyer) in enumerate(zip(wallet_rows, user.buyers, strict=True)):
        record = dict(zip(HEADER, row, strict=True))
        balance = fast_localnet.balance(buyer.pubkey())
        assert record["position"] == str(position)
        assert record["address"] == str(buyer.pubkey())
        assert int(record["amount_lamports"]) == balance
        assert record["amount_sol"] == f"{balance / SOL:.9f}".rstrip("0").rstrip(".")
        assert record["status"] == "funded" and record["error"] == ""
        assert int(record["planned_lamports"]) == int(record["sent_lamports"]) == balance
        landed = fast_localnet.transaction_log[Signature.from_string(record["signature"])]
        assert int(record["slot"]) == landed.landed_slot
    summary = {row[0]: row[1:] for row in rows[7:]}
    assert rows[6] == ["item", "sol", "lamports", "detail"]
    assert summary["job"][2] == job_id
    assert summary["status"][2] == "completed"
    assert summary["funded"] == ["2", str(2 * SOL), "4 of 4 wallets"]
    loss = user.funding_lamports - fast_localnet.balance(user.funding.pubkey())
    assert int(summary["fees"][1]) == loss - 2 * SOL
    assert int(summary["total cost"][1]) == loss
    assert_no_secret(user, result)


async def test_result_csv_of_a_top_up_shows_each_wallets_planned_and_sent_amounts(
    settings: Settings, store: Store, fast_localnet: Localnet
) -> None:
    user = await create_user(store, fast_localnet, "u1", buyers=4)
    plan = user.plan(2 * SOL)
    fast_localnet.airdrop(user.buyers[0].pubkey(), plan[0])
    fast_localnet.airdrop(user.buyers[1].pubkey(), plan[1] // 4)
    queued = await enqueue_premix_funds("u1", 42, 2, {"topUp": True}, settings=settings)
    assert queued.job_id is not None
    await run_arq_worker(settings)
    sent = [0, plan[1] - plan[1] // 4, plan[2], plan[3]]

    result = premix("result", queued.job_id, "--csv", env=env_of(settings))

    assert result.status == 0, result
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == HEADER
    records = [dict(zip(HEADER, row, strict=True)) for row in rows[1:5]]
    assert [int(r["planned_lamports"]) for r in records] == plan
    assert [int(r["sent_lamports"]) for r in records] == sent
    assert [int(r["amount_lamports"]) for r in records] == sent  # each one's transfer
    assert [r["status"] for r in records] == ["not_needed", "funded", "funded", "funded"]
    assert records[0]["signature"] == records[0]["slot"] == ""
    assert user.buyer_balances(fast_localnet) == plan
    summary = {row[0]: row[1:] for row in rows[7:]}
    assert summary["planned"][:2] == ["2", str(2 * SOL)]
    assert summary["funded"] == [format_sol(sum(sent)).removesuffix(" SOL"), str(sum(sent)),
                                 "3 of 4 wallets"]  # fmt: skip
    loss = user.funding_lamports - fast_localnet.balance(user.funding.pubkey())
    assert int(summary["total cost"][1]) == loss == sum(sent) + 3 * 5_000
    text = premix("result", queued.job_id, env=env_of(settings))
    assert text.status == 0, text
    assert "planned SOL" in text.stdout and "sent SOL" in text.stdout
    assert "not_needed" in text.stdout


async def test_result_of_a_queued_job_says_queued(settings: Settings, store: Store) -> None:
    await create_user(store, None, "u1", buyers=2)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert queued.job_id is not None

    text = premix("result", queued.job_id, env=env_of(settings))
    as_json = premix("result", queued.job_id, "--json", env=env_of(settings))

    assert text.status == 0, text
    assert f"job {queued.job_id}: queued" in text.stdout
    assert as_json.json()["status"] == "queued" and as_json.json()["wallets"] == []


async def test_result_of_an_unknown_job_is_one_line_and_exit_1(
    settings: Settings, store: Store
) -> None:
    result = premix("result", "premix-nobody-1", "--csv", env=env_of(settings))

    assert_one_error_line(
        result,
        "unknown job premix-nobody-1: no ledger run and no queued or finished job with that id "
        "(check PREMIX_REDIS_URL and PREMIX_MONGODB_URI)",
    )
    assert result.stdout == ""


def test_result_refuses_json_and_csv_together() -> None:
    result = premix("result", "premix-u1-1", "--json", "--csv")

    assert result.status == 2
    assert result.error_lines[0].startswith("premix: error: --json and --csv")


async def test_result_from_another_process_of_a_memory_store_run_reads_arqs_result(
    redis_url: str, fast_localnet: Localnet
) -> None:
    settings = make_settings(redis_url, fast_localnet.url)  # memory://: invisible to the CLI
    async with restored_logging(), open_store(settings) as store:
        user, job_id = await finished_premix(settings, store, fast_localnet)

    result = premix(
        "result", job_id, "--json", env={**env_of(settings), "PREMIX_ALLOW_MEMORY_STORE": "1"}
    )

    assert result.status == 0, result
    receipt = result.json()
    assert receipt["source"] == "arq" and receipt["status"] == "completed"
    assert [w["lamports"] for w in receipt["wallets"]] == user.buyer_balances(fast_localnet)
    assert {w["slot"] for w in receipt["wallets"]} == {None}  # only the ledger records slots


def test_result_with_redis_down_names_redis(unreachable_redis_url: str) -> None:
    result = premix("result", "premix-u1-1", env={"PREMIX_REDIS_URL": unreachable_redis_url})

    assert result.status == 1
    assert "Traceback" not in result.stderr
    assert len(result.error_lines) == 1
    assert result.error_lines[0].startswith("premix: error: Redis unavailable: ")
