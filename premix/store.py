"""MongoDB storage: `Store` (PyMongo's `AsyncMongoClient`, or the embedded `memory://` store)
and `WalletStore`, each user's funding wallet and ordered buyer wallets with encrypted keys.

`memory://` (tests and the demo) is mongomock behind an async adapter with the subset of
PyMongo's `AsyncCollection` premix uses. Every document, filter and update it is given goes
through PyMongo's own argument checks and `bson.encode`/`bson.decode` first, so what PyMongo or
a server would refuse fails here too, with PyMongo's exception types; documents come back
through BSON as they would from a server.
"""

import itertools
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol, Self
from urllib.parse import parse_qsl

import bson
import mongomock
from bson import ObjectId
from bson.codec_options import CodecOptions
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.common import validate_ok_for_replace, validate_ok_for_update
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    DocumentTooLarge,
    DuplicateKeyError,
    PyMongoError,
)
from pymongo.results import DeleteResult, InsertManyResult, InsertOneResult, UpdateResult
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix.constants import MAX_BUYER_WALLETS, WALLETS_COLLECTION
from premix.errors import PremixError, TransientError
from premix.keys import ENVELOPE_VERSION, Envelope, KeyConfigError, KeyDecryptionError, KeyRing
from premix.settings import MEMORY_STORE_URI, Settings

Document = dict[str, Any]
SortSpec = Sequence[tuple[str, int]]

# Both backends hand back timezone-aware UTC datetimes.
CODEC_OPTIONS: Final[CodecOptions[Document]] = CodecOptions(tz_aware=True, tzinfo=UTC)
MAX_BSON_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
# How long premix waits for MongoDB to answer one command (PyMongo's default is forever, so a
# stuck server would hang a worker); `socketTimeoutMS` or `timeoutMS` in the URI wins.


class StoreConfigError(PremixError):
    """`PREMIX_MONGODB_URI` cannot be used. The message never repeats the URI (it may hold a
    password)."""

    title = "Store misconfigured"


class WalletConflict(PremixError):
    """A wallet to store is already stored, or the user's wallets changed concurrently."""

    title = "Wallet already stored"


class TooManyBuyerWallets(PremixError):
    title = "Too many buyer wallets"

    def __init__(self, user_id: str, *, existing: int, adding: int) -> None:
        super().__init__(
            f"user {user_id} has {existing} buyer wallet(s); adding {adding} would exceed the "
            f"maximum of {MAX_BUYER_WALLETS}. Nothing was added"
        )


# --- the collection surface premix uses: PyMongo's AsyncCollection and the memory adapter ---


class DocumentCursor(Protocol):
    """The part of PyMongo's `AsyncCursor` premix uses."""

    def sort(self, key_or_list: str | SortSpec, direction: int | None = None) -> Self: ...

    def limit(self, limit: int) -> Self: ...

    def skip(self, skip: int) -> Self: ...

    async def to_list(self, length: int | None = None) -> list[Document]: ...

    def __aiter__(self) -> AsyncIterator[Document]: ...


