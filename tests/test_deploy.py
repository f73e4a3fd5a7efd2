"""Deployment files: the worker's Dockerfile and docker-compose.yml with the real services.

`docker compose config` (or the older `docker-compose config`) validates the compose file when
one of them is installed (CI installs Debian's `docker-compose`); the wiring checks read the
file itself, so they run everywhere.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.fixtures import missing_tool

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def compose_command() -> list[str] | None:
    """`docker compose` when the plugin answers, else `docker-compose`, else None."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def service_blocks(text: str) -> dict[str, list[str]]:
    """The lines of each service under `services:` (a two-space-indented key), by name."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_services = False
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            in_services = line.rstrip() == "services:"
            current = None
            continue
        if in_services and re.match(r"^  [A-Za-z0-9_-]+:\s*$", line):
            current = blocks.setdefault(line.strip().rstrip(":"), [])
        elif in_services and current is not None:
            current.append(line)
    return blocks


def environment_of(block: list[str]) -> dict[str, str]:
    """`KEY: value` pairs of a service's `environment:` mapping."""
    environment: dict[str, str] = {}
    inside = False
    for line in block:
        if re.match(r"^    environment:\s*$", line):
            inside = True
            continue
        if inside:
            match = re.match(r"^      ([A-Z0-9_]+):\s*(.*?)\s*$", line)
            if match is None:
                if not line.startswith("      "):
                    inside = False
                continue
            environment[match.group(1)] = match.group(2).strip("'\"")
    return environment


def test_dockerfile_runs_the_arq_worker() -> None:
    commands = [
        line for line in DOCKERFILE.read_text().splitlines() if line.strip().startswith("CMD")
    ]

    assert len(commands) == 1
    assert json.loads(commands[0].removeprefix("CMD").strip()) == [
        "arq",
        "premix.worker.WorkerSettings",
    ]


def test_compose_file_is_accepted_by_docker_compose_config() -> None:
    command = compose_command()
    if command is None:
        missing_tool("neither `docker compose` nor `docker-compose` is installed")
    environment = {**os.environ, "PREMIX_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "="}

    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_the_worker_without_encryption_keys() -> None:
    command = compose_command()
    if command is None:
        missing_tool("neither `docker compose` nor `docker-compose` is installed")
    environment = {k: v for k, v in os.environ.items() if k != "PREMIX_ENCRYPTION_KEYS"}

    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "set PREMIX_ENCRYPTION_KEYS" in result.stderr


def test_compose_wires_the_worker_to_redis_mongodb_and_the_validator() -> None:
    services = service_blocks(COMPOSE_FILE.read_text())

    assert {"redis", "mongodb", "validator", "worker"} <= set(services)
    environment = environment_of(services["worker"])
    assert environment["PREMIX_REDIS_URL"] == "redis://redis:6379/0"
    assert environment["PREMIX_MONGODB_URI"] == "mongodb://mongodb:27017"
    assert environment["PREMIX_RPC_URL"] == "http://validator:8899"
    assert environment["PREMIX_ENCRYPTION_KEYS"].startswith("${PREMIX_ENCRYPTION_KEYS:?")
    worker = "\n".join(services["worker"])
    assert "build: ." in worker
    for dependency in ("redis", "mongodb", "validator"):
        assert f"      {dependency}:" in worker  # depends_on


def test_compose_redis_persists_with_append_only_file_on_a_volume() -> None:
    redis = "\n".join(service_blocks(COMPOSE_FILE.read_text())["redis"])

    assert re.search(r"--appendonly[\"',\s]+yes", redis)
    assert "redis-data:/data" in redis


def test_compose_validator_is_a_solana_test_validator_on_8899() -> None:
    validator = "\n".join(service_blocks(COMPOSE_FILE.read_text())["validator"])

    assert "solana-test-validator" in validator
    assert '"--rpc-port", "8899"' in validator
