"""End to end: the bot enqueues, a real arq worker runs the six phases against localnet and the
memory store, wallets are funded exactly as planned, progress and Telegram tell the user, and
no secret leaks anywhere along the way."""

import json
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from premix.amounts import format_sol
from premix.constants import RUNS_COLLECTION
from premix.ledger import Ledger, RunStatus
from premix.localnet import Localnet
from premix.progress import ProgressEvent
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from tests.fixtures.store import secret_forms
from tests.worker.helpers import (
    BOT_TOKEN,
    ENCRYPTION_KEYS,
    FakeTelegram,
    User,
    collect_events,
    create_user,
    fake_telegram,
    job_result,
    make_settings,
    run_worker,
)

SOL = 10**9
FEE = 5_000
SPEC_PHASES = [
    (1, "Job Started", 10),
    (2, "Validating Parameters", 20),
    (3, "Calculating Distribution", 35),
    (4, "Checking Balances", 50),
    (5, "Initializing Mixer", 70),
    (6, "Premix Complete", 100),
]


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with fake_telegram() as fake:
        yield fake


@pytest.fixture
def settings(redis_url: str, fast_localnet: Localnet, telegram: FakeTelegram) -> Settings:
    return make_settings(
        redis_url,
        fast_localnet.url,
        telegram_api_url=telegram.url,
        telegram_bot_token=SecretStr(BOT_TOKEN),
    )


def assert_phases_in_spec_order(
    events: list[ProgressEvent], job_id: str, socket: str | None
) -> None:
    """Six phases in order with the SPEC's titles and percentages; mixer sub-progress inside
    70..99; started first, completed last; every event names the job, user and socket."""
    first_of_each = []
    for event in events:
        if not first_of_each or first_of_each[-1][0] != event.phase:
            first_of_each.append((event.phase, event.title, event.percent))
    assert first_of_each == SPEC_PHASES
    assert [e.phase for e in events] == sorted(e.phase for e in events)
    assert events[0].status == "started"
    assert [e.status for e in events[1:-1]] == ["in_progress"] * (len(events) - 2)
    assert events[-1].status == "completed"
    mixer = [e.percent for e in events if e.phase == 5]
    assert mixer == sorted(mixer) and all(70 <= p <= 99 for p in mixer)
    assert len(mixer) >= 2  # the phase itself and at least one confirmed transaction
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    for event in events:
        assert (event.job_id, event.job_type, event.chat_id) == (job_id, "premix_funds", 42)
        assert (event.total_phases, event.socket_user_id) == (6, socket)


async def test_bot_enqueues_standard_and_fast_premixes_and_a_worker_funds_them_exactly(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    fast_localnet: Localnet,
    telegram: FakeTelegram,
) -> None:
    net = fast_localnet
    standard_user = await create_user(store, net, "standard-user")
    fast_user = await create_user(store, net, "fast-user")
    standard = await enqueue_premix_funds("standard-user", 42, 0.5, settings=settings)
    fast = await enqueue_premix_funds(
        "fast-user",
        42,
        1.0,
        {"maxWallets": 20, "mode": "fast", "socketUserId": "socket123"},
        settings=settings,
    )
    assert standard.success and fast.success
    assert standard.job_id is not None and fast.job_id is not None
    standard_events = await collect_events(redis_client, standard.job_id)
    fast_events = await collect_events(redis_client, fast.job_id)

    await run_worker(settings)

    runs = [
        (standard_user, standard.job_id, standard_events, 500_000_000, "standard", None),
        (fast_user, fast.job_id, fast_events, 1_000_000_000, "fast", "socket123"),
    ]
    for user, job_id, events, amount, mode, socket in runs:
        plan = user.plan(amount, max_wallets=20)
        transactions = len(plan) if mode == "standard" else 1
        # on chain: each planned wallet holds its amount, the others nothing; the funding
        # wallet paid exactly the amount and one fee per transaction
        assert user.buyer_balances(net) == plan + [0] * (73 - len(plan))
        assert net.balance(user.funding.pubkey()) == (
            user.funding_lamports - amount - FEE * transactions
        )
        assert_phases_in_spec_order(await events.wait(), job_id, socket)

        info = await job_result(settings, job_id)
        assert (info.success, info.job_try) == (True, 1)
        result = info.result
        assert result["success"] is True
        assert result["message"] == (
            f"Premix complete: sent {format_sol(amount)} to {len(plan)} wallet(s) in "
            f"{transactions} transaction(s) ({mode} mode), fees {format_sol(FEE * transactions)}"
        )
        assert (result["jobId"], result["userId"], result["mode"]) == (job_id, user.user_id, mode)
        assert (result["amountLamports"], result["amountSol"]) == (amount, format_sol(amount)[:-4])
        assert [
            (w["publicKey"], w["lamports"], w["status"], w["balanceLamports"])
            for w in result["wallets"]
        ] == [
            (str(buyer.pubkey()), lamports, "funded", lamports)
            for buyer, lamports in zip(user.buyers, plan, strict=False)
        ]
        assert result["totals"] == {
            "walletsPlanned": len(plan),
            "walletsFunded": len(plan),
            "plannedLamports": amount,
            "plannedSol": format_sol(amount)[:-4],
            "sentLamports": amount,
            "sentSol": format_sol(amount)[:-4],
            "feeLamports": FEE * transactions,
            "feeSol": format_sol(FEE * transactions)[:-4],
            "priorityFeeLamports": 0,  # PREMIX_PRIORITY_FEE=0 (make_settings)
            "priorityFeeSol": "0",
            "transactions": transactions,
        }
        assert len(result["signatures"]) == transactions
        assert {w["signature"] for w in result["wallets"]} == set(result["signatures"])
        run = await Ledger(store).get(job_id)
        assert run is not None and run.status is RunStatus.COMPLETED

    assert [body["chat_id"] for _, body in telegram.requests] == [42, 42]
    by_job = {text.rsplit("Job ", 1)[1]: text for text in telegram.texts}
    assert by_job[standard.job_id] == (
        "✅ Premix complete\n"
        "Sent 0.5 SOL to 1 buyer wallet(s) (standard mode).\n"
        "1 transaction(s), fees 0.000005 SOL.\n"
        f"Job {standard.job_id}"
    )
    assert by_job[fast.job_id] == (
        "✅ Premix complete\n"
        "Sent 1 SOL to 2 buyer wallet(s) (fast mode).\n"
        "1 transaction(s), fees 0.000005 SOL.\n"
        f"Job {fast.job_id}"
    )


