"""Store faults: the ledger's reads and writes failing under a premix run, and the run still
paying every wallet exactly once, with a ledger equal to the chain.

Two ways to break the store:
- MongoDB's `configureFailPoint` `failCommand` on a SecantusDB started with
  `--enable-test-commands` (`failpoint_mongodb_url`): dropped connections, errors 91, 10107 and
  11600, a server that answers only after the client's socket timeout, and a write concern error
  after the write applied (an acknowledgement lost). Scoped with `appName: "premix"` (premix's
  client, `premix/store.py`) so the test's own client keeps working.
- `LosingReplies`, a wrapper around the ledger's collection on either store, for what fail points
  cannot stage: a write that applied whose reply was lost, and a driver retry of an applied write
  that then matched nothing.

PyMongo retries a retryable read or write once by itself, so a fault meant for premix fails two
commands in a row (`times: 2`). SecantusDB replays a retried write from its retryable-write
record, as mongod does.
"""

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect, NetworkTimeout
from solders.pubkey import Pubkey

from premix.constants import RUNS_COLLECTION
from premix.documents import DocumentCollection, as_server_sees_it
from premix.errors import TransientError
from premix.keys import KeyRing
from premix.ledger import Ledger, LedgerConflict, RunRecord, run_to_document
from premix.localnet import Localnet
from premix.settings import Settings
from premix.store import Store
from tests.test_mixer_helpers import MixerHarness, signed_attempt
from tests.test_mixer_resume import SCENARIOS
from tests.worker.helpers import (
    TestRpc,
    assert_paid_exactly_once,
    create_user,
    job_result,
    make_settings,
    open_store,
    restored_logging,
    run_worker,
)
from tests.worker.test_worker_adversarial import enqueue

PREMIX_APP = "premix"  # the appname of premix's AsyncMongoClient (premix/store.py)
TEST_APP = "premix-tests"  # the test's own client: never hit by a fail point
SOCKET_TIMEOUT_MS = 400  # premix's socket timeout in the blocked-server cases
BLOCK_MS = 1_000  # how long a blocked command waits before the server runs it
SOL = 10**9


async def drop_quietly(store: Store) -> None:
    """Drop the test's database; a client with a short fault-test socket timeout may time out
    on a loaded machine: try again, and leave the (uniquely named) database otherwise."""
    for attempt in range(3):
        try:
            await store.drop_database()
            return
        except (NetworkTimeout, AutoReconnect):
            if attempt == 2:
                return


@dataclass(frozen=True)
class Fault:
    """A `failCommand` fail point: its `data` (besides the commands and the appName), how many
    matching commands it fails, and the PyMongo error premix sees."""

    name: str
    data: dict[str, Any]
    times: int
    seen_as: str
    blocks: bool = False  # needs a client socket timeout below BLOCK_MS

    def __str__(self) -> str:
        return self.name


WRITE_CONCERN_ERROR = Fault(
    "write-concern-error",
    {"writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"}},
    times=1,  # the write applied; PyMongo does not retry it (no RetryableWriteError label)
    seen_as="WriteConcernError",
)
FAULTS = [
    Fault("close-connection", {"closeConnection": True}, 2, "AutoReconnect"),
    Fault("shutdown-in-progress-91", {"errorCode": 91}, 2, "NotPrimaryError"),
    Fault("not-writable-primary-10107", {"errorCode": 10107}, 2, "NotPrimaryError"),
    Fault("interrupted-at-shutdown-11600", {"errorCode": 11600}, 2, "NotPrimaryError"),
    Fault(
        "blocked-past-the-socket-timeout",
        {"blockConnection": True, "blockTimeMS": BLOCK_MS},
        2,  # the command runs once the block ends, after the client gave up on it
        "NetworkTimeout",
        blocks=True,
    ),
    WRITE_CONCERN_ERROR,
]
READ_FAULTS = [fault for fault in FAULTS if fault is not WRITE_CONCERN_ERROR]


