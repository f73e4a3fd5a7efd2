"""Shared pieces of the worker tests (no tests here): settings, a user with wallets on localnet,
a real arq worker run in-process, progress collection, a fake Telegram server, and RPC clients
that make the worker "die" at a chosen call."""

import asyncio
import base64
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from arq.jobs import Job, JobResult
from arq.worker import Worker
from pydantic import SecretStr
from redis.asyncio import Redis
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from premix.constants import PROGRESS_CHANNEL_PREFIX, RUNS_COLLECTION
from premix.distribution import plan_distribution
from premix.ledger import Ledger, RunStatus
from premix.localnet import Commitment, Localnet
from premix.logs import reset_logging
from premix.progress import ProgressEvent, subscribe_progress
from premix.queue import close_queue, queue_pool
from premix.rpc import LatestBlockhash, RetryPolicy, SendResult, SolanaRpc
from premix.serialization import job_deserializer
from premix.settings import Settings
from premix.store import Store, reset_memory_stores
from premix.worker import worker_settings

ENCRYPTION_KEYS = "k1:" + base64.b64encode(bytes(range(100, 132))).decode()
BOT_TOKEN = "987654321:AAF-telegram-worker-token_abcdefghijklmnop"
FUNDING_LAMPORTS = 100 * 10**9
QUICK_RETRIES = RetryPolicy(tries=3, base_delay_seconds=0.001, max_delay_seconds=0.01)


def make_settings(
    redis_url: str, rpc_url: str = "http://127.0.0.1:1", **overrides: Any
) -> Settings:
    """Settings for one test: its Redis, a fresh memory store, localnet, quick polling."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "mongodb_uri": f"memory://worker-{uuid.uuid4().hex}",
        "allow_memory_store": True,  # the test stores the wallets in the worker's process
        "encryption_keys": SecretStr(ENCRYPTION_KEYS),
        "rpc_url": rpc_url,
        "worker_poll_delay_seconds": 0.01,
        "confirm_poll_seconds": 0.01,
        "slot_seconds": 0,
        "log_level": "DEBUG",
        # a fixed zero fee: these tests count 5,000 lamports per transaction; `auto` has its own
        # (tests/test_mixer_fees.py, tests/worker/test_worker_fees.py)
        "priority_fee": 0,
        **overrides,
    }
    return Settings(**values)


def settings_on_store(
    request: pytest.FixtureRequest,
    redis_url: str,
    rpc_url: str = "http://127.0.0.1:1",
    *,
    database_prefix: str,
) -> Settings:
    """`make_settings` on the store a fixture parametrized with ["memory", "mongodb"] names: a
    fresh memory:// one, or a fresh database `<database_prefix>_<hex>` on the session's
    MongoDB-wire server."""
    if request.param == "memory":
        return make_settings(redis_url, rpc_url)
    return make_settings(
        redis_url,
        rpc_url,
        mongodb_uri=request.getfixturevalue("mongodb_url"),
        mongodb_database=f"{database_prefix}_{uuid.uuid4().hex[:12]}",
    )


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The test's view of the worker's store; emptied (dropped or forgotten) afterwards."""
    store = await Store.open(settings)
    await store.ensure_indexes()
    try:
        yield store
    finally:
        await store.drop_database()
        await store.close()
        reset_memory_stores(settings.mongodb_uri)


