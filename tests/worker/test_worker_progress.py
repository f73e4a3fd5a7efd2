"""What a job's progress events tell across its tries: a try that ends in a transient failure
publishes `retrying` (try n of N, when the next runs), the percent never goes back, and every
event carries when the job began."""

from datetime import datetime, timedelta

from redis.asyncio import Redis

from premix.localnet import Localnet
from premix.progress import ProgressEvent, ProgressStatus
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import (
    TestRpc,
    assert_paid_exactly_once,
    collect_events,
    create_user,
    job_result,
    run_worker,
)

SOL = 10**9


def wire(event: ProgressEvent) -> dict[str, object]:
    return event.model_dump(mode="json", by_alias=True)


async def test_a_try_failing_mid_payout_publishes_retrying_and_the_percent_never_goes_back(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    settings = settings.model_copy(update={"retry_backoff_seconds": (0.01,), "job_max_tries": 3})
    user = await create_user(store, net, "u1", buyers=10)
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    job_id = queued.job_id
    assert job_id is not None
    events = await collect_events(redis_client, job_id)

    def lose_the_node_after_the_second_send(method: str, count: int) -> None:
        if (method, count) == ("send", 2):  # the first transfer has been confirmed by now
            net.faults.inject("http_5xx", method="getSignatureStatuses", count=3)

    rpc = TestRpc(net.url, on_call=lose_the_node_after_the_second_send)
    await run_worker(settings, rpc=rpc)

    info = await job_result(settings, job_id)
    assert (info.result["success"], info.job_try) == (True, 2)
    await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)
    received = await events.wait()
    [retrying] = [e for e in received if e.status is ProgressStatus.RETRYING]
    before = received[received.index(retrying) - 1]
    # the try stopped in phase 5 with a transfer confirmed: the event stays there
    assert (retrying.phase, retrying.title) == (5, "Initializing Mixer")
    assert retrying.percent == before.percent > 70
    assert retrying.details is not None
    assert (retrying.details["jobTry"], retrying.details["maxTries"]) == (1, 3)
    next_try_at = datetime.fromisoformat(str(retrying.details["nextTryAt"]))
    assert retrying.timestamp <= next_try_at <= retrying.timestamp + timedelta(seconds=1)
    assert retrying.description == (
        "Try 1 of 3 ended (Temporary failure: Solana RPC getSignatureStatuses failed 3 times; "
        f"last error: HTTP 503); next try at {next_try_at:%H:%M:%S} UTC"
    )
    # the second try resumes at the percent the first reached, up to 100
    percents = [e.percent for e in received]
    assert percents == sorted(percents), [wire(e) for e in received]
    after = received[received.index(retrying) + 1]
    assert (after.phase, after.description, after.percent) == (
        1,
        "Resuming premix job",
        retrying.percent,
    )
    # the second try enters phase 5 counting what the first funded
    entered = [e for e in received if e.phase == 5 and e.description.endswith("(standard mode)")]
    [_, resumed] = entered
    assert resumed.details is not None and isinstance(resumed.details["done"], int)
    assert resumed.details["done"] >= 1
    assert resumed.description == f"{resumed.details['done']} of 4 wallets funded (standard mode)"
    assert received[-1].status is ProgressStatus.COMPLETED
    # every event says when the job began: its first event
    assert {e.started_at for e in received} == {received[0].timestamp}
    assert [e.sequence for e in received] == list(range(1, len(received) + 1))


async def test_phase_5_counts_wallets_funded_from_its_first_event(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=10)
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    assert queued.job_id is not None
    events = await collect_events(redis_client, queued.job_id)

    await run_worker(settings, rpc=TestRpc(net.url))

    phase_5 = [e for e in await events.wait() if e.phase == 5]
    assert [(e.title, e.description, e.details) for e in phase_5] == [
        ("Initializing Mixer", "0 of 4 wallets funded (standard mode)", {"done": 0, "total": 4}),
        *[
            (
                "Initializing Mixer",
                f"{n} of 4 wallets funded (transaction {n} confirmed)",
                {"done": n, "total": 4, "sentLamports": n * SOL // 2},
            )
            for n in range(1, 5)
        ],
    ]
