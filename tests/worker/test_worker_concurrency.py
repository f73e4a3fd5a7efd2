"""PREMIX_WORKER_MAX_JOBS: one worker process runs that many premixes of different users at
once, each paid exactly; one user's premixes never overlap, however they reach the queue."""

import asyncio
import threading

import pytest
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

from premix.constants import JOB_FUNCTION
from premix.jobs import PremixFundsJob
from premix.ledger import Ledger, RunRecord, RunStatus
from premix.localnet import Localnet
from premix.localnet.intercept import InterceptedRequest, Stage
from premix.queue import enqueue_premix_funds, queue_pool
from premix.settings import Settings, SettingsInvalid, describe_settings_error
from premix.store import Store
from premix.worker import worker_settings
from tests.worker.helpers import User, collect_events, create_user, job_result, run_worker

SOL = 10**9
USERS = 9


def test_max_jobs_is_one_by_default_and_the_setting_otherwise() -> None:
    assert worker_settings(Settings())["max_jobs"] == 1
    assert worker_settings(Settings(worker_max_jobs=8))["max_jobs"] == 8


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "PREMIX_WORKER_MAX_JOBS: Input should be greater than or equal to 1"),
        ("65", "PREMIX_WORKER_MAX_JOBS: Input should be less than or equal to 64"),
        ("two", "PREMIX_WORKER_MAX_JOBS: Input should be a valid integer, unable to parse"),
    ],
)
def test_an_invalid_max_jobs_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("PREMIX_WORKER_MAX_JOBS", value)
    with pytest.raises(SettingsInvalid) as refused:
        Settings()
    assert describe_settings_error(refused.value).startswith(message)


def paid_exactly(net: Localnet, user: User, runs: list[RunRecord]) -> None:
    """The user's buyers hold exactly what `runs` planned; the funding wallet paid exactly
    that plus each run's fees (5,000 lamports per landed transaction)."""
    expected = [0] * len(user.buyers)
    for run in runs:
        assert run.status is RunStatus.COMPLETED
        assert run.totals.fee_lamports == 5_000 * run.totals.transactions
        for position, entry in enumerate(run.plan):
            expected[position] += entry.lamports
    assert user.buyer_balances(net) == expected
    spent = sum(run.amount_lamports + run.totals.fee_lamports for run in runs)
    assert net.balance(user.funding.pubkey()) == user.funding_lamports - spent


def overlapping(runs: list[RunRecord]) -> int:
    """The most runs that were open at the same moment (created .. last written)."""
    edges = sorted([(r.created_at, 1) for r in runs] + [(r.updated_at, -1) for r in runs])
    most = open_now = 0
    for _, step in edges:
        open_now += step
        most = max(most, open_now)
    return most


async def test_one_process_with_max_jobs_8_runs_premixes_of_9_users_at_once_each_paid_exactly(
    settings: Settings, store: Store, net: Localnet
) -> None:
    settings = settings.model_copy(update={"worker_max_jobs": 8})
    users = [await create_user(store, net, f"u{n}", buyers=10) for n in range(USERS)]
    job_ids = []
    for user in users:
        queued = await enqueue_premix_funds(
            user.user_id, 42, 1, {"mode": "fast"}, settings=settings
        )
        assert queued.success and queued.job_id is not None, queued.message
        job_ids.append(queued.job_id)

    await run_worker(settings)

    ledger = Ledger(store)
    runs = []
    for user, job_id in zip(users, job_ids, strict=True):
        assert (await job_result(settings, job_id)).result["success"] is True
        run = await ledger.require(job_id)
        paid_exactly(net, user, [run])
        runs.append(run)
    assert overlapping(runs) >= 2  # they did run at once


async def queue_directly(settings: Settings, user_id: str, job_id: str) -> None:
    """Put a job on arq's queue without premix's enqueue (and so without its user lock), as a
    lock that expired too early would let a second enqueue do."""
    job = PremixFundsJob.from_request(user_id, 42, 1, {"mode": "fast"})
    queued = await queue_pool(settings.redis_url).enqueue_job(
        JOB_FUNCTION, job.to_wire(), _job_id=job_id, _queue_name=settings.queue_name
    )
    assert queued is not None


