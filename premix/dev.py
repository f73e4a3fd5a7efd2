"""`premix dev`: the service as separate processes on one machine, without Docker: a localnet
(LiteSVM behind JSON-RPC, in this process), a private Valkey, a SecantusDB (both from the
`local` extra) and N arq worker processes (`arq premix.worker.WorkerSettings`), all on
loopback, in a temporary directory; `environment()` is what another terminal exports so
`premix wallets ...`, `premix enqueue ...` or a bot script reach them.

The encryption key is generated for the session and written to a file readable only by its
owner (`keys_file`); it is never printed. Every child dies with this process (Linux
PR_SET_PDEATHSIG) and `DevStack.stop` ends them all: workers first (SIGTERM, then SIGKILL
after `WORKER_STOP_SECONDS`), then the servers. Nothing it did not start is touched.
"""

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from redis import Redis

from premix.health import beacon_pattern
from premix.keys import KeyRing
from premix.localnet import Localnet
from premix.servers import SecantusServer, ServerError, ValkeyServer, die_with_parent
from premix.settings import Settings

WORKER_START_SECONDS: Final = 60.0
WORKER_STOP_SECONDS: Final = 10.0
DATABASE: Final = "premix"
ARQ_MAIN: Final = "from arq.cli import cli; cli()"  # `arq ...` with this interpreter


class DevError(RuntimeError):
    """`premix dev` could not start its stack (the message says which part and why)."""


@dataclass
class DevStack:
    """The processes `premix dev` started, and the environment that reaches them."""

    workdir: Path
    localnet: Localnet
    valkey: ValkeyServer
    secantus: SecantusServer
    keys_file: Path
    slot_ms: int
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        """The `PREMIX_*` variables (no secret: the key stays in `keys_file`)."""
        return {
            "PREMIX_REDIS_URL": self.valkey.url,
            "PREMIX_MONGODB_URI": self.secantus.url,
            "PREMIX_MONGODB_DATABASE": DATABASE,
            "PREMIX_RPC_URL": self.localnet.url,
            "PREMIX_SLOT_SECONDS": f"{self.slot_ms / 1000:g}",
        }

    def export_lines(self) -> list[str]:
        """Shell lines for another terminal; the key is read from its file, not shown."""
        variables = self.environment().items()
        lines = [f"export {name}={shlex.quote(value)}" for name, value in variables]
        lines.append(f'export PREMIX_ENCRYPTION_KEYS="$(cat {shlex.quote(str(self.keys_file))})"')
        return lines

    def worker_environment(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREMIX_")}
        keys = self.keys_file.read_text().strip()
        return {**base, **self.environment(), "PREMIX_ENCRYPTION_KEYS": keys}

    def start_workers(self, count: int) -> None:
        """Start `count` worker processes and wait until each is live (its beacon in Redis)."""
        environment = self.worker_environment()
        for number in range(1, count + 1):
            log_path = self.workdir / f"worker-{number}.log"
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
                    [sys.executable, "-c", ARQ_MAIN, "premix.worker.WorkerSettings"],
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                )
                self.workers.append(process)
        self._wait_for_workers(count)

    def _wait_for_workers(self, count: int) -> None:
        redis = Redis.from_url(self.valkey.url)
        settings = Settings(queue_name=Settings().queue_name)
        deadline = time.monotonic() + WORKER_START_SECONDS
        try:
            while time.monotonic() < deadline:
                for number, process in enumerate(self.workers, start=1):
                    if process.poll() is not None:
                        raise DevError(
                            f"worker {number} exited ({process.returncode}): "
                            + self.worker_log_tail(number)
                        )
                live = len(list(redis.scan_iter(beacon_pattern(settings.queue_name))))
                if live >= count:
                    return
                time.sleep(0.1)
        finally:
            redis.close()
        raise DevError(f"the workers were not live within {WORKER_START_SECONDS:g} s")

    def worker_log_tail(self, number: int, lines: int = 5) -> str:
        path = self.workdir / f"worker-{number}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "no output"

    def stop(self) -> None:
        """End every process this stack started: workers, then the servers, then the node."""
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_SECONDS
        for process in self.workers:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for server in (self.secantus, self.valkey):
            with contextlib.suppress(Exception):
                server.stop()
        self.localnet.stop()


@contextlib.contextmanager
def dev_stack(*, workers: int, port: int, slot_ms: int) -> Iterator[DevStack]:
    """Start the whole stack (see the module); stop all of it when the block ends. Raises
    `DevError` naming what could not start."""
    with tempfile.TemporaryDirectory(prefix="premix-dev-") as directory:
        workdir = Path(directory)
        localnet = Localnet(slot_ms=slot_ms, host="127.0.0.1", port=port)
        try:
            localnet.start()
        except OSError as e:
            raise DevError(f"the localnet cannot listen on 127.0.0.1:{port}: {e.strerror}") from e
        stack: DevStack | None = None
        try:
            valkey = ValkeyServer(workdir / "valkey")
            secantus = SecantusServer(workdir / "secantusdb")
            for server in (valkey, secantus):
                server.workdir.mkdir()
                server.die_with_parent = True
            keys_file = workdir / "encryption-keys"
            keys_file.touch(mode=0o600)
            keys_file.write_text(KeyRing.generate_key("dev1") + "\n")
            stack = DevStack(workdir, localnet, valkey, secantus, keys_file, slot_ms)
            valkey.start()
            secantus.start()
            stack.start_workers(workers)
            yield stack
        except ServerError as e:
            raise DevError(str(e)) from e
        finally:
            if stack is not None:
                stack.stop()
            else:
                localnet.stop()
