"""`premix dev` as a subprocess: it starts a localnet, a Valkey, a SecantusDB and two worker
processes and prints the environment to export; from this (another) process, with only that
environment, wallets are stored, a premix is enqueued and its wallets are funded on the chain;
SIGINT stops everything it started (its ports close, its directory goes) and nothing else."""

import asyncio
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.pubkey import Pubkey

from premix.queue import close_queue, enqueue_premix_funds, get_premix_result
from premix.settings import Settings
from premix.store import Store
from tests.test_cli import _PREMIX_VARIABLES
from tests.worker.helpers import create_user

SOL = 10**9


def start_dev(*args: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k not in _PREMIX_VARIABLES}
    return subprocess.Popen(
        [sys.executable, "-m", "premix.cli", "dev", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_exports(process: subprocess.Popen[str]) -> tuple[dict[str, str], list[str]]:
    """The variables `premix dev` printed (the key read from its file, as a shell would)."""
    assert process.stdout is not None
    exported: dict[str, str] = {}
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("premix dev: ready"):
            return exported, lines
        if line.startswith("export PREMIX_ENCRYPTION_KEYS="):
            [path] = re.findall(r'\$\(cat (.+)\)"$', line.strip())
            exported["PREMIX_ENCRYPTION_KEYS"] = Path(shlex.split(path)[0]).read_text().strip()
        elif line.startswith("export "):
            name, _, value = line.removeprefix("export ").strip().partition("=")
            exported[name] = shlex.split(value)[0]
    raise AssertionError(f"premix dev ended before it was ready: {''.join(lines)}")


def port_closed(url: str) -> bool:
    host, port = re.findall(r"//([\d.]+):(\d+)", url)[0]
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, int(port))) != 0


async def test_premix_dev_runs_a_premix_enqueued_from_another_process_then_stops_it_all() -> None:
    process = start_dev("--workers", "2", "--port", "0", "--slot-ms", "20")
    try:
        exported, printed = await asyncio.to_thread(read_exports, process)
        assert "2 worker(s)" in printed[0]
        key = exported.pop("PREMIX_ENCRYPTION_KEYS")
        assert key not in "".join(printed)  # the key is in its file, never on the screen
        settings = Settings(
            redis_url=exported["PREMIX_REDIS_URL"],
            mongodb_uri=exported["PREMIX_MONGODB_URI"],
            mongodb_database=exported["PREMIX_MONGODB_DATABASE"],
            rpc_url=exported["PREMIX_RPC_URL"],
            encryption_keys=SecretStr(key),
        )
        store = await Store.open(settings)  # as `premix wallets create` would, from here
        try:
            user = await create_user(store, None, "u1", buyers=5, funding_lamports=0)
        finally:
            await store.close()
        async with AsyncClient(settings.rpc_url) as client:
            await client.request_airdrop(user.funding.pubkey(), 5 * SOL)

            queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
            assert queued.success, queued.message
            assert queued.job_id is not None
            receipt = None
            async with asyncio.timeout(60):
                while receipt is None or receipt["status"] != "completed":
                    await asyncio.sleep(0.1)
                    receipt = await get_premix_result(queued.job_id, settings=settings)
            await close_queue()
            balances = [
                (await client.get_balance(Pubkey.from_string(w["publicKey"]), Confirmed)).value
                for w in receipt["wallets"]
            ]
        assert balances == [w["lamports"] for w in receipt["wallets"]]
        assert sum(balances) == 2 * SOL

        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, stderr
    assert "premix: dev: stopped everything it started" in stderr
    workdir = re.findall(r"logs in (\S+)\)", printed[0])[0]
    assert not Path(workdir).exists()
    for name in ("PREMIX_REDIS_URL", "PREMIX_MONGODB_URI", "PREMIX_RPC_URL"):
        assert port_closed(exported[name]), f"{name} still answers after premix dev stopped"
