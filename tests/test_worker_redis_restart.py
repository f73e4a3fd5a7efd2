"""Redis restarts in the middle of a run (SPEC section 9): the queue survives on disk
(append-only file), the worker rides through the outage, and the run finishes with every
balance exactly as planned and nothing paid twice."""

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from tests.fixtures.redis import free_port
from tests.test_worker_crash import assert_paid_exactly_once
from tests.test_worker_helpers import (
    TestRpc,
    create_user,
    job_result,
    make_settings,
    open_store,
    restored_logging,
    run_worker,
)

SOL = 10**9


class PersistentRedis:
    """A private redis-server with append-only persistence that can be restarted in place."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis_sync.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except (redis_sync.ConnectionError, redis_sync.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: redis flushes the append-only file and exits
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    server = PersistentRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
async def _restore_logging() -> AsyncIterator[None]:
    async with restored_logging():
        yield


@pytest.mark.parametrize(("mode", "sol", "transactions"), [("standard", 2, 4), ("fast", 20, 2)])
async def test_redis_restart_mid_run_finishes_with_exact_balances(
    persistent_redis: PersistentRedis,
    fast_localnet: Localnet,
    mode: str,
    sol: int,
    transactions: int,
) -> None:
    settings: Settings = make_settings(persistent_redis.url, fast_localnet.url)
    async with open_store(settings) as store:
        user = await create_user(store, fast_localnet, "u1")
        queued = await enqueue_premix_funds("u1", 42, sol, {"mode": mode}, settings=settings)
        assert queued.success and queued.job_id is not None

        def restart_redis_after_first_send(method: str, count: int) -> None:
            if (method, count) == ("send", 1):
                persistent_redis.restart()  # blocks the worker's loop, as a real outage would

        finished = await run_worker(
            settings, rpc=TestRpc(fast_localnet.url, on_call=restart_redis_after_first_send)
        )

        assert finished and persistent_redis.restarts == 1
        result = (await job_result(settings, queued.job_id)).result
        assert result["success"] is True, result["message"]
        await assert_paid_exactly_once(
            store, fast_localnet, user, queued.job_id, sol * SOL, transactions
        )
