"""Worker processes for the crash suite: `arq premix.worker.WorkerSettings` as a subprocess.

Each worker is configured only by PREMIX_* environment variables (the test's `Settings`,
exported field by field; nothing else of the test's PREMIX_* environment leaks in), runs with
the repository root as its working directory, and writes its JSON log lines to a file of its
own, so a failure can show what each worker did. Its RPC URL carries a path of its own
(`/worker-<n>`; the localnet answers on any path), so the localnet's interceptors can tell
which worker sent a request. `kill()` is SIGKILL: nothing of the worker's own clean-up runs,
exactly as in a crash; `stop()`/`resume()` (SIGSTOP/SIGCONT) stall it, as a frozen VM would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from premix.settings import Settings

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
ARQ: Final = Path(sys.executable).parent / "arq"
# The settings a worker needs, exported as PREMIX_<NAME IN CAPITALS>.
EXPORTED_SETTINGS: Final = (
    "redis_url",
    "queue_name",
    "mongodb_uri",
    "mongodb_database",
    "rpc_url",
    "encryption_keys",
    "worker_poll_delay_seconds",
    "confirm_poll_seconds",
    "priority_fee",
    "slot_seconds",
    "job_timeout_seconds",
    "user_lock_ttl_seconds",
    "job_max_tries",
    "log_level",
    "log_json",
    "rpc_max_requests_per_second",
    "rpc_budget_workers",
    "worker_max_jobs",
)
LOG_TAIL_LINES: Final = 25
# arq's own log lines: a job starting (→), and ending (← done, ↻ retried, ! failed, ⊘ aborted).
ARQ_JOB_START: Final = " → "
ARQ_JOB_ENDS: Final = (" ← ", " ↻ ", " ! ", " ⊘ ")


def worker_environment(settings: Settings) -> dict[str, str]:
    """The process environment of a worker configured like `settings`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREMIX_")}
    for name in EXPORTED_SETTINGS:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        environment[f"PREMIX_{name.upper()}"] = str(value)
    return environment


class WorkerProcess:
    """One worker subprocess (generation n of a scenario) and its log file."""

    def __init__(self, generation: int, process: subprocess.Popen[bytes], log_path: Path):
        self.generation = generation
        self.process = process
        self.log_path = log_path

    @staticmethod
    def rpc_path_of(generation: int) -> str:
        return f"/worker-{generation}"

    @property
    def rpc_path(self) -> str:
        """The path of this worker's RPC URL: its requests at the localnet carry it."""
        return self.rpc_path_of(self.generation)

    @classmethod
    def start(cls, settings: Settings, log_dir: Path, generation: int) -> WorkerProcess:
        """Start generation `generation`; it logs to `log_dir/worker-<generation>.log`."""
        log_path = log_dir / f"worker-{generation}.log"
        rpc_url = settings.rpc_url.rstrip("/") + cls.rpc_path_of(generation)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(ARQ), "premix.worker.WorkerSettings"],
                cwd=REPO_ROOT,
                env=worker_environment(settings.model_copy(update={"rpc_url": rpc_url})),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(generation, process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_kill(self) -> None:
        """Send SIGKILL without waiting (safe from any thread, also after the process ended)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGSTOP: the process freezes where it is (its sockets stay open)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a stopped process goes on from where it froze."""
        self._signal(signal.SIGCONT)

    def _signal(self, signal_number: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal_number)

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.alive:
            self.signal_kill()
        self.process.wait()

    def events(self) -> Iterator[dict[str, Any]]:
        """The structured log events the worker wrote so far (its JSON lines)."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    yield json.loads(line)

    def executing(self) -> bool:
        """True while arq in this worker runs a job (one at a time: max_jobs=1), as its log
        says: the last job line it wrote is a start."""
        running = False
        for event in self.events():
            if event.get("logger") != "arq.worker":
                continue
            text = str(event.get("event", ""))
            if ARQ_JOB_START in text:
                running = True
            elif any(mark in text for mark in ARQ_JOB_ENDS):
                running = False
        return running

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The end of the worker's output, for failure messages."""
        text = self.log_path.read_text(errors="replace").splitlines()
        status = "running" if self.alive else f"exit {self.process.returncode}"
        return f"-- worker {self.generation} (pid {self.pid}, {status}) --\n" + "\n".join(
            text[-lines:]
        )
