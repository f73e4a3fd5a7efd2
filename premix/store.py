"""MongoDB storage: `Store`, premix's database on PyMongo's `AsyncMongoClient`, or the embedded
`memory://` store (`premix.memory_store`), with the wallet store (`premix.wallets`) on its
`wallets` collection."""

from datetime import UTC
from typing import Any
from urllib.parse import parse_qsl

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError, PyMongoError

from premix.constants import WALLETS_COLLECTION
from premix.documents import Document, DocumentCollection
from premix.errors import PremixError, TransientError
from premix.keys import KeyRing
from premix.memory_store import (
    EmbeddedStoreMissing,
    MemoryCollection,
    memory_database,
    reset_memory_stores,
)
from premix.settings import MEMORY_STORE_URI, Settings
from premix.wallets import WalletStore

__all__ = ["Store", "StoreConfigError", "reset_memory_stores"]


class StoreConfigError(PremixError):
    """`PREMIX_MONGODB_URI` cannot be used. The message never repeats the URI (it may hold a
    password)."""

    title = "Store misconfigured"


class Store:
    """premix's MongoDB database: raw collections plus the wallet store.

    Open once per process with `await Store.open(settings)`; `close()` when done.
    """

    def __init__(
        self,
        *,
        database_name: str,
        key_ring: KeyRing | None,
        client: AsyncMongoClient[Document] | None = None,
        memory_uri: str | None = None,
    ) -> None:
        """Prefer `Store.open`. Exactly one of `client` (MongoDB) or `memory_uri` is given."""
        if (client is None) == (memory_uri is None):
            raise ValueError("give exactly one of client or memory_uri")
        self.database_name = database_name
        self._client = client
        self._memory_uri = memory_uri
        self._database: AsyncDatabase[Document] | None = (
            client.get_database(database_name) if client is not None else None
        )
        self._memory_database: Any = (
            memory_database(memory_uri, database_name) if memory_uri is not None else None
        )
        self.wallets = WalletStore(self.collection(WALLETS_COLLECTION), key_ring)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        key_ring: KeyRing | None = None,
        *,
        decrypts: bool = True,
        timeout_seconds: float | None = None,
    ) -> "Store":
        """Open the store `settings` configure (`PREMIX_MONGODB_URI`, `PREMIX_MONGODB_DATABASE`).

        `memory://` or `memory://<name>` selects an embedded store shared by every `Store`
        opened in this process with the same URI. Without `key_ring`, one is built from
        `PREMIX_ENCRYPTION_KEYS` when that is set (wallet reads and writes need it);
        `decrypts=False` builds none (a store that only counts wallets, as enqueue does).
        Raises `StoreConfigError` for an unusable URI and `KeyConfigError` for malformed keys.
        Does not connect: MongoDB is reached on first use (see `ping`). An operation waits at
        most `timeout_seconds` (default `mongodb_timeout_seconds`) for a reachable server and as
        long again for its answer (unless the URI sets its own timeouts): then it fails with
        PyMongo's `ServerSelectionTimeoutError` or `NetworkTimeout`, never hangs.
        """
        if key_ring is None and decrypts and settings.encryption_keys.get_secret_value().strip():
            key_ring = KeyRing.from_settings(settings)
        uri = settings.mongodb_uri
        if settings.uses_memory_store:
            try:
                return cls(
                    database_name=settings.mongodb_database, key_ring=key_ring, memory_uri=uri
                )
            except EmbeddedStoreMissing as e:
                raise StoreConfigError(str(e)) from None
        seconds = settings.mongodb_timeout_seconds if timeout_seconds is None else timeout_seconds
        timeouts = _timeouts(uri, round(seconds * 1000))
        try:
            client: AsyncMongoClient[Document] = AsyncMongoClient(
                uri, tz_aware=True, tzinfo=UTC, appname="premix", **timeouts
            )
        except (ConfigurationError, ValueError, TypeError) as e:
            # The URI may hold a password: name the problem's kind, not the URI.
            raise StoreConfigError(
                f"PREMIX_MONGODB_URI is not a usable MongoDB URI ({type(e).__name__}); expected "
                f"mongodb://..., mongodb+srv://... or {MEMORY_STORE_URI}"
            ) from None
        return cls(database_name=settings.mongodb_database, key_ring=key_ring, client=client)

    @property
    def is_memory(self) -> bool:
        """True for the embedded `memory://` store."""
        return self._memory_uri is not None

    def collection(self, name: str) -> DocumentCollection:
        """The collection `name`: PyMongo's `AsyncCollection`, or the memory adapter."""
        if self._database is not None:
            return self._database.get_collection(name)
        return MemoryCollection(self._memory_database.get_collection(name))

    async def ensure_indexes(self) -> None:
        """Create the wallet indexes if missing (idempotent; run once per process)."""
        await self.wallets.ensure_indexes()

    async def ping(self) -> None:
        """Return when MongoDB answers; raises `TransientError` when it does not."""
        if self._client is None:
            return
        try:
            await self._client.admin.command("ping")
        except PyMongoError as e:
            raise TransientError(f"MongoDB did not answer ({type(e).__name__})") from e

    async def close(self) -> None:
        """Close the MongoDB client. An embedded store keeps its data for the process."""
        if self._client is not None:
            await self._client.close()

    async def drop_database(self) -> None:
        """Drop this store's whole database. For tests and the demo only."""
        if self._client is not None:
            await self._client.drop_database(self.database_name)
        else:
            self._memory_database.client.drop_database(self.database_name)


def _timeouts(uri: str, milliseconds: int) -> dict[str, Any]:
    """premix's client timeouts (`milliseconds` to reach a server and to hear its answer),
    minus those the URI sets itself (PyMongo lets keyword arguments override the URI, so a
    default given for an option the URI names would win). `timeoutMS` governs both."""
    named = {name.lower() for name, _ in parse_qsl(uri.partition("?")[2], keep_blank_values=True)}
    if "timeoutms" in named:
        return {}
    timeouts = {"serverSelectionTimeoutMS": milliseconds, "socketTimeoutMS": milliseconds}
    return {option: value for option, value in timeouts.items() if option.lower() not in named}
