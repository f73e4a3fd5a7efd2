"""One job's path settles, plans and verifies each thing once: counted from the RPC calls a
worker makes, for a resumed run (an earlier execution died with a transaction in flight) and for
a fresh fast-mode run."""

from collections import Counter
from collections.abc import Sequence

from redis.asyncio import Redis
from solders.pubkey import Pubkey
from solders.signature import Signature

from premix.ledger import Ledger
from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds
from premix.rpc import AccountInfo, SendResult, SignatureStatus
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import (
    TestRpc,
    assert_paid_exactly_once,
    create_user,
    expire_in_progress_marker,
    job_result,
    run_worker,
)

SOL = 10**9


class CountingRpc(TestRpc):
    """`TestRpc` that also notes, in order, every status lookup (its signatures) and every
    balance read (its accounts), and when each send happened."""

    __test__ = False

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.events: list[tuple[str, frozenset[str]]] = []

    async def signature_statuses_seen_at(
        self, signatures: Sequence[Signature], *, search_history: bool = False
    ) -> tuple[int, list[SignatureStatus | None]]:
        self.events.append(("statuses", frozenset(str(s) for s in signatures)))
        return await super().signature_statuses_seen_at(signatures, search_history=search_history)

    async def balance(self, pubkey: Pubkey, *, min_context_slot: int | None = None) -> int:
        self.events.append(("balances", frozenset({str(pubkey)})))
        return await super().balance(pubkey, min_context_slot=min_context_slot)

    async def accounts(
        self, pubkeys: Sequence[Pubkey], *, min_context_slot: int | None = None
    ) -> list[AccountInfo | None]:  # what `balances` reads too
        self.events.append(("balances", frozenset(str(p) for p in pubkeys)))
        return await super().accounts(pubkeys, min_context_slot=min_context_slot)

    async def send_raw(self, wire: bytes) -> SendResult:
        self.events.append(("send", frozenset()))
        return await super().send_raw(wire)

    def lookups_before_the_first_send(self, signature: str) -> int:
        first_send = next(i for i, (kind, _) in enumerate(self.events) if kind == "send")
        return sum(
            1 for kind, keys in self.events[:first_send] if kind == "statuses" and signature in keys
        )

    def reads_of(self, account: str) -> int:
        return sum(1 for kind, keys in self.events if kind == "balances" and account in keys)


async def test_a_resumed_run_settles_its_open_attempt_once_and_reads_each_balance_once(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1")
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    job_id = queued.job_id
    assert job_id is not None

    def drop_the_second_send(method: str, count: int) -> None:
        if (method, count) == ("send", 1):
            net.faults.inject("drop_send", count=1)  # in flight, unseen, not expired

    dying = TestRpc(net.url, kill_on="send", kill_at=2, on_call=drop_the_second_send)
    assert await run_worker(settings, rpc=dying) is False
    run = await Ledger(store).get(job_id)
    assert run is not None
    [(_, in_flight)] = run.open_attempts()
    await expire_in_progress_marker(redis_client, job_id)

    counting = CountingRpc(net.url)
    assert await run_worker(settings, rpc=counting) is True

    assert (await job_result(settings, job_id)).result["success"] is True
    await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)
    # settled once, before anything was sent again (today: settled, looked up, settled again)
    assert counting.lookups_before_the_first_send(in_flight.signature) == 1
    # each recipient's balance is read once in this execution, once its transfer landed (the
    # balances before were read once, with the plan, by the first execution)
    recipients = [entry.recipient for entry in run.plan]
    reads = Counter({recipient: counting.reads_of(recipient) for recipient in recipients})
    assert reads == Counter(dict.fromkeys(recipients, 1))


async def test_a_fast_run_reads_each_recipient_once_with_the_plan_and_once_after_landing(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1")
    queued = await enqueue_premix_funds("u1", 42, 20, {"mode": "fast"}, settings=settings)
    assert queued.job_id is not None

    counting = CountingRpc(net.url)
    assert await run_worker(settings, rpc=counting) is True

    assert (await job_result(settings, queued.job_id)).result["success"] is True
    await assert_paid_exactly_once(store, net, user, queued.job_id, 20 * SOL, 2)
    plan = user.plan(20 * SOL)
    funded = [str(buyer.pubkey()) for buyer in user.buyers[: len(plan)]]
    assert {counting.reads_of(recipient) for recipient in funded} == {2}
