"""Fixtures shared by the worker tests: a fast localnet, settings pointing at the test Redis,
that localnet and a fresh memory store, the store opened on them, and logging restored after
each test (the worker configures structlog)."""

from collections.abc import AsyncIterator

import pytest

from premix.localnet import Localnet
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import make_settings, open_store, restored_logging


@pytest.fixture
def net(fast_localnet: Localnet) -> Localnet:
    return fast_localnet


@pytest.fixture
def settings(redis_url: str, net: Localnet) -> Settings:
    return make_settings(redis_url, net.url)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with open_store(settings) as opened:
        yield opened


@pytest.fixture(autouse=True)
async def _restore_logging() -> AsyncIterator[None]:
    async with restored_logging():
        yield
