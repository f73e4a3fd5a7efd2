"""Fixtures shared by the worker tests: a fast localnet, settings pointing at the test Redis,
that localnet and a fresh store (each test using them runs twice: on a memory:// store and on a
fresh database of the session's MongoDB-wire server), the store opened on them, and logging
restored after each test (the worker configures structlog)."""

from collections.abc import AsyncIterator

import pytest

from premix.localnet import Localnet
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import open_store, restored_logging, settings_on_store


@pytest.fixture
def net(fast_localnet: Localnet) -> Localnet:
    return fast_localnet


@pytest.fixture(params=["memory", "mongodb"])
def settings(request: pytest.FixtureRequest, redis_url: str, net: Localnet) -> Settings:
    return settings_on_store(request, redis_url, net.url, database_prefix="premix_worker")


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with open_store(settings) as opened:
        yield opened


@pytest.fixture(autouse=True)
async def _restore_logging() -> AsyncIterator[None]:
    async with restored_logging():
        yield