async def test_fast_mode_funds_73_wallets_in_4_transactions(
    settings: Settings, store: Store, fast_localnet: Localnet
) -> None:
    user = await create_user(store, fast_localnet, "u1")
    queued = await enqueue_premix_funds("u1", 42, 85, {"mode": "fast"}, settings=settings)
    assert queued.job_id is not None

    await run_worker(settings)

    plan = user.plan(85 * SOL)
    assert len(plan) == 73
    assert user.buyer_balances(fast_localnet) == plan
    assert (
        fast_localnet.balance(user.funding.pubkey()) == user.funding_lamports - 85 * SOL - 4 * FEE
    )
    result = (await job_result(settings, queued.job_id)).result
    assert result["totals"]["transactions"] == 4
    assert len(result["signatures"]) == 4


async def test_failure_is_told_to_the_user_on_telegram_with_the_reason(
    settings: Settings, store: Store, fast_localnet: Localnet, telegram: FakeTelegram
) -> None:
    await create_user(store, fast_localnet, "u1", funding_lamports=SOL // 10)
    queued = await enqueue_premix_funds("u1", 42, 0.5, settings=settings)

    await run_worker(settings)

    [(path, body)] = telegram.requests
    assert path == f"/bot{BOT_TOKEN}/sendMessage"
    assert body == {
        "chat_id": 42,
        "text": (
            "❌ Premix failed\n"
            "Requested 0.5 SOL.\n"
            "Insufficient funding wallet balance: needed 0.510005 SOL, available 0.1 SOL "
            "(0.5 SOL to 1 wallet(s) + 0.000005 SOL fees for 1 transaction(s) + 0.01 SOL buffer)\n"
            "Nothing was sent.\n"
            f"Job {queued.job_id}"
        ),
    }


async def redis_strings(redis: Redis) -> str:
    """Every string value in Redis (job payloads, results, progress states), concatenated."""
    values = []
    async for key in redis.scan_iter():
        if await redis.type(key) == b"string":
            values.append((await redis.get(key) or b"").decode("utf-8", "replace"))
    return "\n".join(values)


def secrets_of(users: list[User]) -> list[str]:
    forms = [ENCRYPTION_KEYS, ENCRYPTION_KEYS.partition(":")[2], BOT_TOKEN]
    for user in users:
        for keypair in [user.funding, *user.buyers]:
            forms += secret_forms(keypair)
            forms.append(json.dumps(list(bytes(keypair)), separators=(",", ":")))
    return forms


async def test_a_full_run_leaks_no_private_key_encryption_key_or_bot_token(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    fast_localnet: Localnet,
    telegram: FakeTelegram,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ok_user = await create_user(store, fast_localnet, "u1", buyers=25)
    poor_user = await create_user(store, fast_localnet, "u2", buyers=5, funding_lamports=SOL)
    completed = await enqueue_premix_funds("u1", 42, 10, {"mode": "fast"}, settings=settings)
    failed = await enqueue_premix_funds("u2", 42, 2, settings=settings)
    assert completed.job_id is not None and failed.job_id is not None
    collectors = [
        await collect_events(redis_client, completed.job_id),
        await collect_events(redis_client, failed.job_id),
    ]

    await run_worker(settings)

    events = [event.to_json() for c in collectors for event in await c.wait()]
    results = [
        json.dumps((await job_result(settings, job_id)).result)
        for job_id in (completed.job_id, failed.job_id)
    ]
    ledger = await store.collection(RUNS_COLLECTION).find({}).to_list()
    captured = capsys.readouterr()
    places: dict[str, str] = {
        "logs": captured.err + captured.out,
        "events": "\n".join(events),
        "results": "\n".join(results),
        "redis": await redis_strings(redis_client),
        "telegram": json.dumps([body for _, body in telegram.requests]),
        "ledger": "\n".join(str(document) for document in ledger),
    }
    # the run did log, publish and answer (a search of empty places proves nothing)
    assert "job_completed" in places["logs"] and "worker_started" in places["logs"]
    # 7 events for the completed run (phases 1-5, one confirmed transaction, 6), 5 for the other
    assert len(events) == 12 and json.loads(results[0])["success"] is True
    assert "Insufficient funding wallet balance" in results[1]
    for place, text in places.items():
        for secret in secrets_of([ok_user, poor_user]):
            assert secret not in text, f"a secret leaked into {place}"