class DocumentCollection(Protocol):
    """The part of PyMongo's `AsyncCollection` premix uses; the memory adapter implements it."""

    @property
    def name(self) -> str: ...

    async def find_one(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | None = None,
        *,
        sort: SortSpec | None = None,
    ) -> Document | None: ...

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | None = None,
        *,
        sort: SortSpec | None = None,
        limit: int = 0,
        skip: int = 0,
    ) -> DocumentCursor: ...

    async def insert_one(self, document: Document) -> InsertOneResult: ...

    async def insert_many(
        self, documents: Iterable[Document], *, ordered: bool = True
    ) -> InsertManyResult: ...

    async def update_one(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult: ...

    async def update_many(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult: ...

    async def replace_one(
        self, filter: Mapping[str, Any], replacement: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult: ...

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        *,
        projection: Mapping[str, Any] | None = None,
        sort: SortSpec | None = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
    ) -> Document | None: ...

    async def delete_one(self, filter: Mapping[str, Any]) -> DeleteResult: ...

    async def delete_many(self, filter: Mapping[str, Any]) -> DeleteResult: ...

    async def count_documents(self, filter: Mapping[str, Any]) -> int: ...

    async def create_index(
        self, keys: str | SortSpec, *, unique: bool = False, name: str
    ) -> str: ...


def as_server_sees_it(document: Mapping[str, Any]) -> Document:
    """`document` after a BSON round trip, as a server would store it.

    Raises what PyMongo raises before sending: `bson.errors.InvalidDocument` (non-str keys,
    unencodable values such as `Decimal`), `OverflowError` (ints beyond int64),
    `DocumentTooLarge` (over 16 MiB).
    """
    encoded = bson.encode(document, codec_options=CODEC_OPTIONS)
    if len(encoded) > MAX_BSON_DOCUMENT_BYTES:
        raise DocumentTooLarge(
            f"BSON document too large ({len(encoded)} bytes) - the connected server supports "
            f"BSON document sizes up to {MAX_BSON_DOCUMENT_BYTES} bytes."
        )
    return bson.decode(encoded, codec_options=CODEC_OPTIONS)


def _optional(document: Mapping[str, Any] | None) -> Document | None:
    return None if document is None else as_server_sees_it(document)


class MemoryCursor:
    """`AsyncCursor` over a mongomock cursor; documents come back through BSON."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self._iterator: Iterator[Mapping[str, Any]] | None = None

    def sort(self, key_or_list: str | SortSpec, direction: int | None = None) -> Self:
        self._cursor.sort(key_or_list, direction)
        return self

    def limit(self, limit: int) -> Self:
        self._cursor.limit(limit)
        return self

    def skip(self, skip: int) -> Self:
        self._cursor.skip(skip)
        return self

    async def to_list(self, length: int | None = None) -> list[Document]:
        documents = self._cursor if length is None else itertools.islice(self._cursor, length)
        return [as_server_sees_it(document) for document in documents]

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Document:
        if self._iterator is None:
            self._iterator = iter(self._cursor)
        try:
            return as_server_sees_it(next(self._iterator))
        except StopIteration:
            raise StopAsyncIteration from None


class MemoryCollection:
    """An `AsyncCollection` look-alike over a mongomock collection (see the module docstring).

    mongomock is synchronous and in-process, so each call completes without yielding: a call is
    atomic with respect to other tasks on the event loop, like a single-document server write.
    """

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    @property
    def name(self) -> str:
        return str(self._collection.name)

    async def find_one(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | None = None,
        *,
        sort: SortSpec | None = None,
    ) -> Document | None:
        found = self._collection.find_one(_optional(filter), _optional(projection), sort=sort)
        return _optional(found)

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | None = None,
        *,
        sort: SortSpec | None = None,
        limit: int = 0,
        skip: int = 0,
    ) -> MemoryCursor:
        cursor = self._collection.find(
            _optional(filter), _optional(projection), sort=sort, limit=limit, skip=skip
        )
        return MemoryCursor(cursor)

    async def insert_one(self, document: Document) -> InsertOneResult:
        # Like PyMongo, an `_id` is added to the caller's document before it is encoded.
        document.setdefault("_id", ObjectId())
        result: InsertOneResult = self._collection.insert_one(as_server_sees_it(document))
        return result

    async def insert_many(
        self, documents: Iterable[Document], *, ordered: bool = True
    ) -> InsertManyResult:
        documents = list(documents)
        for document in documents:
            document.setdefault("_id", ObjectId())
        encoded = [as_server_sees_it(document) for document in documents]
        result: InsertManyResult = self._collection.insert_many(encoded, ordered=ordered)
        return result

    async def update_one(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult:
        validate_ok_for_update(update)
        result: UpdateResult = self._collection.update_one(
            as_server_sees_it(filter), as_server_sees_it(update), upsert=upsert
        )
        return result

    async def update_many(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult:
        validate_ok_for_update(update)
        result: UpdateResult = self._collection.update_many(
            as_server_sees_it(filter), as_server_sees_it(update), upsert=upsert
        )
        return result

    async def replace_one(
        self, filter: Mapping[str, Any], replacement: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult:
        validate_ok_for_replace(replacement)
        result: UpdateResult = self._collection.replace_one(
            as_server_sees_it(filter), as_server_sees_it(replacement), upsert=upsert
        )
        return result

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        *,
        projection: Mapping[str, Any] | None = None,
        sort: SortSpec | None = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
    ) -> Document | None:
        validate_ok_for_update(update)
        found = self._collection.find_one_and_update(
            as_server_sees_it(filter),
            as_server_sees_it(update),
            projection=_optional(projection),
            sort=sort,
            upsert=upsert,
            return_document=return_document,
        )
        return _optional(found)

    async def delete_one(self, filter: Mapping[str, Any]) -> DeleteResult:
        result: DeleteResult = self._collection.delete_one(as_server_sees_it(filter))
        return result

    async def delete_many(self, filter: Mapping[str, Any]) -> DeleteResult:
        result: DeleteResult = self._collection.delete_many(as_server_sees_it(filter))
        return result

    async def count_documents(self, filter: Mapping[str, Any]) -> int:
        return int(self._collection.count_documents(as_server_sees_it(filter)))

    async def create_index(self, keys: str | SortSpec, *, unique: bool = False, name: str) -> str:
        return str(self._collection.create_index(keys, unique=unique, name=name))


# mongomock clients by `memory://...` URI: every `Store.open` in this process shares them.
_memory_clients: dict[str, Any] = {}


def reset_memory_stores(uri: str | None = None) -> None:
    """Forget the embedded store at `uri` (every embedded store when None). Tests use this."""
    if uri is None:
        _memory_clients.clear()
    else:
        _memory_clients.pop(uri, None)


# --- Store ---


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
            _memory_clients.setdefault(memory_uri, mongomock.MongoClient()).get_database(
                database_name
            )
            if memory_uri is not None
            else None
        )
        self.wallets = WalletStore(self.collection(WALLETS_COLLECTION), key_ring)

    @classmethod
    async def open(cls, settings: Settings, key_ring: KeyRing | None = None) -> "Store":
        """Open the store `settings` configure (`PREMIX_MONGODB_URI`, `PREMIX_MONGODB_DATABASE`).

        `memory://` or `memory://<name>` selects an embedded store shared by every `Store`
        opened in this process with the same URI. Without `key_ring`, one is built from
        `PREMIX_ENCRYPTION_KEYS` when that is set (wallet reads and writes need it).
        Raises `StoreConfigError` for an unusable URI and `KeyConfigError` for malformed keys.
        Does not connect: MongoDB is reached on first use (see `ping`). An operation waits at
        most `mongodb_timeout_seconds` for a reachable server and as long again for its answer
        (unless the URI sets its own timeouts): then it fails with PyMongo's
        `ServerSelectionTimeoutError` or `NetworkTimeout`, never hangs.
        """
        if key_ring is None and settings.encryption_keys.get_secret_value().strip():
            key_ring = KeyRing.from_settings(settings)
        uri = settings.mongodb_uri
        if settings.uses_memory_store:
            return cls(database_name=settings.mongodb_database, key_ring=key_ring, memory_uri=uri)
        timeouts = _timeouts(uri, round(settings.mongodb_timeout_seconds * 1000))
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


# --- wallets ---

FUNDING: Final = "funding"
BUYER: Final = "buyer"
ENCRYPTED_KEY_FIELD: Final = "encrypted_secret_key"
_PUBLIC_KEY_ONLY: Final = {"_id": 0, "public_key": 1}


def checked_user_id(user_id: object) -> str:
    """`user_id` if it is a non-empty str; ids reach MongoDB only as strings (no operators)."""
    if not isinstance(user_id, str):
        raise TypeError("user_id must be a str")
    if not user_id:
        raise ValueError("user_id must not be empty")
    return user_id


def _checked_limit(limit: int | None) -> int:
    if limit is None:
        return 0
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError("limit must be a positive int or None")
    return limit


class WalletStore:
    """Per user: one funding wallet and up to 73 buyer wallets in a fixed order (positions 0..72).

    Each wallet is one document: `user_id`, `role` ("funding" | "buyer"), `position`,
    `public_key` (base58, in clear), `encrypted_secret_key` (a `premix.keys` envelope),
    `created_at`, `updated_at`. Unique indexes: (user_id, role, position) and public_key.
    """

    def __init__(self, collection: DocumentCollection, key_ring: KeyRing | None) -> None:
        self.collection = collection
        self._key_ring = key_ring

    @property
    def key_ring(self) -> KeyRing:
        """The key ring; raises `KeyConfigError` when no encryption keys are configured."""
        if self._key_ring is None:
            raise KeyConfigError(
                "PREMIX_ENCRYPTION_KEYS is not set; the wallet store needs at least one key"
            )
        return self._key_ring

    async def ensure_indexes(self) -> None:
        """Create the unique indexes (idempotent)."""
        await self.collection.create_index(
            [("user_id", 1), ("role", 1), ("position", 1)],
            unique=True,
            name="user_role_position_unique",
        )
        await self.collection.create_index(
            [("public_key", 1)], unique=True, name="public_key_unique"
        )

    async def set_funding_wallet(self, user_id: str, keypair: Keypair) -> None:
        """Store `keypair` as the user's funding wallet, replacing any previous one.

        Raises `WalletConflict` when its public key is already stored as another wallet.
        """
        user_id = checked_user_id(user_id)
        slot = {"user_id": user_id, "role": FUNDING, "position": 0}
        document = self._document(user_id, FUNDING, 0, keypair)
        public_key = document["public_key"]
        holder = await self.collection.find_one({"public_key": public_key})
        if holder is not None and any(holder.get(field) != slot[field] for field in slot):
            raise self._already_stored(user_id, public_key, holder)
        document.pop("_id")
        try:
            await self.collection.replace_one(slot, document, upsert=True)
        except DuplicateKeyError:
            raise WalletConflict(
                f"the funding wallet of user {user_id} changed concurrently; retry"
            ) from None

    async def add_buyer_wallets(self, user_id: str, keypairs: Iterable[Keypair]) -> list[int]:
        """Append `keypairs` as buyer wallets after the user's existing ones, in order.

        Returns their positions. Writes nothing and raises `TooManyBuyerWallets` past 73,
        `WalletConflict` when a public key is repeated or already stored.
        """
        user_id = checked_user_id(user_id)
        keypairs = list(keypairs)
        if not keypairs:
            return []
        public_keys = [str(keypair.pubkey()) for keypair in keypairs]
        repeated = next((key for key in public_keys if public_keys.count(key) > 1), None)
        if repeated is not None:
            raise WalletConflict(f"public key {repeated} is given twice; nothing was added")
        existing = await self.buyer_wallet_count(user_id)
        if existing + len(keypairs) > MAX_BUYER_WALLETS:
            raise TooManyBuyerWallets(user_id, existing=existing, adding=len(keypairs))
        holder = await self.collection.find_one({"public_key": {"$in": public_keys}})
        if holder is not None:
            raise self._already_stored(user_id, str(holder["public_key"]), holder)
        positions = list(range(existing, existing + len(keypairs)))
        documents = [
            self._document(user_id, BUYER, position, keypair)
            for position, keypair in zip(positions, keypairs, strict=True)
        ]
        try:
            await self.collection.insert_many(documents, ordered=True)
        except (BulkWriteError, DuplicateKeyError):
            # Another writer took a position or key meanwhile: undo our part, keep it all-or-none.
            await self.collection.delete_many({"_id": {"$in": [doc["_id"] for doc in documents]}})
            raise WalletConflict(
                f"the buyer wallets of user {user_id} changed concurrently; "
                "nothing was added, retry"
            ) from None
        return positions

    async def funding_wallet(self, user_id: str) -> Keypair | None:
        """The user's funding keypair, or None. Raises `KeyDecryptionError`."""
        user_id = checked_user_id(user_id)
        document = await self.collection.find_one({"user_id": user_id, "role": FUNDING})
        return None if document is None else self._keypair(document)

    async def buyer_wallets(self, user_id: str, limit: int | None = None) -> list[Keypair]:
        """The user's buyer keypairs in position order (the first `limit` when given).

        Raises `KeyDecryptionError` naming the wallet that cannot be decrypted.
        """
        documents = await self._buyer_documents(user_id, limit, projection=None)
        return [self._keypair(document) for document in documents]

    async def funding_public_key(self, user_id: str) -> Pubkey | None:
        """The user's funding wallet public key, or None. Decrypts nothing."""
        user_id = checked_user_id(user_id)
        document = await self.collection.find_one(
            {"user_id": user_id, "role": FUNDING}, _PUBLIC_KEY_ONLY
        )
        return None if document is None else Pubkey.from_string(document["public_key"])

    async def buyer_public_keys(self, user_id: str, limit: int | None = None) -> list[Pubkey]:
        """The user's buyer wallet public keys in position order. Decrypts nothing."""
        documents = await self._buyer_documents(user_id, limit, projection=_PUBLIC_KEY_ONLY)
        return [Pubkey.from_string(document["public_key"]) for document in documents]

    async def buyer_wallet_count(self, user_id: str) -> int:
        """How many buyer wallets the user has."""
        user_id = checked_user_id(user_id)
        return await self.collection.count_documents({"user_id": user_id, "role": BUYER})

    async def delete_user(self, user_id: str) -> int:
        """Delete every wallet of the user; returns how many were deleted."""
        user_id = checked_user_id(user_id)
        result = await self.collection.delete_many({"user_id": user_id})
        return result.deleted_count

    async def reencrypt_all(self) -> int:
        """Re-encrypt every key not under the newest configured key; returns how many.

        Safe to re-run. Raises `KeyDecryptionError` naming the first wallet that cannot be
        decrypted (those before it stay re-encrypted).
        """
        key_ring = self.key_ring
        stale = {
            "$or": [
                {f"{ENCRYPTED_KEY_FIELD}.kid": {"$ne": key_ring.primary_key_id}},
                {f"{ENCRYPTED_KEY_FIELD}.v": {"$ne": ENVELOPE_VERSION}},
            ]
        }
        count = 0
        async for document in self.collection.find(stale):
            envelope = self._envelope(document)
            if not key_ring.needs_rotation(envelope):
                continue  # a server cursor may return a document again after we updated it
            keypair = self._keypair(document)
            result = await self.collection.update_one(
                {"_id": document["_id"], f"{ENCRYPTED_KEY_FIELD}.ct": envelope["ct"]},
                {
                    "$set": {
                        ENCRYPTED_KEY_FIELD: key_ring.encrypt(bytes(keypair), keypair.pubkey()),
                        "updated_at": datetime.now(UTC),
                    }
                },
            )
            count += result.modified_count
        return count

    async def _buyer_documents(
        self, user_id: str, limit: int | None, projection: Mapping[str, Any] | None
    ) -> list[Document]:
        user_id = checked_user_id(user_id)
        cursor = self.collection.find(
            {"user_id": user_id, "role": BUYER},
            projection,
            sort=[("position", 1)],
            limit=_checked_limit(limit),
        )
        return await cursor.to_list()

    def _document(self, user_id: str, role: str, position: int, keypair: Keypair) -> Document:
        if not isinstance(keypair, Keypair):
            raise TypeError("wallets are stored from solders Keypair objects")
        public_key = keypair.pubkey()
        now = datetime.now(UTC)
        envelope: Envelope = self.key_ring.encrypt(bytes(keypair), public_key)
        return {
            "_id": ObjectId(),
            "user_id": user_id,
            "role": role,
            "position": position,
            "public_key": str(public_key),
            ENCRYPTED_KEY_FIELD: envelope,
            "created_at": now,
            "updated_at": now,
        }

    def _keypair(self, document: Mapping[str, Any]) -> Keypair:
        where = _describe(document)
        public_key = document.get("public_key")
        try:
            owner = Pubkey.from_string(public_key) if isinstance(public_key, str) else None
        except ValueError:
            owner = None
        if owner is None:
            raise KeyDecryptionError(f"{where}: the stored public key is missing or invalid")
        try:
            secret = self.key_ring.decrypt(self._envelope(document), owner)
        except KeyDecryptionError as e:
            raise KeyDecryptionError(f"{where}: {e.detail}") from None
        try:
            keypair = Keypair.from_bytes(secret)
        except ValueError:
            keypair = None
        if keypair is None or keypair.pubkey() != owner:
            raise KeyDecryptionError(f"{where}: the decrypted key does not match wallet {owner}")
        return keypair

    @staticmethod
    def _envelope(document: Mapping[str, Any]) -> Mapping[str, object]:
        envelope = document.get(ENCRYPTED_KEY_FIELD)
        return envelope if isinstance(envelope, Mapping) else {}

    @staticmethod
    def _already_stored(user_id: str, public_key: str, holder: Mapping[str, Any]) -> WalletConflict:
        if holder.get("user_id") == user_id:
            where = f"user {user_id}'s {_describe_role(holder)}"
        else:
            where = "a wallet of another user"
        return WalletConflict(f"public key {public_key} is already stored as {where}")


def _describe_role(document: Mapping[str, Any]) -> str:
    if document.get("role") == FUNDING:
        return "funding wallet"
    return f"buyer wallet at position {document.get('position')}"


def _describe(document: Mapping[str, Any]) -> str:
    return f"{_describe_role(document)} of user {document.get('user_id')}"