@contextlib.asynccontextmanager
async def restored_logging() -> AsyncIterator[None]:
    """Undo what the worker's startup does to logging; close the enqueue pools."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        yield
    finally:
        await close_queue()
        reset_logging()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


@dataclass
class User:
    """A user with a funding wallet (airdropped on localnet) and buyer wallets in the store."""

    user_id: str
    funding: Keypair
    buyers: list[Keypair]
    funding_lamports: int

    def plan(self, amount_lamports: int, max_wallets: int | None = None) -> list[int]:
        """The plan the worker must follow for `amount_lamports` with default tiers."""
        wallets = min(len(self.buyers), max_wallets or len(self.buyers))
        return plan_distribution(amount_lamports, wallets, Settings().tier_table())

    def buyer_balances(self, net: Localnet) -> list[int]:
        return [net.balance(buyer.pubkey()) for buyer in self.buyers]


async def create_user(
    store: Store,
    net: Localnet | None,
    user_id: str = "u1",
    *,
    buyers: int = 73,
    funding_lamports: int = FUNDING_LAMPORTS,
) -> User:
    """Store a funding wallet and `buyers` buyer wallets; airdrop `funding_lamports` on `net`."""
    user = User(user_id, Keypair(), [Keypair() for _ in range(buyers)], funding_lamports)
    await store.wallets.set_funding_wallet(user_id, user.funding)
    if buyers:
        await store.wallets.add_buyer_wallets(user_id, user.buyers)
    if net is not None and funding_lamports:
        net.airdrop(user.funding.pubkey(), funding_lamports)
    return user


async def delete_wallets(store: Store, user_id: str, role: str, *, keep: int = 0) -> None:
    """Delete the user's `role` ("funding" | "buyer") wallets but the first `keep`, as the user
    may between enqueue and run (enqueue refuses a user without enough; the worker checks
    again)."""
    await store.wallets.collection.delete_many(
        {"user_id": user_id, "role": role, "position": {"$gte": keep}}
    )


def drain(net: Localnet, funding: Keypair, keep_lamports: int) -> None:
    """Move all but `keep_lamports` out of `funding`, as the user's own wallet app might."""
    lamports = net.balance(funding.pubkey()) - keep_lamports - 5_000
    message = Message.new_with_blockhash(
        [
            transfer(
                TransferParams(
                    from_pubkey=funding.pubkey(), to_pubkey=Pubkey.new_unique(), lamports=lamports
                )
            )
        ],
        funding.pubkey(),
        net.chain.block().blockhash,
    )
    net.chain.send_transaction(
        VersionedTransaction(message, [funding]),
        preflight_bank=net.chain.block(Commitment.PROCESSED),
    )
    assert net.balance(funding.pubkey()) == keep_lamports


class WorkerKilled(BaseException):
    """Stands for the worker process dying: nothing after it runs (arq's own handlers catch
    `Exception` and `CancelledError` only), so the job stays in the queue, its in-progress
    marker and user lock are left behind, and only Redis, the store and the chain remain."""


class TestRpc(SolanaRpc):
    """`SolanaRpc` with quick retries that can "kill the worker" right after the `kill_at`-th
    call of method `kill_on` reached the node, and calls `on_call(method, n)` after each call."""

    __test__ = False

    def __init__(
        self,
        url: str,
        *,
        kill_on: str | None = None,
        kill_at: int = 1,
        on_call: Callable[[str, int], None] | None = None,
        skip_preflight: bool = False,
    ) -> None:
        super().__init__(url, retry=QUICK_RETRIES, skip_preflight=skip_preflight)
        self.kill_on = kill_on
        self.kill_at = kill_at
        self.on_call = on_call
        self.seen: dict[str, int] = {}

    def _count(self, method: str) -> None:
        count = self.seen[method] = self.seen.get(method, 0) + 1
        if self.on_call is not None:
            self.on_call(method, count)
        if method == self.kill_on and count == self.kill_at:
            raise WorkerKilled(f"{method} #{count}")

    async def balance(self, pubkey: Pubkey, *, min_context_slot: int | None = None) -> int:
        result = await super().balance(pubkey, min_context_slot=min_context_slot)
        self._count("balance")
        return result

    async def balances(
        self, pubkeys: Sequence[Pubkey], *, min_context_slot: int | None = None
    ) -> list[int]:
        result = await super().balances(pubkeys, min_context_slot=min_context_slot)
        self._count("balances")
        return result

    async def latest_blockhash(self) -> LatestBlockhash:
        result = await super().latest_blockhash()
        self._count("latest_blockhash")
        return result

    async def send_raw(self, wire: bytes) -> SendResult:
        result = await super().send_raw(wire)
        self._count("send")
        return result


