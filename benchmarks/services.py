"""A private, throwaway `redis-server` on a free loopback port, so the machine's Redis (6379)
is never written to by a benchmark. No persistence; stopped (and its data gone) on exit."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis as redis_sync

START_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def private_redis() -> Iterator[str]:
    """Start `redis-server` on a free port; yield its URL; stop it afterwards.

    Raises `RuntimeError` when redis-server is missing or does not start.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="premix-bench-redis-") as workdir:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = redis_sync.Redis(host="127.0.0.1", port=port)
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while True:
                try:
                    client.ping()
                    break
                except redis_sync.ConnectionError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError(f"redis-server did not start on port {port}") from None
                    time.sleep(0.02)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)
