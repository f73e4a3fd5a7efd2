"""A private, throwaway `redis-server` on a free loopback port, so the machine's Redis (6379)
is never written to by a benchmark or a test. Also used by the test fixtures (tests/fixtures/
redis.py) and the Redis-restart test, which turns on append-only persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis as redis_sync

START_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One `redis-server` process on a free loopback port, keeping its files in `workdir`.

    `appendonly=True` persists every write (fsync always), so `restart()` keeps the data.
    `start()` raises `RuntimeError` when redis-server is missing or does not start.
    """

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.workdir = workdir
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else []
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *persistence, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis_sync.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis_sync.ConnectionError, redis_sync.BusyLoadingError):
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        self.stop()
                        raise RuntimeError(
                            f"redis-server did not start on port {self.port}"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: redis-server writes out its append-only file and exits."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_redis() -> Iterator[str]:
    """Start `redis-server` on a free port; yield its URL; stop it afterwards (data gone)."""
    with tempfile.TemporaryDirectory(prefix="premix-redis-") as workdir:
        server = RedisServer(Path(workdir))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