class FailPoints:
    """Arms `failCommand` on the fail-point SecantusDB for premix's connections only."""

    def __init__(self, url: str) -> None:
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, appname=TEST_APP)

    async def arm(
        self, fault: Fault, commands: list[str], *, skip: int = 0, times: int | None = None
    ) -> None:
        """Fail `fault.times` (or `times`) of premix's `commands`, after letting `skip` of them
        through."""
        await self.client.admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"skip": skip, "times": times or fault.times},
            data={"failCommands": commands, "appName": PREMIX_APP, **fault.data},
        )

    async def off(self) -> None:
        await self.client.admin.command("configureFailPoint", "failCommand", mode="off")


@pytest.fixture
async def fail_points(failpoint_mongodb_url: str) -> AsyncIterator[FailPoints]:
    points = FailPoints(failpoint_mongodb_url)
    try:
        yield points
    finally:
        await points.off()
        await points.client.close()


def store_uri(url: str, socket_timeout_ms: int | None = None) -> str:
    """The fail-point server's URI for premix, with `socketTimeoutMS` if given (the URI's own
    timeout wins over premix's default) and a 0.5 s heartbeat: after a "not primary" error
    PyMongo waits for its server monitor's next look before it retries or selects the server
    again, a whole heartbeat (10 s by default) per error."""
    uri = f"{url}&heartbeatFrequencyMS=500"
    return uri if socket_timeout_ms is None else f"{uri}&socketTimeoutMS={socket_timeout_ms}"


def faulty_store_uri(url: str, fault: Fault) -> str:
    """`store_uri` with a socket timeout shorter than the block when `fault` blocks."""
    return store_uri(url, SOCKET_TIMEOUT_MS if fault.blocks else None)


@contextlib.asynccontextmanager
async def faulty_store(
    uri: str, key_ring: KeyRing, *, timeout_seconds: float = 5.0
) -> AsyncIterator[Store]:
    """premix's store on the fail-point server at `uri`, a fresh database, dropped afterwards."""
    settings = Settings(
        mongodb_uri=uri,
        mongodb_database=f"premix_faults_{uuid.uuid4().hex[:12]}",
        mongodb_timeout_seconds=timeout_seconds,
    )
    store = await Store.open(settings, key_ring)
    await store.ensure_indexes()
    try:
        yield store
    finally:
        await drop_quietly(store)
        await store.close()


@dataclass
class WatchedCollection:
    """The ledger's collection, recording the name of every PyMongo error it passed on."""

    inner: DocumentCollection
    errors: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name in ("find", "name"):
            return attribute

        async def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attribute(*args, **kwargs)
            except Exception as e:
                self.errors.append(type(e).__name__)
                raise

        return watched