async def run_worker(settings: Settings, **ctx: Any) -> bool:
    """Run a real arq worker in burst mode until the queue is empty; `ctx` pre-sets services
    (`rpc`, `notifier`). Returns False if the worker was killed (`WorkerKilled`)."""
    worker = Worker(
        **worker_settings(settings),
        burst=True,
        handle_signals=False,
        ctx={"settings": settings, **ctx},
    )
    try:
        await worker.main()
        return True
    except WorkerKilled:
        worker.tasks.clear()  # the dead job's task: nothing of it runs any more
        return False
    finally:
        await worker.close()


async def expire_in_progress_marker(redis: Redis, job_id: str) -> None:
    """What time does after a worker died: arq's in-progress marker of the job expires."""
    assert await redis.delete(in_progress_key_prefix + job_id) == 1


async def job_result(settings: Settings, job_id: str) -> JobResult:
    """arq's stored result of `job_id` (JSON-decoded)."""
    info = await Job(
        job_id, queue_pool(settings.redis_url), _deserializer=job_deserializer
    ).result_info()
    assert info is not None, f"no result for {job_id}"
    return info


@dataclass
class EventCollector:
    """Collects one job's progress events through `premix.progress.subscribe_progress`."""

    events: list[ProgressEvent] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def wait(self, timeout: float = 30) -> list[ProgressEvent]:
        """Wait for the terminal event; return every event received."""
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout)
        return self.events


async def collect_events(redis: Redis, job_id: str) -> EventCollector:
    """Subscribe to the job's events now (before the worker runs) and collect them."""
    collector = EventCollector()

    async def consume() -> None:
        async for event in subscribe_progress(redis, job_id, poll_interval_seconds=0.01):
            collector.events.append(event)

    collector.task = asyncio.create_task(consume())
    channel = PROGRESS_CHANNEL_PREFIX + job_id
    for _ in range(500):
        [(_, subscribers)] = await redis.pubsub_numsub(channel)
        if subscribers:
            return collector
        await asyncio.sleep(0.005)
    raise AssertionError("the progress subscription never became active")


@dataclass
class FakeTelegram:
    """A loopback HTTP server standing in for the Telegram Bot API; records sendMessage calls."""

    url: str = ""
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [str(body["text"]) for _, body in self.requests]


@contextlib.contextmanager
def fake_telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            fake.requests.append((self.path, json.loads(self.rfile.read(length))))
            payload = json.dumps({"ok": True, "result": {}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


async def assert_paid_exactly_once(
    store: Store,
    net: Localnet,
    user: User,
    job_id: str,
    amount: int,
    transactions: int,
    *,
    fee_lamports: int | None = None,
) -> None:
    """Every planned wallet holds exactly its amount, the funding wallet paid exactly the
    amount plus 5,000 lamports per landed transaction (or `fee_lamports` in all, with priority
    fees), and the ledger run is completed."""
    fees = 5_000 * transactions if fee_lamports is None else fee_lamports
    plan = user.plan(amount)
    assert user.buyer_balances(net) == plan + [0] * (len(user.buyers) - len(plan))
    assert net.balance(user.funding.pubkey()) == (user.funding_lamports - amount - fees)
    run = await Ledger(store).get(job_id)
    assert run is not None
    assert run.status is RunStatus.COMPLETED
    assert (run.totals.transactions, run.totals.fee_lamports) == (transactions, fees)
    assert await store.collection(RUNS_COLLECTION).count_documents({}) == 1


async def give_funding_a_buyers_ciphertext(store: Store, user_id: str) -> None:
    """Copy a buyer's encrypted key into the user's funding wallet document: it no longer
    decrypts, since the envelope authenticates its wallet's public key."""
    wallets = store.collection("wallets")
    funding = await wallets.find_one({"user_id": user_id, "role": "funding"})
    buyer = await wallets.find_one({"user_id": user_id, "role": "buyer"})
    assert funding is not None and buyer is not None
    await wallets.update_one(
        {"_id": funding["_id"]},
        {"$set": {"encrypted_secret_key": buyer["encrypted_secret_key"]}},
    )
