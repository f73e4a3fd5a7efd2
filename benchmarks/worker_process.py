"""A stand-alone premix worker process, so its memory is measured apart from the benchmark's.

    python -m benchmarks.worker_process --user bench-rss --buyers 73

Configured by `PREMIX_*` variables exactly like `arq premix.worker.WorkerSettings` (the
benchmark passes a private Redis, a `memory://` store, the localnet URL and a throwaway key).
It stores a funding wallet and `--buyers` buyer wallets for each `--user` in its own embedded
store, starts a real arq `Worker` with `premix.worker`'s settings, and prints one JSON line
when the worker polls: `{"ready": true, "funding": {user: public key}}` (the benchmark funds
those). On SIGTERM or SIGINT it stops the worker and prints `{"peak_rss_bytes": ...}`: the
process's peak resident set size (VmHWM on Linux, else `resource.getrusage`).

`WorkerProcess` is the benchmarks' side of it: starts it as a child and reads those lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from arq.worker import Worker
from solders.keypair import Keypair

from premix.settings import Settings
from premix.store import Store
from premix.worker import worker_settings

STARTUP_TIMEOUT_SECONDS = 30.0
REPO_ROOT = Path(__file__).resolve().parents[1]


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes.

    On Linux, `VmHWM` from /proc/self/status: `getrusage`'s ru_maxrss survives `execve`, so in a
    child it starts at the size of the parent that forked it (the benchmark process, which is
    far larger than a worker). Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   80832 kB"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


async def seed_wallets(settings: Settings, users: list[str], buyers: int) -> dict[str, str]:
    """Store a funding wallet and `buyers` buyer wallets per user; return funding public keys."""
    store = await Store.open(settings)
    await store.ensure_indexes()
    funding: dict[str, str] = {}
    try:
        for user in users:
            keypair = Keypair()
            await store.wallets.set_funding_wallet(user, keypair)
            await store.wallets.add_buyer_wallets(user, [Keypair() for _ in range(buyers)])
            funding[user] = str(keypair.pubkey())
    finally:
        await store.close()
    return funding


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", action="append", default=[], help="user id to store wallets for")
    parser.add_argument("--buyers", type=int, default=73, help="buyer wallets per user")
    args = parser.parse_args(argv)
    settings = Settings()
    funding = await seed_wallets(settings, args.user, args.buyers)
    baseline = peak_rss_bytes()

    started = asyncio.Event()
    options = worker_settings(settings)
    premix_startup = options["on_startup"]

    async def startup(ctx: dict[str, Any]) -> None:
        await premix_startup(ctx)
        started.set()

    options["on_startup"] = startup
    worker = Worker(**options, handle_signals=False, ctx={"settings": settings})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    task = asyncio.create_task(worker.main())
    async with asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
        await asyncio.wait(
            [task, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED
        )
    if task.done():
        task.result()  # startup failed: raise its error
    emit({"ready": True, "funding": funding, "baseline_rss_bytes": baseline})
    await stop.wait()
    # let a job that is finishing (result being stored) end, then stop polling
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await worker.close()
    emit({"peak_rss_bytes": peak_rss_bytes(), "baseline_rss_bytes": baseline})


class WorkerProcess:
    """`benchmarks.worker_process` as a child process with premix settings in its environment."""

    def __init__(self, settings: Settings, users: list[str], buyers: int) -> None:
        self.settings = settings
        self.users = users
        self.buyers = buyers
        self.process: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}

    async def start(self) -> dict[str, Any]:
        """Start the process; return its ready line (`funding`: user -> funding public key)."""
        env = dict(os.environ)
        env.update(
            {
                "PREMIX_REDIS_URL": self.settings.redis_url,
                "PREMIX_RPC_URL": self.settings.rpc_url,
                "PREMIX_MONGODB_URI": self.settings.mongodb_uri,
                "PREMIX_MONGODB_DATABASE": self.settings.mongodb_database,
                "PREMIX_ENCRYPTION_KEYS": self.settings.encryption_keys.get_secret_value(),
                "PREMIX_ALLOW_MEMORY_STORE": str(self.settings.allow_memory_store),
                "PREMIX_RPC_MAX_REQUESTS_PER_SECOND": str(
                    self.settings.rpc_max_requests_per_second
                ),
                "PREMIX_WORKER_MAX_JOBS": str(self.settings.worker_max_jobs),
                "PREMIX_LOG_LEVEL": "ERROR",  # pickup jobs fail in phase 2 by design
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])
                ),
            }
        )
        arguments = [f"--user={user}" for user in self.users] + [f"--buyers={self.buyers}"]
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.worker_process",
            *arguments,
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        self.ready = await self._read_json()
        return self.ready

    async def stop(self) -> dict[str, Any]:
        """SIGTERM the process; return its last line (`peak_rss_bytes`, `baseline_rss_bytes`)."""
        assert self.process is not None
        self.process.terminate()
        report = await self._read_json()
        await self.process.wait()
        return report

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def _read_json(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise RuntimeError("the benchmark worker process ended unexpectedly")
                if line.startswith(b"{"):
                    report: dict[str, Any] = json.loads(line)
                    return report


if __name__ == "__main__":
    asyncio.run(main())