class LosingReplies:
    """The ledger's collection on either store, with chosen writes (`replace_one` and
    `insert_one`, counted together from 1) going wrong as a flaky network makes them:

    - "lost": the write applies, then its reply is lost (`AutoReconnect`);
    - "retried": the write applies, its reply is lost, and the driver's retry of it matches
      nothing (the run is already at the new revision), so the caller sees matched_count 0;
    - "refused": the write never reaches the server (`AutoReconnect`), after `meanwhile` ran.
    """

    def __init__(
        self,
        inner: DocumentCollection,
        faults: dict[int, str],
        meanwhile: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.inner = inner
        self.faults = faults
        self.meanwhile = meanwhile
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def replace_one(self, *args: Any, **kwargs: Any) -> Any:
        return await self._write(self.inner.replace_one, *args, **kwargs)

    async def insert_one(self, *args: Any, **kwargs: Any) -> Any:
        return await self._write(self.inner.insert_one, *args, **kwargs)

    async def _write(self, write: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        self.writes += 1
        fault = self.faults.get(self.writes)
        if fault == "refused":
            if self.meanwhile is not None:
                await self.meanwhile()
            raise AutoReconnect("connection closed before the write was sent")
        result = await write(*args, **kwargs)
        if fault == "lost":
            raise AutoReconnect("connection closed after the write was sent")
        if fault == "retried":
            return await write(*args, **kwargs)
        return result


async def stored_run(store: Store, run_id: str) -> dict[str, Any] | None:
    return await store.collection(RUNS_COLLECTION).find_one({"_id": run_id})


async def planned_run(store: Store) -> RunRecord:
    """A run with a plan of two transfers, at revision 1, and one attempt added in memory."""
    ledger = Ledger(store)
    await ledger.open_run("premix-u1-1", user_id="u1", mode="fast", amount_lamports=30_000_000)
    recipients = [str(Pubkey.new_unique()) for _ in range(2)]
    record = await ledger.record_plan("premix-u1-1", recipients, [10_000_000, 20_000_000])
    assert record.revision == 1
    record.add_transaction([0, 1], signed_attempt("sig1"))
    return record


# --- Ledger.save and open_run on an ambiguous outcome, on both stores ---


async def test_a_save_that_applied_but_lost_its_reply_is_recognised_as_its_own_write(
    store: Store,
) -> None:
    record = await planned_run(store)
    collection = LosingReplies(store.collection(RUNS_COLLECTION), {1: "lost"})

    saved = await Ledger(collection).save(record)

    assert saved.revision == 2
    assert await stored_run(store, record.run_id) == as_server_sees_it(run_to_document(saved))
    assert collection.writes == 1  # read back, not written again


async def test_a_save_whose_driver_retry_matched_nothing_is_recognised_as_its_own_write(
    store: Store,
) -> None:
    record = await planned_run(store)
    collection = LosingReplies(store.collection(RUNS_COLLECTION), {1: "retried"})

    saved = await Ledger(collection).save(record)

    assert saved.revision == 2
    assert await stored_run(store, record.run_id) == as_server_sees_it(run_to_document(saved))


async def test_a_save_that_never_reached_the_store_is_written_again(store: Store) -> None:
    record = await planned_run(store)
    collection = LosingReplies(store.collection(RUNS_COLLECTION), {1: "refused"})

    saved = await Ledger(collection).save(record)

    assert (saved.revision, collection.writes) == (2, 2)
    assert await stored_run(store, record.run_id) == as_server_sees_it(run_to_document(saved))


async def test_a_save_beaten_by_another_writer_while_its_reply_was_lost_is_a_conflict(
    store: Store,
) -> None:
    record = await planned_run(store)
    other = await Ledger(store).require(record.run_id)
    other.add_transaction([0, 1], signed_attempt("sig-of-the-other-worker"))

    async def other_worker_saves() -> None:
        await Ledger(store).save(other)

    collection = LosingReplies(
        store.collection(RUNS_COLLECTION), {1: "refused"}, meanwhile=other_worker_saves
    )
    with pytest.raises(LedgerConflict) as raised:
        await Ledger(collection).save(record)

    assert str(raised.value) == (
        "Run is being processed by another worker: run premix-u1-1 changed since revision 1"
    )
    assert await stored_run(store, record.run_id) == as_server_sees_it(run_to_document(other))


async def test_a_save_the_store_never_confirms_is_a_transient_error_and_changes_nothing(
    store: Store,
) -> None:
    record = await planned_run(store)
    before = await stored_run(store, record.run_id)
    collection = LosingReplies(
        store.collection(RUNS_COLLECTION), dict.fromkeys(range(1, 10), "refused")
    )

    with pytest.raises(TransientError) as raised:
        await Ledger(collection).save(record)

    assert not isinstance(raised.value, LedgerConflict)
    assert str(raised.value) == (
        "Temporary failure: the store did not confirm revision 2 of run premix-u1-1 "
        "(AutoReconnect, 3 tries)"
    )
    assert (collection.writes, record.revision) == (3, 1)
    assert await stored_run(store, record.run_id) == before


@pytest.mark.parametrize("fault", ["lost", "refused"])
async def test_opening_a_run_whose_insert_went_wrong_returns_the_one_stored_run(
    store: Store, fault: str
) -> None:
    collection = LosingReplies(store.collection(RUNS_COLLECTION), {1: fault})

    run = await Ledger(collection).open_run(
        "premix-u1-1", user_id="u1", mode="fast", amount_lamports=30_000_000
    )

    assert await stored_run(store, run.run_id) == as_server_sees_it(run_to_document(run))
    assert await store.collection(RUNS_COLLECTION).count_documents({}) == 1


# --- fail points on SecantusDB: the ledger on its own ---


@pytest.mark.parametrize("fault", FAULTS, ids=str)
async def test_a_ledger_save_through_a_store_fault_is_written_exactly_once(
    failpoint_mongodb_url: str, fail_points: FailPoints, key_ring: KeyRing, fault: Fault
) -> None:
    async with faulty_store(faulty_store_uri(failpoint_mongodb_url, fault), key_ring) as store:
        record = await planned_run(store)
        watched = WatchedCollection(store.collection(RUNS_COLLECTION))
        await fail_points.arm(fault, ["update"])

        saved = await Ledger(watched).save(record)

        await fail_points.off()
        assert watched.errors[:1] == [fault.seen_as]
        assert saved.revision == 2
        assert await stored_run(store, record.run_id) == as_server_sees_it(run_to_document(saved))


async def test_a_ledger_save_whose_read_back_also_fails_is_written_exactly_once(
    failpoint_mongodb_url: str, fail_points: FailPoints, key_ring: KeyRing
) -> None:
    close = FAULTS[0]
    async with faulty_store(store_uri(failpoint_mongodb_url), key_ring) as store:
        record = await planned_run(store)
        # the write and its driver retry, then the read-back and its driver retry
        await fail_points.arm(close, ["update", "find"], times=4)

        saved = await Ledger(store).save(record)

        await fail_points.off()
        assert saved.revision == 2
        assert await stored_run(store, record.run_id) == as_server_sees_it(run_to_document(saved))


@pytest.mark.parametrize("fault", FAULTS, ids=str)
async def test_opening_a_run_through_a_store_fault_stores_it_once(
    failpoint_mongodb_url: str, fail_points: FailPoints, key_ring: KeyRing, fault: Fault
) -> None:
    async with faulty_store(faulty_store_uri(failpoint_mongodb_url, fault), key_ring) as store:
        await fail_points.arm(fault, ["insert"])

        run = await Ledger(store).open_run(
            "premix-u1-1", user_id="u1", mode="fast", amount_lamports=30_000_000
        )

        await fail_points.off()
        assert await stored_run(store, run.run_id) == as_server_sees_it(run_to_document(run))
        assert await store.collection(RUNS_COLLECTION).count_documents({}) == 1


# --- a store that stops answering ---

BLOCKED = next(fault for fault in FAULTS if fault.blocks)


@pytest.mark.parametrize(
    ("uri_socket_timeout_ms", "times_out"),
    [
        pytest.param(None, True, id="premix-default-timeout"),
        pytest.param(4 * BLOCK_MS, False, id="the-uris-own-timeout-wins"),
    ],
)
async def test_a_store_that_stops_answering_fails_the_read_instead_of_hanging_the_worker(
    failpoint_mongodb_url: str,
    fail_points: FailPoints,
    key_ring: KeyRing,
    uri_socket_timeout_ms: int | None,
    times_out: bool,
) -> None:
    # premix's own timeout, shortened so the block outlasts it
    uri = store_uri(failpoint_mongodb_url, uri_socket_timeout_ms)
    async with faulty_store(uri, key_ring, timeout_seconds=SOCKET_TIMEOUT_MS / 1000) as store:
        await Ledger(store).open_run("premix-u1-1", user_id="u1", mode="fast", amount_lamports=1)
        await fail_points.arm(BLOCKED, ["find"])  # the read and PyMongo's retry of it

        if times_out:
            with pytest.raises(NetworkTimeout):
                await Ledger(store).get("premix-u1-1")
        # the server answers again, or was waited out: the job's next try reads the run
        run = await Ledger(store).get("premix-u1-1")
        assert run is not None and run.user_id == "u1"


# --- fail points on SecantusDB: the engine, a fault at every ledger write ---


@pytest.mark.parametrize("fault", FAULTS, ids=str)
@pytest.mark.parametrize(
    ("mode", "write"),
    [(mode, k) for mode, (_, _, writes) in SCENARIOS.items() for k in range(writes)],
)
async def test_a_store_fault_at_any_ledger_write_is_resumed_in_place_and_pays_once(
    localnet: Localnet,
    failpoint_mongodb_url: str,
    fail_points: FailPoints,
    key_ring: KeyRing,
    fault: Fault,
    mode: str,
    write: int,
) -> None:
    wallets, transactions, _ = SCENARIOS[mode]
    async with faulty_store(faulty_store_uri(failpoint_mongodb_url, fault), key_ring) as store:
        harness = MixerHarness(localnet, store, wallets, mode)
        await harness.open()
        watched = WatchedCollection(store.collection(RUNS_COLLECTION))
        await fail_points.arm(fault, ["update"], skip=write)

        result = await harness.run(ledger=Ledger(watched))

        await fail_points.off()
        assert watched.errors[:1] == [fault.seen_as]
        assert result.complete
        await harness.assert_each_wallet_paid_exactly_once(transactions)
        record = await harness.record()
        # one execution, one attempt per transaction: nothing was signed again
        assert [len(tx.attempts) for tx in record.transactions] == [1] * transactions
        assert record.totals.sent_lamports == sum(harness.amounts)
        stored = await stored_run(store, harness.run_id)
        assert stored is not None and stored["totals"] == {
            "sent_lamports": sum(harness.amounts),
            "fee_lamports": 5_000 * transactions,
            "transactions": transactions,
        }


# --- fail points on SecantusDB: the worker's job through a real arq worker ---

# Which of premix's commands the fault hits: the job's first read (the ledger's, opening the
# run), the insert opening the run, the write of the first signed attempt (after the plan).
WORKER_MOMENTS = {"find": 0, "insert": 0, "update": 1}
WORKER_CASES = [
    pytest.param(fault, command, id=f"{fault}-on-{command}")
    for command in WORKER_MOMENTS
    for fault in (READ_FAULTS if command == "find" else FAULTS)
]


@pytest.fixture
async def worker_logging() -> AsyncIterator[None]:
    async with restored_logging():
        yield


@pytest.mark.parametrize(("fault", "command"), WORKER_CASES)
@pytest.mark.parametrize(("mode", "sol", "transactions"), [("standard", 2, 4), ("fast", 20, 2)])
async def test_the_worker_finishes_a_job_through_a_store_fault_paying_once(
    redis_url: str,
    fast_localnet: Localnet,
    failpoint_mongodb_url: str,
    fail_points: FailPoints,
    worker_logging: None,
    fault: Fault,
    command: str,
    mode: str,
    sol: int,
    transactions: int,
) -> None:
    net = fast_localnet
    settings = make_settings(
        redis_url,
        net.url,
        mongodb_uri=faulty_store_uri(failpoint_mongodb_url, fault),
        mongodb_database=f"premix_faults_{uuid.uuid4().hex[:12]}",
        retry_backoff_seconds=(0.01,),
    )
    async with open_store(settings) as store:
        try:
            user = await create_user(store, net, "u1")
            job_id = await enqueue(settings, "u1", sol, mode=mode)
            await fail_points.arm(fault, [command], skip=WORKER_MOMENTS[command])

            await run_worker(settings, rpc=TestRpc(net.url))

            await fail_points.off()
            info = await job_result(settings, job_id)
            assert info.result["success"] is True, info.result["message"]
            # a failed write is settled in place; a failed read hands the job back to arq once
            assert info.job_try == (2 if command == "find" else 1)
            await assert_paid_exactly_once(store, net, user, job_id, sol * SOL, transactions)
            run = await Ledger(store).require(job_id)
            assert run.totals.sent_lamports == sol * SOL
            assert info.result["totals"]["sentLamports"] == sol * SOL
            assert info.result["totals"]["feeLamports"] == 5_000 * transactions
        finally:
            await fail_points.off()
            await drop_quietly(store)
