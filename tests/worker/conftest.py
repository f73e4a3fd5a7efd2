"""Fixtures shared by the worker tests: a fast localnet, settings pointing at the test Redis,
that localnet and a fresh store (each test using them runs twice: on a memory:// store and on a
fresh database of the session's MongoDB-wire server), the store opened on them, and logging
restored after each test (the worker configures structlog)."""

import uuid
from collections.abc import AsyncIterator

import pytest

from premix.localnet import Localnet
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import make_settings, open_store, restored_logging


@pytest.fixture
def net(fast_localnet: Localnet) -> Localnet:
    return fast_localnet


@pytest.fixture(params=["memory", "mongodb"])
def settings(request: pytest.FixtureRequest, redis_url: str, net: Localnet) -> Settings:
    if request.param == "memory":
        return make_settings(redis_url, net.url)
    return make_settings(
        redis_url,
        net.url,
        mongodb_uri=request.getfixturevalue("mongodb_url"),
        mongodb_database=f"premix_worker_{uuid.uuid4().hex[:12]}",
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with open_store(settings) as opened:
        yield opened


@pytest.fixture(autouse=True)
async def _restore_logging() -> AsyncIterator[None]:
    async with restored_logging():
        yield