def one_after_the_other(first: RunRecord, second: RunRecord) -> None:
    earlier, later = sorted([first, second], key=lambda run: run.created_at)
    assert later.created_at > earlier.updated_at  # the later run began after the earlier ended


async def test_two_jobs_of_one_user_picked_up_together_never_overlap(
    settings: Settings, store: Store, net: Localnet, redis_client: Redis
) -> None:
    settings = settings.model_copy(update={"worker_max_jobs": 8, "user_busy_retry_seconds": 0.1})
    user = await create_user(store, net, "u1", buyers=10)
    await queue_directly(settings, "u1", "premix-u1-1")
    await queue_directly(settings, "u1", "premix-u1-2")
    events = [await collect_events(redis_client, f"premix-u1-{n}") for n in (1, 2)]

    await run_worker(settings)

    ledger = Ledger(store)
    first, second = await ledger.require("premix-u1-1"), await ledger.require("premix-u1-2")
    one_after_the_other(first, second)
    paid_exactly(net, user, [first, second])
    # the job that waited for the other was deferred, not retried: no `retrying` event
    for collected in events:
        statuses = [event.status.value for event in await collected.wait()]
        assert (statuses[0], statuses[-1]) == ("started", "completed"), statuses
        assert set(statuses[1:-1]) == {"in_progress"}, statuses


async def test_a_second_job_of_the_user_queued_while_the_first_runs_waits_for_it(
    settings: Settings, store: Store, net: Localnet, redis_client: Redis
) -> None:
    settings = settings.model_copy(update={"worker_max_jobs": 8, "user_busy_retry_seconds": 0.1})
    user = await create_user(store, net, "u1", buyers=10)
    queued = await enqueue_premix_funds("u1", 42, 1, {"mode": "fast"}, settings=settings)
    assert queued.job_id is not None
    refused: list[str] = []
    second_queued = threading.Event()

    def first_send_waits_for_the_second_job(request: InterceptedRequest) -> None:
        if request.stage is Stage.RECEIVED and request.calls("sendTransaction"):
            second_queued.wait(timeout=30)  # the first job stays running until then

    async def second_once_the_first_runs() -> None:
        while not await redis_client.exists(in_progress_key_prefix + queued.job_id):
            await asyncio.sleep(0.005)
        again = await enqueue_premix_funds("u1", 42, 1, {"mode": "fast"}, settings=settings)
        refused.append(again.message)
        await queue_directly(settings, "u1", "premix-u1-2")
        second_queued.set()

    net.intercept(first_send_waits_for_the_second_job)
    second = asyncio.create_task(second_once_the_first_runs())
    await run_worker(settings)
    await second

    assert refused == [
        f"A premix is already queued or running for this user (job {queued.job_id}); "
        "wait for it to finish"
    ]
    ledger = Ledger(store)
    first, later = await ledger.require(queued.job_id), await ledger.require("premix-u1-2")
    one_after_the_other(first, later)
    paid_exactly(net, user, [first, later])


async def test_concurrent_premixes_under_rpc_faults_each_pay_exactly_once(
    settings: Settings, store: Store, net: Localnet
) -> None:
    settings = settings.model_copy(update={"worker_max_jobs": 8, "job_max_tries": 20})
    users = [await create_user(store, net, f"u{n}", buyers=10) for n in range(8)]
    job_ids = []
    for user in users:
        queued = await enqueue_premix_funds(
            user.user_id, 42, 1, {"mode": "fast"}, settings=settings
        )
        assert queued.job_id is not None, queued.message
        job_ids.append(queued.job_id)
    rules = [
        net.faults.inject("drop_send", probability=0.2),
        net.faults.inject("lose_response", method="sendTransaction", probability=0.2),
        net.faults.inject("stale_read", probability=0.2, slots=3),
        net.faults.inject("no_history", probability=0.5),
        net.faults.inject("http_5xx", probability=0.05, status=503),
    ]

    await run_worker(settings)

    assert sum(rule.fired for rule in rules) > 0
    ledger = Ledger(store)
    for user, job_id in zip(users, job_ids, strict=True):
        assert (await job_result(settings, job_id)).result["success"] is True
        paid_exactly(net, user, [await ledger.require(job_id)])
