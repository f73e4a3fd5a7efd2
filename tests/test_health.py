"""`premix health [--json]` as a subprocess against real services: a Valkey, the session's
SecantusDB, a localnet and a real arq worker (its beacon counted live, gone once it stops):
exit 0; with Redis, MongoDB and the RPC node down: each named DOWN, exit 1, quickly."""

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from arq.worker import Worker
from redis.asyncio import Redis

from premix.health import beacon_pattern
from premix.localnet import Localnet
from premix.servers import free_port
from premix.settings import Settings
from premix.worker import worker_settings
from tests.test_cli import _PREMIX_VARIABLES, Completed
from tests.worker.helpers import make_settings, restored_logging


async def premix_async(*args: str, env: Mapping[str, str]) -> Completed:
    """`python -m premix.cli ARGS` without blocking the event loop (a worker runs in it)."""
    environment = {k: v for k, v in os.environ.items() if k not in _PREMIX_VARIABLES}
    environment.update(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "premix.cli", *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Completed(process.returncode, stdout.decode(), stderr.decode())


@pytest.fixture
def settings(redis_url: str, mongodb_url: str, fast_localnet: Localnet) -> Settings:
    return make_settings(
        redis_url,
        fast_localnet.url,
        mongodb_uri=mongodb_url,
        mongodb_database=f"premix_health_{uuid.uuid4().hex[:12]}",
    )


def env_of(settings: Settings) -> dict[str, str]:
    return {
        "PREMIX_REDIS_URL": settings.redis_url,
        "PREMIX_MONGODB_URI": settings.mongodb_uri,
        "PREMIX_MONGODB_DATABASE": settings.mongodb_database,
        "PREMIX_RPC_URL": settings.rpc_url,
    }


@contextlib.asynccontextmanager
async def live_worker(settings: Settings) -> AsyncIterator[Redis]:
    """A real arq worker (not burst) until the block ends; yields a Redis client once its
    beacon is written."""
    async with restored_logging():
        worker = Worker(
            **worker_settings(settings), handle_signals=False, ctx={"settings": settings}
        )
        task = asyncio.create_task(worker.async_run())
        redis = Redis.from_url(settings.redis_url)
        try:
            async with asyncio.timeout(30):
                while not [k async for k in redis.scan_iter(beacon_pattern(settings.queue_name))]:
                    await asyncio.sleep(0.05)
            yield redis
        finally:
            await worker.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await redis.aclose()


async def test_health_with_every_service_up_and_a_live_worker_is_exit_0(
    settings: Settings,
) -> None:
    async with live_worker(settings) as redis:
        result = await premix_async("health", "--json", env=env_of(settings))
        human = await premix_async("health", env=env_of(settings))
        beacons = [key async for key in redis.scan_iter(beacon_pattern(settings.queue_name))]

    assert result.status == 0, result
    report: dict[str, Any] = result.json()
    assert report["ok"] is True
    assert report["redis"]["ok"] and report["mongodb"]["ok"] and report["rpc"]["ok"]
    assert "embedded" not in report["mongodb"]
    rpc = report["rpc"]
    assert rpc["slot"] >= rpc["finalizedSlot"] >= 0 and rpc["lagSlots"] == (
        rpc["slot"] - rpc["finalizedSlot"]
    )
    assert report["workers"]["live"] == 1 == len(beacons)
    [process] = report["workers"]["processes"]
    assert (process["pid"], process["maxJobs"]) == (os.getpid(), settings.worker_max_jobs)
    assert report["queue"]["name"] == settings.queue_name
    assert report["queue"]["depth"] == report["queue"]["due"] + report["queue"]["deferred"]
    assert human.status == 0, human
    assert human.stdout.splitlines()[-1] == "healthy"
    assert human.stdout.startswith("redis    ok ")
    assert "workers  ok" in human.stdout and " 1 live" in human.stdout
    assert settings.mongodb_uri not in human.stdout + result.stdout  # never the URI


async def test_a_stopped_worker_no_longer_counts_as_live(settings: Settings) -> None:
    async with live_worker(settings):
        pass

    result = await premix_async("health", "--json", env=env_of(settings))

    assert result.status == 1, result
    report = result.json()
    assert report["ok"] is False
    assert report["redis"]["ok"] and report["mongodb"]["ok"] and report["rpc"]["ok"]
    assert report["workers"] == {
        "ok": False,
        "latencyMs": report["workers"]["latencyMs"],
        "live": 0,
        "processes": [],
        "error": f"no live worker on queue {settings.queue_name}",
    }


async def test_health_with_every_service_down_names_each_and_is_exit_1(
    unreachable_redis_url: str,
) -> None:
    env = {
        "PREMIX_REDIS_URL": unreachable_redis_url,
        "PREMIX_MONGODB_URI": f"mongodb://premix:hunter2@127.0.0.1:{free_port()}",
        "PREMIX_RPC_URL": f"http://127.0.0.1:{free_port()}",
    }

    result = await premix_async("health", env=env)
    machine = await premix_async("health", "--json", env=env)

    assert result.status == 1 and machine.status == 1, result
    lines = result.stdout.splitlines()
    for line, name in zip(lines, ["redis", "mongodb", "rpc", "workers", "queue"], strict=False):
        assert line.startswith(f"{name:<8} DOWN"), line
    assert lines[-1] == "unhealthy"
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stdout + result.stderr + machine.stdout
    report = machine.json()
    assert [report[name]["ok"] for name in ("redis", "mongodb", "rpc", "workers", "queue")] == [
        False
    ] * 5
